"""Pooling on NHWC activations (uint8 and float32): validation, window geometry and dispatch.

* :func:`max_pool2d` - max over the window positions inside the image (padding never wins); same dtype
  out, no requantisation.
* :func:`avg_pool2d` - float32: the mean.  uint8: ``acc = sum(x - zp_x)`` (int32) over the window
  positions inside the image (padding holds a real 0), ``count`` = those positions
  (``count_include_pad=False``) or the window positions inside the padded input (``True``), and
  ``y = requantize(acc, M[count], zp_y)`` with ``M[count] = float32(float64(s_x) / (float64(s_y) * count))``
  (:func:`qvision_kernels.reference.pool.avg_multiplier`, precomputed for every possible count).
* :func:`global_avg_pool2d` - [N, H, W, C] -> [N, 1, 1, C], the same with ``count = H * W``.

Output sizes follow ONNX MaxPool / AveragePool (:func:`qvision_kernels.reference.pool.pool_output_size`):
``ceil_mode`` rounds up, and a window must start inside the image or its leading padding.  Padding is an
int, (pad_h, pad_w) or (top, left, bottom, right).  A window with no position inside the image is an
error.  NaN inputs give unspecified results.
"""
from typing import NamedTuple, Tuple

import numpy as np

from .eltwise import _memo, _module, _out
from .errors import KernelError
from .reference.pool import avg_multiplier, pool_output_size
from .threads import resolve_num_threads

def _kernels(isa):
    return _module('pool', isa)


# The int32 window sums must not overflow: positions * 255 < 2**31.
MAX_WINDOW = (2 ** 31 - 1) // 255


def _int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _pair(v, name, minimum=1):
    if _int(v):
        v = (v, v)
    if not isinstance(v, (tuple, list)) or len(v) != 2 or not all(_int(a) and a >= minimum for a in v):
        raise KernelError('%s must be an int >= %d or a pair of them, got %r' % (name, minimum, v))
    return int(v[0]), int(v[1])


def _pads(v):
    if _int(v):
        v = (v,) * 4
    if isinstance(v, (tuple, list)) and len(v) == 2:
        v = (v[0], v[1], v[0], v[1])
    if not isinstance(v, (tuple, list)) or len(v) != 4 or not all(_int(a) and a >= 0 for a in v):
        raise KernelError('padding must be an int >= 0, (pad_h, pad_w) or (top, left, bottom, right), '
                          'got %r' % (v,))
    return tuple(int(a) for a in v)


def _input(x):
    if not isinstance(x, np.ndarray) or x.dtype not in (np.uint8, np.float32):
        raise KernelError('x must be a uint8 or float32 numpy array, got %s'
                          % getattr(x, 'dtype', type(x).__name__))
    if x.ndim != 4:
        raise KernelError('x must be NHWC (4 dimensions), got shape %s' % (x.shape,))
    if not x.flags.c_contiguous:
        raise KernelError('x must be C-contiguous (use np.ascontiguousarray)')
    return x


def _quant_args(x, x_scale, x_zero_point, y_scale, y_zero_point):
    """(s_x, zp_x, s_y, zp_y) for uint8 input; None for float32 (which must get none of them)."""
    args = (x_scale, x_zero_point, y_scale, y_zero_point)
    if x.dtype == np.float32:
        if any(a is not None for a in args):
            raise KernelError('x_scale, x_zero_point, y_scale, y_zero_point are for uint8 input only')
        return None
    if any(a is None for a in args):
        raise KernelError('uint8 input needs x_scale, x_zero_point, y_scale and y_zero_point')
    return _checked_quant(*args)


@_memo
def _checked_quant(x_scale, x_zero_point, y_scale, y_zero_point):
    scales = []
    for v, name in ((x_scale, 'x_scale'), (y_scale, 'y_scale')):
        try:
            s = float(v)
        except (TypeError, ValueError):
            s = float('nan')
        if not np.isfinite(s) or s <= 0:
            raise KernelError('%s must be a positive finite float, got %r' % (name, v))
        scales.append(s)
    for v, name in ((x_zero_point, 'x_zero_point'), (y_zero_point, 'y_zero_point')):
        if not _int(v) or not 0 <= v <= 255:
            raise KernelError('%s must be an int in [0, 255], got %r' % (name, v))
    return scales[0], int(x_zero_point), scales[1], int(y_zero_point)


def _axis(size, k, s, pad_begin, pad_end, d, ceil_mode, what):
    """Window geometry along one axis: output length and, per output index, the first and past-the-last
    tap inside the input (t0, t1) and the number of taps inside the padded input."""
    o = pool_output_size(size, k, s, pad_begin, pad_end, d, ceil_mode)
    if o < 1:
        raise KernelError('the %s of the input (%d, padded %d+%d) is smaller than the window extent %d'
                          % (what, size, pad_begin, pad_end, d * (k - 1) + 1))
    pos = (np.arange(o) * s - pad_begin)[:, None] + np.arange(k)[None, :] * d     # [o, k]
    inside = (pos >= 0) & (pos < size)
    if not inside.any(axis=1).all():
        bad = int(np.flatnonzero(~inside.any(axis=1))[0])
        raise KernelError('output %s %d has a window entirely in the padding (input %s %d, kernel %d, '
                          'stride %d, padding %d+%d, dilation %d)' % (what, bad, what, size, k, s,
                                                                      pad_begin, pad_end, d))
    t0 = inside.argmax(axis=1)
    t1 = k - inside[:, ::-1].argmax(axis=1)
    padded = ((pos >= -pad_begin) & (pos < size + pad_end)).sum(axis=1)
    return o, t0.astype(np.int32), t1.astype(np.int32), padded.astype(np.int32)


