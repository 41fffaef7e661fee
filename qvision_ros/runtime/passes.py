"""Graph passes, each a small named function with its algebra in its docstring, run in a fixed order
(:data:`PASSES`) on a graph specialised to concrete input shapes.

Every pass keeps the model's outputs unchanged (bit for bit for the float rewrites except where float
rounding of folded constants differs; within the quantisation semantics for the QDQ fusions: an int8
layer computes ``Q(op(DQ(x)))`` with integer arithmetic, equal to the float route except next to rounding
ties).  The tests check each one by running the model with and without it.

Internal operators the passes create (not ONNX):

* ``Conv`` with attributes ``_act_min`` / ``_act_max`` - a float convolution with a fused clamp;
* ``Conv`` / ``Gemm`` with attribute ``_activation`` ('sigmoid' or 'silu') - a float convolution or
  fully-connected layer with the activation computed as it writes (:func:`fuse_conv_sigmoid`);
* ``Silu`` - ``x * sigmoid(x)``;
* ``QConv``, ``QGemm`` - int8 convolution / fully-connected layer, uint8 in and out;
* ``QAdd``, ``QMul``, ``QConcat``, ``QAveragePool``, ``QGlobalAveragePool`` - uint8 element-wise ops,
  concatenation and averages with requantisation;
* ``QLut`` - a 256-entry table: any one-input element-wise function (or a plain rescale) on uint8;
  chains of tables and Add/Mul of tables of one tensor (the quantised SiLU) compose into one
  (:func:`compose_luts`);
* ``Int8ToUint8`` / ``Uint8ToInt8`` - ``q + 128`` / ``q - 128`` (int8 model inputs/outputs).

Data-movement ops (Reshape, Transpose, MaxPool, nearest Resize, Slice, Split...) keep their ONNX op type
when they are moved onto uint8 data.
"""
import numpy as np

from qvision_kernels import add_int8, make_lut, mul_int8
from qvision_kernels.requant import activation_bounds, multiplier

from ..errors import ModelError
from .graph import QParams
from .ops import (ELEMENTWISE_UNARY, FOLD_ONLY, REFERENCE, SHAPE, SHAPE_INPUTS, node_error)

# A constant produced by folding may not exceed this many elements (a crafted ConstantOfShape / Expand
# / Tile could otherwise ask for gigabytes).
MAX_FOLDED_ELEMENTS = 1 << 26

# Ops the engine runs that are neither in ops.REFERENCE nor only shape-inferred there.
INTERNAL_OPS = {'QConv', 'QGemm', 'QAdd', 'QMul', 'QConcat', 'QAveragePool', 'QGlobalAveragePool', 'QLut',
                'Int8ToUint8', 'Uint8ToInt8', 'ToNHWC', 'ToNCHW'}

_COMPARISONS = {'Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Not'}


def _replace_node(graph, old, new_nodes):
    i = next(k for k, n in enumerate(graph.nodes) if n is old)
    graph.nodes[i:i + 1] = list(new_nodes)


def _output_dtype(node, ins, opset):
    op = node.op
    if op == 'QuantizeLinear':
        zp = ins[2].const if len(ins) > 2 and ins[2] is not None else None
        return np.dtype(np.uint8) if zp is None else zp.dtype
    if op == 'DequantizeLinear':
        return np.dtype(np.float32)
    if op == 'Cast':
        from .ops import np_dtype
        return np_dtype(node.attrs['to'])
    if op == 'CastLike':
        return ins[1].dtype
    if op in _COMPARISONS:
        return np.dtype(bool)
    if op == 'Where':
        return ins[1].dtype             # input 0 is the condition
    return ins[0].dtype


# ---------------------------------------------------------------------------------------------- passes

# No tensor the engine computes may exceed this many elements (a crafted shape must not make it
# allocate gigabytes; the largest activation of a 1280x1280 detector is ~26M values).
MAX_TENSOR_ELEMENTS = 1 << 28


def _guard_size(node, ins):
    """Refuse, before evaluating anything, a node whose output size is set by constant inputs to an
    absurd value (ConstantOfShape, Expand, Tile, Range, Resize, Pad)."""
    def c(k):
        return ins[k].const if k < len(ins) and ins[k] is not None else None

    def shape_of(k):
        return ins[k].shape if k < len(ins) and ins[k] is not None else None

    n = None
    try:
        if node.op == 'ConstantOfShape' and c(0) is not None:
            n = _prod(c(0))
        elif node.op == 'Expand' and c(1) is not None and shape_of(0) is not None:
            dims = [int(d) for d in np.asarray(c(1)).reshape(-1)]
            n = _prod(np.broadcast_shapes(tuple(max(d, 1) for d in dims), shape_of(0)))
        elif node.op == 'Tile' and c(1) is not None and shape_of(0) is not None:
            reps = np.asarray(c(1)).reshape(-1)
            n = _prod(shape_of(0)) * _prod(reps)
        elif node.op == 'Range' and all(c(k) is not None for k in range(3)):
            start, limit, delta = (float(np.asarray(c(k)).reshape(-1)[0]) for k in range(3))
            n = 0 if delta == 0 else max(0, int(np.ceil((limit - start) / delta)))
            if delta == 0:
                raise node_error(node, 'Range with delta 0')
        elif node.op in ('Resize', 'Upsample') and shape_of(0) is not None:
            k = 1 if node.op == 'Upsample' else 2
            sc, sz = c(k), c(3) if node.op == 'Resize' else None
            if sz is not None and sz.size:
                n = _prod(sz)
            elif sc is not None and sc.size == len(shape_of(0)):
                n = _prod(np.floor(np.asarray(shape_of(0)) * np.abs(sc.astype(np.float64))))
        elif node.op == 'Pad' and c(1) is not None and shape_of(0) is not None:
            pads = [int(p) for p in np.asarray(c(1)).reshape(-1)]
            r = len(shape_of(0))
            if len(pads) == 2 * r:
                n = _prod([max(0, d + pads[i] + pads[i + r]) for i, d in enumerate(shape_of(0))])
    except (TypeError, ValueError, OverflowError, RuntimeError, IndexError):   # Runtime: > 32 dims
        raise node_error(node, 'has invalid constant shape arguments') from None
    if n is not None and n > MAX_TENSOR_ELEMENTS:
        raise node_error(node, 'would produce a tensor of %d elements (more than the %d allowed)'
                         % (n, MAX_TENSOR_ELEMENTS))


def _type_str(formal):
    """The type parameter name of a schema's formal input (``typeStr`` before onnx 1.13)."""
    t = getattr(formal, 'type_str', None)
    return formal.typeStr if t is None else t


def _check_input_types(node, ins, opset):
    """Inputs that the op's ONNX schema binds to one type parameter (``T`` of Add, Concat...) have one
    dtype: ONNX Runtime refuses such a model too, and the kernels would refuse it at the first run."""
    from onnx import defs

    if node.op in INTERNAL_OPS or node.op == 'Silu':
        return
    try:
        formals = defs.get_schema(node.op, opset, '').inputs
    except Exception:
        return                      # not an ONNX operator: refused elsewhere
    seen = {}
    for k, v in enumerate(ins):
        if v is None or v.dtype is None or not formals:
            continue
        t = _type_str(formals[min(k, len(formals) - 1)])    # the last formal input may be variadic
        if seen.setdefault(t, v.dtype) != v.dtype:
            raise node_error(node, 'inputs of one type %s are %s and %s (input %r): the model is corrupt'
                             % (t, seen[t], v.dtype, v.name))


def _check_qdq(node, ins):
    """Quantisation parameters the int8 kernels can take: finite scales >= 0 (> 0 to quantise); and
    DequantizeLinear reads uint8, int8 or int32 with a zero point of the same type (ONNX).  A crafted file
    could otherwise hand the kernels values they refuse at the first run, or NaN multipliers."""
    scale = ins[1].const if len(ins) > 1 and ins[1] is not None else None
    if scale is not None and not (np.isfinite(scale).all() and (scale >= 0).all() and
                                  (node.op == 'DequantizeLinear' or (scale > 0).all())):
        raise node_error(node, 'scale %s must be finite and %s' % (
            np.array2string(scale.reshape(-1)[:8], precision=3), '>= 0' if node.op == 'DequantizeLinear' else '> 0'))
    if node.op == 'QuantizeLinear':
        return
    x = ins[0]
    zp = ins[2] if len(ins) > 2 else None
    if x is not None and x.dtype.name not in ('uint8', 'int8', 'int32'):
        raise node_error(node, 'dequantizes %s data; it must be uint8, int8 or int32' % x.dtype)
    if x is not None and zp is not None and zp.dtype != x.dtype:
        raise node_error(node, 'zero point is %s but the data is %s; they must be of the same type'
                         % (zp.dtype, x.dtype))


