"""The vision layer of qvision_ros: frames in, network tensors out; model outputs in, detections out.

Pure NumPy/OpenCV, no ROS (DESIGN.md section 1):

* :mod:`.image` - ``sensor_msgs/Image`` fields <-> arrays, colour conversion to BGR;
* :mod:`.preprocess` - letterbox/stretch resize, channel order, normalisation, input quantisation;
* :mod:`.decode` - YOLOv5 / YOLOv8 / classifier outputs -> detections in source pixels;
* :mod:`.nms` - greedy (class-aware) non-maximum suppression;
* :mod:`.draw` - boxes, labels and frame rate on an image.
"""
from .decode import (Classification, Decoder, Detections, decode_classifier, decode_yolov5, decode_yolov8,
                     detect_format, softmax)
from .draw import class_color, draw_detections, label_text
from .image import (SUPPORTED_ENCODINGS, array_to_image_fields, encoding_info, from_bgr, image_to_array,
                    to_bgr)
from .nms import batched_nms, nms
from .preprocess import Letterbox, Preprocessor, normalize_float32

__all__ = ['Classification', 'Decoder', 'Detections', 'decode_classifier', 'decode_yolov5', 'decode_yolov8',
           'detect_format', 'softmax', 'class_color', 'draw_detections', 'label_text', 'SUPPORTED_ENCODINGS',
           'array_to_image_fields', 'encoding_info', 'from_bgr', 'image_to_array', 'to_bgr', 'batched_nms',
           'nms', 'Letterbox', 'Preprocessor', 'normalize_float32']
