"""Detections (and optionally the annotated frames) into a rosbag2, without ROS.

Used by ``qvision run --bag-out``: every processed frame becomes one ``vision_msgs/msg/Detection2DArray``
on ``topic`` (built by :func:`qvision_ros.messages.detections_to_msg`, so the bag holds exactly what the
nodes would publish), optionally one ``sensor_msgs/msg/Image`` (bgr8) on ``image_topic``, and - the first
time labels are given - one ``vision_msgs/msg/LabelInfo`` on ``label_topic``.  Messages are CDR-serialized
with a rosbags typestore of the chosen distribution (:mod:`qvision_ros.typestore`); the bag is written in
rosbag2 metadata format version 8 (what Jazzy's rosbag2 writes; Humble's reader takes it too) with the
sqlite3 storage.  ``ros2 bag info`` / ``ros2 bag play`` read it on a machine that has vision_msgs.
"""
import os

from .errors import ConfigError, DataError
from .messages import (ClassIdMode, bgr_to_image_msg, detections_to_msg, label_info_msg, make_header)
from .typestore import DISTROS, TYPE_NAMES, message_types, typestore

BAG_VERSION = 8


def _topic(name, what):
    if not isinstance(name, str) or not name.strip('/') or any(c.isspace() for c in name):
        raise ConfigError('%s must be a non-empty topic name without spaces, got %r' % (what, name))
    return name if name.startswith('/') else '/' + name


class DetectionBagWriter:
    """Write detections per frame into a new rosbag2 directory ``path`` (which must not exist yet).

    ``topic``: the Detection2DArray topic; ``image_topic``: None, or the topic of the frames passed as
    ``image_bgr``; ``label_topic``: where LabelInfo goes; ``distro``: 'humble' or 'jazzy' (message
    definitions and hashes of that distribution); ``class_id_mode``: :class:`ClassIdMode` (or 'index' /
    'name') for ``ObjectHypothesis.class_id``; ``labels``: class names used when :meth:`write` gets none;
    ``score_threshold``: the threshold LabelInfo reports.  Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path, topic='detections', image_topic=None, distro='humble', label_topic='label_info',
                 class_id_mode=ClassIdMode.INDEX, score_threshold=0.0, labels=None):
        from rosbags.rosbag2 import Writer

        if distro not in DISTROS:
            raise ConfigError('distro must be one of %s, got %r' % (DISTROS, distro))
        self.path = os.fspath(path)
        if os.path.exists(self.path):
            raise DataError('rosbag2 output %s already exists; rosbag2 writes a new directory - choose another '
                            'path or remove it' % self.path)
        self.distro = distro
        self.class_id_mode = ClassIdMode.parse(class_id_mode)
        self.score_threshold = float(score_threshold)
        self.labels = None if labels is None else [str(name) for name in labels]
        self.topic = _topic(topic, 'topic')
        self.image_topic = None if image_topic is None else _topic(image_topic, 'image_topic')
        self.label_topic = _topic(label_topic, 'label_topic')
        self._types = message_types(distro)
        self._store = typestore(distro)
        self._writer = Writer(self.path, version=BAG_VERSION)
        try:
            self._writer.open()
        except Exception as exc:
            raise DataError('cannot create rosbag2 %s: %s' % (self.path, exc)) from exc
        self._connections = {}
        self._labels_written = False
        self.frames = 0

    def _connection(self, topic, attr):
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, TYPE_NAMES[attr], typestore=self._store)
            self._connections[topic] = conn
        return conn

    def _put(self, topic, attr, msg, stamp_ns):
        data = self._store.serialize_cdr(msg, TYPE_NAMES[attr])
        self._writer.write(self._connection(topic, attr), int(stamp_ns), bytes(data))

    def write(self, stamp_ns, frame_id=None, detections=None, width=None, height=None, labels=None,
              image_bgr=None):
        """Write one frame's detections (source pixels of a ``width x height`` frame; clipped to it, invalid
        boxes dropped), stamped ``stamp_ns`` with ``frame_id``; the frame itself when ``image_bgr`` is given
        and the writer has an ``image_topic``; LabelInfo once, the first time labels are known.

        ``stamp_ns`` may instead be a :class:`qvision_ros.pipeline.Result` (anything with ``stamp_ns``,
        ``frame_id``, ``detections``, ``width``, ``height`` and optionally ``annotated``), as
        ``qvision run --bag-out`` passes it.
        """
        if self._writer is None:
            raise DataError('DetectionBagWriter for %s is closed' % self.path)
        if hasattr(stamp_ns, 'detections'):
            result = stamp_ns
            stamp_ns, frame_id, detections = result.stamp_ns, result.frame_id, result.detections
            width, height = result.width, result.height
            if image_bgr is None:
                image_bgr = getattr(result, 'annotated', None)
        labels = self.labels if labels is None else labels
        header = make_header(self._types, stamp_ns, frame_id)
        if labels is not None and not self._labels_written:
            self._put(self.label_topic, 'LabelInfo',
                      label_info_msg(self._types, labels, header, self.score_threshold), stamp_ns)
            self._labels_written = True
        msg = detections_to_msg(self._types, detections, header, image_size=(width, height),
                                class_id_mode=self.class_id_mode, labels=labels)
        self._put(self.topic, 'Detection2DArray', msg, stamp_ns)
        if image_bgr is not None and self.image_topic is not None:
            self._put(self.image_topic, 'Image', bgr_to_image_msg(self._types, image_bgr, header), stamp_ns)
        self.frames += 1

    def close(self):
        """Finish the bag (index and metadata.yaml); calling it again does nothing."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def read_detection_bag(path, topic='detections', distro='humble', labels=None):
    """``[(stamp_ns, frame_id, Detections)]`` of the Detection2DArray messages on ``topic`` of a bag (for
    tests and tools; boxes in the pixel frame the bag holds)."""
    from rosbags.rosbag2 import Reader

    from .messages import msg_to_detections

    store = typestore(distro)
    topic = _topic(topic, 'topic')
    out = []
    with Reader(os.fspath(path)) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        for conn, timestamp, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            out.append((timestamp, msg.header.frame_id, msg_to_detections(msg, labels)))
    return out


__all__ = ['DetectionBagWriter', 'read_detection_bag', 'BAG_VERSION']