def _prod(values):
    """Product of ``values`` as a Python int (no overflow), negatives counted as their magnitude."""
    p = 1
    for v in np.asarray(values).reshape(-1).tolist():
        p *= abs(int(v))
    return p


def propagate(graph):
    """Constant folding and shape inference in one walk, in topological order.

    A node whose inputs are all constants is evaluated with its NumPy reference (:mod:`.ops`) and its
    outputs become constants (so ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chains fold to a
    constant shape once the input shape is fixed); ``Shape`` / ``Size`` of any value with a known shape
    fold too.  Folding ``DequantizeLinear`` of a constant keeps the quantised tensor beside the float one
    (``Value.qconst``), for the int8 layers.  Other nodes get their output shapes and dtypes: from the
    op's shape function, else by running the reference on zero-filled stand-ins of the inputs.
    """
    kept = []
    for node in graph.nodes:
        if node.domain:
            raise node_error(node, 'operator domain %r is not supported (only the default ONNX domain)'
                             % node.domain)
        if node.op not in REFERENCE and node.op not in SHAPE and node.op not in INTERNAL_OPS:
            raise node_error(node, 'operator %s is not supported by this engine' % node.op)
        ins = [graph.values[i] if i else None for i in node.inputs]
        for k, what in SHAPE_INPUTS.get(node.op, {}).items():
            if k < len(ins) and ins[k] is not None and not ins[k].is_const:
                raise node_error(node, 'input %d (%s) is computed at run time; only constant %s are '
                                 'supported (fix the input shape so that it folds)' % (k, what, what))
        for v in ins:
            if v is not None and v.shape is None:
                raise node_error(node, 'input %r has an unknown shape' % v.name)
        _guard_size(node, ins)
        if node.op in ('QuantizeLinear', 'DequantizeLinear'):
            _check_qdq(node, ins)
        _check_input_types(node, ins, graph.opset)
        present = [v for v in ins if v is not None]
        if node.op in REFERENCE and (all(v.is_const for v in present) or node.op in ('Shape', 'Size')):
            if node.op in ('Shape', 'Size'):
                stand_in = [np.broadcast_to(np.zeros((), ins[0].dtype), ins[0].shape)]
            else:
                stand_in = [None if v is None else v.const for v in ins]
            try:
                outs = REFERENCE[node.op](node, stand_in, graph.opset)
            except ModelError:
                raise
            except Exception as e:
                raise node_error(node, 'cannot evaluate on its constant inputs: %s' % e) from None
            for name, arr in zip(node.outputs, outs):
                if not name:
                    continue
                arr = np.asarray(arr)
                if arr.size > MAX_FOLDED_ELEMENTS:
                    raise node_error(node, 'folds to a constant of %d elements (more than %d allowed)'
                                     % (arr.size, MAX_FOLDED_ELEMENTS))
                v = graph.values[name]
                v.const = np.require(arr, requirements="C")
                v.shape, v.dtype = tuple(arr.shape), arr.dtype
            if node.op == 'DequantizeLinear':
                zp = stand_in[2] if len(stand_in) > 2 and stand_in[2] is not None else \
                    np.zeros((), stand_in[0].dtype)
                axis = node.attrs.get('axis', 1) if stand_in[1].size > 1 else None
                if axis is not None and axis < 0:
                    axis += stand_in[0].ndim
                graph.values[node.outputs[0]].qconst = (
                    stand_in[0], QParams(stand_in[1].astype(np.float32), zp, axis))
            continue
        if node.op in FOLD_ONLY:
            raise node_error(node, 'has inputs computed at run time; %s must fold to a constant' % node.op)
        shapes = [None if v is None else v.shape for v in ins]
        if node.op in SHAPE:
            consts = [None if v is None else v.const for v in ins]
            try:
                out_shapes = SHAPE[node.op](node, shapes, consts, graph.opset)
            except ModelError:
                raise
            except Exception as e:
                raise node_error(node, 'invalid for inputs of shapes %s: %s' % (shapes, e)) from None
            dtype = _output_dtype(node, ins, graph.opset)
            out_types = [(s, dtype) for s in out_shapes]
        elif node.op in REFERENCE:
            stand_in = [None if v is None else (v.const if v.is_const else
                                                np.zeros(v.shape, v.dtype)) for v in ins]
            try:
                outs = REFERENCE[node.op](node, stand_in, graph.opset)
            except ModelError:
                raise
            except Exception as e:
                raise node_error(node, 'invalid for inputs of shapes %s: %s' % (shapes, e)) from None
            out_types = [(tuple(a.shape), a.dtype) for a in outs]
        else:
            out_types = [(graph.values[o].shape, graph.values[o].dtype) for o in node.outputs]
        for name, (shape, dtype) in zip(node.outputs, out_types):
            if name:
                if _prod(shape) > MAX_TENSOR_ELEMENTS:
                    raise node_error(node, 'output %r of shape %s has more than %d elements'
                                     % (name, tuple(shape), MAX_TENSOR_ELEMENTS))
                v = graph.values[name]
                v.shape = tuple(int(d) for d in shape)
                v.dtype = np.dtype(dtype)
        kept.append(node)
    graph.nodes = kept
    for name in graph.outputs:
        if graph.values[name].shape is None:
            raise ModelError('graph output %r has no inferred shape' % name)


