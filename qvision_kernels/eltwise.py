"""Element-wise operators on uint8 and float32 activations: validation and dispatch.

Arithmetic (DESIGN.md section 3; the NumPy references are in :mod:`qvision_kernels.reference.eltwise`):

* :func:`add_int8` - both operands are moved to the output scale and added in float32, step by step::

      Ma = float32(s_a / s_y),  Mb = float32(s_b / s_y)             (reference.eltwise.rescale_multiplier)
      t  = float32(a - zp_a) * Ma + float32(b - zp_b) * Mb           two rounded products, one rounded sum
      y  = clamp(round_half_to_even(t) + zp_y, act_min, act_max)     (reference.eltwise.add_requant)

* :func:`mul_int8` - ``acc = (a - zp_a) * (b - zp_b)`` in int32, then
  ``requant.requantize(acc, float32(s_a * s_b / s_y), zp_y, act_min, act_max)``.
* :func:`concat_int8` - input i becomes ``requantize(x_i - zp_i, float32(s_i / s_y), zp_y)`` (a plain
  copy when its scale and zero point are the output's: the formula gives the same bytes).
* :func:`make_lut` / :func:`lut_apply` - a one-input activation as a 256-entry table,
  ``table[q] = quantize(float32(f(float64(dequantize(q)))))``: exactly DQ -> f -> Q.

``b`` of Add and Mul either has ``a``'s shape or broadcasts to it by NumPy's rules without changing it
([N, 1, 1, C], [1, 1, 1, C], [N, H, W, 1], [1, 1, 1, 1], fewer leading dimensions...); the kernels
follow ``b`` through zero strides and never materialise the broadcast.  Every array must be C-contiguous;
``out`` (optional) must have the result's dtype and shape and may be ``a`` itself.

Every kernel also takes ``num_threads`` (threads.resolve_num_threads) and ``isa`` (an instruction-set
variant of the 'eltwise' / 'pool' families, default the best built one; all variants give the same bytes).
Validated parameters and derived constants (multipliers, broadcast plans) are cached per distinct value,
so that calling a kernel every frame with the same parameters costs a few microseconds of Python.
"""
import functools
import os

import numpy as np

from . import _registry
from .errors import KernelError
from .reference.eltwise import rescale_multiplier
from .requant import dequantize, multiplier, quantize
from .threads import resolve_num_threads

# float32 multipliers above this are rejected: they only arise from nonsensical scales, and they could
# overflow float32 in the products (255 * 2**32 is still far below its range).
MAX_MULTIPLIER = float(2 ** 32)


_modules = {}


def _module(family, isa):
    """The compiled module of ``family`` for the chosen instruction-set variant (``isa``, else
    $QVISION_ISA, else the best one here); cached, since the registry's lookup costs more than a small
    kernel."""
    key = (family, isa, os.environ.get('QVISION_ISA'))
    mod = _modules.get(key)
    if mod is None:
        mod = _modules[key] = _registry.module(family, isa)
    return mod


def _kernels(isa):
    return _module('eltwise', isa)


def _memo(fn):
    """Cache ``fn`` (a pure function of hashable parameters: validation plus derived constants) so that
    a network calling a kernel with the same parameters every frame validates them once.  ``typed``
    keeps 1, 1.0 and True apart; unhashable arguments (lists, 0-d arrays) bypass the cache."""
    cached = functools.lru_cache(maxsize=1024, typed=True)(fn)

    @functools.wraps(fn)
    def call(*args):
        try:
            return cached(*args)
        except TypeError:
            return fn(*args)
    call.cache_clear = cached.cache_clear
    return call


# ------------------------------------------------------------------------------------------ checks

def _array(x, dtype, name, ndim=None):
    if not isinstance(x, np.ndarray) or x.dtype != dtype:
        raise KernelError('%s must be a %s numpy array, got %s' % (
            name, np.dtype(dtype).name, getattr(x, 'dtype', type(x).__name__)))
    if ndim is not None and x.ndim != ndim:
        raise KernelError('%s must have %d dimensions (NHWC), got shape %s' % (name, ndim, x.shape))
    if not x.flags.c_contiguous:
        raise KernelError('%s must be C-contiguous (use np.ascontiguousarray)' % name)
    return x


