"""The pure message layer against the ROS 2 message definitions (rosbags' typestores, Humble and Jazzy).

Every message built through :mod:`qvision_ros.messages` is checked field by field with
``rclpy_double.msgcheck.check_message`` (the field list from the typestore, the value types as rclpy's
generated setters demand them) and serialized to CDR and back with rosbags - a message with a missing,
extra or wrongly typed field fails one or the other.
"""
import array

import numpy as np
import pytest

from qvision_ros import messages as m
from qvision_ros.bag import DetectionBagWriter, read_detection_bag
from qvision_ros.errors import ConfigError, DataError, ImageError, InputError
from qvision_ros.typestore import DISTROS, TYPE_NAMES, VISION_MSGS, MessageTypes, message_types, typestore
from qvision_ros.vision.decode import Detections
from qvision_ros.vision.preprocess import Letterbox
from rclpy_double.msgcheck import FieldError, check_message

LABELS = ['car', 'pedestrian', 'cyclist', 'traffic_sign', 'traffic_cone']


@pytest.fixture(params=DISTROS)
def distro(request):
    return request.param


def _valid(msg, attr, distro):
    """check_message + a CDR round trip; returns the deserialized copy."""
    store = typestore(distro)
    name = TYPE_NAMES[attr]
    check_message(msg, name, store)
    raw = store.serialize_cdr(msg, name)
    return store.deserialize_cdr(raw, name)


def _header(types, ns=1_700_000_123_456_789_012 % 2 ** 62, frame='camera_optical'):
    return m.make_header(types, ns % (2 ** 31 * m.NS_PER_S), frame)


def _random_dets(rng, w, h, n):
    x1 = rng.uniform(0, w - 2, n)
    y1 = rng.uniform(0, h - 2, n)
    x2 = np.minimum(x1 + rng.uniform(1, w / 2, n), w)
    y2 = np.minimum(y1 + rng.uniform(1, h / 2, n), h)
    return Detections(np.stack([x1, y1, x2, y2], 1), rng.uniform(0, 1, n), rng.integers(0, 5, n))


# -- definitions ---------------------------------------------------------------------------------------

def test_vision_msgs_registered_in_both_distros(distro):
    store = typestore(distro)
    for name in VISION_MSGS:
        assert name in store.types and name in store.fielddefs
    # The layout DESIGN.md relies on (vision_msgs 4.x): bbox centre is vision_msgs/Pose2D with a Point2D.
    bbox = dict(store.fielddefs['vision_msgs/msg/BoundingBox2D'][1])
    assert bbox['center'][1] == 'vision_msgs/msg/Pose2D'
    assert [n for n, _ in store.fielddefs['vision_msgs/msg/Pose2D'][1]] == ['position', 'theta']
    assert [n for n, _ in store.fielddefs['vision_msgs/msg/Detection2D'][1]] == ['header', 'results', 'bbox', 'id']
    vc = dict(store.fielddefs['vision_msgs/msg/VisionClass'][1])
    assert vc['class_id'][1] == ('uint16', 0)
    # Every class a MessageTypes holds is the typestore's class of its ROS name.
    types = message_types(distro)
    for attr, name in TYPE_NAMES.items():
        assert getattr(types, attr).__msgtype__ == name


def test_field_checker_rejects_what_rclpy_rejects(distro):
    types = message_types(distro)
    store = typestore(distro)
    ok = types.Point2D(x=1.0, y=2.0)
    check_message(ok, 'vision_msgs/msg/Point2D', store)
    with pytest.raises(FieldError, match='float'):
        check_message(types.Point2D(x=np.float32(1.0), y=2.0), 'vision_msgs/msg/Point2D', store)
    with pytest.raises(FieldError, match='int'):
        check_message(types.VisionClass(class_id=np.int64(3), class_name='a'), 'vision_msgs/msg/VisionClass', store)
    with pytest.raises(FieldError, match='65535'):
        check_message(types.VisionClass(class_id=70000, class_name='a'), 'vision_msgs/msg/VisionClass', store)
    with pytest.raises(FieldError, match='must be a vision_msgs/msg/Point2D'):
        check_message(types.Pose2D(position=types.Point2D(x=0.0, y=0.0), theta=0.0), 'vision_msgs/msg/Point2D',
                      store)
    with pytest.raises(FieldError, match='float32'):
        check_message(types.LabelInfo(header=_header(types), class_map=[], threshold=1e39),
                      'vision_msgs/msg/LabelInfo', store)