def eliminate_identity(graph):
    """Remove nodes that compute their input: Identity, Dropout (inference), Cast to the same type,
    Reshape / Flatten / Squeeze / Unsqueeze to the same shape, single-input Concat, Expand to the same
    shape.  ``y = x``: readers of y read x instead (kept when y is a graph output)."""
    for node in list(graph.nodes):
        out = node.outputs[0]
        if not node.inputs or not node.inputs[0]:
            continue
        x = graph.values[node.inputs[0]]
        y = graph.values[out]
        same = (x.shape == y.shape and x.dtype == y.dtype)
        trivial = node.op in ('Identity', 'Dropout') or (
            node.op in ('Cast', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Expand') and same) or (
            node.op == 'Concat' and len([i for i in node.inputs if i]) == 1)
        if not trivial or (len(node.outputs) > 1 and any(node.outputs[1:])):
            continue
        if out in graph.outputs:
            continue
        graph.rename_input_uses(out, x.name)
        graph.nodes.remove(node)


def fold_batchnorm(graph):
    """BatchNormalization after a float Conv (the conv's only reader) folds into the conv's weights::

        a = gamma / sqrt(var + eps)          (per output channel)
        W' = W * a[:, None, None, None]      b' = (b - mean) * a + beta

    computed in float64 and rounded once to float32.
    """
    consumers = graph.consumers()
    producers = graph.producers()
    for bn in list(graph.nodes):
        if bn.op != 'BatchNormalization' or len([o for o in bn.outputs if o]) != 1:
            continue
        conv = producers.get(bn.inputs[0])
        if conv is None or conv.op != 'Conv' or len(consumers.get(conv.outputs[0], [])) != 1 \
                or conv.outputs[0] in graph.outputs:
            continue
        w = graph.values[conv.inputs[1]]
        params = [graph.const(i) for i in bn.inputs[1:5]]
        if w.const is None or w.qconst is not None or any(p is None for p in params):
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        a = gamma / np.sqrt(var + float(bn.attrs.get('epsilon', 1e-5)))
        b = graph.const(conv.input(2))
        b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        new_w = (w.const.astype(np.float64) * a.reshape(-1, 1, 1, 1)).astype(np.float32)
        new_b = ((b - mean) * a + beta).astype(np.float32)
        conv.inputs = [conv.inputs[0], graph.add_const(new_w, conv.name + '.w_bn'),
                       graph.add_const(new_b, conv.name + '.b_bn')]
        conv.outputs = [bn.outputs[0]]
        conv.origin = conv.origin + bn.origin
        graph.nodes.remove(bn)


def batchnorm_to_affine(graph):
    """A BatchNormalization left alone (no conv before it) becomes ``x * a + c`` with per-channel
    constants [1, C, 1, ...]: ``a = gamma / sqrt(var + eps)``, ``c = beta - mean * a``."""
    from .graph import Node
    for bn in list(graph.nodes):
        if bn.op != 'BatchNormalization':
            continue
        x = graph.values[bn.inputs[0]]
        params = [graph.const(i) for i in bn.inputs[1:5]]
        if any(p is None for p in params) or len(x.shape) < 2:
            raise node_error(bn, 'BatchNormalization needs constant parameters (inference mode)')
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        a = gamma / np.sqrt(var + float(bn.attrs.get('epsilon', 1e-5)))
        shape = (1, -1) + (1,) * (len(x.shape) - 2)
        ca = graph.add_const(a.astype(np.float32).reshape(shape), bn.name + '.scale')
        cb = graph.add_const((beta - mean * a).astype(np.float32).reshape(shape), bn.name + '.shift')
        mid = graph.unique_name(bn.name + '.scaled')
        graph.add_value(mid, x.shape, x.dtype)
        _replace_node(graph, bn, [Node('Mul', [x.name, ca], [mid], {}, bn.name + '/mul', '', bn.origin),
                                  Node('Add', [mid, cb], [bn.outputs[0]], {}, bn.name + '/add', '', bn.origin)])


def _scalar_const(graph, name):
    c = graph.const(name)
    if c is None or c.size != 1:
        return None
    return float(c.reshape(-1)[0])


def _activation_bounds_float(graph, node):
    """(lo, hi) in real units of a Relu / Clip node with constant bounds, else None."""
    if node.op == 'Relu':
        return 0.0, None
    if node.op == 'Clip':
        lo = hi = None
        if node.input(1):
            lo = _scalar_const(graph, node.input(1))
            if lo is None:
                return None
        if node.input(2):
            hi = _scalar_const(graph, node.input(2))
            if hi is None:
                return None
        return lo, hi
    return None


def fuse_conv_activation(graph):
    """A float Conv / Gemm whose only reader is a Relu or a Clip with constant bounds takes the clamp:
    ``clip(conv(x), lo, hi)`` is computed by the kernel as it writes (``_act_min`` / ``_act_max``)."""
    consumers = graph.consumers()
    for conv in list(graph.nodes):
        act = _fusable_float_layer(graph, conv, consumers)
        bounds = None if act is None else _activation_bounds_float(graph, act)
        if bounds is not None:
            conv.attrs['_act_min'], conv.attrs['_act_max'] = bounds
            _absorb(graph, conv, act)


def fuse_silu(graph):
    """``Mul(x, Sigmoid(x))`` (either operand order), the sigmoid read by nothing else, becomes one
    ``Silu(x)`` node: the same float32 operations, one pass and one buffer fewer."""
    from .graph import Node
    consumers = graph.consumers()
    producers = graph.producers()
    for mul in list(graph.nodes):
        if mul.op != 'Mul' or len(mul.inputs) != 2:
            continue
        for k in (0, 1):
            sig = producers.get(mul.inputs[k])
            other = mul.inputs[1 - k]
            if sig is not None and sig.op == 'Sigmoid' and sig.inputs[0] == other \
                    and len(consumers.get(sig.outputs[0], [])) == 1 and sig.outputs[0] not in graph.outputs \
                    and graph.values[other].dtype == np.float32:
                _replace_node(graph, mul, [Node('Silu', [other], list(mul.outputs), {}, mul.name, '',
                                                sig.origin + mul.origin)])
                graph.nodes.remove(sig)
                break


def _fusable_float_layer(graph, conv, consumers):
    """The one reader of float Conv / Gemm ``conv``'s output, when an activation may be fused into it:
    the output is float32, not a graph output, read by one node only, and the layer runs on the
    kernels (a Gemm with constant weights and no transposed input; otherwise the NumPy reference, which
    fuses nothing).  None otherwise."""
    if conv.op not in ('Conv', 'Gemm') or any(k in conv.attrs for k in ('_act_min', '_act_max', '_activation')):
        return None
    users = consumers.get(conv.outputs[0], [])
    if len(users) != 1 or conv.outputs[0] in graph.outputs or graph.values[conv.outputs[0]].dtype != np.float32:
        return None
    if conv.op == 'Gemm' and (conv.attrs.get('transA', 0) or graph.const(conv.inputs[1]) is None):
        return None
    return users[0]


def _absorb(graph, conv, act):
    """``act`` (the only reader of ``conv``) merged into ``conv``: its output and its ONNX nodes (the
    profile lists them under the convolution's step)."""
    conv.outputs = [act.outputs[0]]
    conv.origin = conv.origin + act.origin
    graph.nodes.remove(act)


def fuse_conv_sigmoid(graph):
    """A float Conv / Gemm whose only reader is a Sigmoid or a Silu (after :func:`fuse_silu`) takes it:
    ``sigmoid(conv(x))`` / ``silu(conv(x))`` computed in registers as the kernel writes
    (``_activation``), one pass over memory fewer.  The kernel's sigmoid is the standalone Sigmoid /
    Silu step's formula (qvision_kernels/include/qv_fsimd.h), so the outputs agree to float32 rounding.
    The step keeps the op ``Conv`` / ``Gemm``; its profile record lists the activation's ONNX nodes."""
    consumers = graph.consumers()
    for conv in list(graph.nodes):
        act = _fusable_float_layer(graph, conv, consumers)
        if act is not None and act.op in ('Sigmoid', 'Silu'):
            conv.attrs['_activation'] = act.op.lower()
            _absorb(graph, conv, act)


# ------------------------------------------------------------------------------------------ QDQ passes

def _qparams(graph, node):
    """Per-tensor QParams of a Q/DQ node (constant scale and zero point), or None."""
    scale = graph.const(node.input(1))
    if scale is None:
        return None
    zp = graph.const(node.input(2))
    if zp is None:
        zp = np.zeros((), np.uint8 if node.op == 'DequantizeLinear' and
                      graph.values[node.inputs[0]].dtype == np.uint8 else np.uint8)
    if scale.size != 1 or zp.size != 1:
        return None
    return QParams(scale.astype(np.float32).reshape(()), zp.reshape(()))


def int8_activations_to_uint8(graph):
    """int8 activations become uint8 exactly: ``q_u8 = q_i8 + 128`` with ``zp_u8 = zp_i8 + 128``, since
    ``saturate_i8(r + zp) + 128 = saturate_u8(r + zp + 128)`` and ``(q_i8 - zp_i8) = (q_u8 - zp_u8)``.

    Applied to every QuantizeLinear of a run-time value and to every DequantizeLinear reading one, through
    the data-movement ops between them; an int8 graph input gets an ``Int8ToUint8`` node, an int8 graph
    output (or any other reader of int8 data) an ``Uint8ToInt8`` node before it.
    """
    from .graph import Node
    movement = {'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze', 'Flatten', 'Identity', 'Slice', 'Split',
                'Gather', 'MaxPool', 'Resize', 'Upsample', 'Concat', 'DepthToSpace', 'SpaceToDepth'}
    converted = set()
    for node in list(graph.nodes):
        if node.op == 'QuantizeLinear':
            zp = graph.const(node.input(2))
            if zp is not None and zp.dtype == np.int8:
                node.inputs = node.inputs[:2] + [graph.add_const(
                    (zp.astype(np.int16) + 128).astype(np.uint8), node.name + '.zp_u8')]
                graph.values[node.outputs[0]].dtype = np.dtype(np.uint8)
                converted.add(node.outputs[0])
            continue
        data = [i for i in node.inputs if i and not graph.values[i].is_const]
        if node.op in movement and data and all(i in converted for i in data):
            for o in node.outputs:
                if o:
                    graph.values[o].dtype = np.dtype(np.uint8)
                    converted.add(o)
            continue
        for idx, name in enumerate(node.inputs):
            if not name or graph.values[name].is_const:
                continue
            v = graph.values[name]
            if node.op == 'DequantizeLinear' and idx == 0 and (name in converted or v.dtype == np.int8):
                zp = graph.const(node.input(2))
                if zp is not None and zp.dtype == np.int8:
                    node.inputs = [node.inputs[0], node.inputs[1], graph.add_const(
                        (zp.astype(np.int16) + 128).astype(np.uint8), node.name + '.zp_u8')]
                if name not in converted:              # an int8 value that no Q produced: graph input
                    u = graph.unique_name(name + '.u8')
                    graph.add_value(u, v.shape, np.uint8)
                    i = graph.nodes.index(node)
                    graph.nodes.insert(i, Node('Int8ToUint8', [name], [u], {}, name + '/to_u8', '', []))
                    node.inputs[0] = u
            elif name in converted:
                s = graph.unique_name(name + '.s8')
                graph.add_value(s, v.shape, np.int8)
                i = graph.nodes.index(node)
                graph.nodes.insert(i, Node('Uint8ToInt8', [name], [s], {}, name + '/to_s8', '', []))
                node.inputs[idx] = s
    for k, name in enumerate(graph.outputs):
        if name in converted:
            v = graph.values[name]
            inner = graph.unique_name(name + '.u8')
            graph.add_value(inner, v.shape, np.uint8)
            for n in graph.nodes:
                n.outputs = [inner if o == name else o for o in n.outputs]
                n.inputs = [inner if i == name else i for i in n.inputs]
            graph.values[name].dtype = np.dtype(np.int8)
            graph.nodes.append(Node('Uint8ToInt8', [inner], [name], {}, name + '/to_s8', '', []))


class _QContext:
    """Look-ups shared by the QDQ fusions (rebuilt after each fusion pass)."""

    def __init__(self, graph):
        self.graph = graph
        self.producers = graph.producers()
        self.consumers = graph.consumers()

    def dq_source(self, name):
        """(q value name, QParams) when ``name`` is DequantizeLinear(per-tensor uint8 run-time value)."""
        dq = self.producers.get(name)
        if dq is None or dq.op != 'DequantizeLinear':
            return None
        q = self.graph.values[dq.inputs[0]]
        if q.is_const or q.dtype != np.uint8:
            return None
        p = _qparams(self.graph, dq)
        if p is None or p.zero_point.dtype != np.uint8:
            return None
        return q.name, p

    def const_source(self, name):
        """(uint8 constant, QParams) for a folded DequantizeLinear of a per-tensor uint8 constant."""
        v = self.graph.values[name]
        if v.qconst is None:
            return None
        q, p = v.qconst
        if q.dtype == np.int8 and p.per_tensor and p.zero_point.dtype == np.int8:
            q = (q.astype(np.int16) + 128).astype(np.uint8)
            p = QParams(p.scale.reshape(()), (p.zero_point.astype(np.int16) + 128).astype(np.uint8).reshape(()))
        if q.dtype != np.uint8 or not p.per_tensor:
            return None
        return q, QParams(p.scale.reshape(()), p.zero_point.reshape(()))

    def only_q(self, name):
        """The QuantizeLinear (per-tensor uint8) that is the only reader of float value ``name``."""
        if name in self.graph.outputs:
            return None
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0].op != 'QuantizeLinear' or users[0].inputs[0] != name:
            return None
        p = _qparams(self.graph, users[0])
        if p is None or p.zero_point.dtype != np.uint8:
            return None
        return users[0], p

    def only_act_then_q(self, name):
        """(activation node or None, Q node, QParams) after a layer output ``name``: ``-> Q`` or
        ``-> Relu/Clip -> Q`` (the activation read by nothing else)."""
        hit = self.only_q(name)
        if hit:
            return None, hit[0], hit[1]
        if name in self.graph.outputs:
            return None
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0].op not in ('Relu', 'Clip'):
            return None
        act = users[0]
        if _activation_bounds_float(self.graph, act) is None:
            return None
        hit = self.only_q(act.outputs[0])
        if not hit:
            return None
        return act, hit[0], hit[1]


