"""Decoders and the Decoder chain (qvision_ros.vision.decode)."""
import time

import numpy as np
import pytest

from qvision_ros.errors import ConfigError, InputError
from qvision_ros.vision.decode import (Classification, Decoder, Detections, decode_classifier, decode_yolov5,
                                       decode_yolov8, detect_format, softmax)
from qvision_ros.vision.preprocess import Letterbox


def _v5(rows, nc=3, anchors=10):
    """[1, anchors, 5 + nc] zeros with ``rows``: (anchor, cx, cy, w, h, obj, {class: score})."""
    out = np.zeros((1, anchors, 5 + nc), np.float32)
    for a, cx, cy, w, h, obj, cls in rows:
        out[0, a, :5] = cx, cy, w, h, obj
        for c, v in cls.items():
            out[0, a, 5 + c] = v
    return out


def _v8(rows, nc=3, anchors=10):
    """[1, 4 + nc, anchors] zeros with ``rows``: (anchor, cx, cy, w, h, {class: score})."""
    out = np.zeros((1, 4 + nc, anchors), np.float32)
    for a, cx, cy, w, h, cls in rows:
        out[0, :4, a] = cx, cy, w, h
        for c, v in cls.items():
            out[0, 4 + c, a] = v
    return out


def test_decode_yolov5_hand_made():
    out = _v5([(2, 50, 40, 20, 10, 0.9, {0: 0.1, 1: 0.8}),     # score .72, class 1, box (40, 35, 60, 45)
               (5, 10, 10, 4, 4, 0.5, {2: 0.4}),               # score .2 < .25: dropped
               (7, 100, 100, 50, 30, 1.0, {2: 0.3})])          # score .3, class 2
    (det,) = decode_yolov5(out, score_threshold=0.25)
    order = np.argsort(-det.scores)
    np.testing.assert_allclose(det.scores[order], [0.72, 0.3], rtol=1e-6)
    assert det.class_ids[order].tolist() == [1, 2]
    np.testing.assert_allclose(det.boxes[order], [[40, 35, 60, 45], [75, 85, 125, 115]])
    assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32 and det.class_ids.dtype == np.int32
    # Unbatched [A, 5 + nc] too; num_classes ignores extra trailing columns.
    extra = np.concatenate([out, np.full((1, 10, 4), 9.0, np.float32)], axis=2)
    (d2,) = decode_yolov5(extra[0], 0.25, num_classes=3)
    np.testing.assert_array_equal(np.sort(d2.scores), np.sort(det.scores))


def test_decode_yolov8_hand_made_both_layouts():
    out = _v8([(0, 320, 240, 100, 50, {0: 0.9}),          # box (270, 215, 370, 265)
               (4, 10, 20, 6, 8, {1: 0.2, 2: 0.6}),       # class 2 wins
               (9, 5, 5, 2, 2, {1: 0.1})])                # below threshold
    (det,) = decode_yolov8(out, score_threshold=0.25)
    order = np.argsort(-det.scores)
    np.testing.assert_allclose(det.scores[order], [0.9, 0.6], rtol=1e-6)
    assert det.class_ids[order].tolist() == [0, 2]
    np.testing.assert_allclose(det.boxes[order], [[270, 215, 370, 265], [7, 16, 13, 24]])
    (t,) = decode_yolov8(np.ascontiguousarray(out.transpose(0, 2, 1)), 0.25, transposed=True)
    np.testing.assert_array_equal(t.boxes, det.boxes)
    np.testing.assert_array_equal(t.scores, det.scores)
    # Extra rows after the class scores (mask coefficients) with num_classes given.
    seg = np.concatenate([out, np.full((1, 5, 10), 7.0, np.float32)], axis=1)
    (s,) = decode_yolov8(seg, 0.25, num_classes=3)
    np.testing.assert_array_equal(s.scores, det.scores)