# -- headers -------------------------------------------------------------------------------------------

def test_header_copy_and_stamps(distro):
    types = message_types(distro)
    h = m.make_header(types, 12 * m.NS_PER_S + 345, 'cam0')
    assert (h.stamp.sec, h.stamp.nanosec, h.frame_id) == (12, 345, 'cam0')
    c = m.copy_header(types, h)
    assert c is not h and c.stamp is not h.stamp
    assert m.header_stamp_ns(c) == 12 * m.NS_PER_S + 345 and c.frame_id == 'cam0'
    _valid(c, 'Header', distro)
    with pytest.raises(InputError):
        m.make_time(types, -1)
    with pytest.raises(InputError):
        m.make_time(types, 2 ** 31 * m.NS_PER_S)


# -- images --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('encoding', ['bgr8', 'rgb8', 'bgra8', 'rgba8', 'mono8'])
def test_image_round_trip(distro, encoding):
    types = message_types(distro)
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (37, 54, 3), dtype=np.uint8)
    msg = m.bgr_to_image_msg(types, bgr, _header(types), encoding)
    back = _valid(msg, 'Image', distro)
    assert (back.width, back.height, back.encoding) == (54, 37, encoding)
    assert back.header.frame_id == 'camera_optical'
    arr = m.image_msg_to_array(back)
    channels = {'mono8': 1, 'bgra8': 4, 'rgba8': 4}.get(encoding, 3)
    assert arr.shape == (37, 54, channels) and back.step == 54 * channels
    if encoding != 'mono8':
        np.testing.assert_array_equal(m.image_msg_to_bgr(back), bgr)


def test_image_rclpy_style_buffer():
    """The rclpy flavour stores uint8[] as array.array('B') - readable by the same code."""
    rosbags_types = message_types('jazzy')
    types = MessageTypes(**{k: getattr(rosbags_types, k) for k in TYPE_NAMES})  # rclpy-style arrays
    bgr = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    msg = m.bgr_to_image_msg(types, bgr, _header(types))
    assert isinstance(msg.data, array.array) and msg.data.typecode == 'B'
    np.testing.assert_array_equal(m.image_msg_to_bgr(msg), bgr)


def test_image_padded_step_and_malformed(distro):
    types = message_types(distro)
    bgr = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    padded = np.zeros((3, 20), np.uint8)
    padded[:, :15] = bgr.reshape(3, 15)
    msg = types.Image(header=_header(types), height=3, width=5, encoding='bgr8', is_bigendian=0, step=20,
                      data=types.uint8_array(padded.tobytes()))
    _valid(msg, 'Image', distro)
    np.testing.assert_array_equal(m.image_msg_to_bgr(msg), bgr)
    for field, value, match in (('step', 10, 'step'), ('encoding', 'weird8', 'unsupported'),
                                ('data', types.uint8_array(b'\0' * 30), 'holds 30 bytes')):
        bad = types.Image(header=_header(types), height=3, width=5, encoding='bgr8', is_bigendian=0, step=20,
                          data=msg.data)
        setattr(bad, field, value)
        with pytest.raises(ImageError, match=match):
            m.image_msg_to_array(bad)