def _act_bounds_q(graph, act, yp):
    """uint8 clamp of a fused Relu / Clip for an output quantised with ``yp``:
    ``Q(clip(y, lo, hi)) = clamp(Q(y), Q(lo), Q(hi))`` since Q is monotonic."""
    s, zp = yp.scalar()
    if act is None:
        return 0, 255
    lo, hi = _activation_bounds_float(graph, act)
    return activation_bounds('clip', s, zp, lo, hi)


# Largest reduction (values summed per output) of a layer with -128 weights: |acc| <= K * 255 * 128 must
# fit in int32 (the kernels' own bound, for weights in [-127, 127], is K * 255 * 127).
MAX_REDUCTION_W128 = (2 ** 31 - 1) // (255 * 128)


def _weight_int8(wv):
    """(int8 weight, per-channel float32 scales [OC], axis) of a folded DequantizeLinear weight usable by
    the int8 kernels (symmetric: zero point 0, per tensor or per output channel).

    Weights are normally in [-127, 127] (DESIGN.md section 3; ONNX Runtime's quantizer writes that range).
    PyTorch's fake quantisation uses [-128, 127] by default, so QAT exports carry some -128 weights: they
    are accepted too (every instruction-set variant multiplies them exactly - VPDPBUSD, the AVX2
    emulation whose 16-bit products of one non-zero byte per pair stay within 255 * 128, SDOT, and the
    int16 depthwise path), as long as the reduction cannot overflow int32 with them."""
    if wv is None or wv.qconst is None:
        return None
    q, p = wv.qconst
    if q.dtype != np.int8 or np.any(p.zero_point != 0) or q.size == 0:
        return None
    if q.min() < -127 and (q[0].size if q.ndim != 2 else max(q.shape)) > MAX_REDUCTION_W128:
        return None
    oc = q.shape[0]
    if p.scale.size == 1:
        return q, np.full(oc, float(p.scale.reshape(-1)[0]), np.float32), 0
    if p.axis is None or p.scale.size != q.shape[p.axis]:
        return None
    return q, p.scale.astype(np.float32).reshape(-1), p.axis


def _bias_int32(graph, name, s_x, s_w):
    """int32 bias with scale ``s_x * s_w[c]``: the model's int32 bias when its scale is that one, else
    the float bias quantised ``round_half_to_even(b / (s_x * s_w[c]))``."""
    if not name:
        return None
    v = graph.values[name]
    if v.const is None:
        return False
    target = (np.float64(s_x) * s_w.astype(np.float64))
    if v.qconst is not None:
        q, p = v.qconst
        if q.dtype == np.int32 and np.all(p.zero_point == 0):
            s_b = np.broadcast_to(p.scale.astype(np.float64).reshape(-1), target.shape)
            if np.allclose(s_b, target, rtol=1e-6, atol=0):
                return np.ascontiguousarray(q.reshape(-1).astype(np.int32))
    b = np.rint(v.const.astype(np.float64).reshape(-1) / target)
    if b.size != target.size or np.abs(b).max(initial=0) >= 2 ** 31:
        return False
    return b.astype(np.int32)


_AFFINE_OPS = ('Mul', 'Div', 'Add', 'Sub')


def _channel_vector(graph, name, oc, rank):
    """The constant ``name`` as float64 [oc] when it broadcasts to an output [N, oc, ...] of rank ``rank``
    per channel (or is a scalar), else None."""
    c = graph.const(name)
    if c is None or c.dtype.kind != 'f' or c.ndim > rank:
        return None
    if c.size == 1:
        return np.full(oc, float(c.reshape(-1)[0]))
    shape = (1,) * (rank - c.ndim) + c.shape
    if shape[1] != oc or any(d != 1 for k, d in enumerate(shape) if k != 1):
        return None
    return c.astype(np.float64).reshape(-1)


def fold_conv_affine(graph):
    """A convolution with a quantised (DequantizeLinear) weight followed by per-channel affine float ops
    - ``Mul`` / ``Div`` by, ``Add`` / ``Sub`` of constants that broadcast per output channel (a
    BatchNormalization has become such a pair by then) - takes them into its weight scale and bias::

        y = conv(x, DQ(W_q, s_w)) * a + c  =  conv(x, DQ(W_q', s_w * |a|)) + (b * a + c)

    with ``W_q' = sign(a) * W_q`` per channel; the int8 weights are kept, only their scales change.  This
    is the graph PyTorch exports for a QAT ``ConvBn`` module (``Conv -> Div -> Add -> BatchNormalization``
    before the activation's fake quantiser).  Equal to the float graph up to float rounding (folded in
    float64, rounded once to float32).  A channel with ``a == 0``, or with ``a < 0`` and a -128 weight, stops
    the fold."""
    consumers = graph.consumers()
    for conv in list(graph.nodes):
        if conv.op != 'Conv':
            continue
        wv = graph.values[conv.inputs[1]]
        if wv.qconst is None or wv.qconst[0].dtype != np.int8 or wv.qconst[0].ndim != 4:
            continue
        q, p = wv.qconst
        oc = q.shape[0]
        if np.any(p.zero_point != 0) or not (p.scale.size == 1 or p.axis == 0):
            continue
        b = graph.const(conv.input(2))
        if conv.input(2) and b is None:
            continue
        rank = len(graph.values[conv.outputs[0]].shape)
        a_tot = np.ones(oc)
        c_tot = np.zeros(oc) if b is None else b.astype(np.float64).reshape(-1)
        chain = []
        tail = conv.outputs[0]
        while True:
            users = consumers.get(tail, [])
            if len(users) != 1 or tail in graph.outputs or users[0].op not in _AFFINE_OPS:
                break
            op = users[0]
            if len(op.inputs) != 2 or op.inputs[0] == op.inputs[1]:
                break
            k = 1 if op.inputs[0] == tail else 0
            if k == 0 and op.op in ('Div', 'Sub'):
                break                                   # c / y, c - y: not affine in y
            v = _channel_vector(graph, op.inputs[k], oc, rank)
            y = graph.values[op.outputs[0]]
            if v is None or y.shape != graph.values[tail].shape or y.dtype != np.float32:
                break
            if op.op == 'Mul':
                a_tot, c_tot = a_tot * v, c_tot * v
            elif op.op == 'Div':
                if np.any(v == 0):
                    break
                a_tot, c_tot = a_tot / v, c_tot / v
            elif op.op == 'Add':
                c_tot = c_tot + v
            else:
                c_tot = c_tot - v
            chain.append(op)
            tail = op.outputs[0]
        if not chain or np.any(a_tot == 0) or not np.all(np.isfinite(a_tot)) \
                or not np.all(np.isfinite(c_tot)):
            continue
        neg = a_tot < 0
        if np.any(q[neg] == -128):
            continue
        s_w = np.broadcast_to(p.scale.astype(np.float64).reshape(-1), (oc,))
        new_q = np.where(neg.reshape(-1, 1, 1, 1), -q.astype(np.int16), q).astype(np.int8)
        new_s = (s_w * np.abs(a_tot)).astype(np.float32)
        if not np.all(np.isfinite(new_s)) or np.any(new_s == 0):
            continue
        new_w = (new_q.astype(np.float32) * new_s.reshape(-1, 1, 1, 1)).astype(np.float32)
        wname = graph.add_const(new_w, conv.name + '.w_affine')
        graph.values[wname].qconst = (new_q, QParams(new_s, np.zeros(oc, np.int8), 0))
        bname = graph.add_const(c_tot.astype(np.float32), conv.name + '.b_affine')
        conv.inputs = [conv.inputs[0], wname, bname]
        conv.outputs = [tail]
        for op in chain:
            conv.origin = conv.origin + op.origin
            graph.nodes.remove(op)
        consumers = graph.consumers()