class Plan(NamedTuple):
    """Window geometry of one pooling call (cached per input shape and parameters; arrays read-only)."""
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    dilation: Tuple[int, int]
    pads: Tuple[int, int, int, int]
    out_shape: Tuple[int, int, int, int]
    h0: np.ndarray      # per output row: first tap inside the image
    h1: np.ndarray      # per output row: past the last tap inside the image
    w0: np.ndarray
    w1: np.ndarray
    hp: np.ndarray      # per output row: taps inside the padded input
    wp: np.ndarray


def _readonly(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


@_memo
def _plan(shape, kernel, stride, padding, dilation, ceil_mode):
    kh, kw = _pair(kernel, 'kernel')
    sh, sw = (kh, kw) if stride is None else _pair(stride, 'stride')
    dh, dw = _pair(dilation, 'dilation')
    pads = _pads(padding)
    if kh * kw > MAX_WINDOW:
        raise KernelError('a %dx%d window overflows the int32 sums (at most %d positions)'
                          % (kh, kw, MAX_WINDOW))
    n, h, w, c = shape
    ho, h0, h1, hp = _axis(h, kh, sh, pads[0], pads[2], dh, bool(ceil_mode), 'row')
    wo, w0, w1, wp = _axis(w, kw, sw, pads[1], pads[3], dw, bool(ceil_mode), 'column')
    return Plan((kh, kw), (sh, sw), (dh, dw), pads, (n, ho, wo, c), *_readonly(h0, h1, w0, w1, hp, wp))


@_memo
def _avg_plan(shape, kernel, stride, padding, ceil_mode, count_include_pad, x_scale, y_scale):
    """(plan, cnt [Ho * Wo] int32: the divisor of each output pixel, mult [kh * kw + 1] float32: the
    multiplier of a sum of k values, or None for float32)."""
    plan = _plan(shape, kernel, stride, padding, 1, ceil_mode)
    if count_include_pad:
        cnt = plan.hp[:, None] * plan.wp[None, :]
    else:
        cnt = (plan.h1 - plan.h0)[:, None] * (plan.w1 - plan.w0)[None, :]
    cnt = np.ascontiguousarray(cnt, dtype=np.int32).reshape(-1)
    if x_scale is None:
        return plan, _readonly(cnt)[0], None
    k = plan.kernel[0] * plan.kernel[1]
    mult = np.zeros(k + 1, np.float32)
    mult[1:] = avg_multiplier(x_scale, y_scale, np.arange(1, k + 1))
    if not np.all(np.isfinite(mult)):
        raise KernelError('x_scale / y_scale = %g / %g overflows the float32 multiplier' % (x_scale, y_scale))
    return (plan,) + _readonly(cnt, mult)


def max_pool2d(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False, out=None, num_threads=1,
               isa=None):
    """Max pooling of NHWC uint8 or float32 ``x``; ``stride`` defaults to ``kernel``."""
    x = _input(x)
    g = _plan(x.shape, kernel, stride, padding, dilation, ceil_mode)
    out = _out(out, g.out_shape, x.dtype)
    mod = _kernels(isa)
    kern = mod.max_pool2d_u8 if x.dtype == np.uint8 else mod.max_pool2d_f32
    kern(x, out, g.stride[0], g.stride[1], g.pads[0], g.pads[1], g.dilation[0], g.dilation[1], g.h0, g.h1,
         g.w0, g.w1, resolve_num_threads(num_threads))
    return out


def avg_pool2d(x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=False, x_scale=None,
               x_zero_point=None, y_scale=None, y_zero_point=None, out=None, num_threads=1, isa=None):
    """Average pooling of NHWC ``x``: float32 (no quantisation arguments) or uint8 (all four required);
    see the module docstring for the count and the arithmetic."""
    x = _input(x)
    q = _quant_args(x, x_scale, x_zero_point, y_scale, y_zero_point)
    sx, zpx, sy, zpy = q or (None, 0, None, 0)
    g, cnt, mult = _avg_plan(x.shape, kernel, stride, padding, ceil_mode, bool(count_include_pad), sx, sy)
    out = _out(out, g.out_shape, x.dtype)
    nt = resolve_num_threads(num_threads)
    args = (x, out, g.stride[0], g.stride[1], g.pads[0], g.pads[1], g.h0, g.h1, g.w0, g.w1, cnt)
    if q is None:
        _kernels(isa).avg_pool2d_f32(*args, nt)
    else:
        _kernels(isa).avg_pool2d_u8(*args, mult, zpx, zpy, nt)
    return out


def global_avg_pool2d(x, x_scale=None, x_zero_point=None, y_scale=None, y_zero_point=None, out=None,
                      num_threads=1, isa=None):
    """Mean over H and W of NHWC ``x`` -> [N, 1, 1, C] (uint8: requantised with count = H * W)."""
    x = _input(x)
    q = _quant_args(x, x_scale, x_zero_point, y_scale, y_zero_point)
    n, h, w, c = x.shape
    if h * w < 1:
        raise KernelError('global average of an empty image %s' % (x.shape,))
    if h * w > MAX_WINDOW:
        raise KernelError('%d x %d positions overflow the int32 sums (at most %d)' % (h, w, MAX_WINDOW))
    out = _out(out, (n, 1, 1, c), x.dtype)
    nt = resolve_num_threads(num_threads)
    if q is None:
        _kernels(isa).global_avg_pool2d_f32(x, out, nt)
        return out
    sx, zpx, sy, zpy = q
    m = avg_multiplier(sx, sy, h * w)[()]
    if not np.isfinite(m):
        raise KernelError('x_scale / y_scale = %g / %g overflows the float32 multiplier' % (sx, sy))
    _kernels(isa).global_avg_pool2d_u8(x, out, m, zpx, zpy, nt)
    return out