# -- detections ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('size', [(640, 480), (1280, 720), (1920, 1080), (320, 320), (752, 480)])
def test_detections_round_trip_several_resolutions(distro, size):
    types = message_types(distro)
    w, h = size
    rng = np.random.default_rng(w * h)
    det = _random_dets(rng, w, h, 7)
    header = _header(types, 5 * m.NS_PER_S + 7, 'front')
    msg = m.detections_to_msg(types, det, header, image_size=size)
    back = _valid(msg, 'Detection2DArray', distro)
    assert back.header.frame_id == 'front' and m.header_stamp_ns(back.header) == 5 * m.NS_PER_S + 7
    assert len(back.detections) == 7
    for d, box, score, cid in zip(back.detections, det.boxes, det.scores, det.class_ids):
        assert d.header.frame_id == 'front' and m.header_stamp_ns(d.header) == 5 * m.NS_PER_S + 7
        x1, y1, x2, y2 = (float(v) for v in box)
        assert d.bbox.center.position.x == pytest.approx((x1 + x2) / 2, abs=1e-4)
        assert d.bbox.center.position.y == pytest.approx((y1 + y2) / 2, abs=1e-4)
        assert d.bbox.size_x == pytest.approx(x2 - x1, abs=1e-4)
        assert d.bbox.size_y == pytest.approx(y2 - y1, abs=1e-4)
        assert d.bbox.center.theta == 0.0
        assert len(d.results) == 1
        hyp = d.results[0].hypothesis
        assert hyp.class_id == str(int(cid)) and 0.0 <= hyp.score <= 1.0
        assert hyp.score == pytest.approx(float(score), abs=1e-6)
        assert d.results[0].pose.pose.orientation.w == 1.0
    rt = m.msg_to_detections(back)
    np.testing.assert_allclose(rt.boxes, det.boxes, atol=1e-3)
    np.testing.assert_array_equal(rt.class_ids, det.class_ids)
    assert (rt.boxes[:, 2] <= w + 1e-3).all() and (rt.boxes[:, 3] <= h + 1e-3).all()


def test_letterboxed_boxes_map_back_to_each_camera(distro):
    """A box found in the 320x320 network image lands on the same object in every camera resolution."""
    types = message_types(distro)
    for w, h in ((640, 480), (1280, 720), (1920, 1080), (480, 640)):
        lb = Letterbox.compute(w, h, 320, 320)
        src = np.array([[0.1 * w, 0.2 * h, 0.4 * w, 0.9 * h]])
        net = lb.to_network(src)
        msg = m.detections_to_msg(types, Detections(lb.to_source(net), [0.9], [1]), _header(types),
                                  image_size=(w, h))
        d = m.msg_to_detections(_valid(msg, 'Detection2DArray', distro))
        np.testing.assert_allclose(d.boxes, src, atol=1e-3 * max(w, h))


def test_empty_and_invalid_boxes(distro):
    types = message_types(distro)
    msg = m.detections_to_msg(types, Detections(), _header(types), image_size=(640, 480))
    back = _valid(msg, 'Detection2DArray', distro)
    assert back.detections == [] and back.header.frame_id == 'camera_optical'
    assert len(m.msg_to_detections(back)) == 0
    assert _valid(m.empty_detections_msg(types, _header(types)), 'Detection2DArray', distro).detections == []
    det = Detections([[10, 10, 50, 50], [np.nan, 0, 5, 5], [700, 10, 800, 50], [-20, -20, 30, 40],
                      [5, 5, 5, 9], [1, 1, 2, 2]],
                     [0.5, 0.9, 0.8, 1.7, 0.6, np.inf], [0, 1, 2, 3, 4, 0])
    back = _valid(m.detections_to_msg(types, det, _header(types), image_size=(640, 480)), 'Detection2DArray',
                  distro)
    got = m.msg_to_detections(back)
    # NaN box, box entirely right of the image, zero-width box and infinite score dropped; partial clipped.
    np.testing.assert_allclose(got.boxes, [[10, 10, 50, 50], [0, 0, 30, 40]])
    np.testing.assert_allclose(got.scores, [0.5, 1.0])
    np.testing.assert_array_equal(got.class_ids, [0, 3])


def test_class_id_names(distro):
    types = message_types(distro)
    det = Detections([[0, 0, 10, 10], [5, 5, 9, 9]], [0.5, 0.6], [2, 7])
    msg = m.detections_to_msg(types, det, _header(types), class_id_mode='name', labels=LABELS)
    back = _valid(msg, 'Detection2DArray', distro)
    assert [d.results[0].hypothesis.class_id for d in back.detections] == ['cyclist', '7']
    np.testing.assert_array_equal(m.msg_to_detections(back, LABELS).class_ids, [2, 7])
    with pytest.raises(InputError, match='labels'):
        m.msg_to_detections(back)
    with pytest.raises(ConfigError):
        m.detections_to_msg(types, det, _header(types), class_id_mode='names')


