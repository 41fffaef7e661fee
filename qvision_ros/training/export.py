"""ONNX export of the detector in the layout of Ultralytics' YOLOv8 exports, checkpoints and labels.

The exported graph: input ``images`` float32 ``[1, 3, S, S]`` (RGB, pixel / 255, letterboxed with grey
114), output ``output0`` float32 ``[1, 4 + nc, A]`` = (cx, cy, w, h) in input pixels and sigmoid class
scores, the DFL decode inside (:class:`.model.DecodedDetector`), batch norms folded into the convolutions.
Ops: Conv, Sigmoid, Mul, Add, Split, Concat, MaxPool, Resize (nearest, x2), Reshape, Transpose, Softmax,
Sub, Div.  Metadata (when the ``onnx`` package is there): ``names`` (class names as a JSON list),
``imgsz``, ``stride``, ``task`` = detect, ``description``.
"""
import copy
import json
import os
import warnings

import numpy as np
import torch

from .model import Detector, DecodedDetector

INPUT_NAME = 'images'
OUTPUT_NAME = 'output0'


def export_onnx(detector, path, image_size=320, names=None, opset=13):
    """Write ``detector`` (left unchanged: a fused copy is exported) as ONNX at ``path``; returns ``path``."""
    model = DecodedDetector(copy.deepcopy(detector).float().eval().fuse(), image_size).eval()
    dummy = torch.zeros(1, 3, image_size, image_size)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False) is deprecated but still gives the plain static graph.
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(model, (dummy,), path, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    try:
        import onnx
    except ImportError:
        return path
    proto = onnx.load(path)
    _inline_identity_initializers(proto)
    meta = {'task': 'detect', 'imgsz': json.dumps([image_size, image_size]), 'stride': '32',
            'description': 'qvision_ros synthetic road-scene detector (YOLOv8-style, anchor-free)'}
    if names is not None:
        meta['names'] = json.dumps(list(names))
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = 'qvision_ros.training'
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return path


def _inline_identity_initializers(proto):
    """The exporter shares equal initializers (e.g. zero biases) through Identity nodes; give each
    consumer its own initializer instead, so the graph holds only computing nodes."""
    from onnx import numpy_helper
    inits = {i.name: i for i in proto.graph.initializer}
    kept = []
    for node in proto.graph.node:
        if node.op_type == 'Identity' and node.input[0] in inits:
            array = numpy_helper.to_array(inits[node.input[0]])
            proto.graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
        else:
            kept.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(kept)


def torch_outputs(detector, images_nchw, image_size=320):
    """The exported graph's output computed by PyTorch (fused copy, eval mode) for float32 [B, 3, S, S]."""
    model = DecodedDetector(copy.deepcopy(detector).float().eval().fuse(), image_size).eval()
    with torch.no_grad():
        return model(torch.as_tensor(images_nchw, dtype=torch.float32)).numpy()


def onnxruntime_outputs(path, images_nchw, num_threads=1):
    """Run the exported model with ONNX Runtime on a batch, one image at a time (batch 1 graph)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    x = np.asarray(images_nchw, np.float32)
    return np.concatenate([sess.run(None, {INPUT_NAME: x[i:i + 1]})[0] for i in range(len(x))])


def save_checkpoint(path, detector, extra=None):
    """State dict + constructor arguments (+ ``extra`` JSON-able info), loadable with weights_only."""
    torch.save({'config': detector.config(), 'state_dict': detector.state_dict(), 'extra': extra or {}}, path)


def load_checkpoint(path):
    """-> (Detector in eval mode, extra); never unpickles code (``weights_only=True``)."""
    blob = torch.load(path, map_location='cpu', weights_only=True)
    cfg = blob['config']
    det = Detector(num_classes=cfg['num_classes'], widths=tuple(cfg['widths']), reg_max=cfg['reg_max'],
                   box_width=cfg['box_width'], cls_width=cfg['cls_width'])
    det.load_state_dict(blob['state_dict'])
    return det.eval(), blob.get('extra', {})


def write_labels(path, names):
    """One class name per line, in class-id order (the ``labels_path`` format of the nodes)."""
    with open(path, 'w') as f:
        f.write('\n'.join(names) + '\n')
    return path
