"""The in-process pipeline (qvision_ros.pipeline): model description, the three stages, statistics, and the
latest-frame policy of stream().

Oracles: hand-built ONNX models whose output is a known constant (so every box is known in network pixels
and its place in the source image follows from the letterbox arithmetic written out in the test), ONNX
Runtime on the shipped detector with a letterbox written here with plain OpenCV, and the exact boxes of a
synthetic scene.
"""
import json
import time

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qvision_ros import synthetic
from qvision_ros.errors import ConfigError, DataError, ModelError
from qvision_ros.pipeline import (LatencyWindow, LatestFrameSlot, Pipeline, PipelineConfig, PipelineStats,
                                  Result, StageTimes, describe_model, load_labels, stream)
from qvision_ros.sources import Frame, open_source
from qvision_ros.vision.decode import Decoder, Detections

from pathlib import Path

DETECTOR = Path(__file__).resolve().parents[1] / 'qvision_ros' / 'data' / 'detector_320.onnx'
NAMES = ('car', 'bus', 'cone')


def constant_model(rows, layout='yolov8', size=(64, 64), metadata=None, nhwc=False, dynamic=False):
    """An ONNX model whose output is ``rows`` whatever the image: [A, C] candidates as
    yolov8 [1, C, A] or yolov5 [1, A, C].  Built as a Conv with zero weights covering the whole input and
    the values in its bias, then a Reshape (ops the engine runs)."""
    rows = np.asarray(rows, np.float32)
    a, c = rows.shape
    w, h = size
    flat = rows.T.reshape(-1) if layout == 'yolov8' else rows.reshape(-1)
    out_shape = [1, c, a] if layout == 'yolov8' else [1, a, c]
    nodes, inits = [], [numpy_helper.from_array(np.zeros((a * c, 3, h, w), np.float32), 'W'),
                        numpy_helper.from_array(flat, 'B'),
                        numpy_helper.from_array(np.array(out_shape, np.int64), 'S')]
    x = 'images'
    if nhwc:
        nodes.append(helper.make_node('Transpose', ['images'], ['nchw'], perm=[0, 3, 1, 2]))
        x = 'nchw'
    nodes += [helper.make_node('Conv', [x, 'W', 'B'], ['c'], strides=[h, w]),
              helper.make_node('Reshape', ['c', 'S'], ['output0'])]
    in_shape = [1, h, w, 3] if nhwc else [1, 3, h, w]
    if dynamic:
        in_shape = [1, 3, 'height', 'width']
    g = helper.make_graph(nodes, 'constant', [helper.make_tensor_value_info('images', TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info('output0', TensorProto.FLOAT, out_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 13)])
    m.ir_version = 8
    for k, v in (metadata or {}).items():
        m.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(m)
    return m


def candidate(cx, cy, w, h, cls, score, nc=3):
    row = np.zeros(4 + nc, np.float32)
    row[:4] = (cx, cy, w, h)
    row[4 + cls] = score
    return row


def to_source(box, scale, pad_x, pad_y):
    """Network pixels -> source pixels of a letterbox with a uniform scale (the test's own arithmetic)."""
    x1, y1, x2, y2 = box
    return np.array([(x1 - pad_x) / scale, (y1 - pad_y) / scale, (x2 - pad_x) / scale, (y2 - pad_y) / scale])


# --- model description ---------------------------------------------------------------------------------

def test_describe_constant_model_and_metadata_names(tmp_path):
    rows = [candidate(32, 32, 20, 10, 2, 0.9)]
    m = constant_model(rows, metadata={'names': "{0: 'car', 1: 'bus', 2: 'cone'}", 'imgsz': '[64, 64]'})
    path = tmp_path / 'm.onnx'
    onnx.save(m, str(path))
    info = describe_model(path)
    assert (info.input_name, info.input_shape, info.layout) == ('images', (1, 3, 64, 64), 'nchw')
    assert (info.input_width, info.input_height, info.kind, info.num_classes) == (64, 64, 'yolov8', 3)
    assert info.labels == ('car', 'bus', 'cone') and info.precision == 'fp32'
    assert info.size_bytes == path.stat().st_size and info.label(1) == 'bus' and info.label(7) == '7'
    # a labels file wins over the metadata; a wrong count is caught against the output shape
    (tmp_path / 'l.txt').write_text('a\nb\nc\n\n')
    assert describe_model(path, labels=tmp_path / 'l.txt').labels == ('a', 'b', 'c')
    (tmp_path / 'four.txt').write_text('a\nb\nc\nd\n')
    with pytest.raises(ConfigError, match='4 class names'):
        describe_model(path, labels=tmp_path / 'four.txt')


def test_describe_shipped_detector():
    info = describe_model(DETECTOR)
    assert info.kind == 'yolov8' and info.num_classes == 5 and info.input_shape == (1, 3, 320, 320)
    assert info.labels == ('car', 'pedestrian', 'cyclist', 'traffic_sign', 'traffic_cone')
    assert info.output_shapes == ((1, 9, 2100),) and not info.quantized


def test_describe_nhwc_dynamic_and_errors(tmp_path):
    rows = [candidate(10, 10, 4, 4, 0, 0.9)]
    assert describe_model(constant_model(rows, nhwc=True), labels=NAMES).layout == 'nhwc'
    dyn = constant_model(rows, dynamic=True)
    with pytest.raises(ModelError, match='dynamic'):
        describe_model(dyn, labels=NAMES)
    dyn.metadata_props.add(key='imgsz', value='[64, 96]')   # Ultralytics order: height, width
    info = describe_model(dyn, labels=NAMES)
    assert (info.input_width, info.input_height) == (96, 64)
    assert describe_model(dyn, labels=NAMES, input_size=(32, 48)).input_shape == (1, 3, 48, 32)
    with pytest.raises(ConfigError, match='does not fit'):
        describe_model(constant_model(rows), labels=NAMES, input_size=(32, 32))
    with pytest.raises(ConfigError, match='cannot tell'):   # [1, 7, 1]: one candidate, no class count
        describe_model(constant_model(rows))
    assert describe_model(constant_model(rows), kind='yolov8').num_classes == 3
    with pytest.raises(ModelError, match='does not exist'):
        describe_model(tmp_path / 'missing.onnx')
    (tmp_path / 'junk.onnx').write_bytes(b'\x00\x01junk')
    with pytest.raises(ModelError):
        describe_model(tmp_path / 'junk.onnx')


def test_classifier_is_refused():
    g = helper.make_graph([helper.make_node('GlobalAveragePool', ['images'], ['p']),
                           helper.make_node('Flatten', ['p'], ['logits'])], 'cls',
                          [helper.make_tensor_value_info('images', TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info('logits', TensorProto.FLOAT, [1, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 13)])
    assert describe_model(m).kind == 'classifier'
    with pytest.raises(ConfigError, match='classifier'):
        Pipeline(m)


def test_load_labels(tmp_path):
    (tmp_path / 'a.json').write_text(json.dumps({'1': 'b', '0': 'a'}))
    assert load_labels(tmp_path / 'a.json') == ('a', 'b')
    (tmp_path / 'b.json').write_text(json.dumps(['x', 'y']))
    assert load_labels(tmp_path / 'b.json') == ('x', 'y')
    (tmp_path / 'gap.json').write_text(json.dumps({'0': 'a', '2': 'c'}))
    with pytest.raises(ConfigError, match='without gaps'):
        load_labels(tmp_path / 'gap.json')
    (tmp_path / 'blank.txt').write_text('a\n\nb\n')
    with pytest.raises(ConfigError, match='blank'):
        load_labels(tmp_path / 'blank.txt')
    with pytest.raises(ConfigError, match='cannot read'):
        load_labels(tmp_path / 'none.txt')


# --- the three stages on known outputs ----------------------------------------------------------------

@pytest.mark.parametrize('layout', ['yolov8', 'yolov5'])
def test_boxes_mapped_to_source_pixels(layout):
    """A 128 x 64 frame in a 64 x 64 network: scale 0.5, content rows 16..48 (pad_y 16)."""
    rows = [candidate(32, 32, 20, 10, 2, 0.9),     # inside: maps to source pixels exactly
            candidate(10, 8, 8, 8, 0, 0.95),       # entirely in the top padding: dropped
            candidate(60, 40, 20, 8, 1, 0.6),      # crosses the right edge: clipped to the image
            candidate(30, 30, 4, 4, 1, 0.1),       # below the score threshold
            candidate(np.nan, 30, 4, 4, 0, 0.8),   # NaN coordinate: dropped
            candidate(20, 30, 0, 6, 0, 0.8)]       # zero width: dropped
    if layout == 'yolov5':  # objectness column before the class scores; score = obj * class score
        rows = [np.concatenate([r[:4], [1.0], r[4:]]) for r in rows]
    m = constant_model(rows, layout=layout)
    pipe = Pipeline(m, PipelineConfig(num_threads=1), labels=NAMES)
    assert pipe.model.kind == layout
    frame = Frame(7, 123_456_789_012, 'front', np.zeros((64, 128, 3), np.uint8))
    res = pipe.process(frame, annotate=True)
    det = res.detections
    assert (res.index, res.stamp_ns, res.frame_id, res.width, res.height) == (7, 123_456_789_012, 'front', 128, 64)
    assert det.class_ids.tolist() == [2, 1]
    np.testing.assert_allclose(det.scores, [0.9, 0.6], rtol=1e-6)
    np.testing.assert_allclose(det.boxes[0], to_source((22, 27, 42, 37), 0.5, 0, 16), atol=1e-4)
    expect = to_source((50, 36, 70, 44), 0.5, 0, 16)
    expect[2] = 128  # clipped at the image's right edge
    np.testing.assert_allclose(det.boxes[1], expect, atol=1e-4)
    assert res.annotated.shape == (64, 128, 3) and res.annotated.any() and not frame.image.any()
    t = res.times
    assert min(t.preprocess, t.inference, t.postprocess, t.draw) > 0
    assert t.total == pytest.approx(t.preprocess + t.inference + t.postprocess + t.draw)
    record = res.to_dict(pipe.model.label)
    assert record['stamp'] == {'sec': 123, 'nanosec': 456_789_012}
    assert [d['label'] for d in record['detections']] == ['cone', 'bus']
    assert record['detections'][0]['box'] == [round(v, 2) for v in det.boxes[0].tolist()]
    json.dumps(record)   # JSON-ready: plain Python types only


def test_class_filter_threshold_and_max_detections():
    rows = [candidate(10 + 8 * i, 32, 6, 6, i % 3, 0.3 + 0.05 * i) for i in range(6)]
    m = constant_model(rows)
    image = np.zeros((64, 64, 3), np.uint8)
    base = Pipeline(m, PipelineConfig(num_threads=1), labels=NAMES).process(image).detections
    assert len(base) == 6 and np.all(np.diff(base.scores) <= 0)
    only = Pipeline(m, PipelineConfig(num_threads=1, classes=[1]), labels=NAMES).process(image).detections
    assert set(only.class_ids.tolist()) == {1} and len(only) == 2
    high = Pipeline(m, PipelineConfig(num_threads=1, score_threshold=0.5), labels=NAMES).process(image).detections
    np.testing.assert_allclose(high.scores, [0.55, 0.5], rtol=1e-6)   # score >= threshold is kept
    top = Pipeline(m, PipelineConfig(num_threads=1, max_detections=2), labels=NAMES).process(image).detections
    np.testing.assert_allclose(top.scores, base.scores[:2])
    with pytest.raises(ConfigError):
        Pipeline(m, PipelineConfig(score_threshold=1.5), labels=NAMES)
    with pytest.raises(ConfigError):
        PipelineConfig(resize_mode='crop')


def test_other_encodings_and_nhwc():
    rows = [candidate(32, 32, 20, 10, 0, 0.9)]
    pipe = Pipeline(constant_model(rows, nhwc=True), PipelineConfig(num_threads=1), labels=NAMES)
    rgba = np.zeros((32, 64, 4), np.uint8)
    res = pipe.process(rgba, encoding='rgba8', annotate=True)
    np.testing.assert_allclose(res.detections.boxes[0], to_source((22, 27, 42, 37), 1.0, 0, 16), atol=1e-4)
    assert res.annotated.shape == (32, 64, 3)


def letterbox_ref(img, size=320, pad=114):
    """Independent letterbox (the Ultralytics recipe): scale = min ratio, centred, grey borders."""
    h, w = img.shape[:2]
    s = min(size / w, size / h)
    nw, nh = int(round(w * s)), int(round(h * s))
    canvas = np.full((size, size, 3), pad, np.uint8)
    x0, y0 = (size - nw) // 2, (size - nh) // 2
    canvas[y0:y0 + nh, x0:x0 + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
    return np.ascontiguousarray(x), s, x0, y0


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_shipped_detector_matches_onnxruntime_and_ground_truth():
    pipe = Pipeline(DETECTOR, PipelineConfig(num_threads=1, score_threshold=0.3))
    sess = ort.InferenceSession(str(DETECTOR), providers=['CPUExecutionProvider'])
    matched = total = 0
    for index in range(3):
        image, anns = synthetic.render_scene(synthetic.scene_for_index(11, index, (640, 480)))
        res = pipe.process(image)
        x, s, x0, y0 = letterbox_ref(image)
        out = sess.run(None, {'images': x})[0]
        ref = Decoder('yolov8', num_classes=5, score_threshold=0.3)(out)[0]   # network pixels
        ref_boxes = np.array([to_source(b, s, x0, y0) for b in ref.boxes]).reshape(-1, 4)
        ref_boxes[:, 0::2] = ref_boxes[:, 0::2].clip(0, 640)
        ref_boxes[:, 1::2] = ref_boxes[:, 1::2].clip(0, 480)
        assert len(res.detections) == len(ref_boxes)
        np.testing.assert_allclose(res.detections.boxes, ref_boxes, atol=0.5)
        assert res.detections.class_ids.tolist() == ref.class_ids.tolist()
        for a in anns:   # the detector finds the clearly visible objects where the scene put them
            if min(a.bbox[2], a.bbox[3]) < 24 or a.visibility < 0.9:
                continue
            total += 1
            gt = a.xyxy
            matched += any(iou(gt, b) > 0.5 and c == a.class_id
                           for b, c in zip(res.detections.boxes, res.detections.class_ids))
    assert total >= 5 and matched >= 0.8 * total


# --- statistics ---------------------------------------------------------------------------------------

def test_latency_window_and_stats():
    w = LatencyWindow(capacity=4)
    for v in [1.0, 2.0, 3.0, 4.0, 100.0]:
        w.add(v)
    assert w.count == 5 and w.mean == pytest.approx(22.0)
    assert sorted(w.values().tolist()) == [2.0, 3.0, 4.0, 100.0]   # the oldest value left the window
    assert w.percentile(50) == pytest.approx(3.5)
    st = PipelineStats()
    for i in range(10):
        r = Result(i, 0, '', 4, 4, Detections(), StageTimes(0.001, 0.010 + 0.001 * i, 0.002, 0.0))
        r.latency_s = 0.02
        st.add(r)
    st.finish()
    s = st.summary()
    assert s['frames'] == 10 and s['stages_ms']['inference']['p50_ms'] == pytest.approx(14.5)
    assert s['stages_ms']['latency']['p99_ms'] == pytest.approx(20.0)
    table = '\n'.join(st.table())
    assert 'inference' in table and 'FPS' in table and 'dropped 0' in table


def test_latest_frame_slot():
    slot = LatestFrameSlot()
    for i in range(5):
        slot.put(i)
    assert slot.get() == 4 and slot.dropped == 4 and slot.received == 5
    assert slot.get(timeout=0.01) is None
    slot.put(9)
    slot.close()
    assert slot.get() == 9 and slot.get() is None


# --- stream ---------------------------------------------------------------------------------------------

class SlowPipeline:
    """Stands in for a Pipeline whose inference takes ``delay`` seconds."""

    def __init__(self, delay):
        self.delay = delay
        self.seen = []

    def process(self, frame, annotate=False, fps=None):
        time.sleep(self.delay)
        self.seen.append(frame.index)
        return Result(frame.index, frame.stamp_ns, frame.frame_id, frame.width, frame.height, Detections(),
                      StageTimes(inference=self.delay))


def test_stream_file_processes_every_frame_in_order(tmp_path):
    np.save(tmp_path / 'a.npy', np.zeros((25, 8, 8, 3), np.uint8))
    pipe = SlowPipeline(0.002)
    st = PipelineStats()
    results = list(stream(pipe, open_source(tmp_path / 'a.npy'), stats=st))
    assert [r.index for r in results] == list(range(25)) and st.dropped == 0 and st.frames == 25


def test_stream_live_drops_instead_of_queueing(tmp_path):
    """A source at 200 FPS into a 25 ms stage: most frames are dropped, latency stays bounded."""
    np.save(tmp_path / 'a.npy', np.zeros((60, 8, 8, 3), np.uint8))
    pipe = SlowPipeline(0.025)
    st = PipelineStats()
    results = list(stream(pipe, open_source(tmp_path / 'a.npy', fps=200), realtime=True, stats=st))
    assert st.dropped > 20 and st.frames + st.dropped == 60
    assert [r.index for r in results] == sorted(r.index for r in results)
    assert results[-1].index == 59   # the newest frame is always the one processed at the end
    # bounded: waiting at most for the frame in progress, never for a queue
    assert max(r.latency_s for r in results) < 0.025 * 2 + 0.1


def test_stream_real_pipeline_and_reader_error(tmp_path):
    for i in range(4):
        cv2.imwrite(str(tmp_path / ('%d.png' % i)), np.full((40, 60, 3), 40 * i, np.uint8))
    pipe = Pipeline(constant_model([candidate(32, 32, 20, 10, 0, 0.9)]), PipelineConfig(num_threads=1),
                    labels=NAMES)
    st = PipelineStats()
    got = list(stream(pipe, open_source(tmp_path), annotate=True, stats=st))
    assert len(got) == 4 and all(r.annotated is not None and len(r.detections) == 1 for r in got)
    assert st.stages['latency'].count == 4

    class Failing:
        live = False
        skipped = 0
        name = 'failing'

        def __iter__(self):
            yield Frame(0, 0, 'c', np.zeros((40, 60, 3), np.uint8))
            raise DataError('the bag ends mid-message')

    got = []
    with pytest.raises(DataError, match='mid-message'):
        for r in stream(pipe, Failing()):
            got.append(r)
    assert len(got) == 1
