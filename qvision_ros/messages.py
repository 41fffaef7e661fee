"""ROS 2 messages <-> arrays and detections, duck-typed: no rclpy import.

Every function that builds a message takes a :class:`~qvision_ros.typestore.MessageTypes` (the classes to
build with: rclpy's in the nodes, rosbags' in bags and tests) and passes *every* field as a keyword
argument, so the same code builds rclpy messages (which have defaults and check types) and rosbags
dataclasses (which have no defaults).  Scalars are plain Python ``int`` / ``float`` / ``str`` because
rclpy's setters reject NumPy scalars (``isinstance(value, float)`` fails for ``np.float32``).  Messages
are read by attribute only.

Rules kept here for every output (DESIGN.md section 2):

* the header (stamp and frame_id) is copied from the source frame, unchanged;
* boxes are in the pixel frame given; with ``image_size`` they are clipped to the image and boxes that are
  NaN/infinite or have no area after clipping are dropped;
* ``class_id`` is the class index as a string (:attr:`ClassIdMode.INDEX`) or the label
  (:attr:`ClassIdMode.NAME`); scores are clipped to [0, 1];
* nothing found -> a ``Detection2DArray`` with an empty ``detections`` list (never no message).
"""
import enum
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .errors import ConfigError, ImageError, InputError
from .vision.decode import Detections
from .vision.image import array_to_image_fields, from_bgr, image_to_array, to_bgr


class ClassIdMode(enum.Enum):
    """What ``ObjectHypothesis.class_id`` holds: the class index as a string, or the class name."""
    INDEX = 'index'
    NAME = 'name'

    @classmethod
    def parse(cls, value):
        """A member from itself or its value ('index' / 'name'); ConfigError otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ConfigError('class_id mode must be one of %s, got %r'
                              % ([m.value for m in cls], value)) from None


# -- headers ---------------------------------------------------------------------------------------------

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp):
    """``builtin_interfaces/Time`` (``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def header_stamp_ns(header):
    """Nanoseconds of a ``std_msgs/Header``'s stamp (the key that pairs images with detections)."""
    return stamp_to_ns(header.stamp)


def make_time(types, ns):
    """``builtin_interfaces/Time`` of ``ns`` nanoseconds (>= 0)."""
    ns = int(ns)
    if ns < 0:
        raise InputError('a ROS time must be >= 0 ns, got %d' % ns)
    sec, nanosec = divmod(ns, NS_PER_S)
    if sec >= 2 ** 31:
        raise InputError('a ROS time has a signed 32-bit seconds field; %d ns is too late' % ns)
    return types.Time(sec=int(sec), nanosec=int(nanosec))


def make_header(types, stamp_ns, frame_id):
    """A new ``std_msgs/Header`` with this stamp (nanoseconds) and frame_id."""
    return types.Header(stamp=make_time(types, stamp_ns), frame_id=str(frame_id))


def copy_header(types, header):
    """A new ``std_msgs/Header`` equal to ``header`` (stamp and frame_id unchanged), of ``types``' class."""
    return types.Header(stamp=types.Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
                        frame_id=str(header.frame_id))


# -- images ----------------------------------------------------------------------------------------------

def image_msg_to_array(msg):
    """View a ``sensor_msgs/Image`` as ``H x W x C`` uint8 (no copy; see
    :func:`~qvision_ros.vision.image.image_to_array`).  ImageError for a malformed message (unknown
    encoding, step smaller than a row, too little data, zero size)."""
    return image_to_array(msg.data, msg.width, msg.height, msg.encoding, msg.step, msg.is_bigendian)


def image_msg_to_bgr(msg):
    """A ``sensor_msgs/Image`` as a BGR ``H x W x 3`` uint8 array (a view for bgr8 without padding)."""
    return to_bgr(image_msg_to_array(msg), msg.encoding)


def array_to_image_msg(types, array, encoding, header):
    """``sensor_msgs/Image`` of an array already in ``encoding``'s layout (rows packed, step = width * C),
    with ``header`` copied."""
    fields = array_to_image_fields(array, encoding)
    fields['data'] = types.uint8_array(fields['data'])
    return types.Image(header=copy_header(types, header), **fields)


def bgr_to_image_msg(types, image_bgr, header, encoding='bgr8'):
    """``sensor_msgs/Image`` in ``encoding`` (bgr8, rgb8, bgra8, rgba8, mono8) of a BGR array."""
    return array_to_image_msg(types, from_bgr(image_bgr, encoding), encoding, header)


# -- detections ------------------------------------------------------------------------------------------

def _size(image_size):
    if image_size is None:
        return None
    try:
        w, h = image_size
    except (TypeError, ValueError):
        raise ConfigError('image_size must be (width, height), got %r' % (image_size,)) from None
    if isinstance(w, bool) or isinstance(h, bool) or int(w) != w or int(h) != h or w < 1 or h < 1:
        raise ConfigError('image_size must be two positive integers (width, height), got %r' % (image_size,))
    return int(w), int(h)


def sanitize_detections(detections, image_size=None):
    """``detections`` with boxes clipped to ``image_size`` (``(width, height)``; None: no clipping), NaN,
    infinite and degenerate (zero-area) boxes and non-finite scores dropped, scores clipped to [0, 1]."""
    size = _size(image_size)
    boxes = np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 4).copy()
    scores = np.asarray(detections.scores, dtype=np.float64).reshape(-1)
    if size is not None:
        with np.errstate(invalid='ignore'):
            np.clip(boxes[:, 0::2], 0.0, size[0], out=boxes[:, 0::2])
            np.clip(boxes[:, 1::2], 0.0, size[1], out=boxes[:, 1::2])
    ok = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
    ok &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return Detections(boxes[ok], np.clip(scores[ok], 0.0, 1.0),
                      np.asarray(detections.class_ids).reshape(-1)[ok])


