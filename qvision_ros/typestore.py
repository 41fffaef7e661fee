"""ROS 2 message classes without ROS: a rosbags typestore with vision_msgs 4.x registered.

``rosbags`` ships the standard ROS 2 message definitions of every distribution (sensor_msgs, std_msgs,
geometry_msgs, diagnostic_msgs...) but not vision_msgs, which is a separate package.  This module holds the
vision_msgs definitions as text - copied field for field from ``ros-perception/vision_msgs`` tag 4.1.1,
``vision_msgs/msg/*.msg`` (the release in both Humble and Jazzy; ``LabelInfo`` and ``VisionClass`` arrived
in 4.1.0) - and registers them into a Humble or Jazzy typestore.

The result serves two purposes:

* bag I/O (:mod:`qvision_ros.bag` writes ``vision_msgs/msg/Detection2DArray`` into rosbag2 files);
* tests: the generated classes have exactly the fields of the ROS 2 messages, so code that builds messages
  through :class:`MessageTypes` is checked against the real definitions without rclpy.

:class:`MessageTypes` is the "module of classes" the pure message layer (:mod:`qvision_ros.messages`) is
given; :func:`message_types` builds one from a typestore, and the ROS nodes build one from the rclpy
packages (``sensor_msgs.msg`` ...), so the pure layer never imports rclpy.
"""
import array
import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import ConfigError

#: ROS 2 distributions this package supports (vision_msgs 4.1.1 in both).
DISTROS = ('humble', 'jazzy')

# vision_msgs 4.1.1 (ros-perception/vision_msgs, vision_msgs/msg/), comments dropped.  Only the messages
# qvision_ros uses and everything they reference; a nested type is spelled as in the original file.
VISION_MSGS = {
    'vision_msgs/msg/Point2D': 'float64 x\nfloat64 y\n',
    'vision_msgs/msg/Pose2D': 'vision_msgs/Point2D position\nfloat64 theta\n',
    'vision_msgs/msg/BoundingBox2D': 'vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n',
    'vision_msgs/msg/BoundingBox2DArray': 'std_msgs/Header header\nvision_msgs/BoundingBox2D[] boxes\n',
    'vision_msgs/msg/ObjectHypothesis': 'string class_id\nfloat64 score\n',
    'vision_msgs/msg/ObjectHypothesisWithPose': ('ObjectHypothesis hypothesis\n'
                                                 'geometry_msgs/PoseWithCovariance pose\n'),
    'vision_msgs/msg/Detection2D': ('std_msgs/Header header\nObjectHypothesisWithPose[] results\n'
                                    'BoundingBox2D bbox\nstring id\n'),
    'vision_msgs/msg/Detection2DArray': 'std_msgs/Header header\nDetection2D[] detections\n',
    'vision_msgs/msg/Classification': 'std_msgs/Header header\nObjectHypothesis[] results\n',
    'vision_msgs/msg/VisionClass': 'uint16 class_id\nstring class_name\n',
    'vision_msgs/msg/LabelInfo': ('std_msgs/Header header\nvision_msgs/VisionClass[] class_map\n'
                                  'float32 threshold\n'),
    'vision_msgs/msg/VisionInfo': ('std_msgs/Header header\nstring method\nstring database_location\n'
                                   'int32 database_version\n'),
}

# MessageTypes attribute -> ROS type name.
_TYPE_NAMES = {
    'Time': 'builtin_interfaces/msg/Time',
    'Header': 'std_msgs/msg/Header',
    'Image': 'sensor_msgs/msg/Image',
    'Point': 'geometry_msgs/msg/Point',
    'Quaternion': 'geometry_msgs/msg/Quaternion',
    'Pose': 'geometry_msgs/msg/Pose',
    'PoseWithCovariance': 'geometry_msgs/msg/PoseWithCovariance',
    'Point2D': 'vision_msgs/msg/Point2D',
    'Pose2D': 'vision_msgs/msg/Pose2D',
    'BoundingBox2D': 'vision_msgs/msg/BoundingBox2D',
    'ObjectHypothesis': 'vision_msgs/msg/ObjectHypothesis',
    'ObjectHypothesisWithPose': 'vision_msgs/msg/ObjectHypothesisWithPose',
    'Detection2D': 'vision_msgs/msg/Detection2D',
    'Detection2DArray': 'vision_msgs/msg/Detection2DArray',
    'VisionClass': 'vision_msgs/msg/VisionClass',
    'LabelInfo': 'vision_msgs/msg/LabelInfo',
    'KeyValue': 'diagnostic_msgs/msg/KeyValue',
    'DiagnosticStatus': 'diagnostic_msgs/msg/DiagnosticStatus',
    'DiagnosticArray': 'diagnostic_msgs/msg/DiagnosticArray',
}