def _out(out, shape, dtype):
    if out is None:
        return np.empty(shape, dtype)
    if (not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != shape
            or not out.flags.c_contiguous or not out.flags.writeable):
        raise KernelError('out must be a writeable C-contiguous %s array of shape %s, got %s %s' % (
            np.dtype(dtype).name, shape, getattr(out, 'dtype', type(out).__name__),
            getattr(out, 'shape', '')))
    return out


def _zero_point(v, name):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= v <= 255:
        raise KernelError('%s must be an int in [0, 255], got %r' % (name, v))
    return int(v)


def _scale(v, name):
    try:
        s = float(v)
    except (TypeError, ValueError):
        raise KernelError('%s must be a positive finite float, got %r' % (name, v)) from None
    if not np.isfinite(s) or s <= 0:
        raise KernelError('%s must be a positive finite float, got %r' % (name, v))
    return s


def _mult(m, what):
    if not np.isfinite(m) or not 0 < m <= MAX_MULTIPLIER:
        raise KernelError('the multiplier of %s is %r, outside (0, 2**32]; check the scales' % (what, m))
    return np.float32(m)


def _bounds(act_min, act_max):
    lo = _zero_point(act_min, 'act_min')
    hi = _zero_point(act_max, 'act_max')
    if lo > hi:
        raise KernelError('act_min %d > act_max %d' % (lo, hi))
    return lo, hi


@_memo
def _broadcast_plan(ashape, bshape):
    """Reduce ``a`` [any shape] and ``b`` (broadcasting to it) to four dimensions ``(d0, d1, d2, d3)`` of
    ``a`` and the element strides of ``b`` in them (0 where ``b`` broadcasts).

    Adjacent dimensions along which ``b`` behaves alike (both present, or both broadcast) are merged, so
    [N, H, W, C] + [N, 1, 1, C] becomes [N, H*W, C] with strides (C, 0, 1).
    """
    if len(bshape) > len(ashape):
        raise KernelError('b %s has more dimensions than a %s' % (bshape, ashape))
    padded = (1,) * (len(ashape) - len(bshape)) + tuple(bshape)
    dims = []                                   # [size, b present?]
    for da, db in zip(ashape, padded):
        if db != da and db != 1:
            raise KernelError('b %s does not broadcast to a %s (each dimension of b must equal a\'s or '
                              'be 1)' % (tuple(bshape), tuple(ashape)))
        if da == 1:
            continue
        present = db == da
        if dims and dims[-1][1] == present:
            dims[-1][0] *= da
        else:
            dims.append([da, present])
    if len(dims) > 4:
        raise KernelError('b %s broadcasts to a %s in more than 4 alternating groups of dimensions; '
                          'not supported' % (tuple(bshape), tuple(ashape)))
    strides = []
    step = 1
    for size, present in reversed(dims):
        strides.append(step if present else 0)
        if present:
            step *= size
    strides.reverse()
    pad = 4 - len(dims)
    return (1,) * pad + tuple(d[0] for d in dims), (0,) * pad + tuple(strides)


def _binary_operands(a, b, dtype, out):
    a = _array(a, dtype, 'a')
    b = _array(b, dtype, 'b')
    shape, bstrides = _broadcast_plan(a.shape, b.shape)
    out = _out(out, a.shape, dtype)
    return a.reshape(-1), b.reshape(-1), out, out.reshape(-1), shape, bstrides


@_memo
def _add_params(a_scale, a_zero_point, b_scale, b_zero_point, y_scale, y_zero_point, act_min, act_max):
    """Validated (zp_a, zp_b, Ma, Mb, zp_y, lo, hi) of :func:`add_int8`."""
    sy = _scale(y_scale, 'y_scale')
    return (_zero_point(a_zero_point, 'a_zero_point'), _zero_point(b_zero_point, 'b_zero_point'),
            _mult(rescale_multiplier(_scale(a_scale, 'a_scale'), sy), 'a'),
            _mult(rescale_multiplier(_scale(b_scale, 'b_scale'), sy), 'b'),
            _zero_point(y_zero_point, 'y_zero_point')) + _bounds(act_min, act_max)


@_memo
def _mul_params(a_scale, a_zero_point, b_scale, b_zero_point, y_scale, y_zero_point, act_min, act_max):
    """Validated (zp_a, zp_b, M, zp_y, lo, hi) of :func:`mul_int8`."""
    m = multiplier(_scale(a_scale, 'a_scale'), _scale(b_scale, 'b_scale'), _scale(y_scale, 'y_scale'))
    return (_zero_point(a_zero_point, 'a_zero_point'), _zero_point(b_zero_point, 'b_zero_point'),
            _mult(m[()], 'the product'), _zero_point(y_zero_point, 'y_zero_point')) + _bounds(act_min, act_max)


