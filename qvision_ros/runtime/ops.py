"""ONNX operators in NumPy, with ONNX's (NCHW) semantics, and their output shapes.

Used by the engine for constant folding (``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chains),
shape inference, building lookup tables of element-wise regions, and as the run-time implementation of
the light operators that have no compiled kernel (Reshape, Transpose, Softmax, Slice...).  The heavy
operators (Conv, Gemm, pooling, Add/Mul/Concat, Resize) run on :mod:`qvision_kernels` instead; they only
have a shape function here.

``REFERENCE[op](node, inputs, opset)`` returns the list of outputs (``inputs`` holds None for absent
optional inputs).  ``SHAPE[op](node, shapes, consts, opset)`` returns the list of output shapes of an op
whose reference would be too costly to run on zeros (``consts`` holds the constant inputs, else None).
"""
import math

import numpy as np
from onnx import helper

from ..errors import ModelError

REFERENCE = {}
SHAPE = {}


def reference(*ops):
    def register(fn):
        for op in ops:
            REFERENCE[op] = fn
        return fn
    return register


def shape_fn(*ops):
    def register(fn):
        for op in ops:
            SHAPE[op] = fn
        return fn
    return register


def node_error(node, message):
    return ModelError('node %r (%s): %s' % (node.name, node.op, message))


def _tensor_dtype_to_np_dtype(onnx_type):
    try:
        return helper.tensor_dtype_to_np_dtype(onnx_type)
    except AttributeError:      # onnx < 1.13 (python3-onnx 1.12 of Debian 12): the older mapping table
        from onnx.mapping import TENSOR_TYPE_TO_NP_TYPE
        return TENSOR_TYPE_TO_NP_TYPE[onnx_type]


def np_dtype(onnx_type):
    """NumPy dtype of an ONNX TensorProto element type."""
    try:
        return np.dtype(_tensor_dtype_to_np_dtype(int(onnx_type)))
    except Exception:
        raise ModelError('unsupported tensor element type %r' % (onnx_type,)) from None


def _norm_axis(axis, rank, node=None):
    a = int(axis)
    if not -rank <= a < max(rank, 1):
        raise node_error(node, 'axis %d is out of range for rank %d' % (a, rank)) if node else \
            ModelError('axis %d out of range for rank %d' % (a, rank))
    return a % rank if rank else 0


def _ints(a):
    return [int(v) for v in np.asarray(a).reshape(-1)]


# ------------------------------------------------------------------------------ element-wise, unary

def _sigmoid(x):
    with np.errstate(over='ignore'):
        return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype, copy=False)


def _unary(fn):
    def run(node, inputs, opset):
        return [np.asarray(fn(inputs[0], node)).astype(inputs[0].dtype, copy=False)]
    return run


def _hardsigmoid(x, alpha, beta):
    t = np.asarray(alpha, x.dtype) * x + np.asarray(beta, x.dtype)
    return np.minimum(np.maximum(t, x.dtype.type(0)), x.dtype.type(1))


UNARY = {
    'Relu': lambda x, n: np.maximum(x, x.dtype.type(0)),
    'Sigmoid': lambda x, n: _sigmoid(x),
    'Tanh': lambda x, n: np.tanh(x),
    'LeakyRelu': lambda x, n: np.where(x >= 0, x, x * np.asarray(n.attrs.get('alpha', 0.01), x.dtype)),
    'HardSigmoid': lambda x, n: _hardsigmoid(x, n.attrs.get('alpha', 0.2), n.attrs.get('beta', 0.5)),
    'HardSwish': lambda x, n: x * _hardsigmoid(x, 1.0 / 6.0, 0.5),
    'Elu': lambda x, n: np.where(x >= 0, x, np.asarray(n.attrs.get('alpha', 1.0), x.dtype) * np.expm1(x)),
    'Selu': lambda x, n: np.asarray(n.attrs.get('gamma', 1.0507009873554805), x.dtype) * np.where(
        x > 0, x, np.asarray(n.attrs.get('alpha', 1.6732632423543772), x.dtype) * np.expm1(x)),
    'Softplus': lambda x, n: np.logaddexp(x, x.dtype.type(0)),
    'Softsign': lambda x, n: x / (1 + np.abs(x)),
    'Mish': lambda x, n: x * np.tanh(np.logaddexp(x, x.dtype.type(0))),
    'Exp': lambda x, n: np.exp(x),
    'Log': lambda x, n: np.log(x),
    'Sqrt': lambda x, n: np.sqrt(x),
    'Neg': lambda x, n: -x,
    'Abs': lambda x, n: np.abs(x),
    'Floor': lambda x, n: np.floor(x),
    'Ceil': lambda x, n: np.ceil(x),
    'Round': lambda x, n: np.rint(x),
    'Reciprocal': lambda x, n: x.dtype.type(1) / x,
    'Sign': lambda x, n: np.sign(x),
    'Not': lambda x, n: np.logical_not(x),
    'Sin': lambda x, n: np.sin(x),
    'Cos': lambda x, n: np.cos(x),
    'Identity': lambda x, n: x,
}
for _op, _fn in UNARY.items():
    REFERENCE[_op] = _unary(_fn)

