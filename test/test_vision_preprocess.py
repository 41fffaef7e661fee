"""Letterbox geometry and the Preprocessor (qvision_ros.vision.preprocess)."""
import cv2
import numpy as np
import pytest

from qvision_kernels.requant import quantize
from qvision_ros.errors import ConfigError, ImageError
from qvision_ros.vision.image import array_to_image_fields, image_to_array, to_bgr
from qvision_ros.vision.preprocess import Letterbox, Preprocessor, normalize_float32

# (src_w, src_h, dst_w, dst_h, mode) -> (resized_w, resized_h, pad_x, pad_y, scale_x, scale_y, scale),
# computed by hand: scale = min(dst_w / src_w, dst_h / src_h), resized = floor(src * scale + 0.5),
# pad = (dst - resized) // 2.
GOLDEN = [
    ((640, 480, 320, 320, 'letterbox'), (320, 240, 0, 40, 0.5, 0.5, 0.5)),
    ((1920, 1080, 640, 640, 'letterbox'), (640, 360, 0, 140, 1 / 3, 1 / 3, 1 / 3)),
    # 300 * 320/700 = 137.142... -> 137; 320 - 137 = 183 -> 91 left, 92 right.
    ((300, 700, 320, 320, 'letterbox'), (137, 320, 91, 0, 137 / 300, 320 / 700, 320 / 700)),
    ((500, 500, 320, 320, 'letterbox'), (320, 320, 0, 0, 0.64, 0.64, 0.64)),
    ((160, 120, 320, 320, 'letterbox'), (320, 240, 0, 40, 2.0, 2.0, 2.0)),          # upscaling
    ((640, 480, 416, 256, 'letterbox'), (341, 256, 37, 0, 341 / 640, 256 / 480, 256 / 480)),
    ((640, 480, 320, 320, 'stretch'), (320, 320, 0, 0, 0.5, 2 / 3, 0.5)),
    ((1920, 1080, 640, 640, 'stretch'), (640, 640, 0, 0, 1 / 3, 640 / 1080, 1 / 3)),
]


@pytest.mark.parametrize('args,expected', GOLDEN, ids=lambda v: str(v))
def test_letterbox_golden(args, expected):
    lb = Letterbox.compute(*args)
    rw, rh, px, py, sx, sy, s = expected
    assert (lb.resized_w, lb.resized_h, lb.pad_x, lb.pad_y) == (rw, rh, px, py)
    assert (lb.src_w, lb.src_h, lb.dst_w, lb.dst_h, lb.mode) == args
    assert lb.scale_x == pytest.approx(sx, rel=1e-15)
    assert lb.scale_y == pytest.approx(sy, rel=1e-15)
    assert lb.scale == pytest.approx(s, rel=1e-15)
    assert lb.content == (px, py, px + rw, py + rh)
    # The whole source frame maps exactly onto the content area and back.
    full = np.array([[0, 0, args[0], args[1]]], np.float64)
    np.testing.assert_allclose(lb.to_network(full), [lb.content], rtol=0, atol=1e-9)
    np.testing.assert_allclose(lb.to_source(np.array([lb.content], np.float64)), full, rtol=0, atol=1e-9)


@pytest.mark.parametrize('args', [g[0] for g in GOLDEN])
def test_letterbox_round_trip(args):
    lb = Letterbox.compute(*args)
    rng = np.random.default_rng(1)
    src = rng.uniform(-50, max(args[:2]) + 50, (100, 4))
    np.testing.assert_allclose(lb.to_source(lb.to_network(src)), src, rtol=1e-12, atol=1e-9)
    net = rng.uniform(0, max(args[2:4]), (3, 7, 4)).astype(np.float32)   # any leading shape
    back = lb.to_network(lb.to_source(net))
    assert back.dtype == np.float32 and back.shape == net.shape
    np.testing.assert_allclose(back, net, rtol=1e-5, atol=1e-3)


def test_letterbox_hand_mapping():
    lb = Letterbox.compute(640, 480, 320, 320)
    # Network (75, 80)-(125, 120) is source (150, 80)-(250, 160): x / 0.5, (y - 40) / 0.5.
    np.testing.assert_allclose(lb.to_source([75, 80, 125, 120]), [150, 80, 250, 160])
    assert Letterbox.identity(64, 48).to_source(np.array([1.5, 2, 3, 4])).tolist() == [1.5, 2, 3, 4]


