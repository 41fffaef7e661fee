"""Each optional graph pass leaves the model's outputs unchanged: the model is compiled with every pass
and with the pass switched off, and the outputs compared; the pass must also have changed the graph (so
that the comparison is not vacuous).

Float rewrites agree to float32 rounding.  QDQ fusions: the data-movement and lookup-table fusions are
bit-exact with the float route ``Q(op(DQ(x)))``; the arithmetic ones (conv, add, mul, concat, average)
compute the same formula with integer accumulators and one multiplier, so they may differ by one step
where a value lands next to a rounding tie, and such a step may grow through later layers: bounded at 2.
"""
import collections

import numpy as np
import pytest

from kernel_check import assert_allclose_rel
from models import model_bytes_unfolded, output_scales, qdq_bytes, step_differences
from qvision_ros.runtime import Engine


def _ops(engine):
    return collections.Counter(n.op for n in engine.graph.nodes)


def _x(engine, seed=0):
    return np.random.default_rng(seed).random(engine.inputs[0].shape, dtype=np.float32)


FLOAT_CASES = [('fold_batchnorm', 'resnet'), ('fold_batchnorm', 'yolov8'), ('fuse_conv_activation', 'resnet'),
               ('fuse_conv_activation', 'mobilenetv2'), ('fuse_silu', 'yolov8'), ('fuse_conv_sigmoid', 'yolov8'),
               ('fuse_conv_sigmoid', 'yolov5')]


@pytest.mark.parametrize('pass_name,model', FLOAT_CASES)
def test_float_pass_keeps_outputs(pass_name, model):
    mb = model_bytes_unfolded(model)
    full = Engine(mb, num_threads=1)
    without = Engine(mb, num_threads=1, disable_passes=[pass_name])
    assert _structure(full) != _structure(without), 'the pass did nothing on this model'
    x = _x(full)
    for a, b in zip(full.run({'images': x}), without.run({'images': x})):
        assert_allclose_rel(a, b, 1e-5, '%s on %s' % (pass_name, model))


def test_eliminate_identity_keeps_outputs():
    from onnx import TensorProto, helper
    from test_engine_ops import make_model
    rng = np.random.default_rng(0)
    nodes = [helper.make_node('Conv', ['images', 'w'], ['c']), helper.make_node('Identity', ['c'], ['i']),
             helper.make_node('Dropout', ['i'], ['d']), helper.make_node('Cast', ['d'], ['f'], to=TensorProto.FLOAT),
             helper.make_node('Reshape', ['f', 's'], ['r']), helper.make_node('Relu', ['r'], ['y'])]
    mb = make_model(nodes, [('images', (1, 3, 5, 5))], ['y'],
                    {'w': rng.random((4, 3, 3, 3), dtype=np.float32), 's': np.array([1, 4, 3, 3])})
    full = Engine(mb, num_threads=1)
    without = Engine(mb, num_threads=1, disable_passes=['eliminate_identity'])
    assert _ops(full) == {'ToNHWC': 1, 'Conv': 1, 'ToNCHW': 1}, _ops(full)
    assert _ops(without)['Identity'] == 1
    x = _x(full)
    np.testing.assert_array_equal(full.run({'images': x})[0], without.run({'images': x})[0])


def _structure(engine):
    return [(n.op, tuple(n.inputs)) for n in engine.graph.nodes]


QDQ_CASES = [('fuse_qdq_conv', 'resnet'), ('fuse_qdq_conv', 'vgg'), ('fuse_qdq_conv', 'yolov8'),
             ('fuse_qdq_binary', 'resnet'), ('fuse_qdq_binary', 'yolov5'), ('fuse_qdq_concat', 'yolov8'),
             ('fuse_qdq_average', 'mobilenetv2'), ('fuse_qdq_data_movement', 'yolov8'),
             ('fuse_qdq_data_movement', 'vgg'), ('fuse_qdq_lut', 'yolov8'), ('fuse_qdq_lut', 'yolov5'),
             ('compose_luts', 'yolov8'), ('compose_luts', 'yolov5'), ('merge_concat_slices', 'yolov8'),
             ('fold_concat_rescale', 'yolov8')]
EXACT = {'fuse_qdq_data_movement', 'fuse_qdq_lut', 'compose_luts', 'merge_concat_slices', 'fold_concat_rescale'}
# sink_dequantize followed by the Q(DQ(x)) elimination of fuse_qdq_lut reaches the same graph as
# fuse_qdq_data_movement (it exists for QAT exports without a Q after a Split): switch both off
ALSO_DISABLE = {'fuse_qdq_data_movement': ['sink_dequantize']}


@pytest.mark.parametrize('pass_name,model', QDQ_CASES)
def test_qdq_pass_keeps_outputs(pass_name, model):
    qb = qdq_bytes(model)
    full = Engine(qb, num_threads=1)
    without = Engine(qb, num_threads=1, disable_passes=[pass_name] + ALSO_DISABLE.get(pass_name, []))
    assert _structure(full) != _structure(without), 'the pass did nothing on this model'
    scales = output_scales(qb)
    for seed in (0, 1):
        x = _x(full, seed)
        for a, b, s in zip(full.run({'images': x}), without.run({'images': x}), scales):
            d = step_differences(a, b, s)
            hist = np.bincount(d.reshape(-1))
            print('%s on %s: steps histogram %s' % (pass_name, model, hist.tolist()))
            if pass_name in EXACT:
                np.testing.assert_array_equal(a, b)
            else:
                assert d.max() <= 2, hist


def test_all_qdq_fusions_off_is_the_float_route():
    """With every QDQ fusion off the model runs as float ops between explicit Q and DQ: compare with the
    fully fused int8 graph."""
    qb = qdq_bytes('resnet')
    off = ['fuse_qdq_conv', 'fuse_qdq_binary', 'fuse_qdq_concat', 'fuse_qdq_average', 'fuse_qdq_data_movement',
           'sink_dequantize', 'fuse_qdq_lut']
    full = Engine(qb, num_threads=1)
    plain = Engine(qb, num_threads=1, disable_passes=off)
    assert not any(op.startswith('Q') and op != 'QuantizeLinear' for op in _ops(plain))
    assert _ops(full)['QConv'] == 15
    x = _x(full)
    d = step_differences(full.run({'images': x})[0], plain.run({'images': x})[0], output_scales(qb)[0])
    assert d.max() <= 2


def test_unknown_pass_name():
    with pytest.raises(ValueError, match='optional ones'):
        Engine(qdq_bytes('vgg'), disable_passes=['propagate'])


def test_split_conv_for_slices_is_exact(monkeypatch):
    """The C2f convolutions split per slice (forced on at this small size) give the same bytes."""
    from qvision_ros.runtime import passes
    monkeypatch.setattr(passes, 'SPLIT_MIN_PIXELS', 0)
    qb = qdq_bytes('yolov8')
    full = Engine(qb, num_threads=1)
    without = Engine(qb, num_threads=1, disable_passes=['split_conv_for_slices'])
    assert _ops(full)['QConv'] == _ops(without)['QConv'] + 8, (_ops(full), _ops(without))
    assert _ops(full)['Slice'] < _ops(without)['Slice']
    for seed in (0, 1):
        x = _x(full, seed)
        np.testing.assert_array_equal(full.run({'images': x})[0], without.run({'images': x})[0])