def test_decoders_drop_nan_and_inf_scores_and_cap_candidates():
    out = _v8([(0, 10, 10, 4, 4, {0: np.nan}), (1, 10, 10, 4, 4, {0: np.inf}), (2, 10, 10, 4, 4, {0: 0.5})])
    (det,) = decode_yolov8(out, 0.25)
    assert det.scores.tolist() == [0.5]                      # NaN class score never wins, Inf is abnormal
    out = _v5([(0, 1, 1, 1, 1, np.nan, {0: 1.0}), (1, 1, 1, 1, 1, 0.9, {0: 0.9})])
    (det,) = decode_yolov5(out, 0.25)
    assert len(det) == 1
    rng = np.random.default_rng(0)
    many = np.zeros((1, 5, 100), np.float32)
    many[0, :4] = 10
    many[0, 4] = rng.random(100)
    (capped,) = decode_yolov8(many, 0.0, max_candidates=10)
    np.testing.assert_array_equal(np.sort(capped.scores), np.sort(many[0, 4])[-10:])


def test_empty_outputs():
    for det in (decode_yolov5(np.zeros((1, 0, 85), np.float32), 0.25)[0],
                decode_yolov8(np.zeros((1, 84, 0), np.float32), 0.25)[0],
                decode_yolov8(np.zeros((1, 84, 50), np.float32), 0.25)[0]):
        assert len(det) == 0 and det.boxes.shape == (0, 4) and det.boxes.dtype == np.float32
        assert det.scores.shape == (0,) and det.class_ids.dtype == np.int32
    res = Decoder(kind='yolov8')(np.zeros((2, 84, 0), np.float32), Letterbox.compute(640, 480, 320, 320))
    assert len(res) == 2 and all(len(d) == 0 and d.boxes.shape == (0, 4) for d in res)


def test_decoder_bad_outputs():
    with pytest.raises(InputError, match='yolov5'):
        decode_yolov5(np.zeros((1, 10, 5)), 0.25)
    with pytest.raises(InputError, match='3 dimensions'):
        decode_yolov8(np.zeros((1, 2, 3, 4)), 0.25)
    with pytest.raises(InputError, match='numeric'):
        decode_yolov8(np.array([['a']]), 0.25)
    with pytest.raises(ConfigError, match='score_threshold'):
        decode_yolov8(np.zeros((1, 6, 4)), 1.5)


@pytest.mark.parametrize('shape,nc,kind', [
    ((1, 25200, 85), None, 'yolov5'),
    ((1, 25200, 85), 80, 'yolov5'),
    ((1, 84, 8400), None, 'yolov8'),
    ((1, 84, 8400), 80, 'yolov8'),
    ((1, 8400, 84), 80, 'yolov8'),
    (('batch', 84, 8400), None, 'yolov8'),
    ((None, 25200, 25), 20, 'yolov5'),
    ((1, 1000), None, 'classifier'),
    ((1, 1000, 1, 1), None, 'classifier'),
    ([(1, 84, 8400), (1, 32, 160, 160)], None, 'yolov8'),       # a list of outputs: the first decides
])
def test_detect_format(shape, nc, kind):
    assert detect_format(shape, nc) == kind


@pytest.mark.parametrize('shape,nc', [((1, 3, 224, 224), None), ((1, 84, 84), None), ((1, 85, 'a'), None),
                                      ((1, 25200, 85), 20), ((1,), None), ((1, 2, 3), None)])
def test_detect_format_refuses_to_guess(shape, nc):
    with pytest.raises(ConfigError, match='kind='):
        detect_format(shape, nc)


def _scene():
    """Network 320x320 output for a 640x480 source (scale .5, pad_y 40), yolov8 layout, 4 classes."""
    return _v8([
        (0, 100, 100, 40, 40, {0: 0.9}),      # object A -> source (160, 80, 240, 160)
        (1, 102, 101, 40, 40, {0: 0.8}),      # duplicate of A: suppressed
        (2, 102, 101, 40, 40, {1: 0.7}),      # same place, other class: kept (class-aware)
        (3, 300, 60, 60, 20, {2: 0.6}),       # crosses the right edge: clipped to x2 = 640
        (4, 160, 20, 40, 20, {3: 0.95}),      # entirely in the top padding (y 10..30 < 40): dropped
        (5, 50, 200, 0, 30, {0: 0.99}),       # zero width: dropped
        (6, np.nan, 200, 10, 10, {0: 0.99}),  # NaN coordinate: dropped
        (7, 200, 200, np.inf, 10, {0: 0.99}),  # infinite width: dropped
        (8, 200, 250, 20, 20, {1: 1.5}),      # score above 1: clipped to 1
    ], nc=4, anchors=12)


