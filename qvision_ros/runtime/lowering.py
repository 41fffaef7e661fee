"""Lowering: each graph node becomes a prepared step that runs on physical arrays.

``lower(node, ctx)`` returns a :class:`Lowered`: the output specifications (a planned buffer of a
physical shape and dtype, a view of an input, or a fresh array the step allocates) and a factory that,
given the planned output buffers, returns the callable run every frame: ``fn(*inputs) -> outputs``.
Heavy layers are prepared here once (weights packed by QConv2d / FConv2d, multipliers, LUTs, broadcast
plans); the callables only call kernels with ``out=`` buffers.

Every array a step receives is C-contiguous (planned buffers, contiguous views, or fresh arrays made
contiguous), as the kernels require.
"""
import functools

import numpy as np

import qvision_kernels as K

from .graph import NCHW_TO_NHWC
from .layout import permute_const, physical_axis
from .ops import (REFERENCE, linear_weights, nearest_index, node_error, reduce_axes, resize_params,
                  slice_spec, spatial_attrs, split_sizes)


class Lowered:
    """How a node runs.

    ``specs``: per output ('buffer', shape, dtype) | ('view', input index) | ('fresh',);
    ``make(buffers)`` -> fn(*inputs) returning the tuple of outputs;
    ``bind(buffers, inputs)`` (optional) -> a callable without arguments that computes the outputs into
    their buffers, for inputs that are the same arrays at every run (planned buffers): every argument
    resolved once, the compiled kernel called directly (see :mod:`.plan`);
    ``scratch``: (shape, dtype) of work buffers the step needs while it runs (planned like outputs, alive
    during the step only); they follow the output buffers in ``buffers``.
    """

    def __init__(self, specs, make, bind=None, scratch=()):
        self.specs = specs
        self.make = make
        self.bind = bind
        self.scratch = list(scratch)


class LowerContext:
    def __init__(self, graph, num_threads):
        self.graph = graph
        self.nt = num_threads

    def value(self, name):
        return self.graph.values[name]

    def phys(self, name):
        return self.graph.values[name].physical_shape()

    def nhwc(self, name):
        return self.graph.values[name].layout == 'NHWC'

    def const(self, name):
        return self.graph.const(name)

    def buffer_spec(self, name):
        v = self.graph.values[name]
        return ('buffer', v.physical_shape(), v.dtype)

    def threads(self, node, macs=None):
        """Threads for ``node``'s kernel: one for small work, where handing part of it to a worker costs
        about what it saves; else the engine's count."""
        if self.nt == 1:
            return 1
        if macs is not None:
            return 1 if macs < SMALL_MACS else self.nt
        names = [n for n in list(node.inputs) + list(node.outputs) if n and not self.value(n).is_const]
        nbytes = max(int(np.prod(self.value(n).shape, dtype=np.int64)) * self.value(n).dtype.itemsize
                     for n in names)
        return 1 if nbytes < SMALL_BYTES else self.nt


# Below these, a step runs on one thread (LowerContext.threads): ~10 us of work on one core, about what
# handing half of it to a worker costs (the pool's workers spin between the steps of a run, so a shared
# step pays a few cache-line transfers, not a wake-up; qvision_kernels/include/qv_threadpool.h).
SMALL_MACS = 1 << 20
SMALL_BYTES = 1 << 15


LOWERINGS = {}


def lowering(*ops):
    def register(fn):
        for op in ops:
            LOWERINGS[op] = fn
        return fn
    return register


def lower(node, ctx):
    fn = LOWERINGS.get(node.op)
    if fn is None:
        if node.op in REFERENCE:
            return _generic(node, ctx)
        raise node_error(node, 'operator %s is not supported by this engine' % node.op)
    return fn(node, ctx)


def _single(ctx, node, run, bind=None, scratch=(), inplace=None):
    """One planned output buffer ``out``; ``run(out, *inputs)`` fills it.  ``bind(out, *inputs)``, when
    given, returns the callable without arguments that does the same on fixed arrays (by default
    ``run`` with its arguments bound).  ``inplace=k``: the step may write over its run-time input k
    (an element-wise op), which the memory plan does when nothing reads that input afterwards."""
    def make(bufs):
        out = bufs[0]

        def fn(*ins):
            run(out, *ins)
            return (out,)
        return fn

    def bind_default(bufs, ins):
        if bind is not None:
            return bind(bufs[0], *ins)
        return functools.partial(run, bufs[0], *ins)
    spec = ctx.buffer_spec(node.outputs[0]) + (() if inplace is None else (inplace,))
    return Lowered([spec], make, bind_default, scratch)


def _input_array(ctx, node, k):
    """Constant input k in the physical layout of the node's data (or None when it is run-time)."""
    c = ctx.const(node.input(k))
    if c is None:
        return None
    layout = 'NHWC' if any(ctx.nhwc(o) for o in node.outputs if o) else None
    return permute_const(c, layout)


def _generic(node, ctx):
    """Any op with a NumPy reference: called on the inputs (constants bound, permuted to NHWC for
    element-wise ops on channels-last data); fresh, contiguous outputs that never alias an input."""
    opset = ctx.graph.opset
    consts = {k: _input_array(ctx, node, k) for k in range(len(node.inputs))}
    runtime = [k for k, name in enumerate(node.inputs) if name and consts[k] is None]
    n_in = len(node.inputs)
    ref = REFERENCE[node.op]

    def make(bufs):
        def fn(*ins):
            args = [None] * n_in
            for k, v in consts.items():
                if v is not None:
                    args[k] = v
            for k, x in zip(runtime, ins):
                args[k] = x
            outs = ref(node, args, opset)
            result = []
            for o in outs:
                o = np.asarray(o)
                if not o.flags.c_contiguous or any(np.may_share_memory(o, x) for x in ins):
                    o = np.array(o, order='C', copy=True)
                result.append(o)
            return tuple(result)
        return fn
    return Lowered([('fresh',)] * len(node.outputs), make)


