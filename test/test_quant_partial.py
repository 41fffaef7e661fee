"""Partial quantisation and the head-aware defaults: exactly the chosen nodes stay float (checked on the
engine's compiled plan: which int8 or float step each original node ended up in), blocks and the decode
sub-graph found on the shipped detector and the zoo models, and why the decode stays float."""
import collections
import os

import numpy as np
import pytest

from models import model_bytes
from qvision_ros.quantization import QuantConfig, calibrate, prepare, quantize
from qvision_ros.quantization import detector as det
from qvision_ros.runtime import Engine
from qvision_ros.runtime.zoo import calibration_data

DETECTOR = os.path.join(os.path.dirname(__file__), '..', 'qvision_ros', 'data', 'detector_320.onnx')


def engine_precisions(model_proto):
    """node name -> set of 'int8' / 'fp32': how the engine runs each node of the original model (a node
    fused into an int8 step is int8; a QuantizeLinear/DequantizeLinear of ours is skipped)."""
    engine = Engine(model_proto.SerializeToString(), num_threads=1)
    g = engine.graph
    out = collections.defaultdict(set)
    for n in g.nodes:
        if n.op in ('QuantizeLinear', 'DequantizeLinear', 'ToNCHW', 'ToNHWC'):
            continue
        dtypes = {g.values[o].dtype for o in n.outputs if o}
        precision = 'int8' if np.dtype(np.uint8) in dtypes else 'fp32'
        for name in n.origin:
            if not name.endswith(('_QuantizeLinear', '_DequantizeLinear')):
                out[name].add(precision)
    return out


def sandwiched(analysis, result):
    """Float nodes that the engine may run on int8 with the identical result: data movement reading a
    DequantizeLinear (``op(DQ(x)) = DQ(op(x))``, the engine moves the DQ past it), and non-weighted units
    that read only such values and whose outputs only QuantizeLinear reads (``Q(f(DQ(x)))`` is by
    definition what the int8 version computes, DESIGN.md section 3).  Keeping such a node float changes
    nothing."""
    from qvision_ros.quantization.analysis import MOVEMENT_OPS
    nodes = {n.name: n for n in result.model.graph.node}
    producer = {o: n for n in result.model.graph.node for o in n.output}
    readers = collections.defaultdict(list)
    for n in result.model.graph.node:
        for i in n.input:
            readers[i].append(n)
    outputs = {o.name for o in result.model.graph.output}
    floating = set(result.float_nodes)

    def from_dq(t):
        p = producer.get(t)
        while p is not None and p.op_type in MOVEMENT_OPS and p.name in floating:
            p = producer.get(p.input[0])
        return p is not None and p.op_type == 'DequantizeLinear'

    exact = {n for n in floating if n in nodes and nodes[n].op_type in MOVEMENT_OPS and from_dq(nodes[n].input[0])}
    for u in analysis.units:
        if u.nodes[0] not in floating or u.kind == 'weighted':
            continue
        inside = {o for m in u.nodes for o in nodes[m].output}
        ins = [i for m in u.nodes for i in nodes[m].input if i in producer and i not in inside]
        outs = [o for o in inside if o in outputs or any(r.name not in u.nodes for r in readers[o])]
        if ins and all(from_dq(i) for i in ins) and outs and all(
                o not in outputs and all(r.op_type == 'QuantizeLinear' for r in readers[o] if r.name not in u.nodes)
                for o in outs):
            exact.update(u.nodes)
    return exact


def assert_exactly_float(analysis, result, chosen):
    """The nodes of ``chosen`` are float in the QDQ model, and the engine runs the model as written:
    every node the plan quantises in int8, every float node in float - except a float node between a
    DequantizeLinear and a QuantizeLinear, which may run int8 with the identical result."""
    assert set(chosen) <= set(result.float_nodes)
    prec = engine_precisions(result.model)
    assert not {n for n, p in prec.items() if len(p) > 1}
    ran_float = {n for n, p in prec.items() if p == {'fp32'}}
    ran_int8 = {n for n, p in prec.items() if p == {'int8'}}
    exact = sandwiched(analysis, result)
    assert ran_int8 - exact == set(result.quantized_nodes) & set(prec)
    assert ran_float | (exact & ran_int8) == set(result.float_nodes) & set(prec)
    assert set(chosen) - exact, 'the selection must change something'
    assert (set(chosen) - exact) & set(prec) <= ran_float
    # float weighted layers keep float weights
    inits = {t.name for t in result.model.graph.initializer}
    for n in result.model.graph.node:
        if n.name in chosen and n.op_type in ('Conv', 'Gemm', 'MatMul'):
            assert n.input[1] in inits


@pytest.fixture(scope='module')
def yolo():
    config = QuantConfig(progress=False)
    prep = prepare(model_bytes('yolov8'), config)
    return prep, calibrate(prep, calibration_data((1, 3, 64, 64), 4), config)


