"""sensor_msgs/Image fields <-> arrays and colour conversion (qvision_ros.vision.image)."""
import array

import cv2
import numpy as np
import pytest

from qvision_ros.errors import ImageError
from qvision_ros.vision.image import (SUPPORTED_ENCODINGS, array_to_image_fields, encoding_info, from_bgr,
                                      image_to_array, to_bgr)

CHANNELS = {'bgr8': 3, 'rgb8': 3, 'bgra8': 4, 'rgba8': 4, 'mono8': 1, 'uyvy': 2, 'yuv422': 2, 'yuyv': 2,
            'yuv422_yuy2': 2}

BUFFER_KINDS = {
    'bytes': bytes,
    'bytearray': bytearray,
    'memoryview': lambda b: memoryview(bytearray(b)),
    'array.array': lambda b: array.array('B', b),
    'numpy': lambda b: np.frombuffer(b, np.uint8).copy(),
}


def test_supported_encodings_match_ros_names():
    assert set(SUPPORTED_ENCODINGS) == set(CHANNELS)
    for enc, ch in CHANNELS.items():
        assert encoding_info(enc)[0] == ch
    # The deprecated ROS names are aliases of the fourcc names (sensor_msgs/image_encodings.hpp).
    assert encoding_info('yuv422') == (2, 'uyvy')
    assert encoding_info('yuv422_yuy2') == (2, 'yuyv')


@pytest.mark.parametrize('encoding', sorted(CHANNELS))
@pytest.mark.parametrize('kind', sorted(BUFFER_KINDS))
def test_round_trip_every_encoding_and_buffer_type(encoding, kind):
    rng = np.random.default_rng(7)
    ch = CHANNELS[encoding]
    img = rng.integers(0, 256, (5, 6, ch), dtype=np.uint8)
    fields = array_to_image_fields(img, encoding)
    assert fields['width'] == 6 and fields['height'] == 5 and fields['encoding'] == encoding
    assert fields['step'] == 6 * ch and fields['is_bigendian'] == 0
    assert isinstance(fields['data'], bytes) and len(fields['data']) == 5 * 6 * ch
    assert fields['data'] == img.tobytes()
    data = BUFFER_KINDS[kind](fields['data'])
    back = image_to_array(data, fields['width'], fields['height'], encoding, fields['step'])
    assert back.shape == (5, 6, ch) and back.dtype == np.uint8
    np.testing.assert_array_equal(back, img)


def test_known_pixel_layout_bgr_rgb():
    # One row of two pixels written byte by byte: what ROS puts in `data`.
    data = bytes([1, 2, 3, 4, 5, 6])
    a = image_to_array(data, 2, 1, 'rgb8', 6)
    assert a[0, 0].tolist() == [1, 2, 3] and a[0, 1].tolist() == [4, 5, 6]
    assert to_bgr(a, 'rgb8')[0].tolist() == [[3, 2, 1], [6, 5, 4]]
    b = image_to_array(data, 2, 1, 'bgr8', 6)
    assert to_bgr(b, 'bgr8') is b   # already BGR: no copy


@pytest.mark.parametrize('encoding,pixel', [
    ('bgr8', [10, 20, 30]), ('rgb8', [30, 20, 10]), ('bgra8', [10, 20, 30, 99]), ('rgba8', [30, 20, 10, 99]),
])
def test_to_bgr_golden_colour(encoding, pixel):
    img = np.tile(np.array(pixel, np.uint8), (3, 4, 1))
    bgr = to_bgr(img, encoding)
    assert bgr.shape == (3, 4, 3)
    assert (bgr == np.array([10, 20, 30], np.uint8)).all()


def test_mono8_to_bgr():
    img = np.array([[0, 77, 255]], np.uint8)
    a = image_to_array(img.tobytes(), 3, 1, 'mono8', 3)
    assert a.shape == (1, 3, 1)
    bgr = to_bgr(a, 'mono8')
    assert bgr[0].tolist() == [[0, 0, 0], [77, 77, 77], [255, 255, 255]]
    assert to_bgr(img, 'mono8').shape == (1, 3, 3)   # H x W accepted for mono8