# ------------------------------------------------------------------------------------ Add and Mul

def add_int8(a, b, a_scale, a_zero_point, b_scale, b_zero_point, y_scale, y_zero_point, act_min=0,
             act_max=255, out=None, num_threads=1, isa=None):
    """Quantised Add of uint8 ``a`` and ``b`` (``b`` broadcasts to ``a``); returns uint8 of a's shape.

    ``y = clamp(round(float32(a - zp_a) * Ma + float32(b - zp_b) * Mb) + zp_y, act_min, act_max)``
    with ``Ma = float32(s_a / s_y)``, ``Mb = float32(s_b / s_y)`` (module docstring).
    """
    a1, b1, out, out1, shape, bstrides = _binary_operands(a, b, np.uint8, out)
    zpa, zpb, ma, mb, zpy, lo, hi = _add_params(a_scale, a_zero_point, b_scale, b_zero_point, y_scale,
                                                y_zero_point, act_min, act_max)
    _kernels(isa).add_u8(a1, b1, out1, shape, bstrides, zpa, zpb, ma, mb, zpy, lo, hi,
                         resolve_num_threads(num_threads))
    return out


def mul_int8(a, b, a_scale, a_zero_point, b_scale, b_zero_point, y_scale, y_zero_point, act_min=0,
             act_max=255, out=None, num_threads=1, isa=None):
    """Quantised Mul of uint8 ``a`` and ``b`` (``b`` broadcasts to ``a``); returns uint8 of a's shape.

    ``y = requantize((a - zp_a) * (b - zp_b), float32(s_a * s_b / s_y), zp_y, act_min, act_max)``.
    """
    a1, b1, out, out1, shape, bstrides = _binary_operands(a, b, np.uint8, out)
    zpa, zpb, m, zpy, lo, hi = _mul_params(a_scale, a_zero_point, b_scale, b_zero_point, y_scale,
                                           y_zero_point, act_min, act_max)
    _kernels(isa).mul_u8(a1, b1, out1, shape, bstrides, zpa, zpb, m, zpy, lo, hi,
                         resolve_num_threads(num_threads))
    return out


def add_f32(a, b, out=None, num_threads=1, isa=None):
    """float32 ``a + b`` (``b`` broadcasts to ``a``)."""
    a1, b1, out, out1, shape, bstrides = _binary_operands(a, b, np.float32, out)
    _kernels(isa).binary_f32(a1, b1, out1, shape, bstrides, False, resolve_num_threads(num_threads))
    return out


def mul_f32(a, b, out=None, num_threads=1, isa=None):
    """float32 ``a * b`` (``b`` broadcasts to ``a``)."""
    a1, b1, out, out1, shape, bstrides = _binary_operands(a, b, np.float32, out)
    _kernels(isa).binary_f32(a1, b1, out1, shape, bstrides, True, resolve_num_threads(num_threads))
    return out


# ------------------------------------------------------------------------------------------ Concat

def _concat_arrays(inputs, dtype):
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)) or not inputs:
        raise KernelError('inputs must be a non-empty list of arrays, got %s' % type(inputs).__name__)
    return [_array(x, dtype, 'inputs[%d]' % i) for i, x in enumerate(inputs)]


@_memo
def _concat_shape(shapes, axis):
    """(axis in [0, ndim), output shape, outer): the concatenation along ``axis`` is one of rows, input i
    being [outer, prod(shape_i[axis:])] with outer = prod(shape[:axis])."""
    ref = shapes[0]
    ndim = len(ref)
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)) \
            or not -ndim <= axis < ndim:
        raise KernelError('axis must be an int in [%d, %d), got %r' % (-ndim, ndim, axis))
    axis = int(axis) % ndim
    for i, shape in enumerate(shapes):
        if len(shape) != ndim or shape[:axis] != ref[:axis] or shape[axis + 1:] != ref[axis + 1:]:
            raise KernelError('inputs[%d] has shape %s; every input must match %s except along axis %d'
                              % (i, shape, ref, axis))
    out_shape = ref[:axis] + (sum(shape[axis] for shape in shapes),) + ref[axis + 1:]
    return axis, out_shape, int(np.prod(ref[:axis], dtype=np.int64))