# ------------------------------------------------------------------------------- direct kernel calls
#
# A bound step (see plan.py) calls the compiled kernel itself with every argument resolved once: the
# qvision_kernels wrappers validate dtypes, shapes and contiguity and derive their arguments at every call
# (5-7 us, ~1 ms per frame of a detector).  The checks are made here instead, once, on the planned arrays.
# The arguments mirror the wrappers' own calls (qvision_kernels.conv / fconv / eltwise / pool); when a
# wrapper's internals are not what this code expects, the step falls back to the wrapper (same result,
# slower).  Tests compare the bound path with the wrappers on whole models (Engine.intermediates runs the
# unbound steps).

def _kernels(family):
    return K._registry.module(family)


def _fixed(a, dtype, shape=None):
    return (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous
            and (shape is None or a.shape == tuple(shape)))


def _bind_conv(layer, x, out, nt, quantized):
    """Direct call of QConv2d / FConv2d on planned NHWC ``x`` and ``out``."""
    fallback = functools.partial(layer, x, out=out, num_threads=nt)
    dtype = np.uint8 if quantized else np.float32
    try:
        mod, (oc, kh, kw, cg) = layer._mod, layer.weight_shape
        shape = layer.output_shape(x.shape)
        geometry = (kh, kw, layer.stride[0], layer.stride[1], layer.pads[0], layer.pads[1],
                    layer.dilation[0], layer.dilation[1])
        if not (_fixed(x, dtype) and x.ndim == 4 and x.shape[3] == layer.in_channels
                and _fixed(out, dtype, shape)):
            return fallback
        if quantized:
            q = (layer.x_zero_point, layer.y_zero_point, layer.act_min, layer.act_max)
            if layer.depthwise:
                return functools.partial(mod.depthwise, x, layer._w, layer._bias, layer._mult, out,
                                         *geometry, *q, nt, layer.lut, layer._w3)
            return functools.partial(mod.conv2d, x, layer._w, layer._bias, layer._mult, out, layer.groups, cg,
                                     oc // layer.groups, *geometry, *q, layer.mode, nt, layer.lut)
        act = (layer.act_min, layer.act_max)
        if layer.depthwise:
            return functools.partial(mod.depthwise, x, layer._w, layer._bias, out, *geometry, *act, nt, layer._act)
        return functools.partial(mod.conv2d, x, layer._w, layer._bias, out, layer.groups, cg, oc // layer.groups,
                                 *geometry, *act, layer.mode, nt, layer._act)
    except (AttributeError, TypeError, ValueError):
        return fallback


def _bind_lut(x, table, out, nt):
    if not (_fixed(x, np.uint8) and _fixed(out, np.uint8, x.shape) and _fixed(table, np.uint8, (256,))):
        return functools.partial(K.lut_apply, x, table, out=out, num_threads=nt)
    if x.size == 0:
        return _nothing
    mod = _kernels('eltwise')
    return functools.partial(mod.lut_apply, x.reshape(-1), table, out.reshape(-1), nt, mod.HAS_VBMI)


def _nothing():
    pass


def _bind_binary(kern, a, b, out, args, nt):
    """Direct call of add_int8 / mul_int8 / add_f32 / mul_f32 (``b`` broadcasts to ``a``)."""
    fallback = functools.partial(kern, a, b, *args, out=out, num_threads=nt)
    E = K.eltwise
    try:
        dtype = np.float32 if kern in (K.add_f32, K.mul_f32) else np.uint8
        if not (_fixed(a, dtype) and _fixed(b, dtype) and _fixed(out, dtype, a.shape)) or out.size == 0:
            return fallback
        shape, bstrides = E._broadcast_plan(a.shape, b.shape)
        flat = (a.reshape(-1), b.reshape(-1), out.reshape(-1), shape, bstrides)
        mod = _kernels('eltwise')
        if kern is K.add_int8:
            return functools.partial(mod.add_u8, *flat, *E._add_params(*args), nt)
        if kern is K.mul_int8:
            return functools.partial(mod.mul_u8, *flat, *E._mul_params(*args), nt)
        return functools.partial(mod.binary_f32, *flat, kern is K.mul_f32, nt)
    except (AttributeError, TypeError, ValueError, K.KernelError):
        return fallback


def _bind_maxpool(x, out, kernel, strides, pads, dilations, ceil_mode, nt):
    fallback = functools.partial(K.max_pool2d, x, kernel, strides, pads, dilations, ceil_mode, out=out,
                                 num_threads=nt)
    try:
        g = K.pool._plan(x.shape, kernel, strides, pads, dilations, ceil_mode)
        if x.dtype not in (np.uint8, np.float32) or not (_fixed(x, x.dtype) and _fixed(out, x.dtype, g.out_shape)):
            return fallback
        mod = _kernels('pool')
        kern = mod.max_pool2d_u8 if x.dtype == np.uint8 else mod.max_pool2d_f32
        return functools.partial(kern, x, out, g.stride[0], g.stride[1], g.pads[0], g.pads[1], g.dilation[0],
                                 g.dilation[1], g.h0, g.h1, g.w0, g.w1, nt)
    except (AttributeError, TypeError, ValueError, K.KernelError):
        return fallback


def _bind_upsample(x, fh, fw, out, nt):
    n, h, w, c = x.shape
    if not (_fixed(x, x.dtype) and _fixed(out, x.dtype, (n, h * fh, w * fw, c))) or out.size == 0:
        return functools.partial(K.upsample_nearest, x, fh, fw, out=out, num_threads=nt)
    return functools.partial(_kernels('eltwise').upsample_nearest_bytes, x.view(np.uint8).reshape(n, h, w, -1),
                             out.view(np.uint8).reshape(n, h * fh, w * fw, -1), fh, fw, nt)


# ------------------------------------------------------------------------------------------ conv / gemm

def _require_dtype(ctx, node, *dtypes):
    """ModelError naming the node unless its data input (input 0) has one of ``dtypes``, the ones its
    kernel takes (found at load time instead of as a kernel error at the first run)."""
    dtype = ctx.value(node.inputs[0]).dtype
    if dtype not in dtypes:
        raise node_error(node, 'its data input is %s; this engine runs %s on %s data only' % (
            dtype, node.op, ' or '.join(np.dtype(d).name for d in dtypes)))


def _conv_geometry(node, ctx, kernel_hw):
    x = ctx.value(node.inputs[0])
    strides, dilations, pads, _ = spatial_attrs(node, x.shape[2:], kernel_hw)
    return strides, dilations, pads


@lowering('Conv')
def _conv(node, ctx):
    w = ctx.const(node.inputs[1])
    if w is None:
        raise node_error(node, 'the weight is computed at run time; only constant weights are supported')
    if w.ndim != 4:
        raise node_error(node, 'only 2-D convolutions are supported')
    _require_dtype(ctx, node, np.float32)
    b = ctx.const(node.input(2))
    if node.input(2) and b is None:
        raise node_error(node, 'the bias is computed at run time; only constant biases are supported')
    strides, dilations, pads = _conv_geometry(node, ctx, w.shape[2:])
    layer = K.FConv2d(np.ascontiguousarray(w.astype(np.float32).transpose(0, 2, 3, 1)),
                      None if b is None else b.astype(np.float32).reshape(-1),
                      stride=strides, padding=pads, dilation=dilations, groups=int(node.attrs.get('group', 1)),
                      act_min=node.attrs.get('_act_min'), act_max=node.attrs.get('_act_max'),
                      activation=node.attrs.get('_activation'))
    nt = ctx.threads(node, _conv_macs(ctx, node, w.shape[0], w[0].size))
    return _single(ctx, node, lambda out, x: layer(x, out=out, num_threads=nt),
                   lambda out, x: _bind_conv(layer, x, out, nt, False))


@lowering('QConv')
def _qconv(node, ctx):
    a = node.attrs
    w = a['weight']
    strides, dilations, pads = _conv_geometry(node, ctx, w.shape[2:])
    layer = K.QConv2d(np.ascontiguousarray(w.transpose(0, 2, 3, 1)), a['bias'], a['x_zero_point'],
                      a['multiplier'], a['y_zero_point'], stride=strides, padding=pads, dilation=dilations,
                      groups=int(a.get('group', 1)), act_min=a['act_min'], act_max=a['act_max'],
                      lut=a.get('lut'))
    nt = ctx.threads(node, _conv_macs(ctx, node, w.shape[0], w[0].size))
    return _single(ctx, node, lambda out, x: layer(x, out=out, num_threads=nt),
                   lambda out, x: _bind_conv(layer, x, out, nt, True))


def _conv_macs(ctx, node, oc, per_output):
    """Multiply-adds of a convolution: output pixels x output channels x weights per output channel."""
    shape = ctx.value(node.outputs[0]).shape
    return int(np.prod(shape, dtype=np.int64)) // max(1, shape[1]) * oc * per_output


def _fc_view(ctx, node, layer, k):
    """A fully-connected layer applied to the last axis of input [..., K] -> [..., N]."""
    out_shape = ctx.phys(node.outputs[0])
    nt = ctx.threads(node, int(np.prod(out_shape, dtype=np.int64)) * k)
    out_shape = ctx.phys(node.outputs[0])

    def make(bufs):
        out = bufs[0]
        out2 = out.reshape(-1, out_shape[-1])

        def fn(x):
            layer(x.reshape(-1, k), out=out2, num_threads=nt)
            return (out,)
        return fn
    return Lowered([ctx.buffer_spec(node.outputs[0])], make)


@lowering('Gemm', 'MatMul')
def _gemm(node, ctx):
    a = node.attrs
    b = ctx.const(node.inputs[1])
    x = ctx.value(node.inputs[0])
    act = {'act_min': a.get('_act_min'), 'act_max': a.get('_act_max'), 'activation': a.get('_activation')}
    if node.op == 'Gemm':
        c = ctx.const(node.input(2))
        n = b.shape[0] if (b is not None and a.get('transB', 0)) else (b.shape[1] if b is not None else 0)
        usable = (b is not None and not a.get('transA', 0) and x.dtype == np.float32 and (not node.input(2) or
                                                                (c is not None and c.size in (1, n))))
        if not usable:
            if '_act_min' in a or '_act_max' in a or '_activation' in a:
                raise node_error(node, 'internal: a fused activation on a Gemm without constant weights')
            return _generic(node, ctx)
        w = b.T if not a.get('transB', 0) else b
        w = (np.float32(a.get('alpha', 1.0)) * w.astype(np.float32)) if a.get('alpha', 1.0) != 1.0 else w
        bias = None
        if c is not None:
            bias = np.broadcast_to(np.float32(a.get('beta', 1.0)) * c.astype(np.float32).reshape(-1),
                                   (w.shape[0],)).astype(np.float32)
        layer = K.FLinear(np.ascontiguousarray(w, dtype=np.float32), bias, **act)
        return _fc_view(ctx, node, layer, w.shape[1])
    if b is None or b.ndim != 2 or len(x.shape) < 2 or x.dtype != np.float32:
        return _generic(node, ctx)
    layer = K.FLinear(np.ascontiguousarray(b.T, dtype=np.float32), None)
    return _fc_view(ctx, node, layer, b.shape[0])


@lowering('QGemm')
def _qgemm(node, ctx):
    a = node.attrs
    w = a['weight']
    layer = K.QLinear(w, a['bias'], a['x_zero_point'], a['multiplier'], a['y_zero_point'],
                      act_min=a['act_min'], act_max=a['act_max'])
    return _fc_view(ctx, node, layer, w.shape[1])


# ---------------------------------------------------------------------------------------------- pooling

def _pool_args(node, ctx):
    a = node.attrs
    kernel = tuple(int(v) for v in a['kernel_shape'])
    x = ctx.value(node.inputs[0])
    strides, dilations, pads, _ = spatial_attrs(node, x.shape[2:], kernel, pool=True)
    ceil_mode = bool(a.get('ceil_mode', 0)) and a.get('auto_pad', 'NOTSET') in ('NOTSET', '')
    return kernel, strides, dilations, pads, ceil_mode


@lowering('MaxPool')
def _maxpool(node, ctx):
    _require_dtype(ctx, node, np.float32, np.uint8)
    kernel, strides, dilations, pads, ceil_mode = _pool_args(node, ctx)
    nt = ctx.threads(node)
    return _single(ctx, node, lambda out, x: K.max_pool2d(x, kernel, strides, pads, dilations, ceil_mode,
                                                            out=out, num_threads=nt),
                   lambda out, x: _bind_maxpool(x, out, kernel, strides, pads, dilations, ceil_mode, nt))


@lowering('AveragePool', 'QAveragePool')
def _avgpool(node, ctx):
    kernel, strides, dilations, pads, ceil_mode = _pool_args(node, ctx)
    cip = bool(node.attrs.get('count_include_pad', 0))
    q = {}
    if node.op == 'QAveragePool':
        q = {k: node.attrs[k] for k in ('x_scale', 'x_zero_point', 'y_scale', 'y_zero_point')}
    else:
        _require_dtype(ctx, node, np.float32)
    nt = ctx.threads(node)
    return _single(ctx, node, lambda out, x: K.avg_pool2d(x, kernel, strides, pads, ceil_mode, cip, out=out,
                                                            num_threads=nt, **q))


@lowering('GlobalAveragePool', 'QGlobalAveragePool')
def _gap(node, ctx):
    if not ctx.nhwc(node.inputs[0]):
        if node.op == 'QGlobalAveragePool':
            raise node_error(node, 'internal: a quantised global pool on non-4-D data')
        return _generic(node, ctx)
    q = {}
    if node.op == 'QGlobalAveragePool':
        q = {k: node.attrs[k] for k in ('x_scale', 'x_zero_point', 'y_scale', 'y_zero_point')}
    else:
        _require_dtype(ctx, node, np.float32)
    nt = ctx.threads(node)

    def run(out, x):
        K.global_avg_pool2d(x, out=out, num_threads=nt, **q)
    return _single(ctx, node, run, bind=lambda out, x: _bind_gap(x, out, q, nt))


def _bind_gap(x, out, q, nt):
    """Direct call of the global-average kernel on planned NHWC ``x`` and ``out`` (the wrapper derives the
    requantisation multiplier at every call: a third of the time of this small step)."""
    fallback = functools.partial(K.global_avg_pool2d, x, out=out, num_threads=nt, **q)
    dtype = np.uint8 if q else np.float32
    if not (_fixed(x, dtype) and x.ndim == 4 and _fixed(out, dtype, (x.shape[0], 1, 1, x.shape[3]))
            and 1 <= x.shape[1] * x.shape[2] <= K.pool.MAX_WINDOW):
        return fallback
    mod = _kernels('pool')
    if not q:
        return functools.partial(mod.global_avg_pool2d_f32, x, out, nt)
    m = float(K.pool.avg_multiplier(q['x_scale'], q['y_scale'], x.shape[1] * x.shape[2])[()])
    if not np.isfinite(m):
        return fallback
    return functools.partial(mod.global_avg_pool2d_u8, x, out, m, int(q['x_zero_point']), int(q['y_zero_point']),
                             nt)


@lowering('GlobalMaxPool')
def _gmp(node, ctx):
    if not ctx.nhwc(node.inputs[0]):
        return _generic(node, ctx)
    return _single(ctx, node, lambda out, x: np.max(x, axis=(1, 2), keepdims=True, out=out))


# ----------------------------------------------------------------------------------------- element-wise

def _sigmoid_step(ctx, node, silu):
    """float32 Sigmoid / SiLU by the vectorised kernel (the formula of the convolutions' fused one)."""
    nt = ctx.threads(node)

    def bind(out, x):
        if not (_fixed(x, np.float32) and _fixed(out, np.float32, x.shape)):
            return functools.partial(K.eltwise.sigmoid_f32, x, silu, out=out, num_threads=nt)
        if x.size == 0:
            return _nothing
        return functools.partial(_kernels('eltwise').sigmoid_f32, x.reshape(-1), out.reshape(-1), silu, nt)
    return _single(ctx, node, lambda out, x: K.eltwise.sigmoid_f32(x, silu, out=out, num_threads=nt), bind,
                   inplace=0)


def _hardsigmoid_into(out, x, alpha, beta):
    np.multiply(x, np.float32(alpha), out=out)
    out += np.float32(beta)
    np.clip(out, np.float32(0), np.float32(1), out=out)


UNARY_INTO = {
    'Relu': lambda node: lambda out, x: np.maximum(x, x.dtype.type(0), out=out),
    'Tanh': lambda node: lambda out, x: np.tanh(x, out=out),
    'HardSigmoid': lambda node: lambda out, x: _hardsigmoid_into(out, x, node.attrs.get('alpha', 0.2),
                                                                 node.attrs.get('beta', 0.5)),
    'HardSwish': lambda node: lambda out, x: (_hardsigmoid_into(out, x, 1.0 / 6.0, 0.5),
                                              np.multiply(out, x, out=out)),
    'Identity': lambda node: lambda out, x: np.copyto(out, x),
}


@lowering(*UNARY_INTO, 'Sigmoid', 'Silu')
def _unary(node, ctx):
    if ctx.value(node.inputs[0]).dtype != np.float32 and node.op not in ('Relu', 'Identity'):
        return _generic(node, ctx)
    if node.op in ('Sigmoid', 'Silu'):
        return _sigmoid_step(ctx, node, node.op == 'Silu')
    return _single(ctx, node, UNARY_INTO[node.op](node))


@lowering('LeakyRelu')
def _leaky(node, ctx):
    alpha = np.float32(node.attrs.get('alpha', 0.01))
    if ctx.value(node.inputs[0]).dtype != np.float32:
        return _generic(node, ctx)

    def run(out, x):
        np.multiply(x, alpha, out=out)
        np.copyto(out, x, where=x >= 0)
    return _single(ctx, node, run)


@lowering('Clip')
def _clip(node, ctx):
    lo = ctx.const(node.input(1))
    hi = ctx.const(node.input(2))
    x = ctx.value(node.inputs[0])
    if (node.input(1) and lo is None) or (node.input(2) and hi is None):
        return _generic(node, ctx)
    lo = None if lo is None else lo.astype(x.dtype).reshape(())
    hi = None if hi is None else hi.astype(x.dtype).reshape(())

    def run(out, x):
        if lo is None and hi is None:
            np.copyto(out, x)
        elif lo is None:
            np.minimum(x, hi, out=out)
        elif hi is None:
            np.maximum(x, lo, out=out)
        else:
            np.maximum(x, lo, out=out)
            np.minimum(out, hi, out=out)
    return _single(ctx, node, run)


_NUMPY_BINARY = {'Add': np.add, 'Sub': np.subtract, 'Mul': np.multiply, 'Div': np.divide}


@lowering('Add', 'Sub', 'Mul', 'Div', 'Pow')
def _binary(node, ctx):
    a_name, b_name = node.inputs[0], node.inputs[1]
    va, vb = ctx.value(a_name), ctx.value(b_name)
    y = ctx.value(node.outputs[0])
    if not (va.dtype == vb.dtype == y.dtype == np.float32):
        return _generic(node, ctx)
    ca, cb = _input_array(ctx, node, 0), _input_array(ctx, node, 1)
    out_shape = y.physical_shape()
    nt = ctx.threads(node)
    if node.op == 'Pow':
        if cb is None or cb.size != 1:
            return _generic(node, ctx)
        e = np.float32(cb.reshape(-1)[0])
        if ca is not None or va.physical_shape() != out_shape:
            return _generic(node, ctx)
        if e == 2:
            return _single(ctx, node, lambda out, x: np.multiply(x, x, out=out))
        return _single(ctx, node, lambda out, x: np.power(x, e, out=out))
    if ca is not None and cb is not None:
        return _generic(node, ctx)
    if ca is not None:
        c = ca
        if node.op in ('Add', 'Mul') and vb.physical_shape() == out_shape:
            kern = K.add_f32 if node.op == 'Add' else K.mul_f32
            return _single(ctx, node, lambda out, x: kern(x, c, out=out, num_threads=nt),
                           lambda out, x: _bind_binary(kern, x, c, out, (), nt))
        f = _NUMPY_BINARY[node.op]
        return _single(ctx, node, lambda out, x: f(c, x, out=out))
    if cb is not None:
        c = cb
        if va.physical_shape() == out_shape:
            if node.op in ('Add', 'Mul'):
                kern = K.add_f32 if node.op == 'Add' else K.mul_f32
                return _single(ctx, node, lambda out, x: kern(x, c, out=out, num_threads=nt),
                               lambda out, x: _bind_binary(kern, x, c, out, (), nt))
            if node.op == 'Sub':
                neg = np.require(-c, requirements="C")         # x - c == x + (-c) exactly
                return _single(ctx, node, lambda out, x: K.add_f32(x, neg, out=out, num_threads=nt),
                               lambda out, x: _bind_binary(K.add_f32, x, neg, out, (), nt))
        f = _NUMPY_BINARY[node.op]
        return _single(ctx, node, lambda out, x: f(x, c, out=out))
    sa, sb = va.physical_shape(), vb.physical_shape()
    if node.op in ('Add', 'Mul') and out_shape in (sa, sb):
        kern = K.add_f32 if node.op == 'Add' else K.mul_f32
        if sa == out_shape and _broadcasts(sb, out_shape):
            return _single(ctx, node, lambda out, a, b: kern(a, b, out=out, num_threads=nt),
                           lambda out, a, b: _bind_binary(kern, a, b, out, (), nt))
        if sb == out_shape and _broadcasts(sa, out_shape):
            return _single(ctx, node, lambda out, a, b: kern(b, a, out=out, num_threads=nt),
                           lambda out, a, b: _bind_binary(kern, b, a, out, (), nt))
    f = _NUMPY_BINARY[node.op]
    return _single(ctx, node, lambda out, a, b: f(a, b, out=out))


def _broadcasts(small, big):
    try:
        K.eltwise._broadcast_plan(tuple(big), tuple(small))
        return True
    except K.KernelError:
        return False


@lowering('QAdd', 'QMul')
def _qbinary(node, ctx):
    a = node.attrs
    kern = K.add_int8 if node.op == 'QAdd' else K.mul_int8
    args = (a['a_scale'], a['a_zero_point'], a['b_scale'], a['b_zero_point'], a['y_scale'], a['y_zero_point'],
            a['act_min'], a['act_max'])
    ca, cb = _input_array(ctx, node, 0), _input_array(ctx, node, 1)
    nt = ctx.threads(node)
    if ca is not None:
        raise node_error(node, 'internal: the first operand of a quantised binary op is constant')
    if not _broadcasts(cb.shape if cb is not None else ctx.phys(node.inputs[1]), ctx.phys(node.outputs[0])):
        raise node_error(node, 'internal: operand %s does not broadcast to %s'
                         % (ctx.phys(node.inputs[1]), ctx.phys(node.outputs[0])))
    if cb is not None:
        return _single(ctx, node, lambda out, x: kern(x, cb, *args, out=out, num_threads=nt),
                       lambda out, x: _bind_binary(kern, x, cb, out, args, nt), inplace=0)
    return _single(ctx, node, lambda out, x, y: kern(x, y, *args, out=out, num_threads=nt),
                   lambda out, x, y: _bind_binary(kern, x, y, out, args, nt), inplace=0)


@lowering('QLut')
def _qlut(node, ctx):
    table = node.attrs['table']
    nt = ctx.threads(node)
    return _single(ctx, node, lambda out, x: K.lut_apply(x, table, out=out, num_threads=nt),
                   lambda out, x: _bind_lut(x, table, out, nt), inplace=0)


@lowering('QuantizeLinear')
def _quantize(node, ctx):
    s = ctx.const(node.input(1))
    zp = ctx.const(node.input(2))
    x = ctx.value(node.inputs[0])
    if s is None or s.size != 1 or (zp is not None and zp.size != 1) or x.dtype != np.float32:
        return _generic(node, ctx)
    dtype = np.uint8 if zp is None else zp.dtype
    scale = float(np.float32(s.reshape(-1)[0]))
    z = 0 if zp is None else int(zp.reshape(-1)[0])
    to_nhwc = bool(node.attrs.get('_to_nhwc'))
    nt = ctx.threads(node)
    # saturate(round_half_to_even(x / s) + zp) in float32 (qvision_kernels.quantize_f32); the model input
    # goes NCHW -> NHWC in the same pass
    return _single(ctx, node, lambda out, x: K.quantize_f32(x, scale, z, dtype, nchw_to_nhwc=to_nhwc, out=out,
                                                            num_threads=nt),
                   lambda out, x: _bind_quantize(x, scale, z, dtype, to_nhwc, out, nt))


def _bind_quantize(x, scale, z, dtype, to_nhwc, out, nt):
    if not (_fixed(x, np.float32) and _fixed(out, dtype)) or x.size == 0 or (to_nhwc and x.ndim != 4):
        return functools.partial(K.quantize_f32, x, scale, z, dtype, nchw_to_nhwc=to_nhwc, out=out, num_threads=nt)
    info = np.iinfo(dtype)
    mod = _kernels('eltwise')
    if to_nhwc:
        return functools.partial(mod.quantize_nchw_to_nhwc_f32, x, out.view(np.uint8), np.float32(scale), z,
                                 info.min, info.max, nt)
    return functools.partial(mod.quantize_f32, x.reshape(-1), out.reshape(-1).view(np.uint8), np.float32(scale),
                             z, info.min, info.max, nt)


@lowering('DequantizeLinear')
def _dequantize(node, ctx):
    s = ctx.const(node.input(1))
    zp = ctx.const(node.input(2))
    x = ctx.value(node.inputs[0])
    if s is None or s.size != 1 or (zp is not None and zp.size != 1) or x.dtype not in (np.uint8, np.int8):
        return _generic(node, ctx)
    scale = float(np.float32(s.reshape(-1)[0]))
    z = 0 if zp is None else int(zp.reshape(-1)[0])
    nt = ctx.threads(node)
    # float32(q - zp) * s (qvision_kernels.dequantize_f32: q and zp are exact in float32, the difference too)
    return _single(ctx, node, lambda out, q: K.dequantize_f32(q, scale, z, out=out, num_threads=nt),
                   lambda out, q: _bind_dequantize(q, scale, z, out, nt))


def _bind_dequantize(q, scale, z, out, nt):
    if not (q.dtype in (np.uint8, np.int8) and _fixed(q, q.dtype) and _fixed(out, np.float32, q.shape)) \
            or q.size == 0:
        return functools.partial(K.dequantize_f32, q, scale, z, out=out, num_threads=nt)
    return functools.partial(_kernels('eltwise').dequantize_f32, q.reshape(-1).view(np.uint8), out.reshape(-1),
                             q.dtype == np.int8, np.float32(z), np.float32(scale), nt)


@lowering('Int8ToUint8', 'Uint8ToInt8')
def _signflip(node, ctx):
    def run(out, x):
        np.bitwise_xor(x.view(np.uint8), np.uint8(0x80), out=out.view(np.uint8))
    return _single(ctx, node, run)


# ---------------------------------------------------------------------------------------- data movement

@lowering('Reshape', 'Flatten', 'Squeeze', 'Unsqueeze')
def _reshape(node, ctx):
    shape = ctx.phys(node.outputs[0])

    def make(bufs):
        def fn(x, *rest):
            return (x.reshape(shape),)
        return fn
    return Lowered([('view', 0)], make)


@lowering('Transpose')
def _transpose(node, ctx):
    x = ctx.value(node.inputs[0])
    rank = len(x.shape)
    perm = node.attrs.get('perm')
    perm = list(range(rank))[::-1] if perm is None else [int(p) % rank for p in perm]
    if x.layout == 'NHWC':
        # output logical dim j is input logical dim perm[j], stored at physical position NHWC_TO_NCHW[.]
        perm = [physical_axis(p) for p in perm]
    if ctx.nhwc(node.outputs[0]):
        raise node_error(node, 'internal: Transpose writes its output in logical order')
    perm = tuple(perm)
    return _single(ctx, node, lambda out, x: np.copyto(out, x.transpose(perm)),
                   lambda out, x: functools.partial(np.copyto, out, x.transpose(perm)))


def _to_layout(node, ctx, to_nhwc):
    x = ctx.value(node.inputs[0])
    n, c, h, w = x.shape
    out_shape = ctx.phys(node.outputs[0])
    perm = (0, 2, 3, 1) if to_nhwc else (0, 3, 1, 2)
    if h * w == 1 or c == 1:            # the same bytes in both orders
        def make(bufs):
            def fn(x):
                return (x.reshape(out_shape),)
            return fn
        return Lowered([('view', 0)], make)
    if c <= 4:
        # a few channels (a model input): one contiguous plane at a time is several times faster
        # than NumPy's general transposing copy
        if to_nhwc:
            def run(out, x):
                for i in range(n):
                    for k in range(c):
                        out[i, :, :, k] = x[i, k]
        else:
            def run(out, x):
                for i in range(n):
                    for k in range(c):
                        out[i, k] = x[i, :, :, k]
        return _single(ctx, node, run)
    return _single(ctx, node, lambda out, x: np.copyto(out, x.transpose(perm)),
                   lambda out, x: functools.partial(np.copyto, out, x.transpose(perm)))


@lowering('ToNHWC')
def _to_nhwc(node, ctx):
    return _to_layout(node, ctx, True)


@lowering('ToNCHW')
def _to_nchw(node, ctx):
    return _to_layout(node, ctx, False)


def _phys_axis(ctx, name, axis):
    v = ctx.value(name)
    rank = len(v.shape)
    axis = int(axis) % rank
    return physical_axis(axis) if v.layout == 'NHWC' else axis


@lowering('Concat', 'QConcat')
def _concat(node, ctx):
    names = [i for i in node.inputs if i]
    axis = _phys_axis(ctx, node.outputs[0], node.attrs['axis'])
    layout = 'NHWC' if ctx.nhwc(node.outputs[0]) else None
    consts = {k: None if ctx.const(name) is None else permute_const(ctx.const(name), layout)
              for k, name in enumerate(names)}
    runtime = [k for k in range(len(names)) if consts[k] is None]
    dtype = ctx.value(node.outputs[0]).dtype
    nt = ctx.threads(node)
    n = len(names)

    def gather(ins):
        arrays = [None] * n
        for k, v in consts.items():
            if v is not None:
                arrays[k] = v
        for k, x in zip(runtime, ins):
            arrays[k] = x
        return arrays

    tables = [None] * n
    if node.op == 'QConcat':
        from .passes import concat_tables
        a = node.attrs
        tables = concat_tables(node)
        if 'tables' in a:           # composed tables (fold_concat_rescale): not the kernel's parameters
            def run(out, sc, *ins):
                _bind_concat(gather(ins), out, axis, tables, sc, nt)()
        else:
            def run(out, sc, *ins):
                K.concat_int8(gather(ins), a['scales'], a['zero_points'], a['y_scale'], a['y_zero_point'],
                              axis=axis, out=out, num_threads=nt)
    elif dtype == np.float32:
        def run(out, sc, *ins):
            K.concat_f32(gather(ins), axis=axis, out=out, num_threads=nt)
    else:
        def run(out, sc, *ins):
            np.concatenate(gather(ins), axis=axis, out=out)
    shapes = [ctx.phys(name) if consts[k] is None else consts[k].shape for k, name in enumerate(names)]
    need = max([int(np.prod(sh)) for sh, t in zip(shapes, tables) if t is not None], default=0)

    def make(bufs):
        out, sc = bufs[0], (bufs[1] if need else None)

        def fn(*ins):
            run(out, sc, *ins)
            return (out,)
        return fn

    def bind(bufs, ins):
        return _bind_concat(gather(ins), bufs[0], axis, tables, bufs[1] if need else None, nt)
    return Lowered([ctx.buffer_spec(node.outputs[0])], make, bind, [((need,), np.uint8)] if need else [])


def concat_rescale_table(scale, zero_point, y_scale, y_zero_point):
    """The uint8 table of what QConcat does to one input of ``(scale, zero_point)`` (computed by the
    concat kernel itself on the 256 codes), or None when the input is copied unchanged."""
    codes = np.arange(256, dtype=np.uint8).reshape(256, 1)
    table = K.concat_int8([codes], [scale], [zero_point], y_scale, y_zero_point, axis=1).reshape(256)
    return None if np.array_equal(table, codes.reshape(256)) else np.ascontiguousarray(table)


def _bind_concat(arrays, out, axis, tables, scratch, nt):
    """Concatenation as strided copies into the output: the output seen as rows of bytes [outer, bytes],
    input i a band of columns; rows are copied as units of up to 16 bytes (NumPy void types), which is
    several times faster than byte loops for the narrow channel counts of small detectors.  An input with
    other quantisation parameters than the output goes through its rescale table first (into
    ``scratch``)."""
    outer = int(np.prod(out.shape[:axis], dtype=np.int64))
    if outer == 0 or out.size == 0:
        return _nothing
    calls = []
    start = 0
    for x, table in zip(arrays, tables):
        index = (slice(None),) * axis + (slice(start, start + x.shape[axis]),)
        start += x.shape[axis]
        if x.size:
            fused = table is not None and _bind_band(out, index, x, True, nt, table)
            if fused:
                calls.append(fused)
                continue
            if table is not None:
                tmp = scratch[:x.size].reshape(x.shape)
                calls.append(_bind_lut(x, table, tmp, nt))
                x = tmp
            calls.append(_bind_band(out, index, x, True, nt))
    return _sequence(calls)


def _band(whole, part):
    """(byte offset, row stride, rows, row bytes) of ``part``, a view of C-contiguous ``whole`` that
    keeps every axis whole except one, cut to a contiguous range, seen as rows of bytes; None for other
    views."""
    if part.ndim != whole.ndim or part.size == 0 or part.dtype != whole.dtype:
        return None
    cut = [a for a in range(whole.ndim) if part.shape[a] != whole.shape[a]]
    if len(cut) > 1 or part.strides != whole.strides:
        return None
    a = cut[0] if cut else 0
    offset = part.__array_interface__['data'][0] - whole.__array_interface__['data'][0]
    rows = int(np.prod(whole.shape[:a], dtype=np.int64))
    return offset, whole.strides[a - 1] if a else whole.nbytes, rows, part.shape[a] * whole.strides[a]


def _bind_band(whole, index, part, into_whole, nt, table=None):
    """A step copying C-contiguous ``part`` into ``whole[index]`` (``into_whole``) or ``whole[index]``
    into ``part``, by the compiled row copy when that view is a band of rows (see :func:`_band`); else
    NumPy's copy.  With a uint8 ``table`` (into_whole only): ``part`` through the table into the band in
    one pass (``nt`` threads), or None when the band is not one.  A plain copy runs on the calling thread:
    it is memory-bound and short (a few us for a detector's tensors), less than handing half of it to a
    worker risks when the cores are busy."""
    view = whole[index]
    band = _band(whole, view) if _fixed(whole, whole.dtype) and _fixed(part, whole.dtype, view.shape) else None
    if table is not None:
        if band is None or whole.dtype != np.uint8 or not _fixed(table, np.uint8, (256,)):
            return None
        offset, stride, rows, width = band
        mod = _kernels('eltwise')
        return functools.partial(mod.lut_rows, part.reshape(-1), table, whole.reshape(-1), offset, stride, rows,
                                 width, nt, mod.HAS_VBMI)
    if band is None:
        return functools.partial(np.copyto, view, part) if into_whole else functools.partial(np.copyto, part, view)
    offset, stride, rows, width = band
    flat, pflat = whole.reshape(-1).view(np.uint8), part.reshape(-1).view(np.uint8)
    copy = _kernels('eltwise').copy_rows
    if into_whole:
        return functools.partial(copy, pflat, 0, width, flat, offset, stride, rows, width, 1)
    return functools.partial(copy, flat, offset, stride, pflat, 0, width, rows, width, 1)


def _sequence(calls):
    """One step running ``calls`` in order."""
    if not calls:
        return _nothing
    if len(calls) == 1:
        return calls[0]

    def step():
        for call in calls:
            call()
    return step


@lowering('Split')
def _split(node, ctx):
    x = ctx.value(node.inputs[0])
    axis, sizes = split_sizes(node, x.shape, ctx.const(node.input(1)), ctx.graph.opset)
    pa = physical_axis(axis) if x.layout == 'NHWC' else axis
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    index = []
    for k in range(len(sizes)):
        sl = [slice(None)] * len(x.shape)
        sl[pa] = slice(int(bounds[k]), int(bounds[k + 1]))
        index.append(tuple(sl))
    outs = [o for o in node.outputs]

    def make(bufs):
        def fn(x, *rest):
            for buf, ix in zip(bufs, index):
                if buf is not None:
                    np.copyto(buf, x[ix])
            return tuple(bufs)
        return fn

    def bind(bufs, ins):
        return _sequence([_bind_band(ins[0], ix, buf, False, 1) for buf, ix in zip(bufs, index)
                          if buf is not None and buf.size])
    return Lowered([ctx.buffer_spec(o) if o else ('fresh',) for o in outs], make, bind)


@lowering('Slice')
def _slice(node, ctx):
    x = ctx.value(node.inputs[0])
    consts = [None] + [ctx.const(i) if i else None for i in node.inputs[1:]]
    spec = slice_spec(node, x.shape, consts, ctx.graph.opset)
    if x.layout == 'NHWC':
        spec = tuple(spec[a] for a in NCHW_TO_NHWC)
    return _single(ctx, node, lambda out, x, *rest: np.copyto(out, x[spec]),
                   lambda out, x, *rest: _bind_band(x, spec, out, False, 1) if out.size else _nothing)


# The compiled softmax is used along a strided axis and along rows up to this long (measured 1.5-7x faster
# than the NumPy passes there); longer contiguous rows stay with NumPy, whose passes are as fast.
SOFTMAX_SHORT_ROW = 256


@lowering('Softmax', 'LogSoftmax')
def _softmax(node, ctx):
    x = ctx.value(node.inputs[0])
    rank = len(x.shape)
    if ctx.graph.opset < 13:
        axis = int(node.attrs.get('axis', 1)) % rank
        if axis != rank - 1:
            return _generic(node, ctx)
    else:
        axis = int(node.attrs.get('axis', -1)) % rank
    pa = physical_axis(axis) if x.layout == 'NHWC' else axis
    log = node.op == 'LogSoftmax'
    if x.dtype != np.float32:
        return _generic(node, ctx)
    shape = x.physical_shape()
    outer = int(np.prod(shape[:pa], dtype=np.int64))
    inner = int(np.prod(shape[pa + 1:], dtype=np.int64))
    if not log and (inner > 1 or shape[pa] <= SOFTMAX_SHORT_ROW):
        nt = ctx.threads(node)
        return _single(ctx, node, lambda out, x: K.softmax_f32(x, pa, out=out, num_threads=nt),
                       lambda out, x: _bind_softmax(x, out, outer, shape[pa], inner, pa, nt), inplace=0)

    reduced = list(x.physical_shape())
    reduced[pa] = 1
    m = np.empty(reduced, np.float32)      # per-step work arrays (small: one value per row)
    t = np.empty(reduced, np.float32)

    def run(out, x):
        np.max(x, axis=pa, keepdims=True, out=m)
        np.subtract(x, m, out=out)
        if log:
            np.sum(np.exp(out), axis=pa, keepdims=True, out=t)
            np.log(t, out=t)
            out -= t
        else:
            np.exp(out, out=out)
            np.sum(out, axis=pa, keepdims=True, out=t)
            out /= t
    return _single(ctx, node, run)


def _bind_softmax(x, out, outer, n, inner, axis, nt):
    if not (_fixed(x, np.float32) and _fixed(out, np.float32, x.shape)) or x.size == 0:
        return functools.partial(K.softmax_f32, x, axis, out=out, num_threads=nt)
    return functools.partial(_kernels('eltwise').softmax_f32, x.reshape(-1), out.reshape(-1), outer, n, inner, nt)


@lowering('ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'ArgMax', 'ArgMin')
def _reduce(node, ctx):
    x = ctx.value(node.inputs[0])
    if x.layout != 'NHWC':
        return _generic(node, ctx)
    if node.op.startswith('Arg'):
        axes = (int(node.attrs.get('axis', 0)) % 4,)
    else:
        axes = reduce_axes(node, [None] + [ctx.const(i) for i in node.inputs[1:]], ctx.graph.opset, 4)
    paxes = tuple(sorted(physical_axis(a) for a in axes))
    if not paxes:
        return _single(ctx, node, lambda out, x, *r: np.copyto(out, x))
    if node.op.startswith('Arg'):
        fn = np.argmax if node.op == 'ArgMax' else np.argmin
        if node.attrs.get('select_last_index', 0):
            return _generic(node, ctx)
        pa = paxes[0]
        return _single(ctx, node, lambda out, x, *r: np.copyto(out, np.expand_dims(fn(x, axis=pa), pa)))
    fn = {'ReduceMean': np.mean, 'ReduceSum': np.sum, 'ReduceMax': np.max, 'ReduceMin': np.min}[node.op]
    return _single(ctx, node, lambda out, x, *r: np.copyto(out, fn(x, axis=paxes, keepdims=True),
                                                            casting='unsafe'))


@lowering('Resize', 'Upsample')
def _resize(node, ctx):
    x = ctx.value(node.inputs[0])
    consts = [None] + [ctx.const(i) if i else None for i in node.inputs[1:]]
    mode, coord, nearest, scales, out_shape = resize_params(node, x.shape, consts, ctx.graph.opset)
    if x.layout != 'NHWC':
        return _generic(node, ctx)
    h, w = x.shape[2:]
    ho, wo = out_shape[2:]
    nt = ctx.threads(node)
    if mode == 'nearest':
        ih = nearest_index(coord, nearest, h, ho, scales[2])
        iw = nearest_index(coord, nearest, w, wo, scales[3])
        if ho % h == 0 and wo % w == 0 and x.dtype in (np.uint8, np.float32):
            fh, fw = ho // h, wo // w
            if np.array_equal(ih, np.arange(ho) // fh) and np.array_equal(iw, np.arange(wo) // fw):
                return _single(ctx, node, lambda out, x, *r: K.upsample_nearest(x, fh, fw, out=out,
                                                                                 num_threads=nt),
                               lambda out, x, *r: _bind_upsample(x, fh, fw, out, nt))
        return _single(ctx, node, lambda out, x, *r: np.copyto(out, x[:, ih][:, :, iw]))
    h0, h1, wh = linear_weights(coord, h, ho, scales[2])
    w0, w1, ww = linear_weights(coord, w, wo, scales[3])
    wh = wh.reshape(1, -1, 1, 1)
    ww = ww.reshape(1, 1, -1, 1)
    if x.dtype != np.float32:
        raise node_error(node, 'linear Resize of %s data is not supported' % x.dtype)

    def run(out, x, *r):
        rows = x[:, h0] * (1 - wh) + x[:, h1] * wh
        np.copyto(out, rows[:, :, w0] * (1 - ww) + rows[:, :, w1] * ww)
    return _single(ctx, node, run)