def class_id_string(class_id, mode=ClassIdMode.INDEX, labels=None):
    """``ObjectHypothesis.class_id`` of a class index: ``'3'`` (INDEX), or ``labels[3]`` (NAME; the index
    string when ``labels`` has no entry for it)."""
    cid = int(class_id)
    if mode is ClassIdMode.NAME and labels is not None and 0 <= cid < len(labels):
        return str(labels[cid])
    return str(cid)


def _identity_pose(types):
    """``geometry_msgs/PoseWithCovariance`` at the origin, identity orientation, zero covariance - the
    default rclpy gives (a 2D detector has no 3D pose)."""
    pose = types.Pose(position=types.Point(x=0.0, y=0.0, z=0.0),
                      orientation=types.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0))
    return types.PoseWithCovariance(pose=pose, covariance=types.float64_array(np.zeros(36)))


def detections_to_msg(types, detections, header, image_size=None, class_id_mode=ClassIdMode.INDEX,
                      labels=None):
    """``vision_msgs/Detection2DArray`` of one image's :class:`~qvision_ros.vision.decode.Detections`.

    ``header`` is copied to the array and to every ``Detection2D`` (stamp and frame_id unchanged).  Boxes
    stay in the pixel frame they are given in (``bbox.center`` = box centre, ``size_x/size_y`` = width and
    height, ``theta`` = 0); with ``image_size = (width, height)`` they are first clipped to that image and
    invalid ones dropped (:func:`sanitize_detections`).  One ``ObjectHypothesisWithPose`` per detection
    (its class and score, score in [0, 1]).  No detections -> an empty ``detections`` list.
    """
    mode = ClassIdMode.parse(class_id_mode)
    det = sanitize_detections(detections, image_size)
    boxes = det.boxes.astype(np.float64)
    items = []
    for box, score, cid in zip(boxes.tolist(), det.scores.astype(np.float64).tolist(), det.class_ids.tolist()):
        x1, y1, x2, y2 = box
        center = types.Pose2D(position=types.Point2D(x=(x1 + x2) * 0.5, y=(y1 + y2) * 0.5), theta=0.0)
        hypothesis = types.ObjectHypothesisWithPose(
            hypothesis=types.ObjectHypothesis(class_id=class_id_string(cid, mode, labels), score=float(score)),
            pose=_identity_pose(types))
        items.append(types.Detection2D(header=copy_header(types, header), results=[hypothesis],
                                       bbox=types.BoundingBox2D(center=center, size_x=x2 - x1, size_y=y2 - y1),
                                       id=''))
    return types.Detection2DArray(header=copy_header(types, header), detections=items)


def empty_detections_msg(types, header):
    """An empty ``Detection2DArray`` with ``header`` copied (published when nothing is found)."""
    return types.Detection2DArray(header=copy_header(types, header), detections=[])


def parse_class_id(text, labels=None):
    """Class index of an ``ObjectHypothesis.class_id``: an integer string, or a name found in ``labels``."""
    s = str(text).strip()
    try:
        return int(s)
    except ValueError:
        pass
    if labels is not None:
        for i, name in enumerate(labels):
            if name == s:
                return i
    raise InputError('class_id %r is neither a class index nor one of the labels%s; pass the labels the '
                     'detections were published with' % (text, '' if labels is None else ' %s' % list(labels)))