@_memo
def _concat_params(scales, zero_points, y_scale, y_zero_point):
    """Per input: (plain copy?, zp_i, float32(s_i / s_y), zp_y)."""
    sy = _scale(y_scale, 'y_scale')
    zpy = _zero_point(y_zero_point, 'y_zero_point')
    params = []
    for i, (s, zp) in enumerate(zip(scales, zero_points)):
        zp = _zero_point(zp, 'zero_points[%d]' % i)
        m = _mult(rescale_multiplier(_scale(s, 'scales[%d]' % i), sy), 'inputs[%d]' % i)
        params.append((bool(m == 1 and zp == zpy), zp, m, zpy))
    return tuple(params)


def _concat_run(arrays, out, outer, params, num_threads, isa):
    # Rows of bytes (float32 goes through as its bytes, always copied).
    if outer == 0 or out.size == 0:
        return
    mod = _kernels(isa)
    nt = resolve_num_threads(num_threads)
    o2 = out.reshape(outer, -1).view(np.uint8)
    col = 0
    for x, (copy, zp, m, zpy) in zip(arrays, params):
        x2 = x.reshape(outer, -1).view(np.uint8)
        mod.concat_rows_u8(x2, o2, col, copy, zp, m, zpy, nt)
        col += x2.shape[1]


def concat_int8(inputs, scales, zero_points, y_scale, y_zero_point, axis=-1, out=None, num_threads=1,
                isa=None):
    """Quantised Concat of uint8 arrays along ``axis``, each requantised to ``(y_scale, y_zero_point)``.

    ``scales`` and ``zero_points`` hold one value per input.
    """
    arrays = _concat_arrays(inputs, np.uint8)
    axis, shape, outer = _concat_shape(tuple(x.shape for x in arrays), axis)
    if len(scales) != len(arrays) or len(zero_points) != len(arrays):
        raise KernelError('%d inputs need %d scales and zero points, got %d and %d'
                          % (len(arrays), len(arrays), len(scales), len(zero_points)))
    params = _concat_params(tuple(scales), tuple(zero_points), y_scale, y_zero_point)
    out = _out(out, shape, np.uint8)
    _concat_run(arrays, out, outer, params, num_threads, isa)
    return out


def concat_f32(inputs, axis=-1, out=None, num_threads=1, isa=None):
    """float32 Concat along ``axis``."""
    arrays = _concat_arrays(inputs, np.float32)
    axis, shape, outer = _concat_shape(tuple(x.shape for x in arrays), axis)
    out = _out(out, shape, np.float32)
    _concat_run(arrays, out, outer, [(True, 0, np.float32(1), 0)] * len(arrays), num_threads, isa)
    return out


# ---------------------------------------------------------------------------------- Upsampling

def upsample_nearest(x, scale_h, scale_w, out=None, num_threads=1, isa=None):
    """Nearest-neighbour upsampling of NHWC uint8 or float32 ``x`` by integer factors:
    ``y[n, i, j, c] = x[n, i // scale_h, j // scale_w, c]``."""
    if not isinstance(x, np.ndarray) or x.dtype not in (np.uint8, np.float32):
        raise KernelError('x must be a uint8 or float32 numpy array, got %s'
                          % getattr(x, 'dtype', type(x).__name__))
    x = _array(x, x.dtype, 'x', ndim=4)
    for v, name in ((scale_h, 'scale_h'), (scale_w, 'scale_w')):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise KernelError('%s must be an int >= 1, got %r' % (name, v))
    n, h, w, c = x.shape
    out = _out(out, (n, h * scale_h, w * scale_w, c), x.dtype)
    if out.size:
        _kernels(isa).upsample_nearest_bytes(x.view(np.uint8).reshape(n, h, w, -1),
                                             out.view(np.uint8).reshape(n, h * scale_h, w * scale_w, -1),
                                             int(scale_h), int(scale_w), resolve_num_threads(num_threads))
    return out


# -------------------------------------------------------------------------------- Lookup tables

def _hardsigmoid(x, alpha, beta):
    return np.maximum(0.0, np.minimum(1.0, alpha * x + beta))


def _sigmoid(x):
    with np.errstate(over='ignore'):
        return 1.0 / (1.0 + np.exp(-x))