# Hand-computed BT.601 limited range: Y=16 -> 0, Y=235 -> 255, Y=128 -> 1.164 * 112 = 130.4 -> 130;
# U=128, V=255, Y=128: R = 130.4 + 1.596 * 127 (saturates 255), G = 130.4 - 0.813 * 127 = 27.1, B = 130.4.
@pytest.mark.parametrize('uyvy,expected', [
    ([128, 16, 128, 235], [[0, 0, 0], [255, 255, 255]]),     # Y0 black, Y1 white: checks the byte order
    ([128, 128, 128, 128], [[130, 130, 130], [130, 130, 130]]),
    ([128, 128, 255, 128], [[130, 27, 255], [130, 27, 255]]),
])
def test_yuv422_golden(uyvy, expected):
    u, y0, v, y1 = uyvy
    for enc, data in (('uyvy', [u, y0, v, y1]), ('yuv422', [u, y0, v, y1]),
                      ('yuyv', [y0, u, y1, v]), ('yuv422_yuy2', [y0, u, y1, v])):
        a = image_to_array(bytes(data), 2, 1, enc, 4)
        assert to_bgr(a, enc)[0].tolist() == expected, enc


@pytest.mark.parametrize('encoding,code', [('uyvy', cv2.COLOR_YUV2BGR_UYVY), ('yuv422', cv2.COLOR_YUV2BGR_UYVY),
                                           ('yuyv', cv2.COLOR_YUV2BGR_YUY2),
                                           ('yuv422_yuy2', cv2.COLOR_YUV2BGR_YUY2)])
def test_yuv422_random_matches_opencv_with_row_padding(encoding, code):
    rng = np.random.default_rng(3)
    h, w, step = 7, 10, 10 * 2 + 6
    raw = rng.integers(0, 256, (h, step), dtype=np.uint8)
    a = image_to_array(raw.tobytes(), w, h, encoding, step)
    expected = cv2.cvtColor(np.ascontiguousarray(raw[:, :w * 2]).reshape(h, w, 2), code)
    np.testing.assert_array_equal(to_bgr(a, encoding), expected)


@pytest.mark.parametrize('encoding', sorted(CHANNELS))
def test_row_padding_is_a_view_that_skips_the_padding(encoding):
    ch = CHANNELS[encoding]
    h, w = 4, 6
    step = w * ch + 5
    rng = np.random.default_rng(11)
    img = rng.integers(0, 200, (h, w, ch), dtype=np.uint8)
    raw = np.full((h, step), 0xEE, np.uint8)        # padding bytes that never occur in the pixels
    raw[:, :w * ch] = img.reshape(h, -1)
    buf = bytearray(raw.tobytes())
    a = image_to_array(buf, w, h, encoding, step)
    np.testing.assert_array_equal(a, img)
    assert not (a == 0xEE).any()
    assert np.shares_memory(a, np.frombuffer(buf, np.uint8))      # no copy
    assert a.strides[0] == step
    # Converting a padded frame equals converting the packed one.
    np.testing.assert_array_equal(to_bgr(a, encoding), to_bgr(img, encoding))


def test_bytes_give_a_read_only_view_and_longer_data_is_accepted():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    a = image_to_array(img.tobytes() + b'extra', 3, 2, 'bgr8', 9)
    np.testing.assert_array_equal(a, img)
    assert not a.flags.writeable


@pytest.mark.parametrize('is_bigendian', [0, 1, True, False, np.uint8(1)])
def test_is_bigendian_is_irrelevant_for_8_bit(is_bigendian):
    a = image_to_array(bytes(range(6)), 2, 1, 'rgb8', 6, is_bigendian=is_bigendian)
    assert a.reshape(-1).tolist() == list(range(6))


def _err(fn, *args, match=None, **kw):
    with pytest.raises(ImageError, match=match):
        fn(*args, **kw)