def test_letterbox_validation():
    with pytest.raises(ConfigError):
        Letterbox.compute(0, 10, 32, 32)
    with pytest.raises(ConfigError):
        Letterbox.compute(10, 10, 32, 32, mode='crop')
    with pytest.raises(ConfigError):
        Letterbox(10, 10, 32, 32, 'letterbox', 40, 32, 0, 0)          # content wider than the input
    with pytest.raises(ConfigError):
        Letterbox(10, 10, 32, 32, 'letterbox', 32, 32, 0.5, 0)
    with pytest.raises(ConfigError):
        Letterbox.compute(10, 10, 32, 32).to_source(np.zeros((2, 3)))
    with pytest.raises(Exception):
        Letterbox.compute(10, 10, 32, 32).pad_x = 3                    # frozen


def _frame(w=640, h=480, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_constant_frame_letterbox_golden_pixels():
    frame = np.empty((480, 640, 3), np.uint8)
    frame[:] = (10, 20, 30)                                    # B, G, R
    p = Preprocessor(320, 320, pad_value=114, channel_order='rgb')
    t, lb = p(frame)
    assert t.shape == (1, 320, 320, 3) and t.dtype == np.float32
    # Content rows 40..279 hold R, G, B = 30, 20, 10; the pad rows hold 114 as a pixel value.
    np.testing.assert_array_equal(t[0, 40:280], np.broadcast_to(np.float32([30, 20, 10]) / np.float32(255),
                                                                (240, 320, 3)))
    assert (t[0, :40] == np.float32(114) / np.float32(255)).all()
    assert (t[0, 280:] == np.float32(114) / np.float32(255)).all()
    assert lb == Letterbox.compute(640, 480, 320, 320)


def test_resize_matches_opencv_and_pads():
    frame = _frame(300, 700)
    p = Preprocessor(320, 320, pad_value=7, channel_order='bgr')
    img, lb = p.resize(frame)
    assert (lb.pad_x, lb.resized_w) == (91, 137)
    np.testing.assert_array_equal(img[:, 91:228], cv2.resize(frame, (137, 320), interpolation=cv2.INTER_LINEAR))
    assert (img[:, :91] == 7).all() and (img[:, 228:] == 7).all()


def test_stretch_has_no_padding():
    frame = _frame(640, 480)
    p = Preprocessor(320, 320, resize_mode='stretch', channel_order='bgr')
    img, lb = p.resize(frame)
    assert (lb.pad_x, lb.pad_y, lb.resized_w, lb.resized_h) == (0, 0, 320, 320)
    np.testing.assert_array_equal(img, cv2.resize(frame, (320, 320), interpolation=cv2.INTER_LINEAR))


def test_same_size_frame_is_copied_unchanged():
    frame = _frame(64, 48)
    img, lb = Preprocessor(64, 48, channel_order='bgr').resize(frame)
    np.testing.assert_array_equal(img, frame)


@pytest.mark.parametrize('layout', ['nhwc', 'nchw'])
@pytest.mark.parametrize('order', ['rgb', 'bgr'])
def test_float_output_equals_the_formula(layout, order):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    p = Preprocessor(96, 64, channel_order=order, mean=mean, std=std, layout=layout)
    frame = _frame(150, 90)
    t, lb = p(frame)
    img = cv2.resize(frame, (lb.resized_w, lb.resized_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((64, 96, 3), 114, np.uint8)
    canvas[lb.pad_y:lb.pad_y + lb.resized_h, lb.pad_x:lb.pad_x + lb.resized_w] = img
    if order == 'rgb':
        canvas = canvas[..., ::-1]
    x = (canvas.astype(np.float32) / np.float32(255) - np.float32(mean)) / np.float32(std)
    expected = x[None] if layout == 'nhwc' else x.transpose(2, 0, 1)[None]
    assert t.shape == expected.shape and t.dtype == np.float32
    np.testing.assert_array_equal(t, expected)


@pytest.mark.parametrize('layout', ['nhwc', 'nchw'])
@pytest.mark.parametrize('dtype,scale,zp', [
    (np.uint8, 1 / 255, 0),              # plain 0..1 input
    (np.uint8, 0.018, 120),              # ImageNet normalisation folded in
    (np.uint8, 0.004, 128),              # saturates at both ends
    (np.int8, 0.0175, -10),
    (np.int8, 0.003, 0),                 # saturates
])
def test_quantised_output_is_bitexact_with_quantize_of_normalise(layout, dtype, scale, zp):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    p = Preprocessor(80, 80, mean=mean, std=std, input_scale=scale, input_zero_point=zp, layout=layout,
                     dtype=dtype, pad_value=0)
    frame = _frame(120, 100, seed=4)
    frame[0, :40] = 0
    frame[1, :40] = 255                   # both extremes present
    t, _ = p(frame)
    img, _ = p.resize(frame)
    expected = quantize(normalize_float32(img, mean, std), scale, zp, dtype=dtype)
    expected = expected[None] if layout == 'nhwc' else expected.transpose(2, 0, 1)[None]
    assert t.dtype == np.dtype(dtype) and t.shape == expected.shape
    np.testing.assert_array_equal(t, expected)
    if scale in (0.004, 0.003):
        info = np.iinfo(dtype)
        assert t.min() == info.min and t.max() == info.max


def test_lut_is_the_formula_for_every_level():
    p = Preprocessor(8, 8, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0), input_scale=0.01, input_zero_point=77)
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    expected = quantize(normalize_float32(levels, p.mean, p.std), 0.01, 77)
    np.testing.assert_array_equal(p.lut[0], expected)
    # Hand value: p = 255, channel 0: (1 - 0.1) / 0.5 = 1.8 -> 1.8 / 0.01 = 180 -> + 77 = 257 -> 255.
    assert p.lut[0, 255, 0] == 255
    # p = 0, channel 1: (0 - 0.2) / 0.25 = -0.8 -> -80 + 77 = -3 -> 0; channel 2: -0.15 -> -15 + 77 = 62.
    assert p.lut[0, 0, 1] == 0 and p.lut[0, 0, 2] == 62


def test_channel_order_swaps_channels():
    frame = _frame(64, 64)
    rgb, _ = Preprocessor(32, 32, channel_order='rgb')(frame)
    bgr, _ = Preprocessor(32, 32, channel_order='bgr')(frame)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])


