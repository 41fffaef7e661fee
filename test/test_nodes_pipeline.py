"""The three nodes wired by topics (and composed in one process) on the rclpy double.

Oracle: the pure pipeline in one go - :class:`Preprocessor` on the camera frame, the engine, the
:class:`Decoder` mapping boxes back through the letterbox - must give the detections the nodes publish on
``detections`` after the image went through ``image_preprocessed`` and the boxes through
``detections_raw`` in network pixels.  The synthetic scenes' exact boxes check that the result is
right, not only consistent.
"""
from pathlib import Path

import numpy as np
import pytest

import rclpy_double
from rclpy_double.harness import (cached_engine_factory, errors_logged, executor, image_msg, probe, ros_session,
                                  scene)

from qvision_ros.messages import header_stamp_ns, labels_from_label_info, msg_to_detections
from qvision_ros.nodes.params import default_model_path, read_labels
from qvision_ros.vision.decode import Decoder
from qvision_ros.vision.preprocess import Preprocessor

LABELS = read_labels('')


def _oracle(bgr, score_threshold=0.25, classes=None):
    engine = cached_engine_factory(default_model_path())
    pre = Preprocessor(320, 320, resize_mode='letterbox', pad_value=114, channel_order='rgb', layout='nchw')
    x, lb = pre(bgr)
    dec = Decoder(kind='auto', num_classes=5, score_threshold=score_threshold, nms_iou_threshold=0.45,
                  max_detections=100, classes=classes)
    return dec(engine.run({'images': x}), letterbox=lb)[0]


