"""NumPy references of the pooling family (max, average, global average); they exist for testing.

Layout NHWC, padding (top, left, bottom, right).  Each reference lays the image on a canvas that also
covers the padding and the ceil-mode overhang, takes every window tap as one strided slice of it and
reduces over the taps; what lies outside the image is marked (NaN for max, 0 plus a mask for average).

Written once here and imported by :mod:`qvision_kernels.pool`: :func:`pool_output_size` (the output size
rule of ONNX MaxPool / AveragePool) and :func:`avg_multiplier` (the requantisation multiplier of a
quantised average over ``count`` values).
"""
import numpy as np

from ..requant import requantize


def pool_output_size(size, k, stride, pad_begin, pad_end, dilation=1, ceil_mode=False):
    """Output length along one axis, as ONNX MaxPool / AveragePool (and PyTorch) define it.

    ``ext = dilation * (k - 1) + 1``; floor mode: ``(size + pads - ext) // stride + 1``; ceil mode rounds
    the division up, then drops the last window if it would start at or after the end of the image plus
    its leading padding (a window must start inside the image or the left/top padding).  0 when the padded
    input is shorter than one window.
    """
    ext = dilation * (k - 1) + 1
    num = size + pad_begin + pad_end - ext
    if num < 0:
        return 0
    if not ceil_mode:
        return num // stride + 1
    out = -(-num // stride) + 1
    if (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def avg_multiplier(x_scale, y_scale, count):
    """``float32(float64(s_x) / (float64(s_y) * count))``: the multiplier of a sum of ``count`` values
    (``count`` may be an array: one multiplier per count)."""
    c = np.asarray(count, dtype=np.float64)
    with np.errstate(over='ignore'):
        return np.asarray(np.float64(x_scale) / (np.float64(y_scale) * c), dtype=np.float32)


def _taps(x, kernel, stride, pads, dilation, ceil_mode, fill, region=None):
    """Every window tap of NHWC ``x`` as one array [KH * KW, N, Ho, Wo, C].

    The canvas holds ``x`` at offset (top, left) and ``fill`` elsewhere; with ``region=(rows, cols)`` only
    canvas[:rows, :cols] holds ``x`` (used to mark the padded area itself).
    """
    n, h, w, c = x.shape
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    pt, pl, pb, pr = pads
    ho = pool_output_size(h, kh, sh, pt, pb, dh, ceil_mode)
    wo = pool_output_size(w, kw, sw, pl, pr, dw, ceil_mode)
    ch = max(pt + h + pb, (ho - 1) * sh + dh * (kh - 1) + 1)
    cw = max(pl + w + pr, (wo - 1) * sw + dw * (kw - 1) + 1)
    canvas = np.full((n, ch, cw, c), fill, dtype=x.dtype)
    if region is None:
        canvas[:, pt:pt + h, pl:pl + w] = x
    else:
        canvas[:, :region[0], :region[1]] = x[:, :1, :1]
    taps = [canvas[:, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
            for i in range(kh) for j in range(kw)]
    return np.stack(taps)


def max_pool2d(x, kernel, stride, pads, dilation=(1, 1), ceil_mode=False):
    """Max over the window positions inside the image (padding never wins); same dtype out."""
    t = _taps(np.asarray(x).astype(np.float64), kernel, stride, pads, dilation, ceil_mode, np.nan)
    return np.nanmax(t, axis=0).astype(x.dtype)


def _counts(shape, kernel, stride, pads, ceil_mode, count_include_pad):
    """Per output pixel [Ho, Wo]: positions inside the image, or inside the padded input."""
    n, h, w, c = shape
    ones = np.ones((1, h, w, 1), np.int64)
    if count_include_pad:
        t = _taps(ones, kernel, stride, pads, (1, 1), ceil_mode, 0,
                  region=(pads[0] + h + pads[2], pads[1] + w + pads[3]))
    else:
        t = _taps(ones, kernel, stride, pads, (1, 1), ceil_mode, 0)
    return t.sum(axis=0)[0, :, :, 0]


def avg_pool2d_f32(x, kernel, stride, pads, ceil_mode=False, count_include_pad=False):
    """Mean of the window: sum over the image positions / count (computed in float64, rounded once)."""
    t = _taps(np.asarray(x).astype(np.float64), kernel, stride, pads, (1, 1), ceil_mode, 0.0)
    count = _counts(x.shape, kernel, stride, pads, ceil_mode, count_include_pad)
    return (t.sum(axis=0) / count[None, :, :, None]).astype(np.float32)


def avg_pool2d_int8(x, kernel, stride, pads, x_scale, x_zero_point, y_scale, y_zero_point, ceil_mode=False,
                    count_include_pad=False):
    """Quantised average: ``acc = sum(x - zp_x)`` over the image positions of the window (padding holds a
    real 0 and adds nothing), ``y = requantize(acc, avg_multiplier(s_x, s_y, count), zp_y)``."""
    xs = np.asarray(x).astype(np.int64) - np.int64(x_zero_point)
    acc = _taps(xs, kernel, stride, pads, (1, 1), ceil_mode, 0).sum(axis=0)
    count = _counts(x.shape, kernel, stride, pads, ceil_mode, count_include_pad)
    mult = avg_multiplier(x_scale, y_scale, count)[None, :, :, None]
    return requantize(acc, mult, y_zero_point)


def global_avg_pool2d_f32(x):
    """[N, H, W, C] -> [N, 1, 1, C] mean (float64 sum, rounded once)."""
    return np.asarray(x).astype(np.float64).mean(axis=(1, 2), keepdims=True).astype(np.float32)


def global_avg_pool2d_int8(x, x_scale, x_zero_point, y_scale, y_zero_point):
    """``requantize(sum over H, W of (x - zp_x), avg_multiplier(s_x, s_y, H * W), zp_y)``."""
    n, h, w, c = x.shape
    acc = (np.asarray(x).astype(np.int64) - np.int64(x_zero_point)).sum(axis=(1, 2), keepdims=True)
    return requantize(acc, avg_multiplier(x_scale, y_scale, h * w), y_zero_point)