def fuse_qdq_conv(graph):
    """``Q(act(Conv(DQ(x), DQ(W), b)))`` becomes one ``QConv`` on uint8 x:

        acc = b_q + sum(W_q * (x_q - zp_x))                   int32, W_q int8 per channel
        y_q = clamp(round(acc * float32(s_x * s_w[c] / s_y)) + zp_y, lo, hi)

    with ``b_q`` the model's int32 bias (scale ``s_x * s_w[c]``, as ONNX Runtime's quantizer writes it)
    or the float bias quantised to that scale, and ``[lo, hi]`` the image of a fused Relu / Clip.
    Gemm (``transA = 0``, ``alpha = beta = 1``) and MatMul with a constant weight become ``QGemm``.
    """
    from .graph import Node
    ctx = _QContext(graph)
    for node in list(graph.nodes):
        if node.op not in ('Conv', 'Gemm', 'MatMul'):
            continue
        src = ctx.dq_source(node.inputs[0])
        wv = graph.values[node.inputs[1]]
        w = _weight_int8(wv)
        if src is None or w is None:
            continue
        xq, xp = src
        wq, s_w, w_axis = w
        if node.op == 'Conv':
            if w_axis != 0 or wq.ndim != 4:
                continue
        elif node.op == 'Gemm':
            a = node.attrs
            if a.get('transA', 0) or a.get('alpha', 1.0) != 1.0 or a.get('beta', 1.0) != 1.0 or wq.ndim != 2:
                continue
            if not a.get('transB', 0):          # B is [K, N]: channels on axis 1
                if w_axis == 0 and wv.qconst[1].scale.size > 1:
                    continue
                wq = wq.T
                s_w = np.broadcast_to(wv.qconst[1].scale.astype(np.float32).reshape(-1), (wq.shape[0],)).copy()
            elif w_axis != 0:
                continue
        else:   # MatMul: B is [K, N]
            if wq.ndim != 2:
                continue
            p = wv.qconst[1]
            if p.scale.size > 1 and p.axis != 1:
                continue
            wq = wq.T
            s_w = np.broadcast_to(p.scale.astype(np.float32).reshape(-1), (wq.shape[0],)).copy()
        tail = ctx.only_act_then_q(node.outputs[0])
        if tail is None:
            continue
        act, qnode, yp = tail
        s_x, zp_x = xp.scalar()
        s_y, zp_y = yp.scalar()
        bias = _bias_int32(graph, node.input(2), s_x, s_w)
        if bias is False:
            continue
        if node.op == 'Gemm' and bias is not None and bias.size != wq.shape[0]:
            continue
        lo, hi = _act_bounds_q(graph, act, yp)
        attrs = {'weight': np.ascontiguousarray(wq), 'bias': bias, 'x_zero_point': zp_x,
                 'multiplier': multiplier(s_x, s_w, s_y), 'y_zero_point': zp_y, 'act_min': int(lo),
                 'act_max': int(hi), 'x_scale': s_x, 'y_scale': s_y}
        if node.op == 'Conv':
            attrs.update({k: v for k, v in node.attrs.items() if not k.startswith('_')})
            op = 'QConv'
        else:
            op = 'QGemm'
        origin = node.origin + (act.origin if act is not None else []) + qnode.origin
        new = Node(op, [xq], [qnode.outputs[0]], attrs, node.name, '', origin)
        _replace_node(graph, node, [new])
        if act is not None:
            graph.nodes.remove(act)
        graph.nodes.remove(qnode)
        ctx = _QContext(graph)


def _qinputs(ctx, names):
    """For each input: (name of a uint8 run-time value or of a new uint8 constant, QParams), or None."""
    out = []
    for name in names:
        src = ctx.dq_source(name)
        if src is None:
            c = ctx.const_source(name)
            if c is None:
                return None
            src = (ctx.graph.add_const(c[0], name + '.q'), c[1])
        out.append(src)
    return out


def fuse_qdq_binary(graph):
    """``Q(act(Add(DQ(a), DQ(b))))`` -> ``QAdd``: ``y = clamp(round(float32(a - zp_a) * float32(s_a/s_y)
    + float32(b - zp_b) * float32(s_b/s_y)) + zp_y, lo, hi)``; ``Q(Mul(DQ(a), DQ(b)))`` -> ``QMul``:
    ``y = requantize((a - zp_a) * (b - zp_b), float32(s_a * s_b / s_y), zp_y)``.  An operand may be a
    quantised constant; the operand that broadcasts goes second (both ops commute)."""
    from .graph import Node
    ctx = _QContext(graph)
    for node in list(graph.nodes):
        if node.op not in ('Add', 'Mul') or len(node.inputs) != 2:
            continue
        tail = ctx.only_act_then_q(node.outputs[0])
        if tail is None:
            continue
        srcs = _qinputs(ctx, node.inputs)
        if srcs is None:
            continue
        act, qnode, yp = tail
        ya = graph.values[node.outputs[0]].shape
        (a, ap), (b, bp) = srcs
        if graph.values[a].shape != ya or (graph.values[a].is_const and graph.values[b].shape == ya):
            (a, ap), (b, bp) = (b, bp), (a, ap)
        if graph.values[a].shape != ya or graph.values[a].is_const:
            continue                            # both operands broadcast: not supported by the kernel
        lo, hi = _act_bounds_q(graph, act, yp)
        sa, za = ap.scalar()
        sb, zb = bp.scalar()
        sy, zy = yp.scalar()
        attrs = {'a_scale': sa, 'a_zero_point': za, 'b_scale': sb, 'b_zero_point': zb, 'y_scale': sy,
                 'y_zero_point': zy, 'act_min': int(lo), 'act_max': int(hi)}
        origin = node.origin + (act.origin if act is not None else []) + qnode.origin
        _replace_node(graph, node, [Node('Q' + node.op, [a, b], [qnode.outputs[0]], attrs, node.name, '',
                                         origin)])
        if act is not None:
            graph.nodes.remove(act)
        graph.nodes.remove(qnode)
        ctx = _QContext(graph)


def fuse_qdq_concat(graph):
    """``Q(Concat(DQ(x_1), ..., DQ(x_n)))`` -> ``QConcat``: input i is requantised to the output scale,
    ``requantize(x_i - zp_i, float32(s_i / s_y), zp_y)`` (a plain copy when its scale and zero point are
    the output's)."""
    from .graph import Node
    ctx = _QContext(graph)
    for node in list(graph.nodes):
        if node.op != 'Concat':
            continue
        tail = ctx.only_q(node.outputs[0])
        srcs = _qinputs(ctx, [i for i in node.inputs if i])
        if tail is None or srcs is None:
            continue
        qnode, yp = tail
        sy, zy = yp.scalar()
        attrs = {'axis': node.attrs['axis'], 'scales': [p.scalar()[0] for _, p in srcs],
                 'zero_points': [p.scalar()[1] for _, p in srcs], 'y_scale': sy, 'y_zero_point': zy}
        _replace_node(graph, node, [Node('QConcat', [n for n, _ in srcs], [qnode.outputs[0]], attrs,
                                         node.name, '', node.origin + qnode.origin)])
        graph.nodes.remove(qnode)
        ctx = _QContext(graph)


