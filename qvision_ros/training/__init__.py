"""Training of the embedded default detector on synthetic scenes (an optional extra: needs PyTorch).

Nothing here is needed at run time; ``pip install qvision_ros[train]`` brings PyTorch.  Modules:

* :mod:`.model` - a small YOLOv8-style detector (Conv-BN-SiLU, C2f, SPPF, FPN/PAN neck, anchor-free
  decoupled head with distribution focal loss bins) and its in-graph decode;
* :mod:`.loss` - task-aligned assignment and the box (CIoU), class (BCE) and DFL losses;
* :mod:`.data` - synthetic scenes on the fly, augmentation, batching;
* :mod:`.metrics` - VOC-style average precision in NumPy (no PyTorch);
* :mod:`.export` - ONNX export in the Ultralytics layout ``[1, 4 + nc, A]``;
* :mod:`.train` - the command line (``python -m qvision_ros.training.train --help``).

PyTorch is imported by the modules that need it, never by this package itself, so that importing
``qvision_ros.training.metrics`` works without it.
"""