def iou_matrix(a, b):
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4] (x1, y1, x2, y2)."""
    a = np.asarray(a, np.float64)[:, None]
    b = np.asarray(b, np.float64)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])   # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _assert_same(got, ref, shape):
    h, w = shape[:2]
    assert len(got) == len(ref), (got, ref)
    if not len(ref):
        return
    iou = iou_matrix(ref.boxes.astype(np.float64), got.boxes.astype(np.float64))
    match = iou.argmax(axis=1)
    assert (iou.max(axis=1) > 0.999).all(), iou
    np.testing.assert_array_equal(got.class_ids[match], ref.class_ids)
    np.testing.assert_allclose(got.scores[match], ref.scores, atol=1e-5)
    assert (got.boxes[:, 0::2] >= 0).all() and (got.boxes[:, 0::2] <= w).all()
    assert (got.boxes[:, 1::2] >= 0).all() and (got.boxes[:, 1::2] <= h).all()


def _nodes(**overrides):
    from rclpy.parameter import Parameter

    from qvision_ros.nodes.inference import InferenceNode
    from qvision_ros.nodes.preprocess import PreprocessNode
    from qvision_ros.nodes.visualization import VisualizationNode
    params = [Parameter(k, value=v) for k, v in dict(diagnostics_period_sec=0.1, **overrides).items()]
    kw = dict(namespace='cam1', parameter_overrides=params)
    return (PreprocessNode(**kw), InferenceNode(engine_factory=cached_engine_factory, **kw),
            VisualizationNode(**kw))


def _outputs(p, annotated=False):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray, LabelInfo

    from qvision_ros.nodes.common import LABEL_INFO_QOS
    return dict(detections=p.listen(Detection2DArray, 'detections'),
                raw=p.listen(Detection2DArray, 'detections_raw'),
                annotated=p.listen(Image, 'image_annotated') if annotated else [],
                label_info=p.listen(LabelInfo, 'label_info', LABEL_INFO_QOS),
                diagnostics=p.listen(DiagnosticArray, '/diagnostics'))


def _rig():
    """The three nodes in /cam1, a probe listening to their outputs, a camera publisher and an executor."""
    from sensor_msgs.msg import Image
    pre, inf, vis = _nodes()
    p = probe('cam1')
    out = _outputs(p)
    return pre, inf, vis, p, out, p.publisher(Image, 'image_raw'), executor(pre, inf, vis, p)


def test_three_nodes_boxes_in_original_pixels_for_several_cameras():
    with ros_session():
        pre, inf, vis, p, out, cam, ex = _rig()
        cases = [(640, 480, 1), (1280, 720, 2), (480, 640, 3), (752, 480, 4)]
        hits = 0
        for i, (w, h, seed) in enumerate(cases):
            bgr, gt_boxes, gt_classes = scene(w, h, seed)
            stamp = 1_000_000_000 * (i + 1) + 123
            cam.publish(image_msg(bgr, stamp, 'cam1_optical'))
            assert rclpy_double.spin_until(ex, lambda: len(out['detections']) > i and len(out['raw']) > i, 20.0)
            msg = out['detections'][i]
            assert header_stamp_ns(msg.header) == stamp and msg.header.frame_id == 'cam1_optical'
            assert all(d.header.frame_id == 'cam1_optical' and header_stamp_ns(d.header) == stamp
                       for d in msg.detections)
            got = msg_to_detections(msg)
            _assert_same(got, _oracle(bgr), bgr.shape)
            # and against the scene's exact boxes: most objects found where they are
            if len(got):
                iou = iou_matrix(gt_boxes, got.boxes.astype(np.float64))
                hits += int((iou.max(axis=1) > 0.5).sum())
            raw = msg_to_detections(out['raw'][i])     # detections_raw is in network pixels
            assert (raw.boxes <= 320 + 1e-3).all() and header_stamp_ns(out['raw'][i].header) == stamp
        assert hits >= 0.5 * sum(len(scene(w, h, s)[1]) for w, h, s in cases)
        # LabelInfo (transient local): class map and threshold
        assert labels_from_label_info(out['label_info'][0]) == LABELS
        assert out['label_info'][0].threshold == pytest.approx(0.25)
        # nobody subscribed to image_annotated before: nothing was drawn
        assert vis.counters['annotated_out'] == 0
        assert rclpy_double.spin_until(ex, lambda: any(
            s.name == 'qvision_ros inference' for d in out['diagnostics'] for s in d.status), 5.0)
        keys = {kv.key for d in out['diagnostics'] for s in d.status for kv in s.values}
        assert {'dropped_frames', 'inference_ms_mean', 'input_rate_hz', 'end_to_end_latency_ms'} <= keys


def test_empty_frame_and_annotated_image_only_when_subscribed():
    with ros_session():
        from sensor_msgs.msg import Image
        pre, inf, vis, p, out, cam, ex = _rig()
        grey = np.full((360, 480, 3), 128, np.uint8)
        cam.publish(image_msg(grey, 5_000_000_000, 'cam'))
        assert rclpy_double.spin_until(ex, lambda: out['detections'], 20.0)
        assert out['detections'][0].detections == [] and out['detections'][0].header.frame_id == 'cam'
        assert out['annotated'] == []
        annotated = p.listen(Image, 'image_annotated')
        bgr, _, _ = scene(640, 480, 7)
        cam.publish(image_msg(bgr, 6_000_000_000, 'cam', encoding='rgb8'))
        assert rclpy_double.spin_until(ex, lambda: annotated, 20.0)
        img = annotated[0]
        assert (img.width, img.height, img.encoding) == (640, 480, 'bgr8')
        assert header_stamp_ns(img.header) == 6_000_000_000
        assert vis.counters['annotated_out'] == 1


def test_malformed_images_are_logged_and_the_nodes_keep_running():
    with ros_session():
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header
        pre, inf, vis, p, out, cam, ex = _rig()
        header = Header(frame_id='cam')
        bad = [Image(header=header, height=4, width=4, encoding='bgr8', step=8, data=bytes(48)),     # step
               Image(header=header, height=4, width=4, encoding='bgr17', step=12, data=bytes(48)),   # encoding
               Image(header=header, height=4, width=4, encoding='bgr8', step=12, data=bytes(40))]    # truncated
        for k, msg in enumerate(bad, 1):
            cam.publish(msg)
            assert rclpy_double.spin_until(
                ex, lambda: pre.counters['bad_frames'] == k and vis.counters['bad_frames'] == k, 5.0)
        assert pre.counters['bad_frames'] == 3 and vis.counters['bad_frames'] == 3
        logged = errors_logged('malformed')
        assert any('step' in m for m in logged) and any('bgr17' in m for m in logged)
        assert any('holds 40 bytes' in m for m in logged)
        bgr, _, _ = scene(640, 480, 1)
        cam.publish(image_msg(bgr, 7_000_000_000))
        assert rclpy_double.spin_until(ex, lambda: out['detections'], 20.0)
        assert header_stamp_ns(out['detections'][0].header) == 7_000_000_000


def test_composed_mode_hands_the_image_over_in_memory():
    with ros_session():
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import Image

        from qvision_ros.nodes.composed import ComposedPipeline
        pipeline = ComposedPipeline(engine_factory=cached_engine_factory, namespace='cam1',
                                    parameter_overrides=[Parameter('diagnostics_period_sec', value=0.0)])
        handed = []
        pipeline.handover.connect_preprocessed(lambda h, img, enc: handed.append(img))
        p = probe('cam1')
        out = _outputs(p)
        cam = p.publisher(Image, 'image_raw')
        ex = executor(*pipeline.nodes, p)
        # No topic between the stages: the inference node subscribes to nothing, the visualization node
        # gets the raw frames from the hand-over, and image_preprocessed is not even published.
        assert list(pipeline.inference.subscriptions) == []
        assert pipeline.visualization.sub_image is None
        bgr, _, _ = scene(1280, 720, 2)
        cam.publish(image_msg(bgr, 8_000_000_000, 'cam1_optical'))
        assert rclpy_double.spin_until(ex, lambda: out['detections'], 20.0)
        msg = out['detections'][0]
        assert msg.header.frame_id == 'cam1_optical' and header_stamp_ns(msg.header) == 8_000_000_000
        _assert_same(msg_to_detections(msg), _oracle(bgr), bgr.shape)
        assert len(handed) == 1 and handed[0].shape == (320, 320, 3)
        assert pipeline.preprocess.pub_preprocessed.get_subscription_count() == 0
        pipeline.destroy()


def test_preprocess_node_captures_a_video_itself():
    from qvision_ros.errors import DataError
    video = str(Path(__file__).resolve().parent.parent / 'qvision_ros' / 'data' / 'sample_road.mp4')
    with ros_session():
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import Image

        from qvision_ros.nodes.preprocess import PreprocessNode
        from qvision_ros.messages import image_msg_to_array
        p = probe('cam1')
        raw = p.listen(Image, 'image_raw')
        pre_out = p.listen(Image, 'image_preprocessed')
        node = PreprocessNode(namespace='cam1', parameter_overrides=[
            Parameter('source', value=video), Parameter('frame_id', value='front_camera'),
            Parameter('max_rate_hz', value=100.0), Parameter('diagnostics_period_sec', value=0.0)])
        ex = executor(node, p)
        try:
            assert rclpy_double.spin_until(ex, lambda: len(raw) >= 3 and len(pre_out) >= 3, 20.0)
        finally:
            node.destroy_node()
        assert not node._capture.is_alive()
        by_stamp = {header_stamp_ns(m.header): m for m in pre_out}
        for m in raw[:3]:
            assert (m.width, m.height, m.encoding, m.header.frame_id) == (640, 480, 'bgr8', 'front_camera')
            twin = by_stamp[header_stamp_ns(m.header)]        # same header on both topics
            assert (twin.width, twin.height, twin.encoding) == (320, 320, 'rgb8')
            ref, _ = Preprocessor(320, 320).resize(image_msg_to_array(m), 'bgr8')
            np.testing.assert_array_equal(image_msg_to_array(twin), ref)
        stamps = [header_stamp_ns(m.header) for m in raw]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        with pytest.raises(DataError):
            PreprocessNode(node_name='other', parameter_overrides=[Parameter('source', value='/no/such.mp4')])


def test_qos_defaults_and_overrides():
    with ros_session():
        from rclpy.parameter import Parameter
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image
        pre, inf, vis = _nodes()
        image_subs = [pre.sub_raw, vis.sub_image] + list(inf.subscriptions)
        for sub in image_subs:
            q = sub.qos_profile
            assert (q.history, q.depth, q.reliability, q.durability) == (
                HistoryPolicy.KEEP_LAST, 1, ReliabilityPolicy.BEST_EFFORT, DurabilityPolicy.VOLATILE)
        for pub in [pre.pub_preprocessed, vis.pub_detections, vis.pub_annotated] + [p for _, p in inf.cameras]:
            assert pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert vis.pub_label_info.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        # a camera driver publishing with the sensor-data profile is matched
        p = probe('cam1')
        assert p.publisher(Image, 'image_raw', qos_profile_sensor_data).get_subscription_count() == 2
        from qvision_ros.nodes.preprocess import PreprocessNode
        strict = PreprocessNode(node_name='strict', namespace='cam2', parameter_overrides=[
            Parameter('image_qos_reliability', value='reliable'), Parameter('image_qos_depth', value=3),
            Parameter('output_qos_reliability', value='best_effort')])
        assert strict.sub_raw.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert strict.sub_raw.qos_profile.depth == 3
        assert strict.pub_preprocessed.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        # ... and then a best-effort camera no longer reaches it
        assert probe('cam2', 'p2').publisher(Image, 'image_raw', qos_profile_sensor_data).get_subscription_count() == 0


_CTRL_C_SCRIPT = r'''
import sys, time
import rclpy_double
rclpy_double.install()
from rclpy.logging import LoggingSeverity
from qvision_ros.nodes.common import run_node
from qvision_ros.nodes.preprocess import PreprocessNode


class SlowToStop(PreprocessNode):
    def __init__(self):
        super().__init__(cli_args=['--ros-args', '-p', 'source:=%s' % sys.argv[1], '-p', 'source_loop:=true'])
        self.pub_raw.get_subscription_count = lambda: 1      # publish image_raw as if someone listened
        print('spinning', flush=True)

    def destroy_node(self):
        print('stopping', flush=True)
        time.sleep(1.0)                  # a worker thread still being joined on a loaded machine
        return super().destroy_node()


status = run_node(SlowToStop, [])
errors = [m for sev, _, m in rclpy_double.log_records() if sev >= LoggingSeverity.ERROR]
print('status', status, 'errors', errors, flush=True)
'''


def test_ctrl_c_under_launch_ends_the_node_cleanly(tmp_path):
    # Ctrl-C in a terminal running `ros2 launch`: the terminal's SIGINT reaches every node, and launch then
    # forwards one more - often while the node is still cleaning up.  rclpy's handler shuts the context
    # down (spin ends, a capture thread's publish fails) and chains to Python's handler.
    import os
    import signal
    import subprocess
    import sys
    import time
    root = Path(__file__).resolve().parent.parent
    video = str(root / 'qvision_ros' / 'data' / 'sample_road.mp4')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / 'test'), str(root)]))
    proc = subprocess.Popen([sys.executable, '-c', _CTRL_C_SCRIPT, video], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    try:
        assert proc.stdout.readline().strip() == 'spinning'
        time.sleep(0.5)                          # frames flowing
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().strip() == 'stopping'
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)          # launch's, during the clean-up
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, (proc.returncode, err)
    assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err
    assert "status 0 errors []" in out, out


def test_run_node_ends_cleanly_when_the_context_goes_down_before_a_wait(monkeypatch):
    # rclpy's signal handler shuts the context down from another thread; landing between spin()'s ok()
    # check and the next wait set, it makes spin() raise RCLError instead (seen on Jazzy, ros2/rclpy#398)
    import signal
    previous = signal.getsignal(signal.SIGINT)
    rclpy = rclpy_double.install()
    try:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        from qvision_ros.nodes.common import run_node
        calls, destroyed = [], []
        original = SingleThreadedExecutor.spin_once

        def racing(self, timeout_sec=None):
            calls.append(1)
            if len(calls) == 3:
                rclpy.try_shutdown()
            return original(self, timeout_sec)
        monkeypatch.setattr(SingleThreadedExecutor, 'spin_once', racing)

        class Ticking(Node):
            def __init__(self):
                super().__init__('ticking')
                self.create_timer(0.01, lambda: None)

            def destroy_node(self):
                destroyed.append(self.get_name())
                return super().destroy_node()
        assert run_node(Ticking, []) == 0
        assert destroyed == ['ticking'] and len(calls) == 3
    finally:
        rclpy_double.uninstall()
        signal.signal(signal.SIGINT, previous)