def fuse_qdq_average(graph):
    """``Q(AveragePool(DQ(x)))`` / ``Q(GlobalAveragePool(DQ(x)))`` -> uint8 averages:
    ``y = requantize(sum(x - zp_x), float32(s_x / (s_y * count)), zp_y)``."""
    from .graph import Node
    ctx = _QContext(graph)
    for node in list(graph.nodes):
        if node.op not in ('AveragePool', 'GlobalAveragePool'):
            continue
        src = ctx.dq_source(node.inputs[0])
        tail = ctx.only_q(node.outputs[0])
        if src is None or tail is None or len(graph.values[node.inputs[0]].shape) != 4:
            continue
        qnode, yp = tail
        sx, zx = src[1].scalar()
        sy, zy = yp.scalar()
        attrs = dict(node.attrs, x_scale=sx, x_zero_point=zx, y_scale=sy, y_zero_point=zy)
        _replace_node(graph, node, [Node('Q' + node.op, [src[0]], [qnode.outputs[0]], attrs, node.name, '',
                                         node.origin + qnode.origin)])
        graph.nodes.remove(qnode)
        ctx = _QContext(graph)


# ops that only move or select values: op(DQ(x)) = DQ(op(x)) for per-tensor quantisation
DATA_MOVEMENT = {'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze', 'Flatten', 'Identity', 'Slice', 'Split',
                 'MaxPool', 'Resize', 'Upsample', 'Gather', 'DepthToSpace', 'SpaceToDepth', 'Expand', 'Tile'}


def _requant_table(xp, yp):
    """LUT of ``Q(DQ(q))`` from ``xp`` to ``yp``; None when the parameters are equal (a no-op)."""
    sx, zx = xp.scalar()
    sy, zy = yp.scalar()
    if np.float32(sx) == np.float32(sy) and zx == zy:
        return None
    return make_lut('identity', sx, zx, sy, zy)


def fuse_qdq_data_movement(graph):
    """``Q(op(DQ(x)))`` for an op that only moves values (Reshape, Transpose, MaxPool, nearest Resize,
    Slice, Split, ...) runs ``op`` on the uint8 data: ``op(DQ(x)) = DQ(op(x))`` because DQ acts on each
    value alone and max / selection commute with the increasing map DQ.  When the Q parameters differ
    from the DQ ones a ``QLut`` rescale ``Q(DQ(q))`` follows (exact)."""
    from .graph import Node
    ctx = _QContext(graph)
    for node in list(graph.nodes):
        if node.op not in DATA_MOVEMENT:
            continue
        if node.op in ('Resize', 'Upsample') and node.attrs.get('mode', 'nearest') != 'nearest':
            continue
        src = ctx.dq_source(node.inputs[0])
        if src is None or any(i and not graph.values[i].is_const for i in node.inputs[1:]):
            continue
        tails = [ctx.only_q(o) for o in node.outputs if o]
        if not tails or any(t is None for t in tails):
            continue
        xq, xp = src
        new_nodes = []
        outs = []
        for o, (qnode, yp) in zip([o for o in node.outputs if o], tails):
            table = _requant_table(xp, yp)
            if table is None:
                outs.append(qnode.outputs[0])
            else:
                mid = graph.unique_name(o + '.u8')
                graph.add_value(mid, graph.values[o].shape, np.uint8)
                outs.append(mid)
                new_nodes.append(Node('QLut', [mid], [qnode.outputs[0]], {'table': table}, qnode.name, '',
                                      qnode.origin))
        moved = Node(node.op, [xq] + node.inputs[1:], outs, dict(node.attrs), node.name, '',
                     node.origin + [t[0].origin[0] for t in tails if t[0].origin])
        for o in outs:
            graph.values[o].dtype = np.dtype(np.uint8)
        _replace_node(graph, node, [moved] + new_nodes)
        for qnode, _ in tails:
            graph.nodes.remove(qnode)
        ctx = _QContext(graph)


# data-movement ops whose output is no larger than their input (DequantizeLinear moved after them costs
# no more than before)
_SHRINKING_MOVEMENT = DATA_MOVEMENT - {'Resize', 'Upsample', 'Expand', 'Tile', 'Gather'}


def sink_dequantize(graph):
    """``op(DQ(x))`` -> ``DQ(op(x))`` for an op that only moves values and does not enlarge them (Reshape,
    Transpose, Slice, Split, MaxPool, ...; the same identity as :func:`fuse_qdq_data_movement`), when its
    output is not quantised again (that case is fused already).  QAT exports put fake quantisers only after
    layers, so a ``chunk`` / ``view`` sits between a DequantizeLinear and the next quantised layer; moved
    past it, the DequantizeLinear meets that layer and the layer's QDQ fusion applies.  Exact."""
    from .graph import Node
    ctx = _QContext(graph)
    for node in list(graph.nodes):
        if node.op not in _SHRINKING_MOVEMENT:
            continue
        src = ctx.dq_source(node.inputs[0])
        if src is None or any(i and not graph.values[i].is_const for i in node.inputs[1:]):
            continue
        outs = [o for o in node.outputs if o]
        if not outs or any(o in graph.outputs for o in outs):
            continue
        dq = ctx.producers[node.inputs[0]]
        xq, _ = src
        new_outs, dqs = [], []
        for o in node.outputs:
            if not o:
                new_outs.append(o)
                continue
            u = graph.unique_name(o + '.u8')
            graph.add_value(u, graph.values[o].shape, np.uint8)
            new_outs.append(u)
            dqs.append(Node('DequantizeLinear', [u] + dq.inputs[1:], [o], dict(dq.attrs), dq.name + '/' + o,
                            '', list(dq.origin)))
        moved = Node(node.op, [xq] + node.inputs[1:], new_outs, dict(node.attrs), node.name, '',
                     list(node.origin))
        _replace_node(graph, node, [moved] + dqs)
        ctx = _QContext(graph)


