"""The inference node on the rclpy double: lifecycle, latest-frame policy under a slow model, several
cameras in one batch, run-time parameters (class filter, thresholds) and start-up rejection of bad
parameters.  Frames go straight to ``image_preprocessed`` (network size), so boxes come back in those
pixels."""
import time

import numpy as np
import pytest

import rclpy_double
from rclpy_double.harness import (cached_engine_factory, errors_logged, executor, image_msg, probe, ros2_param_set,
                                  ros_session, scene, slow_factory)

from qvision_ros.errors import ConfigError
from qvision_ros.messages import header_stamp_ns, msg_to_detections
from qvision_ros.nodes.policy import LatestSlot, StampPairer
from qvision_ros.vision.preprocess import Preprocessor

PRE = Preprocessor(320, 320)


def _network_frame(w, h, seed):
    bgr, _, _ = scene(w, h, seed)
    image, _ = PRE.resize(bgr, 'bgr8')
    return image.copy()   # rgb8, 320 x 320


def _inference(overrides=None, **kw):
    from rclpy.parameter import Parameter

    from qvision_ros.nodes.inference import InferenceNode
    params = [Parameter(k, value=v) for k, v in dict({'diagnostics_period_sec': 0.0}, **(overrides or {})).items()]
    kw.setdefault('engine_factory', cached_engine_factory)
    return InferenceNode(parameter_overrides=params, **kw)


def test_lifecycle_transitions():
    with ros_session():
        from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
        from rclpy.lifecycle import TransitionCallbackReturn
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2DArray
        node = _inference({'autostart': False})
        p = probe()
        out = p.listen(Detection2DArray, 'detections_raw')
        cam = p.publisher(Image, 'image_preprocessed')
        ex = executor(node, p)
        assert node.engine is None and node._current_state.label == 'unconfigured'
        with pytest.raises(_rclpy.RCLError):
            node.trigger_activate()
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.engine is not None and node._current_state.label == 'inactive'
        frame = _network_frame(640, 480, 1)
        cam.publish(image_msg(frame[:, :, ::-1].copy(), 1_000, encoding='rgb8'))
        assert rclpy_double.spin_until(ex, lambda: node.counters['inactive_dropped'] == 1, 5.0)
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        cam.publish(image_msg(frame[:, :, ::-1].copy(), 2_000, encoding='rgb8'))
        assert rclpy_double.spin_until(ex, lambda: out, 20.0)
        assert header_stamp_ns(out[0].header) == 2_000 and len(out[0].detections) > 0
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        cam.publish(image_msg(frame[:, :, ::-1].copy(), 3_000, encoding='rgb8'))
        assert rclpy_double.spin_until(ex, lambda: node.counters['inactive_dropped'] == 2, 5.0)
        assert len(out) == 1
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.engine is None and list(node.subscriptions) == []
        assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
        assert node._current_state.label == 'finalized'


def test_configure_fails_cleanly_on_a_bad_model(tmp_path):
    bad = tmp_path / 'broken.onnx'
    bad.write_bytes(b'not an onnx file')
    with ros_session():
        from rclpy.lifecycle import TransitionCallbackReturn

        from qvision_ros.runtime.engine import Engine
        node = _inference({'autostart': False, 'model_path': str(bad)}, engine_factory=Engine)
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._current_state.label == 'unconfigured' and node.engine is None
        assert errors_logged('configure failed')
        with pytest.raises(ConfigError, match='could not configure'):
            _inference({'model_path': str(bad)}, engine_factory=Engine, node_name='autostarted')
        # a model of another input size than the parameters say
        node2 = _inference({'autostart': False, 'input_width': 640}, node_name='wrong_size')
        assert node2.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert any('takes 320x320 images' in m for m in errors_logged())