@pytest.mark.parametrize('order', ['rgb', 'bgr'])
@pytest.mark.parametrize('encoding', ['rgb8', 'bgra8', 'rgba8', 'mono8', 'uyvy', 'yuyv', 'yuv422', 'yuv422_yuy2'])
def test_every_encoding_gives_the_tensor_of_its_bgr_picture(encoding, order):
    rng = np.random.default_rng(2)
    ch = {'rgb8': 3, 'bgra8': 4, 'rgba8': 4, 'mono8': 1}.get(encoding, 2)
    frame = rng.integers(0, 256, (60, 80, ch), dtype=np.uint8)
    p = Preprocessor(48, 48, channel_order=order, input_scale=0.02, input_zero_point=3)
    t, lb = p(frame, encoding=encoding)
    expected, lb2 = Preprocessor(48, 48, channel_order=order, input_scale=0.02, input_zero_point=3)(
        to_bgr(frame, encoding))
    assert lb == lb2
    np.testing.assert_array_equal(t, expected)
    if encoding == 'mono8':
        assert (t[..., 0] == t[..., 1]).all() and (t[..., 1] == t[..., 2]).all()


def test_row_padded_frame_view_gives_same_result():
    frame = _frame(80, 60)
    step = 80 * 3 + 16
    raw = np.zeros((60, step), np.uint8)
    raw[:, :240] = frame.reshape(60, -1)
    view = image_to_array(raw.tobytes(), 80, 60, 'bgr8', step)
    p = Preprocessor(32, 32)
    np.testing.assert_array_equal(p(view)[0], p(frame)[0])
    fields = array_to_image_fields(frame, 'bgr8')
    np.testing.assert_array_equal(p(image_to_array(**{k: fields[k] for k in ('data', 'width', 'height',
                                                                              'encoding', 'step')}))[0],
                                  p(frame)[0])


@pytest.mark.parametrize('layout', ['nhwc', 'nchw'])
def test_normalize_accepts_the_other_channel_order_and_other_encodings(layout):
    frame = _frame(32, 32)
    p = Preprocessor(32, 32, channel_order='rgb', input_scale=0.01, input_zero_point=0, layout=layout)
    a = p.normalize(frame[..., ::-1].copy(), 'rgb8')
    np.testing.assert_array_equal(p.normalize(frame, 'bgr8'), a)
    gray = frame[..., 0].copy()
    np.testing.assert_array_equal(p.normalize(gray, 'mono8'), p.normalize(np.dstack([gray] * 3), 'bgr8'))
    with pytest.raises(ImageError, match='must be 32 x 32'):
        p.normalize(_frame(33, 32), 'bgr8')