# ops that are a function of one tensor, value by value (their LUT can be built from their reference)
ELEMENTWISE_UNARY = set(UNARY) - {'Not'} | {'Clip', 'Silu'}


@reference('Clip')
def _clip(node, inputs, opset):
    x = inputs[0]
    lo = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
    hi = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    y = x
    if lo is not None:
        y = np.maximum(y, lo.astype(x.dtype))
    if hi is not None:
        y = np.minimum(y, hi.astype(x.dtype))
    return [np.array(y, dtype=x.dtype, copy=lo is None and hi is None)]


@reference('Silu')
def _silu(node, inputs, opset):
    """x * sigmoid(x) (the engine's fusion of Sigmoid + Mul; not an ONNX operator)."""
    x = inputs[0]
    return [x * _sigmoid(x)]


# ------------------------------------------------------------------------------ element-wise, binary

def _int_div(a, b):
    q = np.trunc(np.true_divide(a, b))
    return q.astype(np.result_type(a, b))


BINARY = {
    'Add': np.add, 'Sub': np.subtract, 'Mul': np.multiply,
    'Div': lambda a, b: (_int_div(a, b) if np.issubdtype(a.dtype, np.integer) else np.divide(a, b)),
    'Pow': lambda a, b: np.power(a, b.astype(a.dtype)) if a.dtype.kind == 'f' else np.power(a, b),
    'Equal': np.equal, 'Less': np.less, 'LessOrEqual': np.less_equal, 'Greater': np.greater,
    'GreaterOrEqual': np.greater_equal, 'And': np.logical_and, 'Or': np.logical_or, 'Xor': np.logical_xor,
    'Mod': np.mod, 'PRelu': lambda a, b: np.where(a >= 0, a, a * b.astype(a.dtype)),
}


