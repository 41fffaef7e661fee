"""Fuzzing the image layer: sensor_msgs/Image fields and frames -> image_to_array, to_bgr, Preprocessor.

Every case ends in a checked result or an ImageError / ConfigError with a message (qvision_ros.fuzz
classifies, anything else fails the test); the regression tests below are inputs that once escaped.
"""
import array

import numpy as np
import pytest

from fuzz_strategies import frames, image_messages, run_cases
from qvision_ros import fuzz
from qvision_ros.errors import ConfigError, ImageError
from qvision_ros.vision.decode import Decoder
from qvision_ros.vision.image import image_to_array, to_bgr
from qvision_ros.vision.preprocess import Letterbox, Preprocessor


def test_fuzz_image_messages():
    seen = run_cases(image_messages(), fuzz.check_image_message, 700)
    # the strategy reaches both valid frames and each kind of refusal
    assert seen['ok'] >= 100, seen
    assert seen['ImageError@image_to_array'] >= 100, seen
    assert set(seen) <= {'ok', 'ImageError@image_to_array', 'ImageError@to_bgr', 'ImageError@Preprocessor'}, seen


def test_fuzz_frames():
    seen = run_cases(frames(), lambda case: fuzz.check_frame(*case), 300)
    assert seen['ok'] >= 50 and seen['ImageError@to_bgr'] >= 20, seen


def test_image_messages_from_the_long_mode_generator():
    """The generator of ``python -m qvision_ros.fuzz`` (a few cases, so that it stays runnable)."""
    seen = {}
    for k in range(100):
        rng = np.random.default_rng([0, 0, k])
        o = fuzz.check_image_message(fuzz.image_message(rng)) if k % 2 else fuzz.check_frame(*fuzz.frame_array(rng))
        seen[o] = seen.get(o, 0) + 1
    assert seen.get('ok', 0) >= 10, seen


# --------------------------------------------------------------------------------------- regressions

def test_non_contiguous_memoryview_is_an_image_error():
    # was BufferError from numpy.frombuffer
    data = memoryview(bytes(range(24)) * 2)[::2]
    with pytest.raises(ImageError, match='cannot be read as a byte buffer'):
        image_to_array(data, 4, 2, 'bgr8', 12)


def test_array_of_16_bit_items_is_refused():
    with pytest.raises(ImageError, match="typecode 'H'"):
        image_to_array(array.array('H', [0] * 12), 2, 2, 'bgr8', 6)


@pytest.mark.parametrize('dtype', [1e9, 256, 'no such type', [1, 2], object()])
def test_preprocessor_dtype_that_is_not_a_dtype(dtype):
    # was TypeError from numpy.dtype
    with pytest.raises(ConfigError, match='dtype must be a NumPy dtype'):
        Preprocessor(32, 24, dtype=dtype)
    with pytest.raises(ConfigError, match='dtype must be a NumPy dtype'):
        Preprocessor(32, 24, dtype=dtype, input_scale=0.1, input_zero_point=0)


@pytest.mark.parametrize('kw', [dict(std=1e-45), dict(std=1e-40), dict(mean=1e38, std=1e-3)])
def test_normalisation_that_overflows_float32_is_refused(kw):
    # std=1e-45 is > 0 as a Python float but normalisation gave inf in every pixel of the tensor
    with pytest.raises(ConfigError, match='not finite'):
        Preprocessor(32, 24, **kw)
    # quantised output saturates instead: finite, so accepted
    pre = Preprocessor(32, 24, input_scale=0.1, input_zero_point=0, **kw)
    tensor, _ = pre(np.zeros((5, 7, 3), np.uint8))
    assert tensor.dtype == np.uint8


@pytest.mark.parametrize('name', ['resize_mode', 'channel_order', 'layout'])
@pytest.mark.parametrize('value', [np.array(['letterbox', 'rgb']), np.array(['nhwc']), ['rgb'], None, 3])
def test_string_options_given_as_arrays(name, value):
    # was ValueError ('truth value of an array is ambiguous') from `value not in (...)`, or an array
    # accepted as the option
    with pytest.raises(ConfigError, match=name):
        Preprocessor(32, 24, **{name: value})


@pytest.mark.parametrize('value', [np.array(['auto', 'yolov8']), np.array(['yolov8']), ['yolov8']])
def test_decoder_kind_given_as_array(value):
    with pytest.raises(ConfigError, match='kind must be one of'):
        Decoder(kind=value)
    with pytest.raises(ConfigError, match='transposed must be'):
        Decoder(transposed=np.array([True, False]))


def test_letterbox_mode_given_as_array():
    with pytest.raises(ConfigError, match='mode'):
        Letterbox.compute(10, 10, 32, 32, np.array(['letterbox', 'stretch']))


def test_zero_stride_and_flipped_frames_give_the_contiguous_result():
    """Views that no camera gives but a caller may: the same result as the contiguous copy."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    pre = Preprocessor(16, 12, channel_order='bgr', layout='nchw')
    for view in (img[::-1], np.broadcast_to(img[:1], img.shape), np.asfortranarray(img), img[:, ::-1]):
        a, _ = pre(view)
        b, _ = pre(np.ascontiguousarray(view))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(to_bgr(view, 'rgb8'), to_bgr(np.ascontiguousarray(view), 'rgb8'))