def test_bad_frames_raise_image_error_saying_what_was_expected():
    good = bytes(2 * 3 * 4)
    _err(image_to_array, good[:-1], 4, 2, 'bgr8', 12, match='needs step \\* height = 24')
    _err(image_to_array, good, 4, 2, 'bgr8', 11, match='step 11 is smaller than a row.*12 bytes')
    _err(image_to_array, good, 0, 2, 'bgr8', 12, match='width must be >= 1')
    _err(image_to_array, good, 4, 0, 'bgr8', 12, match='height must be >= 1')
    _err(image_to_array, good, 3, 2, 'uyvy', 6, match='even width')
    _err(image_to_array, good, 3, 2, 'yuyv', 8, match='even width')
    _err(image_to_array, good, 4, 2, 'bgr9', 12, match="unsupported image encoding 'bgr9'; supported: bgr8")
    _err(image_to_array, good, 4, 2, 'bayer_rggb8', 4, match='unsupported')
    _err(image_to_array, good, 4, 2, 'nv12', 4, match='unsupported')
    _err(image_to_array, good, 4.0, 2, 'bgr8', 12, match='width must be an integer')
    _err(image_to_array, good, True, 2, 'bgr8', 12, match='width must be an integer')
    _err(image_to_array, good, 4, 2, 'bgr8', '12', match='step must be an integer')
    _err(image_to_array, good, 4, 2, 'bgr8', 12, is_bigendian=2, match='is_bigendian')
    _err(image_to_array, 'text', 4, 2, 'bgr8', 12, match='image data must be bytes')
    _err(image_to_array, list(good), 4, 2, 'bgr8', 12, match='image data must be bytes')
    _err(image_to_array, np.zeros(24, np.float32), 4, 2, 'bgr8', 12, match='dtype uint8')
    _err(image_to_array, array.array('H', [0] * 12), 4, 2, 'bgr8', 12, match='typecode')
    _err(image_to_array, good, 4, 2, None, 12, match='unsupported')


@pytest.mark.parametrize('encoding', ['mono16', 'rgb16', 'bgra16', '16UC1'])
def test_16_bit_encodings_are_named_unsupported(encoding):
    with pytest.raises(ImageError) as info:
        image_to_array(bytes(64), 4, 2, encoding, 8)
    msg = str(info.value)
    assert '16-bit' in msg and 'mono8' in msg and 'yuyv' in msg


def test_array_to_image_fields_validation():
    _err(array_to_image_fields, np.zeros((2, 3, 3), np.uint8), 'bgra8', match=r'shape \(H, W, 4\)')
    _err(array_to_image_fields, np.zeros((2, 3, 3), np.float32), 'bgr8', match='uint8')
    _err(array_to_image_fields, np.zeros((2, 3, 2), np.uint8), 'uyvy', match='even width')
    _err(array_to_image_fields, np.zeros((0, 3, 3), np.uint8), 'bgr8', match='empty')
    _err(array_to_image_fields, [[1, 2, 3]], 'bgr8', match='NumPy array')
    f = array_to_image_fields(np.full((2, 3), 9, np.uint8), 'mono8')     # H x W for mono8
    assert f['step'] == 3 and f['data'] == bytes([9] * 6)
    # A non-contiguous array is packed.
    big = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    f = array_to_image_fields(big[:, ::2], 'rgb8')
    assert f['width'] == 3 and f['step'] == 9 and f['data'] == np.ascontiguousarray(big[:, ::2]).tobytes()


def test_to_bgr_out_and_errors():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (4, 6, 2), dtype=np.uint8)
    out = np.empty((4, 6, 3), np.uint8)
    assert to_bgr(img, 'uyvy', out=out) is out
    np.testing.assert_array_equal(out, cv2.cvtColor(img, cv2.COLOR_YUV2BGR_UYVY))
    bgr = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    assert to_bgr(bgr, 'bgr8', out=out) is out and (out == bgr).all()
    _err(to_bgr, img, 'uyvy', out=np.empty((4, 6, 3), np.float32), match='uint8 array of shape')
    _err(to_bgr, img, 'uyvy', out=np.empty((4, 5, 3), np.uint8), match='shape')
    _err(to_bgr, img, 'bgr8', match=r'shape \(H, W, 3\)')


@pytest.mark.parametrize('encoding', ['bgr8', 'rgb8', 'bgra8', 'rgba8'])
def test_from_bgr_inverts_to_bgr(encoding):
    bgr = np.random.default_rng(5).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    enc = from_bgr(bgr, encoding)
    assert enc.shape == (3, 5, CHANNELS[encoding])
    if CHANNELS[encoding] == 4:
        assert (enc[..., 3] == 255).all()
    np.testing.assert_array_equal(to_bgr(enc, encoding), bgr)


def test_from_bgr_mono_and_unsupported():
    bgr = np.random.default_rng(6).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    gray = from_bgr(bgr, 'mono8')
    assert gray.shape == (3, 5, 1)
    np.testing.assert_array_equal(gray[..., 0], cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    _err(from_bgr, bgr, 'uyvy', match='cannot produce')