def test_out_is_filled_and_buffers_are_reused():
    p = Preprocessor(64, 48, layout='nchw', input_scale=0.01, input_zero_point=5)
    f1, f2 = _frame(100, 80, 1), _frame(100, 80, 2)
    out = np.empty(p.output_shape, np.uint8)
    t, _ = p(f1, out=out)
    assert t is out
    ref1 = p(f1)[0]
    np.testing.assert_array_equal(out, ref1)
    buffers = {k: id(v) for k, v in p._buffers.items()}
    batch = np.empty((2,) + p.output_shape[1:], np.uint8)
    assert p(f1, out=batch[0])[0] is not None
    p(f2, out=batch[1])
    np.testing.assert_array_equal(batch[0], ref1[0])
    np.testing.assert_array_equal(batch[1], p(f2)[0][0])
    assert {k: id(v) for k, v in p._buffers.items()} == buffers      # nothing reallocated
    # Writing into out must not disturb the pad of a differently sized frame's geometry.
    img_out = np.full((48, 64, 3), 1, np.uint8)
    img, lb = p.resize(_frame(64, 20), out=img_out)
    assert img is img_out and lb.pad_y > 0 and (img_out[:lb.pad_y] == 114).all()


def test_bad_out_raises_config_error():
    p = Preprocessor(16, 16)
    for bad in (np.empty((1, 16, 16, 3), np.float64), np.empty((1, 3, 16, 16), np.float32),
                np.empty((2, 16, 16, 3), np.float32), np.empty((1, 16, 16, 3), np.float32)[:, :, ::-1], [0]):
        with pytest.raises(ConfigError, match='out must be'):
            p(_frame(16, 16), out=bad)
    ro = np.empty((16, 16, 3), np.uint8)
    ro.setflags(write=False)
    with pytest.raises(ConfigError, match='read-only'):
        p.resize(_frame(16, 16), out=ro)


@pytest.mark.parametrize('kwargs,match', [
    (dict(input_width=0), 'input_width'),
    (dict(input_width=32.0), 'input_width'),
    (dict(input_height=True), 'input_height'),
    (dict(resize_mode='crop'), 'resize_mode'),
    (dict(pad_value=256), 'pad_value'),
    (dict(pad_value=-1), 'pad_value'),
    (dict(pad_value=1.5), 'pad_value'),
    (dict(channel_order='grb'), 'channel_order'),
    (dict(mean=(0.1, 0.2)), 'mean'),
    (dict(mean='abc'), 'mean'),
    (dict(std=(1, 0, 1)), 'std'),
    (dict(std=float('nan')), 'std'),
    (dict(layout='chw'), 'layout'),
    (dict(input_scale=0.1), 'both'),
    (dict(input_zero_point=3), 'both'),
    (dict(input_scale=0.0, input_zero_point=0), 'input_scale'),
    (dict(input_scale=float('inf'), input_zero_point=0), 'input_scale'),
    (dict(input_scale=1e-50, input_zero_point=0), 'input_scale'),
    (dict(input_scale='x', input_zero_point=0), 'input_scale'),
    (dict(input_scale=0.1, input_zero_point=256), 'input_zero_point'),
    (dict(input_scale=0.1, input_zero_point=200, dtype=np.int8), 'input_zero_point'),
    (dict(input_scale=0.1, input_zero_point=0, dtype=np.float32), 'uint8 or int8'),
    (dict(dtype=np.uint8), 'input_scale'),
])
def test_parameter_validation(kwargs, match):
    base = dict(input_width=32, input_height=32)
    base.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        Preprocessor(**base)


def test_bad_frames_raise_image_error():
    p = Preprocessor(16, 16)
    with pytest.raises(ImageError):
        p(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ImageError):
        p(np.zeros((10, 10, 4), np.uint8))            # 4 channels declared as bgr8
    with pytest.raises(ImageError):
        p(np.zeros((10, 11, 2), np.uint8), encoding='uyvy')
    with pytest.raises(ImageError):
        p(np.zeros((10, 10, 3), np.uint8), encoding='mono16')
    with pytest.raises(ImageError):
        p(np.zeros((0, 10, 3), np.uint8))