#: ROS type name of every class a :class:`MessageTypes` holds, by attribute.
TYPE_NAMES = dict(_TYPE_NAMES)


def _store_enum(distro):
    from rosbags.typesys import Stores
    if distro not in DISTROS:
        raise ConfigError('ROS 2 distribution must be one of %s, got %r' % (DISTROS, distro))
    return Stores.ROS2_HUMBLE if distro == 'humble' else Stores.ROS2_JAZZY


def make_typestore(distro='humble'):
    """A new rosbags ``Typestore`` of ``distro`` ('humble' or 'jazzy') with vision_msgs 4.1.1 registered."""
    from rosbags.typesys import get_types_from_msg, get_typestore
    store = get_typestore(_store_enum(distro))
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


@functools.lru_cache(maxsize=None)
def typestore(distro='humble'):
    """The shared typestore of ``distro`` (built once; do not register more types into it)."""
    return make_typestore(distro)


def _rosbags_bytes(data):
    """uint8[] field value for rosbags classes: a 1-D uint8 NumPy array."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    return np.frombuffer(bytes(data), dtype=np.uint8)


def _rclpy_bytes(data):
    """uint8[] field value for rclpy classes: ``array.array('B')`` (the type rosidl_generator_py stores;
    a bytes-like initializer goes through ``frombytes``, one copy, no per-element check)."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data, dtype=np.uint8).tobytes()
    return array.array('B', data)


def _rosbags_float64s(values):
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class MessageTypes:
    """The message classes the message layer builds, plus how to fill array fields.

    Every attribute named like a message (``Image``, ``Detection2DArray``...) is a class constructible with
    keyword arguments for all of its fields; ``uint8_array(bytes_or_ndarray)`` and ``float64_array(values)``
    give the value that class family stores in a ``uint8[]`` / ``float64[N]`` field (rclpy: ``array.array``
    and NumPy; rosbags: NumPy).  Build one with :func:`message_types` (rosbags) or, in the nodes, from the
    rclpy message packages.
    """
    Time: Any
    Header: Any
    Image: Any
    Point: Any
    Quaternion: Any
    Pose: Any
    PoseWithCovariance: Any
    Point2D: Any
    Pose2D: Any
    BoundingBox2D: Any
    ObjectHypothesis: Any
    ObjectHypothesisWithPose: Any
    Detection2D: Any
    Detection2DArray: Any
    VisionClass: Any
    LabelInfo: Any
    KeyValue: Any
    DiagnosticStatus: Any
    DiagnosticArray: Any
    uint8_array: Callable = _rclpy_bytes
    float64_array: Callable = _rosbags_float64s

    @classmethod
    def from_modules(cls, **modules):
        """Classes looked up by name in message modules, e.g. ``from_modules(sensor_msgs=sensor_msgs.msg,
        std_msgs=std_msgs.msg, ...)`` (keyword = ROS package name); rclpy-style array fields."""
        classes = {}
        for attr, full in _TYPE_NAMES.items():
            package, _, name = full.split('/')
            try:
                classes[attr] = getattr(modules[package], name)
            except (KeyError, AttributeError):
                raise ConfigError('message module for package %r with class %s is missing; give %s=<module>'
                                  % (package, name, package)) from None
        return cls(**classes, uint8_array=_rclpy_bytes, float64_array=_rosbags_float64s)


@functools.lru_cache(maxsize=None)
def message_types(distro='humble'):
    """:class:`MessageTypes` of the rosbags typestore of ``distro`` (shared, built once)."""
    store = typestore(distro)
    classes = {attr: store.types[name] for attr, name in _TYPE_NAMES.items()}
    return MessageTypes(**classes, uint8_array=_rosbags_bytes, float64_array=_rosbags_float64s)


__all__ = ['DISTROS', 'VISION_MSGS', 'TYPE_NAMES', 'MessageTypes', 'make_typestore', 'typestore',
           'message_types']
