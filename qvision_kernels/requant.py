"""The quantisation arithmetic of qvision, written once (DESIGN.md section 3).

Every kernel, the NumPy references, the engine and the quantizer use these definitions; the compiled
kernels reproduce :func:`requantize` bit for bit (see ``include/qv_simd.h``).

* ``real = scale * (q - zero_point)``; activations are uint8 per tensor, weights int8 symmetric per output
  channel in [-127, 127] (4-bit: [-7, 7], 2-bit: [-1, 1]).
* Accumulators are int32: ``acc = bias + sum(w_q * (x_q - zp_x))``.
* Requantisation of an accumulator to uint8::

      y = clamp(round_half_to_even(float32(acc) * M) + zp_out, lo, hi)

  with ``M = float32(s_in * s_w / s_out)`` (computed in float64, rounded once to float32) and every
  float operation in float32.  A fused ReLU / ReLU6 / Clip only narrows ``[lo, hi]``
  (:func:`activation_bounds`).
* Quantize / dequantize follow ONNX QuantizeLinear / DequantizeLinear in float32:
  ``q = saturate(round_half_to_even(x / scale) + zp)`` and ``x = (q - zp) * scale``.
"""
import numpy as np

from .errors import KernelError

U8_MIN, U8_MAX = 0, 255
I8_WEIGHT_MAX = 127


def multiplier(s_in, s_w, s_out):
    """Requantisation multiplier ``float32(s_in * s_w / s_out)``; ``s_w`` may be per channel."""
    m = np.float64(s_in) * np.asarray(s_w, dtype=np.float64) / np.float64(s_out)
    return np.asarray(m, dtype=np.float32)


def requantize(acc, mult, zero_point, lo=U8_MIN, hi=U8_MAX):
    """Literal NumPy requantisation of int32/int64 accumulators to uint8 (the reference for kernels).

    ``mult`` broadcasts against ``acc`` (per channel on the last axis for NHWC).  ``acc`` is converted to
    float32 exactly as C's ``(float)`` cast does (round to nearest even), multiplied in float32, rounded
    half to even, offset by ``zero_point`` and clamped to ``[lo, hi]``.
    """
    if not 0 <= lo <= hi <= 255:
        raise KernelError('requantisation bounds must satisfy 0 <= lo <= hi <= 255, got [%r, %r]' % (lo, hi))
    accf = np.asarray(acc).astype(np.int64).astype(np.float32)
    v = accf * np.asarray(mult, dtype=np.float32)
    r = np.rint(v).astype(np.float64) + np.int64(zero_point)
    return np.clip(r, lo, hi).astype(np.uint8)


def quantize(x, scale, zero_point, dtype=np.uint8):
    """ONNX QuantizeLinear in float32: ``saturate(round_half_to_even(x / scale) + zp)``."""
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale)).astype(np.float64) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, scale, zero_point):
    """ONNX DequantizeLinear in float32: ``(q - zp) * scale``."""
    return ((np.asarray(q).astype(np.int32) - np.int32(zero_point)).astype(np.float32)
            * np.asarray(scale, dtype=np.float32))


def activation_bounds(kind, scale, zero_point, clip_min=None, clip_max=None):
    """``(lo, hi)`` in uint8 that a fused activation imposes on an output with ``scale``/``zero_point``.

    ``kind`` is None (no activation), 'relu', 'relu6' or 'clip' (with ``clip_min``/``clip_max`` in real
    units; either may be None).  The bounds are the quantised images of the real bounds, so that
    ``clamp(q, lo, hi)`` equals quantising the clipped real value.
    """
    def q(v):
        return int(quantize(np.float32(v), scale, zero_point)[()])

    if kind is None:
        return U8_MIN, U8_MAX
    if kind == 'relu':
        return max(U8_MIN, zero_point), U8_MAX
    if kind == 'relu6':
        return max(U8_MIN, zero_point), q(6.0)
    if kind == 'clip':
        lo = U8_MIN if clip_min is None else q(clip_min)
        hi = U8_MAX if clip_max is None else q(clip_max)
        return lo, hi
    raise KernelError('unknown fused activation %r (use None, relu, relu6 or clip)' % (kind,))


def fold_input_zero_point(bias, weight, zp_x):
    """``bias - zp_x * sum(w)`` per output channel: the offline part of ``sum(w * (x - zp_x))``.

    ``weight`` is [OC, ...] int8; the result is int32 (checked not to overflow).
    """
    w = np.asarray(weight).reshape(len(weight), -1).astype(np.int64)
    b = np.zeros(len(w), np.int64) if bias is None else np.asarray(bias, dtype=np.int64)
    folded = b - np.int64(zp_x) * w.sum(axis=1)
    if folded.size and (folded.min() < -2 ** 31 or folded.max() >= 2 ** 31):
        raise KernelError('bias with the folded input zero point overflows int32')
    return folded.astype(np.int32)
