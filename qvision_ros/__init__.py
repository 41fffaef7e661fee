"""qvision_ros: real-time int8 object detection for CPU-only ROS 2 robots.

``from qvision_ros import Engine`` runs a float or QDQ-quantized ONNX model on the project's Cython
kernels (:mod:`qvision_ros.runtime`); :mod:`qvision_ros.vision` holds preprocessing, decoders, NMS and
drawing.  Only the ROS 2 nodes import rclpy.
"""
__version__ = '0.1.0'


def __getattr__(name):
    # Engine imports onnx (to parse models at load time); keep `import qvision_ros` light for the
    # pieces that do not need it.
    if name in ('Engine', 'TensorInfo'):
        from . import runtime
        return getattr(runtime, name)
    raise AttributeError('module %r has no attribute %r' % (__name__, name))
