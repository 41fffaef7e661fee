"""Channels-last layout assignment: the last pass before lowering.

Inside the engine every 4-D activation that feeds or leaves a spatial operator (convolution, pooling,
resize) is stored NHWC; the kernels want it so.  The graph keeps logical (NCHW) shapes and axes; each
value gets ``layout = 'NHWC'`` or None (stored in its logical order), and explicit ``ToNHWC`` / ``ToNCHW``
nodes convert where a producer and a reader disagree.  Readers fall in four groups:

* spatial ops (Conv, QConv, pooling, Resize on H and W): need NHWC, produce NHWC;
* element-wise ops (unary, binary with broadcasting, Q/DQ per tensor, LUTs): run on whatever layout their
  4-D inputs have (constants are permuted at lowering), so NHWC flows through them;
* ops with an axis that can be renumbered (Concat, Split, Slice, Softmax, Reduce* keeping dims,
  Transpose): run on NHWC with the axis (or permutation) mapped to the physical one;
* everything else (Reshape, Flatten, Gather, MatMul...): needs the logical order; an NHWC input is
  converted first (a free reshape when H * W == 1 or C == 1, e.g. after a global pool).

Model inputs arrive in their logical layout and outputs leave in it.
"""
import numpy as np

from .graph import NHWC_TO_NCHW, Node
from .ops import ELEMENTWISE_UNARY, BINARY

SPATIAL = {'Conv', 'QConv', 'MaxPool', 'AveragePool', 'QAveragePool', 'GlobalAveragePool',
           'QGlobalAveragePool', 'GlobalMaxPool'}
ELEMENTWISE = (set(ELEMENTWISE_UNARY) | {'QLut', 'Int8ToUint8', 'Uint8ToInt8', 'Cast', 'Not', 'Silu'})
BROADCASTING = set(BINARY) | {'QAdd', 'QMul', 'Where', 'Max', 'Min', 'Sum', 'Mean'}
AXIS_OPS = {'Concat', 'QConcat', 'Split', 'Slice', 'Softmax', 'LogSoftmax', 'Transpose', 'ReduceMean',
            'ReduceSum', 'ReduceMax', 'ReduceMin', 'ArgMax', 'ArgMin'}


def physical_axis(axis, rank=4):
    """Physical position of logical ``axis`` of an NHWC-stored 4-D tensor (N->0, C->3, H->1, W->2)."""
    return NHWC_TO_NCHW[axis % rank]


def _is4d(graph, name):
    v = graph.values[name]
    return v.shape is not None and len(v.shape) == 4 and not v.is_const


def _resize_is_spatial(graph, node):
    x = graph.values[node.inputs[0]]
    y = graph.values[node.outputs[0]]
    return len(x.shape) == 4 and x.shape[:2] == y.shape[:2]


def _qdq_per_tensor(graph, node):
    s = graph.const(node.input(1))
    return s is not None and s.size == 1