@pytest.mark.parametrize('how', ['name', 'glob', 'op', 'block', 'user_block'])
def test_partial_quantization_leaves_exactly_the_chosen_nodes_float(yolo, how):
    prep, cal = yolo
    a = prep.analysis
    options = {'name': dict(keep_float=('/b2/b2.0/conv/Conv', '/n1/cat/Concat')),
               'glob': dict(keep_float=('/head/cv3.*',)),
               'op': dict(keep_float_ops=('Conv', 'MaxPool')),
               'block': dict(keep_float_blocks=('neck',)),
               'user_block': dict(blocks={'stem': ('/stem/',)}, keep_float_blocks=('stem',))}[how]
    config = QuantConfig(progress=False, **options)
    chosen = a.select(config.keep_float, config.keep_float_ops, config.keep_float_blocks, config.blocks)
    expected = {'name': 2, 'glob': 21, 'op': 60 + 3, 'block': len(a.blocks['neck']), 'user_block': 3}[how]
    assert len(chosen) == expected, sorted(chosen)
    result = quantize(prep, config=config, calibration=cal)
    assert_exactly_float(a, result, chosen)
    # the rest of the network is still int8: only the chosen units (and the decode) are float
    assert set(result.float_nodes) == chosen | set(result.decode_nodes) | {
        n for u in a.units if u.kind == 'float' for n in u.nodes} | _float_movement(a, result)


def _float_movement(a, result):
    """Movement nodes left float because no quantised unit reads their output."""
    return {n for u in a.units if u.kind == 'movement' for n in u.nodes if n in result.float_nodes}


def test_default_keeps_the_decode_float_and_the_rest_int8(yolo):
    prep, cal = yolo
    result = quantize(prep, config=QuantConfig(progress=False), calibration=cal)
    assert_exactly_float(prep.analysis, result, result.decode_nodes)
    ops = {prep.analysis.node[n].op for n in result.decode_nodes}
    assert {'Softmax', 'Sigmoid', 'Concat', 'Conv'} <= ops           # DFL, scores, box/score concat
    quantized_ops = collections.Counter(prep.analysis.node[n].op for n in result.quantized_nodes)
    assert quantized_ops['Conv'] == 59 and quantized_ops['Sigmoid'] == 53   # every conv and SiLU of the body


def test_blocks_of_the_shipped_detector():
    a = prepare(DETECTOR).analysis
    b = a.blocks
    assert all(n.startswith(('/detector/p2/', '/detector/p3/', '/detector/p4/', '/detector/p5/'))
               for n in b['backbone'])
    assert all(n.startswith(('/detector/up', '/detector/td', '/detector/down', '/detector/bu', '/detector/Concat'))
               for n in b['neck'])
    assert all(n.startswith(('/detector/head/box', '/detector/head/cls')) for n in b['head'])
    assert len(b['head']) == 6 * 7          # 3 scales x (box, class) x (3 convs + 2 SiLU of 2 nodes)
    every = {n.name for n in a.nodes}
    assert set(b['backbone']) | set(b['neck']) | set(b['head']) | a.decode == every
    assert sum(map(len, b.values())) + len(a.decode) == len(every)           # a partition
    assert {a.node[n].op for n in a.decode} == {'Concat', 'Reshape', 'Split', 'Transpose', 'Softmax', 'Conv',
                                               'Sub', 'Add', 'Mul', 'Sigmoid'}
    assert '/dfl/Conv' in a.decode and '/Concat_2' in a.decode and '/detector/head/cls.2/cls.2.2/Conv' not in a.decode
    # the head block named by the user includes the decode
    assert set(a.block_nodes('head')) == set(b['head']) | a.decode


@pytest.mark.parametrize('name, neck, head_ops', [('yolov5', False, {'Conv'}),
                                                  ('resnet', False, {'Gemm', 'GlobalAveragePool', 'Flatten'}),
                                                  ('mobilenetv2', False, {'Gemm', 'GlobalAveragePool', 'Flatten'}),
                                                  ('vgg', False, {'Gemm', 'Relu', 'Flatten'})])
def test_blocks_of_other_families(name, neck, head_ops):
    a = prepare(model_bytes(name)).analysis
    assert bool(a.blocks['neck']) == neck and a.blocks['backbone']
    assert {a.node[n].op for n in a.blocks['head']} == head_ops
    if name == 'yolov5':
        assert len(a.blocks['head']) == 3 and len(a.decode) > 20     # 3 detect convs; anchor decode float


def test_quantizing_the_decode_destroys_the_scores():
    """DESIGN.md section 3: one scale for box coordinates (0..320 px) and scores (0..1) quantises every
    score to zero; the head-aware default keeps them."""
    prep = prepare(DETECTOR, QuantConfig(progress=False))
    cal = calibrate(prep, det.CalibrationScenes(6), QuantConfig(progress=False))
    data = det.held_out_set(4)
    reference = det.outputs_of(det.runner(DETECTOR), data)
    sqnr = {}
    for quantize_decode in (False, True):
        r = quantize(prep, config=QuantConfig(progress=False, quantize_decode=quantize_decode), calibration=cal)
        outs = det.outputs_of(det.runner(r.model.SerializeToString()), data)
        sqnr[quantize_decode] = det.score_sqnr_db(outs, reference)
        if quantize_decode:
            assert max(float(o[:, 4:].max()) for o in outs) < 0.01 < max(float(o[:, 4:].max()) for o in reference)
    assert sqnr[False] > 15 and sqnr[True] < 1, sqnr