def test_decoder_full_chain_golden():
    lb = Letterbox.compute(640, 480, 320, 320)
    (det,) = Decoder(score_threshold=0.25, nms_iou_threshold=0.45)(_scene(), lb)
    assert det.scores.tolist() == pytest.approx([1.0, 0.9, 0.7, 0.6])
    assert det.class_ids.tolist() == [1, 0, 1, 2]
    np.testing.assert_allclose(det.boxes, [
        [380, 400, 420, 440],               # (190, 240)-(210, 260) net -> x * 2, (y - 40) * 2
        [160, 80, 240, 160],
        [164, 82, 244, 162],
        [540, 20, 640, 60],                 # net x 270..330 -> 540..660, clipped at 640
    ], atol=1e-4)
    assert det.boxes.dtype == np.float32


def test_decoder_options():
    lb = Letterbox.compute(640, 480, 320, 320)
    scene = _scene()
    (agn,) = Decoder(agnostic_nms=True)(scene, lb)
    assert 0.7 not in agn.scores.round(3).tolist()          # the other-class duplicate is now suppressed
    (only,) = Decoder(classes=[0, 2])(scene, lb)
    assert set(only.class_ids.tolist()) == {0, 2}
    (top,) = Decoder(max_detections=2)(scene, lb)
    assert top.scores.tolist() == pytest.approx([1.0, 0.9])
    (raw,) = Decoder()(scene)                                 # no letterbox: network pixels, not clipped
    assert raw.boxes.max() == pytest.approx(330)
    (all_cls,) = Decoder(classes=[])(scene, lb)
    assert len(all_cls) == 4
    # Same result whatever the format detection saw: forced kind, transposed input.
    (forced,) = Decoder(kind='yolov8', num_classes=4)(np.ascontiguousarray(scene.transpose(0, 2, 1)), lb)
    np.testing.assert_array_equal(forced.boxes, Decoder()(scene, lb)[0].boxes)


def test_abnormal_boxes_never_take_a_detection_slot():
    # With max_detections=1 the only valid box must win over better-scored boxes that cannot be reported.
    lb = Letterbox.compute(640, 480, 320, 320)
    out = _v8([(0, 160, 20, 40, 20, {0: 0.99}),       # in the top padding
               (1, np.nan, 100, 10, 10, {0: 0.98}),   # NaN
               (2, 100, 100, -5, 10, {0: 0.97}),      # negative width
               (3, 100, 100, 20, 20, {0: 0.5})])
    (det,) = Decoder(max_detections=1)(out, lb)
    assert det.scores.tolist() == [0.5]
    np.testing.assert_allclose(det.boxes, [[180, 100, 220, 140]])


def test_decoder_yolov5_batch_with_one_letterbox_per_image():
    out = np.concatenate([_v5([(0, 100, 100, 20, 20, 0.9, {0: 1.0})]),
                          _v5([(3, 100, 100, 20, 20, 0.8, {1: 1.0})])])
    lbs = [Letterbox.compute(640, 480, 320, 320), Letterbox.compute(320, 320, 320, 320)]
    d0, d1 = Decoder()([out], lbs)
    np.testing.assert_allclose(d0.boxes, [[180, 100, 220, 140]])
    np.testing.assert_allclose(d1.boxes, [[90, 90, 110, 110]])
    assert d1.class_ids.tolist() == [1]
    with pytest.raises(ConfigError, match='one Letterbox per image'):
        Decoder()(out, lbs[:1])