# binary ops allowed inside an element-wise region (with a scalar constant or two region operands)
_REGION_BINARY = {'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'PRelu'}
MAX_REGION_NODES = 16


def _region(ctx, name, nodes, sources, depth=0):
    """Collect the element-wise float region that computes ``name`` from DQ outputs (see fuse_qdq_lut).
    Returns False when ``name`` is not computed that way."""
    g = ctx.graph
    v = g.values[name]
    if v.is_const:
        return v.const.size == 1
    src = ctx.dq_source(name)
    if src is not None:
        sources[name] = src
        return True
    p = ctx.producers.get(name)
    if p is None or depth > MAX_REGION_NODES or len(nodes) > MAX_REGION_NODES:
        return False
    if p.op in ELEMENTWISE_UNARY:
        ins = [p.inputs[0]] + [i for i in p.inputs[1:] if i]
        if any(g.values[i].is_const is False and k > 0 for k, i in enumerate(ins)):
            return False
    elif p.op in _REGION_BINARY or (p.op in ('Max', 'Min', 'Sum') and len(p.inputs) >= 2):
        ins = [i for i in p.inputs if i]
    else:
        return False
    if g.values[name].dtype != np.float32:
        return False
    for i in ins:
        if not _region(ctx, i, nodes, sources, depth + 1):
            return False
    if p not in nodes:
        nodes.append(p)
    return True


def fuse_qdq_lut(graph):
    """``Q(f(DQ(x)))`` for any element-wise float function ``f`` of one uint8 tensor (Sigmoid, Tanh,
    HardSwish, LeakyRelu, SiLU as ``x * sigmoid(x)``, Relu, Clip, arithmetic with scalar constants, or a
    chain of them; also a plain ``Q(DQ(x))`` rescale) becomes one ``QLut`` with the 256 values
    ``table[q] = Q(f(DQ(q)))``, each computed with the same float32 operations as the float graph: the
    result is bit-exact with running the float ops.  Applies when the region reads a single quantised
    tensor (through one or more DQ nodes with the same parameters) and keeps its shape."""
    from .graph import Node
    ctx = _QContext(graph)
    for qnode in list(graph.nodes):
        if qnode.op != 'QuantizeLinear':
            continue
        yp = _qparams(graph, qnode)
        if yp is None or yp.zero_point.dtype != np.uint8:
            continue
        t = qnode.inputs[0]
        nodes, sources = [], {}
        if not _region(ctx, t, nodes, sources) or not sources:
            continue
        distinct = {(q, float(p.scale), int(p.zero_point)) for q, p in sources.values()}
        if len(distinct) != 1:
            continue
        xq, xp = next(iter(sources.values()))
        if graph.values[xq].shape != graph.values[t].shape:
            continue
        order = [n for n in graph.nodes if n in nodes]

        def f(x64, order=order, sources=sources):
            env = {name: x64.astype(np.float32) for name in sources}
            for n in order:
                ins = []
                for i in n.inputs:
                    if not i:
                        ins.append(None)
                    elif i in env:
                        ins.append(env[i])
                    else:
                        ins.append(graph.values[i].const.reshape(()))
                outs = REFERENCE[n.op](n, ins, graph.opset)
                env[n.outputs[0]] = np.asarray(outs[0], np.float32)
            return env[t]

        sx, zx = xp.scalar()
        sy, zy = yp.scalar()
        if not order:
            table = _requant_table(xp, yp)
            if table is None and qnode.outputs[0] not in graph.outputs:
                # Q(DQ(x)) with the same parameters is x (two fake quantisers in a row in a QAT export)
                graph.rename_input_uses(qnode.outputs[0], xq)
                graph.nodes.remove(qnode)
                ctx = _QContext(graph)
                continue
            if table is None:
                table = np.arange(256, dtype=np.uint8)
        else:
            with np.errstate(all='ignore'):
                y = f(np.asarray(dq_values(sx, zx), np.float64))
            if np.isnan(y).any():
                continue
            table = make_lut(lambda x, y=y: y, sx, zx, sy, zy)
        origin = [o for n in order for o in n.origin] + qnode.origin
        op_names = '+'.join(n.op for n in order) or 'Rescale'
        _replace_node(graph, qnode, [Node('QLut', [xq], [qnode.outputs[0]], {'table': table, 'fn': op_names},
                                          order[-1].name if order else qnode.name, '', origin)])
        ctx = _QContext(graph)


def _lut_of_source(producers, name):
    """(source uint8 value, table, producing QLut node or None): ``name`` as ``QLut(source)``, or as
    the identity table of itself."""
    p = producers.get(name)
    if p is not None and p.op == 'QLut':
        return p.inputs[0], p.attrs['table'], p
    return name, np.arange(256, dtype=np.uint8), None


def compose_luts(graph):
    """Collapse uint8 element-wise chains of one source into a single table, bit-exactly:

    * ``QLut_b(QLut_a(x))`` -> ``QLut(x)`` with ``table[q] = b[a[q]]``;
    * ``QMul(f(x), g(x))`` / ``QAdd(f(x), g(x))`` where ``f`` and ``g`` are tables of the same uint8
      tensor ``x`` (or ``x`` itself) and no operand broadcasts -> ``QLut(x)`` with
      ``table[q] = kernel(f[q], g[q])``, computed by the very kernel the op would have run (so the
      result is identical).  This turns the quantised SiLU ``x * Q(sigmoid(x))`` into one lookup.
    """
    from .graph import Node
    changed = True
    while changed:
        changed = False
        producers = graph.producers()
        for node in list(graph.nodes):
            if node.op == 'QLut':
                src, inner, p = _lut_of_source(producers, node.inputs[0])
                if p is None:
                    continue
                table = node.attrs['table'][inner]
                parts = [p]
                fn = '%s>%s' % (p.attrs.get('fn', 'lut'), node.attrs.get('fn', 'lut'))
            elif node.op in ('QAdd', 'QMul') and len(node.inputs) == 2:
                a, b = node.inputs
                y = graph.values[node.outputs[0]]
                if graph.values[a].is_const or graph.values[b].is_const or \
                        graph.values[a].shape != y.shape or graph.values[b].shape != y.shape:
                    continue
                sa, ta, pa = _lut_of_source(producers, a)
                sb, tb, pb = _lut_of_source(producers, b)
                if sa != sb or (pa is None and pb is None):
                    continue
                at = node.attrs
                kern = add_int8 if node.op == 'QAdd' else mul_int8
                table = kern(np.ascontiguousarray(ta), np.ascontiguousarray(tb), at['a_scale'], at['a_zero_point'],
                             at['b_scale'], at['b_zero_point'], at['y_scale'], at['y_zero_point'],
                             at['act_min'], at['act_max'])
                parts = [p for p in (pa, pb) if p is not None]
                fn = '%s(%s, %s)' % (node.op[1:], pa.attrs.get('fn', 'lut') if pa else 'x',
                                     pb.attrs.get('fn', 'lut') if pb else 'x')
                src = sa
            else:
                continue
            origin = [o for p in parts for o in p.origin] + node.origin
            new = Node('QLut', [src], list(node.outputs), {'table': np.ascontiguousarray(table, np.uint8),
                                                           'fn': fn}, node.name, '', origin)
            _replace_node(graph, node, [new])
            changed = True
            break
        graph.remove_dead()


# split_conv_for_slices applies from this many output pixels (measured: below it, reading the input once
# per part costs about what the slice copies do)
SPLIT_MIN_PIXELS = 40 * 40
SPLIT_MIN_CHANNELS = 16


def _conv_before_lut(graph, lut, producers, consumers):
    """The QConv whose output only ``lut`` (a QLut node) reads and the graph does not return, or None."""
    if lut.op != 'QLut':
        return None
    conv = producers.get(lut.inputs[0])
    if conv is None or conv.op != 'QConv' or len(conv.outputs) != 1 or \
            len(consumers.get(conv.outputs[0], [])) != 1 or conv.outputs[0] in graph.outputs:
        return None
    return conv


def split_conv_for_slices(graph):
    """``Slice_i(QLut(QConv(x)))`` where the slices cut the channels into contiguous parts (YOLOv8's C2f
    ``chunk(2, 1)`` after its first convolution) -> one ``QConv -> QLut`` per part, computing each part's
    channels straight into their own buffer: no slice copies, and a part read only by a concatenation
    can then take the concatenation's rescale into its table (fold_concat_rescale).  The same integer
    arithmetic per channel: exact.  For large outputs only (``SPLIT_MIN_PIXELS``), parts of at least
    ``SPLIT_MIN_CHANNELS`` channels."""
    from .graph import Node
    consumers = graph.consumers()
    producers = graph.producers()
    for lut in list(graph.nodes):
        conv = _conv_before_lut(graph, lut, producers, consumers)
        z = lut.outputs[0] if conv is not None else None
        if conv is None or int(conv.attrs.get('group', 1)) != 1 or z in graph.outputs:
            continue
        shape = graph.values[z].shape
        if len(shape) != 4 or shape[2] * shape[3] < SPLIT_MIN_PIXELS:
            continue
        users = consumers.get(z, [])
        parts = [_slice_range(graph, u, 1) for u in users]
        if len(users) < 2 or any(p is None for p in parts):
            continue
        order = sorted(range(len(users)), key=lambda k: parts[k][1])
        bounds = [(parts[k][1], parts[k][2]) for k in order]
        if bounds[0][0] != 0 or bounds[-1][1] != shape[1] or \
                any(a[1] != b[0] for a, b in zip(bounds, bounds[1:])) or \
                any(b - a < SPLIT_MIN_CHANNELS for a, b in bounds):
            continue
        new_nodes = []
        a = conv.attrs
        mult = np.broadcast_to(np.asarray(a['multiplier'], np.float32).reshape(-1), (shape[1],))
        for k in order:
            lo, hi = parts[k][1], parts[k][2]
            out = users[k].outputs[0]
            mid = graph.unique_name(out + '.conv')
            graph.add_value(mid, (shape[0], hi - lo) + shape[2:], np.uint8)
            attrs = dict(a, weight=np.ascontiguousarray(a['weight'][lo:hi]),
                         bias=None if a['bias'] is None else np.ascontiguousarray(a['bias'][lo:hi]),
                         multiplier=np.ascontiguousarray(mult[lo:hi]))
            new_nodes.append(Node('QConv', list(conv.inputs), [mid], attrs, '%s[%d:%d]' % (conv.name, lo, hi),
                                  '', list(conv.origin)))
            new_nodes.append(Node('QLut', [mid], [out], dict(lut.attrs), '%s[%d:%d]' % (lut.name, lo, hi), '',
                                  list(lut.origin) + list(users[k].origin)))
        _replace_node(graph, conv, new_nodes)
        graph.nodes.remove(lut)
        for u in users:
            graph.nodes.remove(u)
        graph.remove_dead()
        consumers = graph.consumers()
        producers = graph.producers()


def _slice_range(graph, node, axis):
    """(source, start, stop) when Slice ``node`` takes the contiguous range [start, stop) of logical
    ``axis`` of its source and everything of the other axes; else None."""
    from .ops import slice_spec
    if node.op != 'Slice' or any(i and not graph.values[i].is_const for i in node.inputs[1:]):
        return None
    src = graph.values[node.inputs[0]]
    consts = [None] + [graph.const(i) for i in node.inputs[1:]]
    try:
        spec = slice_spec(node, src.shape, consts, graph.opset)
    except ModelError:
        return None
    for a, (sl, dim) in enumerate(zip(spec, src.shape)):
        start, stop, step = sl.indices(dim)
        if step != 1 or stop < start:
            return None
        if a != axis and (start, stop) != (0, dim):
            return None
        if a == axis:
            rng = (start, stop)
    return node.inputs[0], rng[0], rng[1]


def merge_concat_slices(graph):
    """``Concat(..., Slice(x)[a:b], Slice(x)[b:c], ...)`` along the sliced axis reads ``x[a:c]`` once:
    ``x`` itself when [a:c] is all of it (the two halves of YOLOv8's C2f split, concatenated again after
    the bottleneck), else one Slice.  For QConcat the merged inputs must have the same parameters (they do:
    slices move the values of one tensor).  A Slice read by nothing else disappears.  Exact."""
    from .graph import Node
    producers = graph.producers()
    for node in list(graph.nodes):
        if node.op not in ('Concat', 'QConcat') or len(node.inputs) < 2:
            continue
        rank = len(graph.values[node.outputs[0]].shape)
        axis = int(node.attrs['axis']) % rank
        names = list(node.inputs)
        q = node.op == 'QConcat'
        params = list(zip(node.attrs['scales'], node.attrs['zero_points'])) if q else [None] * len(names)
        merged, merged_params = [], []
        k = 0
        while k < len(names):
            p = producers.get(names[k])
            r = _slice_range(graph, p, axis) if p is not None else None
            j = k + 1
            while r is not None and j < len(names) and params[j] == params[k]:
                pj = producers.get(names[j])
                rj = _slice_range(graph, pj, axis) if pj is not None else None
                if rj is None or rj[0] != r[0] or rj[1] != r[2]:
                    break
                r = (r[0], r[1], rj[2])
                j += 1
            if j == k + 1:
                merged.append(names[k])
            else:
                src = graph.values[r[0]]
                if (r[1], r[2]) == (0, src.shape[axis]):
                    merged.append(r[0])
                else:
                    out = graph.unique_name(node.name + '.slice')
                    shape = list(src.shape)
                    shape[axis] = r[2] - r[1]
                    graph.add_value(out, shape, src.dtype)
                    consts = [graph.add_const(np.array([v], np.int64), node.name + '.' + what)
                              for v, what in ((r[1], 'starts'), (r[2], 'ends'), (axis, 'axes'))]
                    i = graph.nodes.index(node)
                    graph.nodes.insert(i, Node('Slice', [r[0]] + consts, [out], {}, out, '', []))
                    merged.append(out)
            merged_params.append(params[k])
            k = j
        if len(merged) == len(names):
            continue
        node.inputs = merged
        if q:
            node.attrs['scales'] = [p[0] for p in merged_params]
            node.attrs['zero_points'] = [p[1] for p in merged_params]
        graph.remove_dead()
        producers = graph.producers()


# ops through which a per-value non-decreasing map (a requantisation table) commutes
_TABLE_COMMUTES = {'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Transpose', 'Slice', 'MaxPool', 'Resize',
                   'Upsample', 'Identity', 'DepthToSpace', 'SpaceToDepth'}


def concat_tables(node):
    """The per-input uint8 tables of a QConcat (None: copied unchanged): the ``tables`` attribute when
    :func:`fold_concat_rescale` has set it, else the rescale of each input's parameters to the output's."""
    if 'tables' in node.attrs:
        return list(node.attrs['tables'])
    from .lowering import concat_rescale_table
    a = node.attrs
    return [concat_rescale_table(s, z, a['y_scale'], a['y_zero_point'])
            for s, z in zip(a['scales'], a['zero_points'])]


def fold_concat_rescale(graph):
    """A QConcat input whose parameters differ from the output's is rescaled by a 256-entry table ``T``
    on its way in.  When the input comes from a QLut or another QConcat that nothing else reads (through
    single-reader Reshape / Transpose / Slice / MaxPool / nearest Resize, which commute with the
    non-decreasing ``T``), ``T`` is composed into that producer's table(s) instead and the input is then a
    plain copy: ``T[f[x]]`` is one lookup, exact.  The producer's uint8 output then carries the concat's
    output parameters, so the values on the way are renamed (``<name>.rescaled``): they are no longer the
    model's tensors of those names."""
    changed = True
    while changed:
        changed = False
        producers = graph.producers()
        consumers = graph.consumers()
        for node in graph.nodes:
            if node.op != 'QConcat':
                continue
            tables = concat_tables(node)
            for k, table in enumerate(tables):
                if table is None:
                    continue
                v = node.inputs[k]
                if node.inputs.count(v) != 1:
                    continue
                p = producers.get(v)
                chain = [(v, node)]                     # (value, its reader) from the concat upwards
                while p is not None and p.op in _TABLE_COMMUTES and len(consumers.get(v, [])) == 1 \
                        and v not in graph.outputs and len(p.outputs) == 1 and \
                        not (p.op in ('Resize', 'Upsample') and p.attrs.get('mode', 'nearest') != 'nearest'):
                    if any(i and not graph.values[i].is_const for i in p.inputs[1:]):
                        p = None
                        break
                    v = p.inputs[0]
                    chain.append((v, p))
                    p = producers.get(v)
                if p is None or len(consumers.get(v, [])) != 1 or v in graph.outputs or \
                        graph.values[v].dtype != np.uint8:
                    continue
                if p.op == 'QLut':
                    p.attrs['table'] = np.ascontiguousarray(table[p.attrs['table']])
                elif p.op == 'QConcat' and p is not node:
                    ident = np.arange(256, dtype=np.uint8)
                    p.attrs['tables'] = [np.ascontiguousarray(table[ident if t is None else t])
                                         for t in concat_tables(p)]
                else:
                    continue
                # the values on the way now hold other numbers than the model's tensors of those names
                for name, user in chain:
                    new = graph.unique_name(name + '.rescaled')
                    old_v = graph.values[name]
                    graph.add_value(new, old_v.shape, old_v.dtype)
                    user.inputs = [new if i == name else i for i in user.inputs]
                    prod = producers[name]
                    prod.outputs = [new if o == name else o for o in prod.outputs]
                tables[k] = None
                node.attrs['tables'] = tables
                changed = True
            if changed:
                break


def fuse_conv_lut(graph):
    """``QLut(QConv(x))``, the conv's output read by nothing else: the table goes into the convolution
    (attribute ``lut``), which applies it to each part of its output while that part is still in cache -
    one pass over memory and one step fewer.  Exact: the same table on the same bytes."""
    consumers = graph.consumers()
    producers = graph.producers()
    for lut in list(graph.nodes):
        conv = _conv_before_lut(graph, lut, producers, consumers)
        if conv is None or conv.attrs.get('lut') is not None:
            continue
        conv.attrs['lut'] = np.ascontiguousarray(lut.attrs['table'], dtype=np.uint8)
        _absorb(graph, conv, lut)


def dq_values(scale, zero_point):
    """The 256 real values of uint8 codes, as DequantizeLinear computes them (float32)."""
    from qvision_kernels.requant import dequantize
    return dequantize(np.arange(256), scale, zero_point)


def remove_dead(graph):
    """Drop nodes whose outputs nothing reads (the Q/DQ nodes the fusions bypassed)."""
    graph.remove_dead()


# The fixed order.  Each entry: (name, function).
PASSES = [
    ('propagate', propagate),
    ('eliminate_identity', eliminate_identity),
    ('fold_batchnorm', fold_batchnorm),
    ('batchnorm_to_affine', batchnorm_to_affine),
    ('int8_activations_to_uint8', int8_activations_to_uint8),
    ('fold_conv_affine', fold_conv_affine),
    ('fuse_qdq_data_movement', fuse_qdq_data_movement),
    ('sink_dequantize', sink_dequantize),
    ('fuse_qdq_conv', fuse_qdq_conv),
    ('fuse_qdq_binary', fuse_qdq_binary),
    ('fuse_qdq_concat', fuse_qdq_concat),
    ('fuse_qdq_average', fuse_qdq_average),
    ('fuse_qdq_lut', fuse_qdq_lut),
    ('remove_dead', remove_dead),
    ('compose_luts', compose_luts),
    ('split_conv_for_slices', split_conv_for_slices),
    ('merge_concat_slices', merge_concat_slices),
    ('fold_concat_rescale', fold_concat_rescale),
    ('fuse_conv_lut', fuse_conv_lut),
    ('fuse_conv_activation', fuse_conv_activation),
    ('fuse_silu', fuse_silu),
    ('fuse_conv_sigmoid', fuse_conv_sigmoid),
    ('remove_dead_final', remove_dead),
]

# passes that may be switched off (for tests and debugging); the others are needed to run at all
OPTIONAL_PASSES = {'eliminate_identity', 'fold_batchnorm', 'fold_conv_affine', 'fuse_qdq_data_movement',
                   'sink_dequantize', 'fuse_qdq_conv', 'fuse_qdq_binary', 'fuse_qdq_concat', 'fuse_qdq_average',
                   'fuse_qdq_lut', 'compose_luts', 'split_conv_for_slices', 'merge_concat_slices',
                   'fold_concat_rescale', 'fuse_conv_lut', 'fuse_conv_activation', 'fuse_silu',
                   'fuse_conv_sigmoid'}


def run_passes(graph, disable=()):
    unknown = set(disable) - OPTIONAL_PASSES
    if unknown:
        raise ValueError('unknown or mandatory passes %s; optional ones: %s'
                         % (sorted(unknown), sorted(OPTIONAL_PASSES)))
    for name, fn in PASSES:
        if name not in disable:
            fn(graph)
    return graph
