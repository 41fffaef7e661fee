"""Greedy NMS against its literal reference (qvision_ros.vision.nms)."""
import time

import numpy as np
import pytest

from qvision_ros.errors import ConfigError
from qvision_ros.vision.nms import batched_nms, iou_reference, nms, nms_reference


def _random_case(seed, n):
    """Boxes with the awkward cases mixed in: duplicates, zero-area and inverted boxes, tied scores."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(1, 60, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    if n >= 8:
        dup = rng.choice(n, n // 8, replace=False)
        boxes[dup] = boxes[rng.choice(n, len(dup))]                        # exact duplicates
        zero = rng.choice(n, n // 10, replace=False)
        boxes[zero, 2] = boxes[zero, 0]                                    # zero width
        inv = rng.choice(n, n // 20, replace=False)
        boxes[inv[:, None], [1, 3]] = boxes[inv[:, None], [3, 1]]          # inverted (negative height)
    # Few score levels: many ties, which must keep the input order.
    scores = (rng.integers(0, 12, n) / 12).astype(np.float32)
    classes = rng.integers(0, 4, n)
    return boxes.astype(np.float32) if seed % 2 else boxes, scores, classes


def _explain(got, want, boxes, scores):
    return 'got %s\nwant %s\nfirst difference at %s' % (
        got.tolist(), want.tolist(),
        next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want))))


@pytest.mark.parametrize('seed', range(9))
@pytest.mark.parametrize('thr', [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize('max_output', [None, 1, 7, 1000])
def test_nms_matches_reference(seed, thr, max_output):
    n = [0, 1, 2, 5, 40, 300, 530, 17, 260][seed]    # 260 and 530: more than one 256-box block
    boxes, scores, _ = _random_case(seed, n)
    got = nms(boxes, scores, thr, max_output)
    want = nms_reference(boxes, scores, thr, max_output)
    assert got.dtype == np.intp
    assert np.array_equal(got, want), _explain(got, want, boxes, scores)


@pytest.mark.parametrize('seed', range(10))
@pytest.mark.parametrize('thr', [0.0, 0.45, 0.9])
@pytest.mark.parametrize('max_output', [None, 5, 100])
def test_batched_nms_matches_reference(seed, thr, max_output):
    n = [3, 30, 200, 400, 1][seed % 5]
    boxes, scores, classes = _random_case(100 + seed, n)
    got = batched_nms(boxes, scores, classes, thr, max_output)
    want = nms_reference(boxes, scores, thr, max_output, class_ids=classes)
    assert np.array_equal(got, want), _explain(got, want, boxes, scores)
    got = batched_nms(boxes, scores, classes, thr, max_output, agnostic=True)
    assert np.array_equal(got, nms_reference(boxes, scores, thr, max_output))


def test_block_boundaries_and_heavy_overlap():
    # Many boxes around a few centres, so that suppression crosses the 256-box blocks of nms().
    rng = np.random.default_rng(9)
    centres = rng.uniform(0, 300, (6, 2))
    xy = centres[rng.integers(0, 6, 800)] + rng.normal(0, 3, (800, 2))
    boxes = np.concatenate([xy, xy + 30 + rng.normal(0, 2, (800, 2))], axis=1)
    scores = rng.random(800)
    for thr in (0.3, 0.95):
        assert np.array_equal(nms(boxes, scores, thr), nms_reference(boxes, scores, thr))


def test_golden_small_case():
    boxes = np.array([[0, 0, 10, 10],      # A, score .9
                      [1, 1, 11, 11],      # B overlaps A: IoU = 81 / 119 = 0.68
                      [20, 20, 30, 30],    # C, alone
                      [0, 0, 10, 10]],     # D duplicate of A, same score as A -> later in order
                     np.float32)
    scores = np.array([0.9, 0.8, 0.3, 0.9], np.float32)
    assert iou_reference(boxes[0], boxes[1]) == pytest.approx(81 / 119)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2]          # 0.68 <= 0.7: B stays
    assert nms(boxes, scores, 1.0).tolist() == [0, 3, 1, 2]       # IoU 1 is not > 1: nothing suppressed
    assert nms(boxes, scores, 0.5, max_output=1).tolist() == [0]
    assert batched_nms(boxes, scores, np.array([0, 1, 1, 0]), 0.5).tolist() == [0, 1, 2]


def test_zero_area_boxes_never_suppress():
    boxes = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 0]], np.float64)
    assert nms(boxes, np.array([0.5, 0.5, 0.4]), 0.0).tolist() == [0, 1, 2]


def test_nan_boxes_neither_suppress_nor_are_suppressed():
    boxes = np.array([[0, 0, 10, 10], [np.nan, 0, 10, 10], [0, 0, 10, 10]], np.float64)
    assert nms(boxes, np.array([0.5, 0.9, 0.4]), 0.5).tolist() == [1, 0]
    assert nms(np.array([[0, 0, 1, 1]] * 2, float), np.array([np.nan, 0.5]), 0.5).tolist() == [1]


def test_empty_and_zero_max_output():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.5).shape == (0,)
    assert nms(np.ones((3, 4)), np.ones(3), 0.5, max_output=0).shape == (0,)


def test_validation():
    with pytest.raises(ConfigError, match=r'\[K, 4\]'):
        nms(np.zeros((3, 5)), np.zeros(3), 0.5)
    with pytest.raises(ConfigError, match='scores must have shape'):
        nms(np.zeros((3, 4)), np.zeros(2), 0.5)
    with pytest.raises(ConfigError, match='iou_threshold'):
        nms(np.zeros((3, 4)), np.zeros(3), 1.5)
    with pytest.raises(ConfigError, match='max_output'):
        nms(np.zeros((3, 4)), np.zeros(3), 0.5, max_output=-1)
    with pytest.raises(ConfigError, match='class_ids'):
        batched_nms(np.zeros((3, 4)), np.zeros(3), np.zeros(3, np.float32), 0.5)


def _best_of(fn, repeats=3):
    best = float('inf')
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def test_ten_thousand_boxes_complexity():
    # A check of complexity, not a benchmark: a quadratic Python loop takes tens of seconds here.
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 600, (10000, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 80, (10000, 2))], axis=1)
    scores = rng.random(10000).astype(np.float32)
    classes = rng.integers(0, 80, 10000)
    elapsed, kept = _best_of(lambda: nms(boxes, scores, 0.45, 300))
    assert len(kept) == 300 and elapsed < 0.2, elapsed
    elapsed, kept = _best_of(lambda: batched_nms(boxes, scores, classes, 0.45, 300))
    assert len(kept) == 300 and elapsed < 0.2, elapsed
    elapsed, kept = _best_of(lambda: nms(boxes, scores, 0.45), repeats=1)       # no cap: ~half kept
    assert len(kept) > 4000 and elapsed < 3.0, elapsed