# name -> (function of a float64 array and the parameters, default parameters).  The definitions are
# those of the ONNX operators of the same name (HardSwish is x * HardSigmoid(x) with alpha = 1/6).
LUT_FUNCTIONS = {
    'identity': (lambda x: x, {}),
    'relu': (lambda x: np.maximum(x, 0.0), {}),
    'sigmoid': (_sigmoid, {}),
    'silu': (lambda x: x * _sigmoid(x), {}),
    'hardsigmoid': (_hardsigmoid, {'alpha': 0.2, 'beta': 0.5}),
    'hardswish': (lambda x: x * _hardsigmoid(x, 1.0 / 6.0, 0.5), {}),
    'leakyrelu': (lambda x, alpha: np.where(x >= 0, x, alpha * x), {'alpha': 0.01}),
    'tanh': (np.tanh, {}),
    'clip': (lambda x, min, max: np.clip(x, min, max), {'min': -np.inf, 'max': np.inf}),
}


def make_lut(fn, x_scale, x_zero_point, y_scale, y_zero_point, **params):
    """The uint8[256] table of a one-input activation: ``table[q] = quantize(float32(f(x)))`` with
    ``x = float64(dequantize(q, s_x, zp_x))`` and ``f`` evaluated in float64 (exactly DQ -> f -> Q).

    ``fn`` is a name in :data:`LUT_FUNCTIONS` ('identity', 'relu', 'sigmoid', 'silu', 'hardsigmoid'
    (alpha=0.2, beta=0.5), 'hardswish', 'leakyrelu' (alpha=0.01), 'tanh', 'clip' (min, max; None means
    unbounded)) with its parameters as keywords, or a callable mapping a float64 array to an array of the
    same shape.
    """
    sx = _scale(x_scale, 'x_scale')
    sy = _scale(y_scale, 'y_scale')
    zpx = _zero_point(x_zero_point, 'x_zero_point')
    zpy = _zero_point(y_zero_point, 'y_zero_point')
    if callable(fn):
        if params:
            raise KernelError('parameters %s are only for named functions' % sorted(params))
        f = fn
    elif fn in LUT_FUNCTIONS:
        f0, defaults = LUT_FUNCTIONS[fn]
        unknown = set(params) - set(defaults)
        if unknown:
            raise KernelError('%r takes the parameters %s, got %s' % (fn, sorted(defaults) or 'none',
                                                                       sorted(unknown)))
        kw = dict(defaults)
        kw.update({k: v for k, v in params.items() if v is not None})
        kw = {k: float(v) for k, v in kw.items()}

        def f(x):
            return f0(x, **kw)
    else:
        raise KernelError('unknown LUT function %r; use one of %s or a callable'
                          % (fn, ', '.join(LUT_FUNCTIONS)))
    x = dequantize(np.arange(256), sx, zpx).astype(np.float64)
    y = np.asarray(f(x), dtype=np.float64)
    if y.shape != (256,):
        raise KernelError('the LUT function returned shape %s for 256 inputs' % (y.shape,))
    if np.isnan(y).any():
        raise KernelError('the LUT function returned NaN at q = %s' % np.flatnonzero(np.isnan(y))[:8])
    with np.errstate(over='ignore'):
        return quantize(y.astype(np.float32), sy, zpy)


def lut_apply(x, table, out=None, num_threads=1, isa=None):
    """``y = table[x]`` for a C-contiguous uint8 array of any shape and a uint8[256] table."""
    x = _array(x, np.uint8, 'x')
    table = _array(table, np.uint8, 'table')
    if table.shape != (256,):
        raise KernelError('table must have shape (256,), got %s' % (table.shape,))
    out = _out(out, x.shape, np.uint8)
    if x.size:
        mod = _kernels(isa)
        mod.lut_apply(x.reshape(-1), table, out.reshape(-1), resolve_num_threads(num_threads), mod.HAS_VBMI)
    return out


def sigmoid_f32(x, silu=False, out=None, num_threads=1, isa=None):
    """float32 ``1 / (1 + exp(-x))`` (``silu``: ``x / (1 + exp(-x))``, ONNX Sigmoid and x * Sigmoid(x)) of a
    C-contiguous array of any shape; ``out`` may be ``x`` (in place).  The formula of the float
    convolutions' fused activation (include/qv_fsimd.h): within a few float32 ulps of the exact value,
    saturating to 0 / 1 (SiLU: -0 / x) for large magnitudes, NaN kept (reference:
    :func:`qvision_kernels.reference.fconv.sigmoid_f64`)."""
    x = _array(x, np.float32, 'x')
    out = _out(out, x.shape, np.float32)
    if x.size:
        _kernels(isa).sigmoid_f32(x.reshape(-1), out.reshape(-1), bool(silu), resolve_num_threads(num_threads))
    return out