def test_frames_dropped_and_counted_while_inference_is_slow():
    with ros_session():
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2DArray
        factory = slow_factory(0.25)
        node = _inference(engine_factory=factory)
        p = probe()
        out = p.listen(Detection2DArray, 'detections_raw')
        cam = p.publisher(Image, 'image_preprocessed')
        ex = executor(node, p)
        frame = image_msg(_network_frame(640, 480, 2)[:, :, ::-1].copy(), 0, encoding='rgb8')
        sent = []
        start = time.monotonic()
        for i in range(20):                       # 20 frames at 40 fps into a model that runs at < 4 fps
            frame.header.stamp.sec = 100 + i
            cam.publish(frame)
            sent.append((100 + i) * 1_000_000_000)
            rclpy_double.spin_until(ex, lambda: False, 0.025)
        assert rclpy_double.spin_until(ex, lambda: node.slot.pending() == 0 and not node._worker_busy(), 5.0)
        rclpy_double.spin_until(ex, lambda: False, 0.3)
        elapsed = time.monotonic() - start
        got = [header_stamp_ns(m.header) for m in out]
        assert node.counters['frames_in'] == 20
        assert node.dropped_frames > 0
        assert len(got) + node.dropped_frames == 20          # every frame either processed or dropped
        assert got == sorted(got) and got[-1] == sent[-1]     # in order, and the newest frame was processed
        assert len(got) <= elapsed / 0.25 + 1                 # nothing queued behind the slow model
        status = node.statuses()[0]
        values = dict((k, v) for k, v in status.values)
        assert values['dropped_frames'] == node.dropped_frames and status.level.value == 'WARN'


def test_several_cameras_run_as_one_batch():
    with ros_session():
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2DArray
        factory = slow_factory(0.0)
        node = _inference({'input_topics': ['/cam1/image_preprocessed', '/cam2/image_preprocessed'],
                           'batch_window_ms': 200.0}, engine_factory=factory)
        p1, p2 = probe('cam1', 'p1'), probe('cam2', 'p2')
        out1 = p1.listen(Detection2DArray, 'detections_raw')
        out2 = p2.listen(Detection2DArray, 'detections_raw')
        ex = executor(node, p1, p2)
        frames = {1: _network_frame(1280, 720, 3), 2: _network_frame(640, 480, 4)}
        calls_before = factory.made[0].calls
        for cam, p in ((1, p1), (2, p2)):
            p.publisher(Image, 'image_preprocessed').publish(
                image_msg(frames[cam][:, :, ::-1].copy(), cam * 1_000_000_000, 'cam%d' % cam, 'rgb8'))
        assert rclpy_double.spin_until(ex, lambda: out1 and out2, 20.0)
        assert out1[0].header.frame_id == 'cam1' and header_stamp_ns(out1[0].header) == 1_000_000_000
        assert out2[0].header.frame_id == 'cam2' and header_stamp_ns(out2[0].header) == 2_000_000_000
        assert node.counters['batches'] == 1
        # the shipped model has a fixed batch of 1: one engine call per camera inside the batch
        assert node.batchable is False and factory.made[0].calls - calls_before == 2
        for cam, out in ((1, out1), (2, out2)):
            ref = _single(frames[cam])
            got = msg_to_detections(out[0])
            np.testing.assert_allclose(np.sort(got.scores), np.sort(ref.scores), atol=1e-5)


def _single(rgb):
    from qvision_ros.nodes.params import default_model_path
    from qvision_ros.vision.decode import Decoder
    engine = cached_engine_factory(default_model_path())
    pre = Preprocessor(320, 320, layout='nchw')
    x = pre.normalize(rgb, 'rgb8')
    return Decoder(num_classes=5, max_detections=100)(engine.run({'images': x}))[0]


def test_class_filter_and_thresholds_at_run_time():
    with ros_session():
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2DArray
        node = _inference()
        p = probe()
        out = p.listen(Detection2DArray, 'detections_raw')
        cam = p.publisher(Image, 'image_preprocessed')
        ex = executor(node, p)
        frame = next(f for f in (_network_frame(1280, 720, seed) for seed in range(5, 40))
                     if len(set(_single(f).class_ids.tolist())) >= 2)
        msg = image_msg(frame[:, :, ::-1].copy(), 1, encoding='rgb8')

        def run():
            n = len(out)
            msg.header.stamp.nanosec += 1
            cam.publish(msg)
            assert rclpy_double.spin_until(ex, lambda: len(out) > n, 20.0)
            return msg_to_detections(out[-1])
        everything = run()
        assert len(set(everything.class_ids.tolist())) >= 2
        keep = int(everything.class_ids[0])
        # as `ros2 param set` does it: the list arrives as an array.array('q')
        assert ros2_param_set(node, 'classes', '[%d]' % keep).successful
        filtered = run()
        assert len(filtered) > 0 and set(filtered.class_ids.tolist()) == {keep}
        assert node.set_parameters([Parameter('classes', value=[-1])])[0].successful
        assert len(run()) == len(everything)
        thr = float(np.median(everything.scores))
        assert node.set_parameters([Parameter('score_threshold', value=thr)])[0].successful
        strict = run()
        assert 0 < len(strict) < len(everything) and (strict.scores >= thr).all()
        # rejected changes leave the node as it was
        for name, value in (('classes', [-2]), ('score_threshold', 1.5), ('classes', [0.5]),
                            ('model_path', '/elsewhere.onnx'), ('nms_iou_threshold', -0.1)):
            res = node.set_parameters([Parameter(name, value=value)])[0]
            assert not res.successful, (name, value)
        for name, text, reason in (('classes', '[-2]', 'entries must be >= -1'), ('score_threshold', '1',
                                                                                   'Wrong parameter type'),
                                   ('score_threshold', '1.5', 'out of range'), ('num_threads', '1', 'read-only'),
                                   ('no_such_parameter', '1', 'undeclared parameter(s): []')):
            res = ros2_param_set(node, name, text)
            assert not res.successful and reason in res.reason, (name, text, res.reason)
        assert node.get_parameter('score_threshold').value == thr
        assert list(node.get_parameter('classes').value) == [-1]