def test_label_info(distro):
    types = message_types(distro)
    msg = m.label_info_msg(types, LABELS, _header(types), threshold=0.3)
    back = _valid(msg, 'LabelInfo', distro)
    assert [(c.class_id, c.class_name) for c in back.class_map] == list(enumerate(LABELS))
    assert back.threshold == pytest.approx(0.3, abs=1e-7)
    assert m.labels_from_label_info(back) == LABELS
    with pytest.raises(ConfigError):
        m.label_info_msg(types, LABELS, _header(types), threshold=1.5)


def test_diagnostics(distro):
    types = message_types(distro)
    statuses = [m.StageStatus('qvision: inference', m.DiagnosticLevel.WARN, 'dropping frames',
                              values=[('dropped_frames', 3), ('latency_ms', 12.3456789)]),
                m.StageStatus('qvision: preprocess')]
    back = _valid(m.diagnostic_array_msg(types, statuses, 9 * m.NS_PER_S), 'DiagnosticArray', distro)
    assert back.status[0].level == types.DiagnosticStatus.WARN
    assert [(kv.key, kv.value) for kv in back.status[0].values] == [('dropped_frames', '3'),
                                                                    ('latency_ms', '12.3457')]
    assert back.status[1].level == types.DiagnosticStatus.OK


# -- bags ----------------------------------------------------------------------------------------------

def test_bag_writer_round_trip(tmp_path, distro):
    from rosbags.rosbag2 import Reader
    rng = np.random.default_rng(3)
    path = tmp_path / 'out_bag'
    frames = []
    with DetectionBagWriter(path, image_topic='image_annotated', distro=distro) as bag:
        for i in range(4):
            det = _random_dets(rng, 640, 480, i)   # includes an empty frame
            img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) if i == 2 else None
            bag.write(1000 + i * 33_000_000, 'cam', det, 640, 480, labels=LABELS, image_bgr=img)
            frames.append(det)
    got = read_detection_bag(path, distro=distro)
    assert [t for t, _, _ in got] == [1000 + i * 33_000_000 for i in range(4)]
    for (_, frame, det), ref in zip(got, frames):
        assert frame == 'cam'
        np.testing.assert_allclose(det.boxes, ref.boxes, atol=1e-3)
        np.testing.assert_array_equal(det.class_ids, ref.class_ids)
    store = typestore(distro)
    with Reader(path) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {'/detections': 'vision_msgs/msg/Detection2DArray',
                          '/label_info': 'vision_msgs/msg/LabelInfo',
                          '/image_annotated': 'sensor_msgs/msg/Image'}
        for conn, _, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            check_message(msg, conn.msgtype, store)
            if conn.msgtype == 'sensor_msgs/msg/Image':
                assert (msg.width, msg.height, msg.encoding) == (64, 48, 'bgr8')
            if conn.msgtype == 'vision_msgs/msg/LabelInfo':
                assert m.labels_from_label_info(msg) == LABELS
    with pytest.raises(DataError, match='already exists'):
        DetectionBagWriter(path)


def test_bag_writer_closed_and_bad_topic(tmp_path):
    bag = DetectionBagWriter(tmp_path / 'b')
    bag.close()
    bag.close()
    with pytest.raises(DataError, match='closed'):
        bag.write(0, 'f', Detections(), 10, 10)
    with pytest.raises(ConfigError):
        DetectionBagWriter(tmp_path / 'c', topic='has space')
    with pytest.raises(ConfigError):
        DetectionBagWriter(tmp_path / 'd', distro='foxy')


def test_qvision_run_bag_out(tmp_path):
    """``qvision run --bag-out`` writes the detections it reports into a rosbag2 of Detection2DArray."""
    import json

    from qvision_ros.cli import main
    from qvision_ros.nodes.params import DATA_DIR
    out = tmp_path / 'run'
    status = main(['run', '%s/sample_road.mp4' % DATA_DIR, '--max-frames', '3', '--no-video', '--bag-out', '-q',
                   '--frame-id', 'front', '--out', str(out)])
    assert status == 0
    records = [json.loads(line) for line in (out / 'detections.jsonl').read_text().splitlines()]
    got = read_detection_bag(out / 'detections_bag')
    assert len(got) == len(records) == 3
    for (stamp, frame_id, det), rec in zip(got, records):
        assert frame_id == 'front' == rec['frame_id']
        assert stamp == rec['stamp']['sec'] * m.NS_PER_S + rec['stamp']['nanosec']
        assert len(det) == len(rec['detections'])
