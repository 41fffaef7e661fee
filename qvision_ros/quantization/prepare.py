"""The float model as the quantizer starts from it: loaded safely, every node named, batch norms folded
into their convolutions and the opset raised to 13 (per-channel DequantizeLinear needs it).

Each step is a small function on an ``onnx.ModelProto`` that keeps the model's outputs unchanged (the
BN fold up to float rounding); :func:`prepare_model` runs them in that order on a copy.
"""
import numpy as np

from ..errors import ModelError

QDQ_MIN_OPSET = 13


def load_proto(model):
    """A copy of the ModelProto of ``model`` (a path, ONNX bytes or a ModelProto), read without executing
    anything and checked as the engine checks it (:mod:`qvision_ros.runtime.onnx_import`)."""
    import onnx

    from ..runtime.onnx_import import _load_proto
    proto = _load_proto(model)
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


def default_opset(proto):
    for imp in proto.opset_import:
        if imp.domain in ('', 'ai.onnx'):
            return int(imp.version)
    raise ModelError('the model imports no default-domain (ai.onnx) opset')


def name_nodes(proto):
    """Give every node a unique name (``<op>_<index>`` for unnamed ones, as the engine names them), so
    that nodes can be selected, reported and matched across the float and the QDQ model."""
    seen = set()
    for i, n in enumerate(proto.graph.node):
        name = n.name or '%s_%d' % (n.op_type, i)
        if name in seen:
            name = '%s_%d' % (name, i)
        seen.add(name)
        n.name = name


def fold_batchnorm(proto):
    """``BatchNormalization(Conv(x, W, b))``, the conv's output read by nothing else, becomes one Conv::

        a = gamma / sqrt(var + eps)          W' = W * a[c]          b' = (b - mean) * a + beta

    computed in float64 and rounded once to float32 (the same algebra as the engine's pass, done here
    so that the int8 weights are quantised from the folded ones).  Returns the number of folds."""
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    readers = {}
    for n in proto.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    outputs = {o.name for o in proto.graph.output}
    producers = {o: n for n in proto.graph.node for o in n.output}
    removed = []
    for bn in proto.graph.node:
        if bn.op_type != 'BatchNormalization' or len([o for o in bn.output if o]) != 1:
            continue
        conv = producers.get(bn.input[0])
        if conv is None or conv.op_type != 'Conv' or readers.get(conv.output[0], 0) != 1 or \
                conv.output[0] in outputs or len(conv.input) < 2 or conv.input[1] not in inits or \
                (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits) or \
                any(p not in inits for p in bn.input[1:5]) or readers.get(conv.input[1], 0) != 1:
            continue
        eps = next((a.f for a in bn.attribute if a.name == 'epsilon'), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[p]).astype(np.float64) for p in bn.input[1:5])
        w = numpy_helper.to_array(inits[conv.input[1]])
        a = gamma / np.sqrt(var + eps)
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) \
            if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0])
        new_w = (w.astype(np.float64) * a.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        new_b = ((b - mean) * a + beta).astype(np.float32)
        wname, bname = conv.name + '.weight_bn', conv.name + '.bias_bn'
        proto.graph.initializer.append(numpy_helper.from_array(new_w, wname))
        proto.graph.initializer.append(numpy_helper.from_array(new_b, bname))
        del conv.input[1:]
        conv.input.extend([wname, bname])
        conv.output[0] = bn.output[0]
        removed.append(bn)
    for bn in removed:
        proto.graph.node.remove(bn)
    if removed:
        prune_initializers(proto)
    return len(removed)


def prune_initializers(proto):
    """Drop initializers that no node reads and that are no graph output."""
    used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
    kept = [t for t in proto.graph.initializer if t.name in used]
    if len(kept) != len(proto.graph.initializer):
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)
    names = {t.name for t in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in names or vi.name in used]
    if len(inputs) != len(proto.graph.input):
        del proto.graph.input[:]
        proto.graph.input.extend(inputs)


def raise_opset(proto):
    """Opset 11/12 -> 13 with ``onnx.version_converter`` (per-axis DequantizeLinear is opset 13)."""
    opset = default_opset(proto)
    if opset >= QDQ_MIN_OPSET:
        return proto
    from onnx import version_converter
    try:
        converted = version_converter.convert_version(proto, QDQ_MIN_OPSET)
    except Exception as e:
        raise ModelError('the model uses opset %d and could not be converted to opset %d, which per-channel '
                         'quantisation needs (%s); re-export it with opset_version=13 or newer'
                         % (opset, QDQ_MIN_OPSET, e)) from None
    proto.CopyFrom(converted)
    return proto


def prepare_model(model, fold_bn=True):
    """The steps of this module on a copy of ``model``: (proto, number of batch norms folded)."""
    proto = load_proto(model)
    raise_opset(proto)
    name_nodes(proto)
    folded = fold_batchnorm(proto) if fold_bn else 0
    return proto, folded