def test_classifier_topk_golden():
    logits = np.array([[0.0, np.log(3.0), np.log(2.0), np.log(3.0)]])   # probabilities 1/9, 3/9, 2/9, 3/9
    (res,) = decode_classifier(logits, top_k=3)
    assert isinstance(res, Classification)
    assert res.class_ids.tolist() == [1, 3, 2]                       # tie 1 / 3: lower id first
    np.testing.assert_allclose(res.scores, [1 / 3, 1 / 3, 2 / 9], rtol=1e-6)
    (res,) = decode_classifier(logits, top_k=10)
    assert len(res) == 4 and res.class_ids.tolist() == [1, 3, 2, 0]
    (raw,) = decode_classifier(np.array([0.1, 0.7, 0.2]), top_k=2, apply_softmax=False)
    assert raw.class_ids.tolist() == [1, 2] and raw.scores.tolist() == pytest.approx([0.7, 0.2])
    a, b = decode_classifier(np.array([[1.0, 2.0], [5.0, 1.0]]).reshape(2, 2, 1, 1), top_k=1)
    assert a.class_ids.tolist() == [1] and b.class_ids.tolist() == [0]
    (via,) = Decoder(top_k=2)(np.array([[0.0, 2.0, 1.0]], np.float32))
    assert via.class_ids.tolist() == [1, 2]


def test_classifier_abnormal_values():
    p = softmax(np.array([[1e4, 0.0, -1e4]]))
    assert np.isfinite(p).all() and p[0, 0] == 1.0                  # no overflow
    p = softmax(np.array([[np.nan, 1.0, 1.0]]))
    assert p.tolist() == [[0.0, 0.5, 0.5]]
    p = softmax(np.array([[np.inf, 1.0, np.inf]]))
    assert p.tolist() == [[0.5, 0.0, 0.5]]
    p = softmax(np.array([[-np.inf, np.nan]]))
    assert p.tolist() == [[0.0, 0.0]]
    (raw,) = decode_classifier(np.array([np.nan, 0.3, 0.5]), top_k=3, apply_softmax=False)
    assert raw.class_ids.tolist() == [2, 1]                           # NaN left out
    with pytest.raises(ConfigError, match='top_k'):
        decode_classifier(np.zeros((1, 3)), top_k=0)


@pytest.mark.parametrize('kwargs,match', [
    (dict(kind='ssd'), 'kind'), (dict(num_classes=0), 'num_classes'), (dict(score_threshold=-0.1), 'score'),
    (dict(nms_iou_threshold=2), 'nms_iou'), (dict(max_detections=0), 'max_detections'),
    (dict(agnostic_nms='yes'), 'agnostic'), (dict(classes=[-1]), 'classes'), (dict(classes=[0.5]), 'classes'),
    (dict(max_candidates=0), 'max_candidates'), (dict(transposed='no'), 'transposed'), (dict(top_k=0), 'top_k'),
])
def test_decoder_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Decoder(**kwargs)


def test_detections_container():
    d = Detections([[0, 0, 1, 1]], [0.5], [3])
    assert len(d) == 1 and d.boxes.dtype == np.float32 and d.class_ids.dtype == np.int32
    assert len(Detections()) == 0
    with pytest.raises(ConfigError):
        Detections([[0, 0, 1, 1]], [0.5, 0.2], [3])


def test_ten_thousand_candidates_complexity():
    # 10,000 candidates above the threshold, 80 classes: a check of complexity, not a benchmark.
    rng = np.random.default_rng(0)
    n = 10000
    out = np.zeros((1, 84, n), np.float32)
    out[0, 0:2] = rng.uniform(0, 640, (2, n))
    out[0, 2:4] = rng.uniform(4, 120, (2, n))
    out[0, 4:] = rng.uniform(0, 0.2, (80, n))
    out[0, 4 + rng.integers(0, 80, n), np.arange(n)] = rng.uniform(0.3, 1.0, n)
    lb = Letterbox.compute(1280, 720, 640, 640)
    dec = Decoder(score_threshold=0.25, max_detections=300)
    best = float('inf')
    for _ in range(3):
        t = time.perf_counter()
        (det,) = dec(out, lb)
        best = min(best, time.perf_counter() - t)
    assert len(det) == 300
    assert best < 0.2, best
    assert (det.boxes[:, 2] > det.boxes[:, 0]).all() and (det.boxes[:, 3] > det.boxes[:, 1]).all()
    assert det.boxes.min() >= 0 and det.boxes[:, 2].max() <= 1280 and det.boxes[:, 3].max() <= 720
    assert (np.diff(det.scores) <= 0).all()