@pytest.mark.parametrize('name,value,match', [
    ('score_threshold', 1.5, 'score_threshold'),
    ('input_width', 0, 'input_width'),
    ('resize_mode', 'crop', 'resize_mode must be one of letterbox, stretch'),
    ('labels_path', '/no/such/labels.txt', 'no file'),
    ('score_threshold', 1, 'wrong type'),
    ('classes', [-3], 'classes entries must be >= -1'),
    ('input_topics', ['image_preprocessed', ''], 'non-empty'),
])
def test_bad_parameter_rejected_at_start_up(name, value, match):
    with ros_session():
        with pytest.raises(ConfigError, match=match) as info:
            _inference({name: value})
        assert 'config/pipeline.yaml' in str(info.value)


def test_latest_slot_and_stamp_pairer():
    slot = LatestSlot()
    for i in range(5):
        slot.put(0, i)
    slot.put(1, 'b')
    assert slot.take_all(timeout=0.0) == {0: 4, 1: 'b'} and slot.dropped == 4 and slot.received == 6
    assert slot.take_all(timeout=0.01) == {}
    pairer = StampPairer(max_delay_ns=100, max_items=2)
    assert pairer.add('image', (1, 'c'), 'i1', now_ns=0) is None
    assert pairer.add('detections', (2, 'c'), 'd2', now_ns=10) is None
    assert pairer.add('image', (2, 'c'), 'i2', now_ns=20) == ('i2', 'd2')
    assert pairer.add('detections', (1, 'other'), 'dx', now_ns=30) is None    # frame_id differs
    assert pairer.add('image', (3, 'c'), 'i3', now_ns=500) is None              # i1 and dx expire
    assert pairer.unpaired == {'image': 1, 'detections': 1} and pairer.paired == 1


def test_int8_model_is_fed_its_quantised_input(tmp_path):
    """A QDQ model's input quantisation is done by the preprocessing's table: the node publishes exactly
    what the engine gives for the float input."""
    from qvision_ros.nodes.params import default_model_path
    from qvision_ros.runtime.engine import Engine
    from qvision_ros.runtime.zoo import quantize_qdq
    from qvision_ros.vision.decode import Decoder
    path = tmp_path / 'detector.qdq.onnx'
    with open(str(default_model_path()).replace('.int8.onnx', '.onnx'), 'rb') as fh:
        path.write_bytes(quantize_qdq(fh.read(), n_calib=2, op_types=['Conv']))
    with ros_session():
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2DArray
        node = _inference({'model_path': str(path)}, engine_factory=Engine)
        assert node.input_quant is not None and node.preprocessor.quantized
        p = probe()
        out = p.listen(Detection2DArray, 'detections_raw')
        ex = executor(node, p)
        rgb = _network_frame(640, 480, 5)
        p.publisher(Image, 'image_preprocessed').publish(image_msg(rgb[:, :, ::-1].copy(), 7, encoding='rgb8'))
        assert rclpy_double.spin_until(ex, lambda: out, 20.0)
        engine = Engine(str(path), num_threads=1)
        x = Preprocessor(320, 320, layout='nchw').normalize(rgb, 'rgb8')
        ref = Decoder(num_classes=5, max_detections=100)(engine.run({'images': x}))[0]
        got = msg_to_detections(out[0])
        assert len(ref) > 0
        np.testing.assert_allclose(np.sort(got.scores), np.sort(ref.scores), atol=1e-6)
