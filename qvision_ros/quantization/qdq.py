"""Writing the standard QDQ ONNX model (DESIGN.md sections 3 and 4).

For each quantised tensor ``t`` of the plan (:mod:`.plan`)::

    t -> QuantizeLinear(scale, zp) -> t_quantized (uint8) -> DequantizeLinear(scale, zp) -> t_dequantized

with the per-tensor uint8 parameters of its root (scalar float32 scale, scalar uint8 zero point); its
readers are rewired as :mod:`.plan` says.  A model output written by a quantised unit keeps its name on
the DequantizeLinear output (the producer then writes ``<name>_float``).

For each quantised weighted layer: the weight becomes an int8 initializer ``<node>.weight_quantized``
with per-output-channel float32 scales and int8 zero points (0) read by a DequantizeLinear with
``axis`` = the output-channel axis (0 for Conv and for Gemm with ``transB``, 1 for MatMul and plain
Gemm); the bias an int32 initializer with scale ``s_in * s_w[c]`` (rounded half to even, saturated) and
zero point 0, read by a per-channel DequantizeLinear.  With bias correction the float bias first
absorbs the expected error of the quantised weight on the mean input::

    b'[c] = b[c] - sum_k (DQ(W_q) - W)[c, k] * E[x_k]        (convolutions: summed over the kernel too)

Layers kept in float are simply not wrapped.
"""
import numpy as np

from ..errors import ModelError
from .observers import quantize_weight, weight_scales

INT32_MAX = 2 ** 31 - 1


def _channel_axis(node):
    """Output-channel axis of the weight of a weighted node (analysis IR node)."""
    if node.op == 'Conv':
        return 0
    if node.op == 'Gemm':
        return 0 if node.attrs.get('transB', 0) else 1
    return 1


class _Names:
    """Unique value names in one model."""

    def __init__(self, proto):
        self.used = {i for n in proto.graph.node for i in list(n.input) + list(n.output)}
        self.used |= {t.name for t in proto.graph.initializer} | {v.name for v in proto.graph.input}
        self.used |= {v.name for v in proto.graph.output}

    def new(self, hint):
        name, k = hint, 1
        while name in self.used:
            name = '%s_%d' % (hint, k)
            k += 1
        self.used.add(name)
        return name


