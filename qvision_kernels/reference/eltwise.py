"""NumPy references of the element-wise family (add, mul, concat, nearest upsampling, lookup tables).

They exist for testing: each is the literal NumPy expression of DESIGN.md section 3, slow and never
optimised.  The compiled kernels (``qvision_kernels/_eltwise.pyx``) are bit-exact against the int8 ones.

Two formulas are written here once because :mod:`qvision_kernels.requant` has no place for them and the
wrappers in :mod:`qvision_kernels.eltwise` import them:

* :func:`rescale_multiplier` - ``float32(s_in / s_out)``, the factor that moves a uint8 tensor to the
  output scale (Add operands, Concat inputs);
* :func:`add_requant` - the quantised Add, done step by step in float32 (the kernels reproduce it).
"""
import numpy as np

from ..requant import dequantize, multiplier, quantize, requantize


def rescale_multiplier(s_in, s_out):
    """``float32(float64(s_in) / float64(s_out))`` (rounded once to float32; inf if it overflows)."""
    with np.errstate(over='ignore'):
        return np.float32(np.float64(s_in) / np.float64(s_out))


def add_requant(a, b, a_zero_point, b_zero_point, ma, mb, y_zero_point, lo=0, hi=255):
    """The quantised Add of uint8 ``a`` and ``b`` (``b`` broadcasts to ``a``), in float32 step by step::

        t = float32(a - zp_a) * Ma + float32(b - zp_b) * Mb      two rounded products, one rounded sum
        y = clamp(round_half_to_even(t) + zp_y, lo, hi)

    with ``Ma = rescale_multiplier(s_a, s_y)`` and ``Mb = rescale_multiplier(s_b, s_y)``.  No FMA: each
    product is rounded to float32 before the sum (the kernels are built with -ffp-contract=off).
    """
    ta = (np.asarray(a).astype(np.int32) - np.int32(a_zero_point)).astype(np.float32) * np.float32(ma)
    tb = (np.asarray(b).astype(np.int32) - np.int32(b_zero_point)).astype(np.float32) * np.float32(mb)
    t = ta + tb                                  # float32 + float32 -> float32 (broadcasting b)
    r = np.rint(t).astype(np.float64) + np.int64(y_zero_point)
    return np.clip(r, lo, hi).astype(np.uint8)


def add_int8(a, b, a_scale, a_zero_point, b_scale, b_zero_point, y_scale, y_zero_point, lo=0, hi=255):
    """Quantised Add: both operands rescaled to the output scale (see :func:`add_requant`)."""
    return add_requant(a, b, a_zero_point, b_zero_point, rescale_multiplier(a_scale, y_scale),
                       rescale_multiplier(b_scale, y_scale), y_zero_point, lo, hi)


def mul_int8(a, b, a_scale, a_zero_point, b_scale, b_zero_point, y_scale, y_zero_point, lo=0, hi=255):
    """Quantised Mul: ``acc = (a - zp_a) * (b - zp_b)`` (int32), requantised with
    ``float32(s_a * s_b / s_y)``."""
    acc = (np.asarray(a).astype(np.int32) - np.int32(a_zero_point)) * \
        (np.asarray(b).astype(np.int32) - np.int32(b_zero_point))
    return requantize(acc, multiplier(a_scale, b_scale, y_scale), y_zero_point, lo, hi)


def add_f32(a, b):
    """float32 Add with NumPy broadcasting of ``b``."""
    return (np.asarray(a, np.float32) + np.asarray(b, np.float32)).astype(np.float32)


def mul_f32(a, b):
    """float32 Mul with NumPy broadcasting of ``b``."""
    return (np.asarray(a, np.float32) * np.asarray(b, np.float32)).astype(np.float32)


def concat_int8(inputs, scales, zero_points, y_scale, y_zero_point, axis=-1):
    """Quantised Concat: input i becomes ``requantize(x_i - zp_i, float32(s_i / s_y), zp_y)``."""
    parts = [requantize(np.asarray(x).astype(np.int32) - np.int32(zp), rescale_multiplier(s, y_scale),
                        y_zero_point)
             for x, s, zp in zip(inputs, scales, zero_points)]
    return np.concatenate(parts, axis=axis)


def concat_f32(inputs, axis=-1):
    return np.concatenate([np.asarray(x, np.float32) for x in inputs], axis=axis)


def upsample_nearest(x, scale_h, scale_w):
    """``y[n, i, j, c] = x[n, i // scale_h, j // scale_w, c]`` for NHWC ``x``."""
    n, h, w, c = x.shape
    rows = np.arange(h * scale_h) // scale_h
    cols = np.arange(w * scale_w) // scale_w
    return x[:, rows][:, :, cols]


def make_lut(f, x_scale, x_zero_point, y_scale, y_zero_point):
    """The 256-entry table of the float64 function ``f``, one entry at a time: DQ -> f -> Q.

    ``table[q] = quantize(float32(f(float64(dequantize(q, s_x, zp_x)))), s_y, zp_y)``.
    """
    table = np.empty(256, np.uint8)
    for q in range(256):
        x = np.float64(dequantize(np.uint8(q), x_scale, x_zero_point))
        y = np.float32(np.asarray(f(np.array([x], np.float64)), np.float64)[0])
        table[q] = quantize(y, y_scale, y_zero_point)
    return table


def lut_apply(x, table):
    """``y = table[x]`` element by element."""
    return np.asarray(table, np.uint8)[np.asarray(x)]


def quantize_f32(x, scale, zero_point, dtype=np.uint8):
    """QuantizeLinear in float32 (requant.quantize), with NaN mapped to the zero point."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over='ignore', invalid='ignore'):
        return np.where(np.isnan(x), np.array(zero_point, dtype), quantize(np.nan_to_num(x, nan=0.0), scale,
                                                                            zero_point, dtype))



def softmax_f32(x, axis=-1):
    """Softmax along ``axis`` in float64, rounded to float32 once."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid='ignore', over='ignore'):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return (e / np.sum(e, axis=axis, keepdims=True)).astype(np.float32)


def dequantize_f32(q, scale, zero_point):
    """DequantizeLinear: ``float32(q - zero_point) * float32(scale)``, the subtraction exact in float32."""
    d = np.asarray(q).astype(np.float32) - np.float32(zero_point)
    return d * np.float32(scale)