def quantize_f32(x, scale, zero_point, dtype=np.uint8, nchw_to_nhwc=False, out=None, num_threads=1, isa=None):
    """ONNX QuantizeLinear of a float32 array with one scale and zero point:
    ``saturate(round_half_to_even(x / scale) + zero_point)`` as ``dtype`` (uint8 or int8), NaN giving the
    zero point (reference: :func:`qvision_kernels.reference.eltwise.quantize_f32`).  With
    ``nchw_to_nhwc`` a 4-D NCHW ``x`` is written as NHWC in the same pass (a model's input)."""
    x = _array(x, np.float32, 'x', 4 if nchw_to_nhwc else None)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.int8)):
        raise KernelError('QuantizeLinear writes uint8 or int8, not %s' % dtype.name)
    info = np.iinfo(dtype)
    s = _scale(scale, 'scale')
    if isinstance(zero_point, (bool, np.bool_)) or not isinstance(zero_point, (int, np.integer)) \
            or not info.min <= zero_point <= info.max:
        raise KernelError('zero_point must be an int in [%d, %d], got %r' % (info.min, info.max, zero_point))
    shape = (x.shape[0], x.shape[2], x.shape[3], x.shape[1]) if nchw_to_nhwc else x.shape
    out = _out(out, shape, dtype)
    if x.size:
        mod = _kernels(isa)
        nt = resolve_num_threads(num_threads)
        if nchw_to_nhwc:
            mod.quantize_nchw_to_nhwc_f32(x, out.view(np.uint8), np.float32(s), int(zero_point), info.min,
                                          info.max, nt)
        else:
            mod.quantize_f32(x.reshape(-1), out.reshape(-1).view(np.uint8), np.float32(s), int(zero_point),
                             info.min, info.max, nt)
    return out



# --------------------------------------------------------------------------- Softmax, DequantizeLinear

def softmax_f32(x, axis=-1, out=None, num_threads=1, isa=None):
    """float32 ``exp(x - max) / sum(exp(x - max))`` along ``axis`` of a C-contiguous array (ONNX Softmax,
    opset 13); ``out`` may be ``x``.  The exp is the sigmoid's of include/qv_fsimd.h (a few float32 ulps);
    a NaN anywhere along the axis makes that whole slice NaN, as in NumPy (reference:
    :func:`qvision_kernels.reference.eltwise.softmax_f32`)."""
    x = _array(x, np.float32, 'x')
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        raise KernelError('axis %r is outside the %d dimensions of x' % (axis, x.ndim))
    axis %= x.ndim
    out = _out(out, x.shape, np.float32)
    if x.size:
        outer = int(np.prod(x.shape[:axis], dtype=np.int64))
        inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
        _kernels(isa).softmax_f32(x.reshape(-1), out.reshape(-1), outer, x.shape[axis], inner,
                                  resolve_num_threads(num_threads))
    return out


def dequantize_f32(q, scale, zero_point, out=None, num_threads=1, isa=None):
    """ONNX DequantizeLinear of a uint8 or int8 array with one scale and zero point:
    ``float32(q - zero_point) * float32(scale)`` (reference:
    :func:`qvision_kernels.reference.eltwise.dequantize_f32`, bit for bit)."""
    if not isinstance(q, np.ndarray) or q.dtype not in (np.uint8, np.int8):
        raise KernelError('q must be a uint8 or int8 numpy array, got %s' % getattr(q, 'dtype', type(q).__name__))
    q = _array(q, q.dtype, 'q')
    info = np.iinfo(q.dtype)
    s = _scale(scale, 'scale')
    if isinstance(zero_point, (bool, np.bool_)) or not isinstance(zero_point, (int, np.integer)) \
            or not info.min <= zero_point <= info.max:
        raise KernelError('zero_point must be an int in [%d, %d], got %r' % (info.min, info.max, zero_point))
    out = _out(out, q.shape, np.float32)
    if q.size:
        _kernels(isa).dequantize_f32(q.reshape(-1).view(np.uint8), out.reshape(-1), q.dtype == np.int8,
                                     np.float32(zero_point), np.float32(s), resolve_num_threads(num_threads))
    return out