def _binary(fn, op):
    def run(node, inputs, opset):
        a, b = inputs[0], inputs[1]
        if op == 'Mod' and not node.attrs.get('fmod', 0) == 0:
            r = np.fmod(a, b)
        else:
            r = fn(a, b)
        r = np.asarray(r)
        if op not in ('Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'And', 'Or', 'Xor'):
            r = r.astype(a.dtype, copy=False)
        return [r]
    return run


for _op, _fn in BINARY.items():
    REFERENCE[_op] = _binary(_fn, _op)


@reference('Max', 'Min', 'Sum', 'Mean')
def _variadic(node, inputs, opset):
    fn = {'Max': np.maximum, 'Min': np.minimum, 'Sum': np.add, 'Mean': np.add}[node.op]
    r = inputs[0]
    for x in inputs[1:]:
        r = fn(r, x)
    if node.op == 'Mean':
        r = r / r.dtype.type(len(inputs))
    return [np.asarray(r).astype(inputs[0].dtype, copy=False)]


@reference('Where')
def _where(node, inputs, opset):
    return [np.where(inputs[0], inputs[1], inputs[2])]


@shape_fn(*(list(UNARY) + ['Clip', 'Silu', 'QuantizeLinear', 'DequantizeLinear', 'Cast', 'CastLike',
                          'Softmax', 'LogSoftmax', 'BatchNormalization', 'LRN']))
def _same_shape(node, shapes, consts, opset):
    return [shapes[0]] + [shapes[0]] * (len(node.outputs) - 1)


@shape_fn('Clip')
def _clip_shape(node, shapes, consts, opset):
    """The input's shape; the bounds (inputs 1 and 2, opset 11+) must be scalars."""
    for k, what in ((1, 'min'), (2, 'max')):
        if k < len(shapes) and shapes[k] is not None and int(np.prod(shapes[k], dtype=np.int64)) != 1:
            raise node_error(node, '%s must be a scalar, got shape %s' % (what, tuple(shapes[k])))
    return [shapes[0]]


@shape_fn(*(list(BINARY) + ['Max', 'Min', 'Sum', 'Mean', 'Where']))
def _broadcast_shape(node, shapes, consts, opset):
    try:
        return [tuple(np.broadcast_shapes(*[s for s in shapes if s is not None]))]
    except ValueError:
        raise node_error(node, 'input shapes %s do not broadcast' % (shapes,)) from None


# ------------------------------------------------------------------------------ shapes and constants

@reference('Shape')
def _shape(node, inputs, opset):
    s = np.array(inputs[0].shape, np.int64)
    start = node.attrs.get('start', 0)
    end = node.attrs.get('end', None)
    return [s[start:end]]


@reference('Size')
def _size(node, inputs, opset):
    return [np.array(inputs[0].size, np.int64)]


@reference('Constant')
def _constant(node, inputs, opset):
    a = node.attrs
    for key in ('value', 'sparse_value'):
        if key in a:
            if key == 'sparse_value':
                raise node_error(node, 'sparse constants are not supported')
            return [a[key]]
    if 'value_float' in a:
        return [np.array(a['value_float'], np.float32)]
    if 'value_floats' in a:
        return [np.array(a['value_floats'], np.float32)]
    if 'value_int' in a:
        return [np.array(a['value_int'], np.int64)]
    if 'value_ints' in a:
        return [np.array(a['value_ints'], np.int64)]
    raise node_error(node, 'Constant without a supported value attribute')


@reference('ConstantOfShape')
def _constant_of_shape(node, inputs, opset):
    value = node.attrs.get('value')
    value = np.zeros(1, np.float32) if value is None else value
    return [np.full(tuple(_ints(inputs[0])), value.reshape(-1)[0], dtype=value.dtype)]


@reference('Range')
def _range(node, inputs, opset):
    start, limit, delta = (x.reshape(()) for x in inputs[:3])
    return [np.arange(start, limit, delta).astype(start.dtype)]


@reference('Cast')
def _cast(node, inputs, opset):
    return [inputs[0].astype(np_dtype(node.attrs['to']))]


@reference('CastLike')
def _cast_like(node, inputs, opset):
    return [inputs[0].astype(inputs[1].dtype)]


@reference('Dropout')
def _dropout(node, inputs, opset):
    outs = [inputs[0]]
    if len(node.outputs) > 1:
        outs.append(np.ones(inputs[0].shape, bool))
    return outs


# ------------------------------------------------------------------------------ data movement

@reference('Reshape')
def _reshape(node, inputs, opset):
    x = inputs[0]
    return [x.reshape(reshape_target(node, x.shape, inputs[1]))]


def reshape_target(node, in_shape, shape):
    """The output shape of ONNX Reshape (0 copies the input dimension unless allowzero; one -1)."""
    target = _ints(shape)
    allowzero = node.attrs.get('allowzero', 0)
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                raise node_error(node, 'shape %s copies dimension %d of a rank-%d input' % (target, i,
                                                                                           len(in_shape)))
            d = in_shape[i]
        out.append(d)
    size = int(np.prod(in_shape, dtype=np.int64))
    if out.count(-1) > 1:
        raise node_error(node, 'shape %s has more than one -1' % (target,))
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise node_error(node, 'cannot reshape %s to %s' % (tuple(in_shape), target))
        out[out.index(-1)] = size // known
    if int(np.prod(out, dtype=np.int64)) != size or min(out, default=0) < 0:
        raise node_error(node, 'cannot reshape %s to %s' % (tuple(in_shape), target))
    return tuple(out)


@reference('Flatten')
def _flatten(node, inputs, opset):
    x = inputs[0]
    axis = node.attrs.get('axis', 1)
    axis = axis + x.ndim if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    return [x.reshape(outer, -1) if x.size else x.reshape(outer, int(np.prod(x.shape[axis:])))]


@reference('Transpose')
def _transpose(node, inputs, opset):
    x = inputs[0]
    perm = node.attrs.get('perm')
    return [np.transpose(x, None if perm is None else [int(p) for p in perm])]


def _axes_input_or_attr(node, inputs, index, opset, since):
    """The ``axes`` of ops that moved it from an attribute to an input at opset ``since``."""
    if opset >= since:
        a = inputs[index] if len(inputs) > index else None
        return None if a is None else _ints(a)
    a = node.attrs.get('axes')
    return None if a is None else [int(v) for v in a]


@reference('Unsqueeze')
def _unsqueeze(node, inputs, opset):
    x = inputs[0]
    axes = _axes_input_or_attr(node, inputs, 1, opset, 13)
    rank = x.ndim + len(axes)
    axes = sorted(_norm_axis(a, rank, node) for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return [x.reshape(shape)]


@reference('Squeeze')
def _squeeze(node, inputs, opset):
    x = inputs[0]
    axes = _axes_input_or_attr(node, inputs, 1, opset, 13)
    if axes is None:
        return [x.reshape([d for d in x.shape if d != 1])]
    axes = {_norm_axis(a, x.ndim, node) for a in axes}
    if any(x.shape[a] != 1 for a in axes):
        raise node_error(node, 'squeezes axes %s of shape %s that are not 1' % (sorted(axes), x.shape))
    return [x.reshape([d for i, d in enumerate(x.shape) if i not in axes])]


@reference('Concat')
def _concat(node, inputs, opset):
    arrays = [x for x in inputs if x is not None]
    axis = _norm_axis(node.attrs['axis'], arrays[0].ndim, node)
    return [np.concatenate(arrays, axis=axis)]


@shape_fn('Concat')
def _concat_shape(node, shapes, consts, opset):
    shapes = [s for s in shapes if s is not None]
    rank = len(shapes[0])
    axis = _norm_axis(node.attrs['axis'], rank, node)
    for s in shapes:
        if len(s) != rank or s[:axis] != shapes[0][:axis] or s[axis + 1:] != shapes[0][axis + 1:]:
            raise node_error(node, 'input shapes %s cannot be concatenated along axis %d' % (shapes, axis))
    return [shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1:]]


def split_sizes(node, shape, split_input, opset):
    """The sizes of the pieces of ONNX Split along its axis."""
    axis = _norm_axis(node.attrs.get('axis', 0), len(shape), node)
    dim = shape[axis]
    n = len(node.outputs)
    if opset >= 13:
        split = None if split_input is None else _ints(split_input)
    else:
        split = node.attrs.get('split')
        split = None if split is None else [int(v) for v in split]
    if split is None:
        if 'num_outputs' in node.attrs:
            n = int(node.attrs['num_outputs'])
        chunk = -(-dim // n)
        split = [min(chunk, max(0, dim - i * chunk)) for i in range(n)]
    if sum(split) != dim or len(split) != len(node.outputs) or min(split) < 0:
        raise node_error(node, 'split %s does not divide dimension %d of size %d into %d outputs'
                         % (split, axis, dim, len(node.outputs)))
    return axis, split


@reference('Split')
def _split(node, inputs, opset):
    x = inputs[0]
    axis, sizes = split_sizes(node, x.shape, inputs[1] if len(inputs) > 1 else None, opset)
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def slice_spec(node, shape, inputs, opset):
    """One Python slice per axis of ONNX Slice (opset >= 10: starts, ends, axes, steps inputs)."""
    starts, ends = _ints(inputs[1]), _ints(inputs[2])
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise node_error(node, 'starts, ends, axes and steps have different lengths')
    index = [slice(None)] * len(shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise node_error(node, 'step 0')
        index[_norm_axis(a, len(shape), node)] = slice(s, e, st)
    return tuple(index)


@reference('Slice')
def _slice(node, inputs, opset):
    x = inputs[0]
    return [x[slice_spec(node, x.shape, inputs, opset)]]


@reference('Gather')
def _gather(node, inputs, opset):
    x, idx = inputs[0], inputs[1]
    axis = _norm_axis(node.attrs.get('axis', 0), x.ndim, node)
    return [np.take(x, idx.astype(np.int64), axis=axis)]


@reference('GatherElements')
def _gather_elements(node, inputs, opset):
    x, idx = inputs[0], inputs[1]
    axis = _norm_axis(node.attrs.get('axis', 0), x.ndim, node)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return [np.take_along_axis(x, idx.astype(np.int64), axis=axis)]


@reference('Expand')
def _expand(node, inputs, opset):
    x = inputs[0]
    shape = np.broadcast_shapes(x.shape, tuple(_ints(inputs[1])))
    return [np.broadcast_to(x, shape)]


@reference('Tile')
def _tile(node, inputs, opset):
    return [np.tile(inputs[0], _ints(inputs[1]))]


@reference('Pad')
def _pad(node, inputs, opset):
    x = inputs[0]
    mode = node.attrs.get('mode', b'constant')
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = _ints(inputs[1])
    value = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(x.ndim))
    width = [(0, 0)] * x.ndim
    k = len(axes)
    for j, a in enumerate(axes):
        width[_norm_axis(a, x.ndim, node)] = (pads[j], pads[j + k])
    if any(b < 0 or e < 0 for b, e in width):
        # negative pads crop
        index = tuple(slice(max(0, -b), d - max(0, -e)) for (b, e), d in zip(width, x.shape))
        x = x[index]
        width = [(max(0, b), max(0, e)) for b, e in width]
    if mode == 'constant':
        cv = 0 if value is None else value.reshape(-1)[0]
        return [np.pad(x, width, mode='constant', constant_values=cv)]
    if mode in ('reflect', 'edge'):
        return [np.pad(x, width, mode=mode)]
    raise node_error(node, 'Pad mode %r is not supported' % mode)


# ------------------------------------------------------------------------------ reductions and softmax

def _softmax_2d(x, axis, log):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    s = np.sum(e, axis=axis, keepdims=True)
    if log:
        return (x - m - np.log(s)).astype(x.dtype, copy=False)
    return (e / s).astype(x.dtype, copy=False)


@reference('Softmax', 'LogSoftmax')
def _softmax(node, inputs, opset):
    x = inputs[0]
    log = node.op == 'LogSoftmax'
    if opset >= 13:
        axis = _norm_axis(node.attrs.get('axis', -1), x.ndim, node)
        return [_softmax_2d(x, axis, log)]
    axis = _norm_axis(node.attrs.get('axis', 1), x.ndim, node)
    x2 = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
    return [_softmax_2d(x2, 1, log).reshape(x.shape)]


def reduce_axes(node, inputs, opset, rank):
    """Normalised axes of a Reduce* node (attribute, or input from opset 18; ReduceSum from 13)."""
    since = 13 if node.op == 'ReduceSum' else 18
    axes = _axes_input_or_attr(node, inputs, 1, opset, since)
    if not axes:
        if node.attrs.get('noop_with_empty_axes', 0):
            return ()
        return tuple(range(rank))
    return tuple(sorted(_norm_axis(a, rank, node) for a in axes))


@reference('ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL2', 'ReduceL1',
           'ReduceSumSquare')
def _reduce(node, inputs, opset):
    x = inputs[0]
    axes = reduce_axes(node, inputs, opset, x.ndim)
    keep = bool(node.attrs.get('keepdims', 1))
    if not axes:
        return [x.copy()]
    fn = {'ReduceMean': np.mean, 'ReduceSum': np.sum, 'ReduceMax': np.max, 'ReduceMin': np.min,
          'ReduceProd': np.prod, 'ReduceSumSquare': lambda v, **k: np.sum(v * v, **k),
          'ReduceL1': lambda v, **k: np.sum(np.abs(v), **k),
          'ReduceL2': lambda v, **k: np.sqrt(np.sum(v * v, **k))}[node.op]
    return [np.asarray(fn(x, axis=axes, keepdims=keep)).astype(x.dtype, copy=False)]


@reference('ArgMax', 'ArgMin')
def _argmax(node, inputs, opset):
    x = inputs[0]
    axis = _norm_axis(node.attrs.get('axis', 0), x.ndim, node)
    keep = bool(node.attrs.get('keepdims', 1))
    fn = np.argmax if node.op == 'ArgMax' else np.argmin
    if node.attrs.get('select_last_index', 0):
        r = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
    else:
        r = fn(x, axis=axis)
    r = r.astype(np.int64)
    return [np.expand_dims(r, axis) if keep else r]


# ------------------------------------------------------------------------------ linear algebra

@reference('MatMul')
def _matmul(node, inputs, opset):
    return [np.matmul(inputs[0], inputs[1])]


@shape_fn('MatMul')
def _matmul_shape(node, shapes, consts, opset):
    a, b = shapes[0], shapes[1]
    if len(a) < 1 or len(b) < 1:
        raise node_error(node, 'MatMul of scalars')
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise node_error(node, 'MatMul of %s and %s: inner dimensions differ' % (a, b))
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        raise node_error(node, 'MatMul batch dimensions %s and %s do not broadcast' % (a, b)) from None
    out = tuple(batch) + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return [out]


@reference('Gemm')
def _gemm(node, inputs, opset):
    a, b = inputs[0], inputs[1]
    if node.attrs.get('transA', 0):
        a = a.T
    if node.attrs.get('transB', 0):
        b = b.T
    y = np.float32(node.attrs.get('alpha', 1.0)) * (a @ b)
    if len(inputs) > 2 and inputs[2] is not None:
        y = y + np.float32(node.attrs.get('beta', 1.0)) * inputs[2]
    return [y.astype(a.dtype, copy=False)]


@shape_fn('Gemm')
def _gemm_shape(node, shapes, consts, opset):
    a, b = shapes[0], shapes[1]
    if len(a) != 2 or len(b) != 2:
        raise node_error(node, 'Gemm needs 2-D inputs, got %s and %s' % (a, b))
    m, k = a[::-1] if node.attrs.get('transA', 0) else a
    k2, n = b[::-1] if node.attrs.get('transB', 0) else b
    if k != k2:
        raise node_error(node, 'Gemm of %s and %s: inner dimensions differ' % (a, b))
    c = shapes[2] if len(shapes) > 2 else None
    if c is not None and (len(c) > 2 or any(d not in (1, full) for d, full in zip(c[::-1], (n, m)))):
        raise node_error(node, 'Gemm bias of shape %s does not broadcast to the output (%d, %d)' % (c, m, n))
    return [(m, n)]


@reference('BatchNormalization')
def _batchnorm(node, inputs, opset):
    x, scale, bias, mean, var = inputs[:5]
    eps = node.attrs.get('epsilon', 1e-5)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    a = (scale / np.sqrt(var + np.float32(eps))).astype(np.float32)
    return [((x - mean.reshape(shape)) * a.reshape(shape) + bias.reshape(shape)).astype(x.dtype)]


# ------------------------------------------------------------------------------ quantisation

def _axis_shape(x, scale, axis, node=None):
    if scale.size == 1:
        return scale.reshape(())
    shape = [1] * x.ndim
    shape[_norm_axis(axis, x.ndim, node)] = -1
    return scale.reshape(shape)


@reference('QuantizeLinear')
def _quantize(node, inputs, opset):
    """``saturate(round_half_to_even(x / scale) + zero_point)``, in float32 (per tensor or per axis)."""
    x = inputs[0].astype(np.float32, copy=False)
    scale = inputs[1].astype(np.float32)
    zp = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.zeros((), np.uint8)
    axis = node.attrs.get('axis', 1)
    s = _axis_shape(x, scale, axis, node)
    z = _axis_shape(x, zp, axis, node).astype(np.float64)
    info = np.iinfo(zp.dtype)
    q = np.rint(x / s).astype(np.float64) + z
    return [np.clip(q, info.min, info.max).astype(zp.dtype)]


@reference('DequantizeLinear')
def _dequantize(node, inputs, opset):
    """``(q - zero_point) * scale`` in float32 (per tensor or per axis)."""
    q = inputs[0]
    scale = inputs[1].astype(np.float32)
    zp = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.zeros((), q.dtype)
    axis = node.attrs.get('axis', 1)
    s = _axis_shape(q, scale, axis, node)
    z = _axis_shape(q, zp, axis, node)
    return [((q.astype(np.int64) - z.astype(np.int64)).astype(np.float32) * s).astype(np.float32)]


@shape_fn('QuantizeLinear', 'DequantizeLinear')
def _quantize_shape(node, shapes, consts, opset):
    """The input's shape; scale and zero point (uint8 or int8; int32 also for DequantizeLinear) must be
    scalars or 1-D along ``axis``, with as many values."""
    x, scale = shapes[0], shapes[1]
    zp = shapes[2] if len(shapes) > 2 else None
    n = int(np.prod(scale, dtype=np.int64))
    if not (n == 1 and len(scale) <= 1) and not (len(scale) == 1 and len(x) and
                                                 scale[0] == x[_norm_axis(node.attrs.get('axis', 1), len(x), node)]):
        raise node_error(node, 'scale of shape %s fits neither per tensor nor axis %d of the input %s'
                         % (scale, node.attrs.get('axis', 1), x))
    if zp is not None and (len(zp) > 1 or int(np.prod(zp, dtype=np.int64)) != n):
        raise node_error(node, 'zero point of shape %s differs from the scale %s' % (zp, scale))
    zc = consts[2] if len(consts) > 2 else None
    allowed = ('uint8', 'int8') if node.op == 'QuantizeLinear' else ('uint8', 'int8', 'int32')
    if zc is not None and zc.dtype.name not in allowed:
        raise node_error(node, 'zero point is %s; it must be %s' % (zc.dtype, ' or '.join(allowed)))
    return [x]


# ------------------------------------------------------------------------------ convolution geometry

# Largest stride, dilation or pad of a convolution or pooling (the kernels take C ints; images are at most
# 16384 pixels wide).
MAX_SPATIAL = 1 << 16


def spatial_attrs(node, in_hw, kernel_hw, pool=False):
    """(strides, dilations, pads (top, left, bottom, right), out_hw) of a 2-D Conv / pool node,
    auto_pad resolved.  ``in_hw`` and ``kernel_hw`` are (h, w)."""
    a = node.attrs
    strides = tuple(int(v) for v in a.get('strides', (1, 1)))
    dilations = tuple(int(v) for v in a.get('dilations', (1, 1)))
    if len(strides) != 2 or len(dilations) != 2 or min(strides + dilations) < 1 \
            or max(strides + dilations) > MAX_SPATIAL:
        raise node_error(node, 'strides %s / dilations %s must be two ints in [1, %d]'
                         % (strides, dilations, MAX_SPATIAL))
    auto_pad = a.get('auto_pad', b'NOTSET')
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    ceil_mode = bool(a.get('ceil_mode', 0)) if pool else False
    ext = [d * (k - 1) + 1 for d, k in zip(dilations, kernel_hw)]
    if auto_pad in ('SAME_UPPER', 'SAME_LOWER'):
        out = [-(-i // s) for i, s in zip(in_hw, strides)]
        total = [max(0, (o - 1) * s + e - i) for o, s, e, i in zip(out, strides, ext, in_hw)]
        if auto_pad == 'SAME_UPPER':
            begin = [t // 2 for t in total]
        else:
            begin = [t - t // 2 for t in total]
        pads = (begin[0], begin[1], total[0] - begin[0], total[1] - begin[1])
        return strides, dilations, pads, tuple(out)
    if auto_pad == 'VALID':
        pads = (0, 0, 0, 0)
    elif auto_pad in ('NOTSET', ''):
        p = [int(v) for v in a.get('pads', (0, 0, 0, 0))]
        if len(p) != 4 or min(p) < 0 or max(p) > MAX_SPATIAL:
            raise node_error(node, 'pads %s must be four ints in [0, %d] (2-D)' % (p, MAX_SPATIAL))
        pads = (p[0], p[1], p[2], p[3])
    else:
        raise node_error(node, 'unknown auto_pad %r' % auto_pad)
    out = []
    for i in range(2):
        num = in_hw[i] + pads[i] + pads[i + 2] - ext[i]
        if num < 0:
            raise node_error(node, 'input %s is smaller than the kernel %s with pads %s'
                             % (tuple(in_hw), tuple(kernel_hw), pads))
        if ceil_mode:
            o = -(-num // strides[i]) + 1
            if (o - 1) * strides[i] >= in_hw[i] + pads[i]:
                o -= 1
        else:
            o = num // strides[i] + 1
        out.append(o)
    return strides, dilations, pads, tuple(out)


@shape_fn('Conv')
def _conv_shape(node, shapes, consts, opset):
    x, w = shapes[0], shapes[1]
    if len(x) != 4 or len(w) != 4:
        raise node_error(node, 'only 2-D convolutions are supported (input %s, weight %s)' % (x, w))
    group = int(node.attrs.get('group', 1))
    if group < 1 or x[1] != w[1] * group or w[0] % group:
        raise node_error(node, 'weight %s with group=%d does not match input %s' % (w, group, x))
    b = shapes[2] if len(shapes) > 2 else None
    if b is not None and tuple(b) != (w[0],):
        raise node_error(node, 'bias of shape %s does not match the %d output channels' % (b, w[0]))
    kernel = tuple(node.attrs.get('kernel_shape', w[2:]))
    if tuple(kernel) != tuple(w[2:]):
        raise node_error(node, 'kernel_shape %s differs from the weight %s' % (kernel, w))
    _, _, _, out = spatial_attrs(node, x[2:], w[2:])
    return [(x[0], w[0]) + out]


@shape_fn('MaxPool', 'AveragePool', 'LpPool')
def _pool_shape(node, shapes, consts, opset):
    x = shapes[0]
    if len(x) != 4:
        raise node_error(node, 'only 2-D pooling is supported (input %s)' % (x,))
    kernel = tuple(int(v) for v in node.attrs['kernel_shape'])
    if len(kernel) != 2:
        raise node_error(node, 'kernel_shape %s must have two values' % (kernel,))
    if node.op == 'AveragePool' and tuple(node.attrs.get('dilations', (1, 1))) != (1, 1):
        raise node_error(node, 'dilated average pooling is not supported')
    _, _, _, out = spatial_attrs(node, x[2:], kernel, pool=True)
    if len(node.outputs) > 1 and node.outputs[1]:
        raise node_error(node, 'MaxPool indices output is not supported')
    return [x[:2] + out]


@shape_fn('GlobalAveragePool', 'GlobalMaxPool')
def _global_pool_shape(node, shapes, consts, opset):
    x = shapes[0]
    if len(x) < 3:
        raise node_error(node, 'input of rank %d' % len(x))
    return [x[:2] + (1,) * (len(x) - 2)]


@reference('GlobalAveragePool', 'GlobalMaxPool')
def _global_pool(node, inputs, opset):
    x = inputs[0]
    axes = tuple(range(2, x.ndim))
    fn = np.mean if node.op == 'GlobalAveragePool' else np.max
    return [fn(x, axis=axes, keepdims=True).astype(x.dtype)]


# ------------------------------------------------------------------------------ resize

def resize_params(node, shape, inputs, opset):
    """(mode, coordinate mode, nearest mode, output shape) of Resize (opset >= 11) or Upsample."""
    a = node.attrs

    def s(key, default):
        v = a.get(key, default)
        return v.decode() if isinstance(v, bytes) else v

    if node.op == 'Upsample':
        scales = inputs[1] if len(inputs) > 1 and inputs[1] is not None else np.asarray(a.get('scales'))
        mode = s('mode', 'nearest')
        coord, nearest = 'asymmetric', 'floor'
        sizes = None
    else:
        mode = s('mode', 'nearest')
        coord = s('coordinate_transformation_mode', 'half_pixel')
        nearest = s('nearest_mode', 'round_prefer_floor')
        scales = inputs[2] if len(inputs) > 2 and inputs[2] is not None and inputs[2].size else None
        sizes = inputs[3] if len(inputs) > 3 and inputs[3] is not None and inputs[3].size else None
        if a.get('axes') is not None or a.get('keep_aspect_ratio_policy', b'stretch') not in (b'stretch',
                                                                                               'stretch'):
            raise node_error(node, 'Resize with axes or keep_aspect_ratio_policy is not supported')
    if mode in ('linear', 'bilinear'):
        mode = 'linear'
    if mode not in ('nearest', 'linear'):
        raise node_error(node, 'Resize mode %r is not supported (nearest, linear)' % mode)
    if coord == 'tf_crop_and_resize':
        raise node_error(node, 'Resize coordinate mode tf_crop_and_resize is not supported')
    if sizes is not None:
        out = tuple(_ints(sizes))
        scales = np.array([o / i for o, i in zip(out, shape)], np.float32)
    elif scales is not None:
        scales = np.asarray(scales, np.float32).reshape(-1)
        out = tuple(int(math.floor(d * float(sc))) for d, sc in zip(shape, scales))
    else:
        raise node_error(node, 'Resize needs scales or sizes')
    if len(out) != len(shape):
        raise node_error(node, 'scales/sizes have %d values for a rank-%d input' % (len(out), len(shape)))
    return mode, coord, nearest, np.asarray(scales, np.float32), out


def resize_source(coord, nearest, in_size, out_size, scale):
    """For one axis: float source coordinates of every output index and, for nearest, their indices."""
    i = np.arange(out_size, dtype=np.float64)
    scale = np.float64(np.float32(scale))
    if coord == 'half_pixel':
        x = (i + 0.5) / scale - 0.5
    elif coord == 'pytorch_half_pixel':
        x = (i + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(i)
    elif coord == 'align_corners':
        x = i * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(i)
    elif coord == 'asymmetric':
        x = i / scale
    elif coord == 'half_pixel_symmetric':
        adj = out_size / (scale * in_size)
        center = in_size / 2.0
        offset = center * (1 - adj)
        x = offset + (i + 0.5) / scale - 0.5
    else:
        raise ModelError('Resize coordinate mode %r is not supported' % coord)
    return x


def nearest_index(coord, nearest, in_size, out_size, scale):
    x = resize_source(coord, nearest, in_size, out_size, scale)
    if nearest == 'round_prefer_floor':
        idx = np.where(x - np.floor(x) == 0.5, np.floor(x), np.round(x))
    elif nearest == 'round_prefer_ceil':
        idx = np.where(x - np.floor(x) == 0.5, np.ceil(x), np.round(x))
    elif nearest == 'floor':
        idx = np.floor(x)
    elif nearest == 'ceil':
        idx = np.ceil(x)
    else:
        raise ModelError('Resize nearest mode %r is not supported' % nearest)
    return np.clip(idx, 0, in_size - 1).astype(np.int64)


def linear_weights(coord, in_size, out_size, scale):
    x = resize_source(coord, None, in_size, out_size, scale)
    x = np.clip(x, 0, in_size - 1)
    i0 = np.floor(x).astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = (x - i0).astype(np.float32)
    return i0, i1, w1


@reference('Resize', 'Upsample')
def _resize(node, inputs, opset):
    x = inputs[0]
    mode, coord, nearest, scales, out = resize_params(node, x.shape, inputs, opset)
    y = x
    for axis, (d, o, sc) in enumerate(zip(x.shape, out, scales)):
        if d == o and coord != 'align_corners' and sc == 1:
            continue
        if mode == 'nearest':
            y = np.take(y, nearest_index(coord, nearest, d, o, sc), axis=axis)
        else:
            i0, i1, w1 = linear_weights(coord, d, o, sc)
            shape = [1] * y.ndim
            shape[axis] = -1
            w1 = w1.reshape(shape)
            y = (np.take(y, i0, axis=axis) * (1 - w1) + np.take(y, i1, axis=axis) * w1).astype(x.dtype)
    return [np.ascontiguousarray(y)]


@shape_fn('Resize', 'Upsample')
def _resize_shape(node, shapes, consts, opset):
    return [resize_params(node, shapes[0], consts, opset)[4]]


# ops whose shape depends on constant inputs: input index -> what it is
SHAPE_INPUTS = {
    'Reshape': {1: 'shape'}, 'Expand': {1: 'shape'}, 'ConstantOfShape': {0: 'shape'},
    'Tile': {1: 'repeats'}, 'Slice': {1: 'starts', 2: 'ends', 3: 'axes', 4: 'steps'},
    'Range': {0: 'start', 1: 'limit', 2: 'delta'}, 'Split': {1: 'split'}, 'Squeeze': {1: 'axes'},
    'Unsqueeze': {1: 'axes'}, 'Resize': {1: 'roi', 2: 'scales', 3: 'sizes'}, 'Upsample': {1: 'scales'},
    'Pad': {1: 'pads', 2: 'constant_value', 3: 'axes'}, 'ReduceMean': {1: 'axes'}, 'ReduceSum': {1: 'axes'},
    'ReduceMax': {1: 'axes'}, 'ReduceMin': {1: 'axes'}, 'ReduceProd': {1: 'axes'}, 'Clip': {1: 'min', 2: 'max'},
    'QuantizeLinear': {1: 'scale', 2: 'zero_point'}, 'DequantizeLinear': {1: 'scale', 2: 'zero_point'},
    'BatchNormalization': {1: 'scale', 2: 'B', 3: 'mean', 4: 'var'},
}

# ops that never run on data in the engine: they must be folded away into constants
FOLD_ONLY = {'Shape', 'Size', 'Constant', 'ConstantOfShape', 'Range'}