def msg_to_detections(msg, labels=None):
    """:class:`~qvision_ros.vision.decode.Detections` of a ``Detection2DArray`` (boxes x1, y1, x2, y2 in
    the message's pixel frame; the best hypothesis of each detection; a detection without hypotheses gets
    class -1 and score 0)."""
    boxes, scores, class_ids = [], [], []
    for d in msg.detections:
        cx, cy = float(d.bbox.center.position.x), float(d.bbox.center.position.y)
        hw, hh = float(d.bbox.size_x) * 0.5, float(d.bbox.size_y) * 0.5
        boxes.append((cx - hw, cy - hh, cx + hw, cy + hh))
        if len(d.results):
            best = max(d.results, key=lambda r: float(r.hypothesis.score))
            scores.append(float(best.hypothesis.score))
            class_ids.append(parse_class_id(best.hypothesis.class_id, labels))
        else:
            scores.append(0.0)
            class_ids.append(-1)
    return Detections(np.asarray(boxes, np.float64).reshape(-1, 4), scores, class_ids)


# -- label info ------------------------------------------------------------------------------------------

UINT16_MAX = 65535


def label_info_msg(types, labels, header, threshold=0.0):
    """``vision_msgs/LabelInfo``: ``class_map`` = (index, name) for every label, ``threshold`` = the score
    threshold in use (float32 in [0, 1])."""
    labels = list(labels)
    if len(labels) > UINT16_MAX:
        raise ConfigError('LabelInfo holds uint16 class ids; %d labels is too many' % len(labels))
    t = float(threshold)
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise ConfigError('LabelInfo threshold must be in [0, 1], got %r' % (threshold,))
    class_map = [types.VisionClass(class_id=i, class_name=str(name)) for i, name in enumerate(labels)]
    return types.LabelInfo(header=copy_header(types, header), class_map=class_map,
                           threshold=float(np.float32(t)))


def labels_from_label_info(msg):
    """Class names by index from a ``LabelInfo`` (indices without an entry get their number as name)."""
    mapping = {int(c.class_id): str(c.class_name) for c in msg.class_map}
    n = max(mapping) + 1 if mapping else 0
    return [mapping.get(i, str(i)) for i in range(n)]


# -- diagnostics -----------------------------------------------------------------------------------------

class DiagnosticLevel(enum.Enum):
    """``diagnostic_msgs/DiagnosticStatus`` levels (the class constants carry the field's Python type)."""
    OK = 'OK'
    WARN = 'WARN'
    ERROR = 'ERROR'
    STALE = 'STALE'


@dataclass
class StageStatus:
    """One entry of ``/diagnostics``: a stage's name, level, message and key/value figures."""
    name: str
    level: DiagnosticLevel = DiagnosticLevel.OK
    message: str = ''
    hardware_id: str = ''
    values: Optional[Sequence] = None   # [(key, value)], values formatted with str()


def diagnostic_array_msg(types, statuses, stamp_ns):
    """``diagnostic_msgs/DiagnosticArray`` of :class:`StageStatus` entries.

    The ``level`` field is a ROS ``byte``: rclpy stores it as ``bytes`` of length 1 and rosbags as ``int``,
    so the value is taken from the message class's own constant (``DiagnosticStatus.OK`` ...).
    """
    status_cls = types.DiagnosticStatus
    out = []
    for s in statuses:
        values = [types.KeyValue(key=str(k), value=_format_value(v)) for k, v in (s.values or ())]
        out.append(status_cls(level=getattr(status_cls, s.level.value), name=str(s.name),
                              message=str(s.message), hardware_id=str(s.hardware_id), values=values))
    return types.DiagnosticArray(header=make_header(types, stamp_ns, ''), status=out)


def _format_value(v):
    if isinstance(v, float) or isinstance(v, np.floating):
        return '%.6g' % float(v)
    return str(v)


def __getattr__(name):
    # The rosbag2 writer lives in qvision_ros.bag (it needs rosbags); reachable from here as well.
    if name == 'DetectionBagWriter':
        from .bag import DetectionBagWriter
        return DetectionBagWriter
    raise AttributeError('module %r has no attribute %r' % (__name__, name))


__all__ = ['ClassIdMode', 'NS_PER_S', 'stamp_to_ns', 'header_stamp_ns', 'make_time', 'make_header',
           'copy_header', 'image_msg_to_array', 'image_msg_to_bgr', 'array_to_image_msg', 'bgr_to_image_msg',
           'sanitize_detections', 'class_id_string', 'detections_to_msg', 'empty_detections_msg',
           'parse_class_id', 'msg_to_detections', 'label_info_msg', 'labels_from_label_info',
           'DiagnosticLevel', 'StageStatus', 'diagnostic_array_msg', 'ImageError']
