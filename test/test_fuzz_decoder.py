"""Fuzzing post-processing: model outputs with NaN/Inf, empty or wrong-rank arrays, odd dtypes and
thousands of candidates through Decoder, nms and batched_nms.

A result must keep DESIGN.md's rules (finite boxes with positive size inside the image, scores in [0, 1]
by descending score, at most max_detections, only the requested classes; qvision_ros.fuzz.check_detections),
NMS results must equal the reference loop on finite inputs; anything else is an InputError / ConfigError.
"""
import numpy as np
import pytest

from fuzz_strategies import decoder_cases, nms_cases, run_cases
from qvision_ros import fuzz
from qvision_ros.errors import InputError
from qvision_ros.vision.decode import Decoder
from qvision_ros.vision.nms import batched_nms, nms
from qvision_ros.vision.preprocess import Letterbox


def test_fuzz_decoder():
    seen = run_cases(decoder_cases(), lambda case: fuzz.check_decoder(*case), 450)
    assert seen['ok'] >= 200 and seen['InputError@decode'] >= 10, seen
    assert set(seen) <= {'ok', 'InputError@decode', 'ConfigError@decode'}, seen


def test_fuzz_nms():
    seen = run_cases(nms_cases(), lambda case: fuzz.check_nms(*case), 300)
    assert seen == {'ok': sum(seen.values())}, seen


def test_long_mode_generators_run():
    for k in range(30):
        rng = np.random.default_rng([0, 2, k])
        assert fuzz.check_decoder(*fuzz.decoder_case(rng)) in ('ok', 'InputError@decode', 'ConfigError@decode')
        assert fuzz.check_nms(*fuzz.nms_case(rng)) == 'ok'


# --------------------------------------------------------------------------------------- regressions

@pytest.mark.parametrize('shape', [(9,), (), (0,)])
def test_yolov8_output_of_rank_below_two(shape):
    # was IndexError in Decoder._guess_transposed
    with pytest.raises(InputError, match='yolov8 output must have 3 dimensions'):
        Decoder(kind='yolov8')(np.zeros(shape, np.float32))
    with pytest.raises(InputError, match='yolov8 output must have 3 dimensions'):
        Decoder(kind='yolov8', num_classes=5)(np.zeros(shape, np.float32))


def test_thousands_of_identical_candidates():
    """30000 candidates above the threshold, all the same box: one detection per class, in the image."""
    a = 30000
    out = np.zeros((1, 4 + 3, a), np.float32)
    out[0, :4] = np.array([[160], [160], [50], [40]], np.float32)
    out[0, 4 + np.arange(a) % 3, np.arange(a)] = 0.9
    lb = Letterbox.compute(640, 480, 320, 320)
    det, = Decoder(kind='yolov8', num_classes=3, max_candidates=a)(out, lb)
    assert sorted(det.class_ids.tolist()) == [0, 1, 2]
    np.testing.assert_allclose(det.boxes[0], [270, 200, 370, 280], atol=1e-3)


def test_nan_and_inf_everywhere():
    """Every value non-finite: no detection, no warning turned into an error, no exception."""
    for value in (np.nan, np.inf, -np.inf):
        out = np.full((2, 9, 50), value, np.float32)
        res = Decoder(kind='yolov8', score_threshold=0.0)(out, Letterbox.compute(100, 100, 320, 320))
        assert [len(d) for d in res] == [0, 0]
        boxes = np.full((5, 4), value)
        assert len(nms(boxes, np.full(5, value), 0.5)) in (0, 5)
        assert len(batched_nms(boxes, np.ones(5), np.zeros(5, np.int32), 0.5)) == 5