def bias_correction(analysis, node, w, w_deq, bias, mean):
    """``bias`` corrected for the weight quantisation error on the mean input (module docstring)."""
    dw = (w_deq.astype(np.float64) - w.astype(np.float64))
    if node.op == 'Conv':
        group = int(node.attrs.get('group', 1))
        oc, icg = dw.shape[:2]
        per_in = dw.sum(axis=(2, 3))                                # [OC, IC / group]
        mu = np.asarray(mean, np.float64).reshape(group, icg)
        shift = np.einsum('gok,gk->go', per_in.reshape(group, oc // group, icg), mu).reshape(oc)
    elif node.op == 'Gemm' and node.attrs.get('transB', 0):
        shift = dw @ np.asarray(mean, np.float64)
    else:
        shift = np.asarray(mean, np.float64) @ dw
    return (bias.astype(np.float64) - shift).astype(np.float32)


def write_qdq(proto, analysis, plan, calibration, weight_bits=8, weight_scaling='auto', correct_bias=False):
    """The QDQ ModelProto of the prepared float ``proto`` for ``plan``, with the activation parameters of
    ``calibration``; also returns per quantised tensor its (scale, zero point)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    names = _Names(m)
    nodes = {n.name: n for n in g.node}
    new_inits, new_nodes = [], []

    def init(array, hint):
        name = names.new(hint)
        new_inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def qparams(t):
        root = plan.share[t]
        try:
            return calibration.params[root]
        except KeyError:
            raise ModelError('tensor %r has no calibration statistics (calibrate with this plan)' % root) from None

    # ----------------------------------------------------------------------------- weights and biases
    for u in plan.weighted():
        ir = analysis.node[u.nodes[0]]
        node = nodes[ir.name]
        w = analysis.const(ir.inputs[1]).astype(np.float32)
        axis = _channel_axis(ir)
        s_w = weight_scales(w, weight_bits, weight_scaling, axis=axis)
        moved = np.moveaxis(w, axis, 0)
        w_q = np.moveaxis(quantize_weight(moved, s_w, weight_bits), 0, axis)
        w_deq = (np.moveaxis(w_q, axis, 0).astype(np.float32) *
                 s_w.reshape((-1,) + (1,) * (w.ndim - 1)))
        w_deq = np.moveaxis(w_deq, 0, axis)
        s_x = qparams(ir.inputs[0]).scale
        wq_name = init(w_q, ir.name + '.weight_quantized')
        ws_name = init(s_w, ir.name + '.weight_scale')
        wz_name = init(np.zeros(s_w.shape, np.int8), ir.name + '.weight_zero_point')
        w_out = names.new(ir.name + '.weight_dequantized')
        new_nodes.append(helper.make_node('DequantizeLinear', [wq_name, ws_name, wz_name], [w_out],
                                          name=ir.name + '.weight_DequantizeLinear', axis=axis))
        node.input[1] = w_out
        b_name = ir.input(2)
        bias = analysis.const(b_name).astype(np.float32).reshape(-1) if b_name else None
        if correct_bias and ir.inputs[0] in calibration.channel_means and \
                (ir.op != 'MatMul' or len(analysis.value(ir.inputs[0]).shape) == 2):
            base = bias if bias is not None else np.zeros(len(s_w), np.float32)
            bias = bias_correction(analysis, ir, w, w_deq, base, calibration.channel_means[ir.inputs[0]])
        if bias is None:
            continue
        s_b = (np.float64(s_x) * s_w.astype(np.float64)).astype(np.float32)
        b_q = np.clip(np.rint(bias.astype(np.float64) / s_b.astype(np.float64)), -INT32_MAX, INT32_MAX)
        bq_name = init(b_q.astype(np.int32), ir.name + '.bias_quantized')
        bs_name = init(s_b, ir.name + '.bias_scale')
        bz_name = init(np.zeros(s_b.shape, np.int32), ir.name + '.bias_zero_point')
        b_out = names.new(ir.name + '.bias_dequantized')
        new_nodes.append(helper.make_node('DequantizeLinear', [bq_name, bs_name, bz_name], [b_out],
                                          name=ir.name + '.bias_DequantizeLinear', axis=0))
        if len(node.input) > 2:
            node.input[2] = b_out
        else:
            node.input.append(b_out)

    # ------------------------------------------------------------------------------- activations
    quantized_nodes = set(plan.quantized_nodes)
    graph_outputs = {o.name for o in g.output}
    readers = {}
    for n in g.node:
        for k, i in enumerate(n.input):
            if i:
                readers.setdefault(i, []).append((n, k))
    params_out = {}
    param_names = {}
    for t in plan.tensors:
        p = qparams(t)
        params_out[t] = (p.scale, p.zero_point)
        root = plan.share[t]
        if root not in param_names:
            param_names[root] = (init(np.array(p.scale, np.float32), root + '_scale'),
                                 init(np.array(p.zero_point, np.uint8), root + '_zero_point'))
        s_name, z_name = param_names[root]
        produced = t in plan.produced
        targets = [(n, k) for n, k in readers.get(t, [])
                   if produced or n.name in quantized_nodes]
        source = t
        if produced and t in graph_outputs:
            source = names.new(t + '_float')
            for n in g.node:
                for k, o in enumerate(n.output):
                    if o == t:
                        n.output[k] = source
            dq_out = t
        else:
            dq_out = names.new(t + '_dequantized')
        q_out = names.new(t + '_quantized')
        new_nodes.append(helper.make_node('QuantizeLinear', [source, s_name, z_name], [q_out],
                                          name=t + '_QuantizeLinear'))
        new_nodes.append(helper.make_node('DequantizeLinear', [q_out, s_name, z_name], [dq_out],
                                          name=t + '_DequantizeLinear'))
        if dq_out != t:
            for n, k in targets:
                n.input[k] = dq_out

    g.initializer.extend(new_inits)
    g.node.extend(new_nodes)
    _toposort(g)
    from .prepare import prune_initializers
    prune_initializers(m)
    try:
        onnx.checker.check_model(m)
    except Exception as e:                              # pragma: no cover - a bug of ours
        raise ModelError('the QDQ model failed the ONNX checker: %s' % e) from None
    return m, params_out


def _toposort(g):
    """Order the nodes of graph ``g`` so that every input is written before it is read (stable)."""
    available = {i.name for i in g.input} | {t.name for t in g.initializer} | {''}
    pending = list(g.node)
    order = []
    while pending:
        rest = []
        for n in pending:
            if all(i in available for i in n.input):
                order.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in available})
            raise ModelError('the QDQ model reads undefined values %s' % missing[:5])
        pending = rest
    copies = [type(n)() for n in order]
    for c, n in zip(copies, order):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)