def _axis_ok(graph, node):
    """Can this axis op run on NHWC data (its axes renumbered)?"""
    op = node.op
    rank = len(graph.values[node.inputs[0]].shape)
    if rank != 4:
        return False
    if op in ('Softmax', 'LogSoftmax'):
        axis = node.attrs.get('axis', -1 if graph.opset >= 13 else 1) % 4
        return graph.opset >= 13 or axis == 3
    if op in ('ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'ArgMax', 'ArgMin'):
        return bool(node.attrs.get('keepdims', 1)) and not node.attrs.get('select_last_index', 0) and all(
            graph.values[i].is_const for i in node.inputs[1:] if i)
    if op == 'Slice':
        return all(graph.values[i].is_const for i in node.inputs[1:] if i)
    return True


def wants(graph, node):
    """'NHWC' (needs channels-last 4-D data inputs), 'follow' (runs on either) or 'plain'."""
    op = node.op
    if op in SPATIAL:
        return 'NHWC' if len(graph.values[node.inputs[0]].shape) == 4 else 'plain'
    if op in ('Resize', 'Upsample'):
        return 'NHWC' if _resize_is_spatial(graph, node) else 'plain'
    if op in ('QuantizeLinear', 'DequantizeLinear'):
        return 'follow' if _qdq_per_tensor(graph, node) else 'plain'
    if op in ELEMENTWISE or op in BROADCASTING:
        return 'follow'
    if op in AXIS_OPS:
        return 'follow' if _axis_ok(graph, node) else 'plain'
    return 'plain'


def assign_layout(graph):
    """Give every value its storage layout and insert the conversions (see the module docstring)."""
    cache = {}
    new_nodes = []

    def convert(name, target):
        key = (name, target)
        if key not in cache:
            v = graph.values[name]
            out = graph.unique_name('%s.%s' % (name, target.lower()))
            graph.add_value(out, v.shape, v.dtype, layout='NHWC' if target == 'NHWC' else None)
            op = 'ToNHWC' if target == 'NHWC' else 'ToNCHW'
            new_nodes.append(Node(op, [name], [out], {}, '%s/%s' % (name, op), '', []))
            cache[key] = out
        return cache[key]

    for node in graph.nodes:
        mode = wants(graph, node)
        data = [i for i in node.inputs if i and not graph.values[i].is_const]
        if mode == 'follow':
            data4 = [i for i in data if _is4d(graph, i)]
            nhwc = any(graph.values[i].layout == 'NHWC' for i in data4)
            out_rank4 = all(graph.values[o].shape is not None and len(graph.values[o].shape) == 4
                            for o in node.outputs if o)
            if nhwc and (len(data4) != len(data) or not out_rank4) and node.op not in ('Transpose',):
                mode = 'plain'          # a lower-rank run-time operand: go through the logical order
            elif node.op == 'Transpose':
                mode = 'transpose'
            else:
                mode = 'NHWC' if nhwc else 'plain'
        target = 'NHWC' if mode == 'NHWC' else None
        for k, name in enumerate(node.inputs):
            if not name or graph.values[name].is_const:
                continue
            v = graph.values[name]
            if mode == 'transpose':
                continue
            if mode == 'NHWC' and (k == 0 or node.op not in SPATIAL and node.op not in ('Resize', 'Upsample')):
                if _is4d(graph, name) and v.layout != 'NHWC':
                    node.inputs[k] = convert(name, 'NHWC')
            elif mode == 'plain' and v.layout == 'NHWC':
                node.inputs[k] = convert(name, 'NCHW')
        for o in node.outputs:
            if not o:
                continue
            v = graph.values[o]
            v.layout = 'NHWC' if (target == 'NHWC' and v.shape is not None and len(v.shape) == 4) else None
        new_nodes.append(node)
    graph.nodes = new_nodes
    _quantize_to_nhwc(graph)
    for k, name in enumerate(graph.outputs):
        if graph.values[name].layout == 'NHWC':
            inner = graph.unique_name(name + '.nhwc')
            v = graph.values[name]
            graph.add_value(inner, v.shape, v.dtype, layout='NHWC')
            for n in graph.nodes:
                n.outputs = [inner if o == name else o for o in n.outputs]
                n.inputs = [inner if i == name else i for i in n.inputs]
            v.layout = None
            graph.nodes.append(Node('ToNCHW', [inner], [name], {}, name + '/ToNCHW', '', []))
    return graph


def _quantize_to_nhwc(graph):
    """``ToNHWC(QuantizeLinear(x))`` of a float model input: one step that quantises and writes NHWC
    (``_to_nhwc``), when the quantised NCHW tensor has no other reader."""
    producers = graph.producers()
    consumers = graph.consumers()
    for conv in list(graph.nodes):
        if conv.op != 'ToNHWC':
            continue
        q = producers.get(conv.inputs[0])
        if q is None or q.op != 'QuantizeLinear' or len(consumers.get(q.outputs[0], [])) != 1 \
                or q.outputs[0] in graph.outputs or wants(graph, q) != 'follow' \
                or graph.values[q.inputs[0]].layout is not None:
            continue
        # only where the lowering has the fused step: float32 data, per-tensor scale and zero point
        s, zp = graph.const(q.input(1)), graph.const(q.input(2))
        if graph.values[q.inputs[0]].dtype != np.float32 or s is None or s.size != 1 \
                or (zp is not None and zp.size != 1):
            continue
        q.outputs = list(conv.outputs)
        q.attrs = dict(q.attrs, _to_nhwc=True)
        graph.nodes.remove(conv)


def permute_const(array, layout):
    """A constant operand of an op running on NHWC data, in physical order: left-padded with 1s to
    rank 4 (NumPy broadcasting), then permuted NCHW -> NHWC."""
    a = np.asarray(array)
    if layout != 'NHWC' or a.ndim > 4:
        return a
    a = a.reshape((1,) * (4 - a.ndim) + a.shape)
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))
