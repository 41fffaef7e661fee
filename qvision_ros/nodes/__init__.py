"""The ROS 2 nodes of qvision_ros: thin rclpy plumbing around the pure layers (DESIGN.md section 2).

* :mod:`.preprocess` - ``preprocess_node``: image_raw (or its own capture) -> image_preprocessed;
* :mod:`.inference` - ``inference_node`` (lifecycle): image_preprocessed -> detections_raw;
* :mod:`.visualization` - ``visualization_node``: image_raw + detections_raw -> detections, image_annotated,
  label_info;
* :mod:`.composed` - ``composed_node``: the three in one process, the image handed over in memory.

:mod:`.params` (the parameter table) and :mod:`.policy` (latest-frame slot, stamp pairing, rates) import
no rclpy; the node modules do.  Importing this package imports nothing from ROS.
"""
