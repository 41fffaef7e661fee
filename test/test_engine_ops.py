"""Single operators and small patterns, built with onnx.helper, against ONNX Runtime (float32).

Most cases put a 1x1 convolution before the operator under test, so that the engine runs the operator on
channels-last data and its axis / permutation / broadcast remapping is exercised; the plain variant runs
it on the model input directly (logical layout).
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernel_check import assert_allclose_rel
from models import ort_run
from qvision_ros.runtime import Engine

RTOL = 1e-4


def make_model(nodes, inputs, outputs, inits=(), opset=17):
    """ONNX bytes: ``inputs`` [(name, shape)] float32, ``outputs`` names (float32) or (name, elem type),
    ``inits`` {name: array}."""
    graph = helper.make_graph(
        nodes, 'case', [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info(*((o, TensorProto.FLOAT) if isinstance(o, str) else o), None)
         for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
    m.ir_version = 8
    return m.SerializeToString()


def check(mb, feeds, rtol=RTOL, engine_kwargs=None):
    engine = Engine(mb, num_threads=1, **(engine_kwargs or {}))
    ours = engine.run(feeds)
    ref = ort_run(mb, feeds)
    for k, (a, e) in enumerate(zip(ours, ref)):
        assert a.shape == e.shape, (a.shape, e.shape)
        assert a.dtype == e.dtype, (a.dtype, e.dtype)
        if a.dtype.kind == 'f':
            assert_allclose_rel(a, e, rtol, 'output %d' % k)
        else:
            np.testing.assert_array_equal(a, e)
    return engine


RNG = np.random.default_rng(1234)


def rand(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def with_conv(op_nodes, shape, inits=None, extra_inputs=(), outputs=('y',), opset=17, c_out=None):
    """x -> Conv 1x1 (C -> c_out) -> 't' -> op_nodes -> outputs."""
    c = shape[1]
    co = c_out or c
    inits = dict(inits or {})
    inits['cw'] = rand(co, c, 1, 1)
    inits['cb'] = rand(co)
    nodes = [helper.make_node('Conv', ['x', 'cw', 'cb'], ['t'], name='pre_conv')] + list(op_nodes)
    return make_model(nodes, [('x', shape)] + list(extra_inputs), list(outputs), inits, opset)


# ------------------------------------------------------------------------------------------ convolution

CONV_CASES = {
    'k3_s2_asym_pads': dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 1]),
    'k3_dilation2': dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2]),
    'k3_groups2': dict(kernel_shape=[3, 3], group=2, pads=[1, 1, 1, 1]),
    'depthwise_s2': dict(kernel_shape=[3, 3], group=8, strides=[2, 2], pads=[1, 1, 1, 1]),
    'same_upper_s2': dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad='SAME_UPPER'),
    'same_lower_s2': dict(kernel_shape=[4, 4], strides=[2, 2], auto_pad='SAME_LOWER'),
    'valid_5x3': dict(kernel_shape=[5, 3], auto_pad='VALID'),
    'k1_no_bias': dict(kernel_shape=[1, 1]),
}


@pytest.mark.parametrize('case', sorted(CONV_CASES))
def test_conv(case):
    a = dict(CONV_CASES[case])
    g = a.get('group', 1)
    kh, kw = a['kernel_shape']
    oc = 8 if g in (1, 2) else 8
    inits = {'w': rand(oc, 8 // g, kh, kw), 'b': rand(oc)}
    ins = ['x', 'w'] if case == 'k1_no_bias' else ['x', 'w', 'b']
    mb = make_model([helper.make_node('Conv', ins, ['y'], **a)], [('x', (1, 8, 10, 12))], ['y'], inits)
    check(mb, {'x': rand(1, 8, 10, 12)})


def test_conv_first_layer_and_batch():
    inits = {'w': rand(16, 3, 3, 3), 'b': rand(16)}
    mb = make_model([helper.make_node('Conv', ['x', 'w', 'b'], ['c'], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                      strides=[2, 2]), helper.make_node('Relu', ['c'], ['y'])],
                    [('x', (2, 3, 17, 16))], ['y'], inits)
    check(mb, {'x': rand(2, 3, 17, 16)})


# -------------------------------------------------------------------------------------------- pooling

POOL_CASES = [
    ('MaxPool', dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ('MaxPool', dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ('MaxPool', dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad='SAME_UPPER')),
    ('MaxPool', dict(kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])),
    ('MaxPool', dict(kernel_shape=[3, 3], dilations=[2, 2])),
    ('AveragePool', dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ('AveragePool', dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)),
    ('AveragePool', dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    ('GlobalAveragePool', {}),
    ('GlobalMaxPool', {}),
]


@pytest.mark.parametrize('op,attrs', POOL_CASES, ids=['%s%d' % (c[0], i) for i, c in enumerate(POOL_CASES)])
def test_pool(op, attrs):
    mb = with_conv([helper.make_node(op, ['t'], ['y'], **attrs)], (1, 5, 11, 9))
    check(mb, {'x': rand(1, 5, 11, 9)})


# --------------------------------------------------------------------------------------------- resize

RESIZE_CASES = [
    (dict(mode='nearest', coordinate_transformation_mode='asymmetric', nearest_mode='floor'), [1, 1, 2, 2], None),
    (dict(mode='nearest'), [1, 1, 2, 2], None),
    (dict(mode='nearest'), [1, 1, 3, 2], None),
    (dict(mode='nearest', coordinate_transformation_mode='half_pixel', nearest_mode='floor'), [1, 1, 2, 2], None),
    (dict(mode='nearest'), None, [1, 6, 11, 15]),
    (dict(mode='nearest', coordinate_transformation_mode='align_corners', nearest_mode='round_prefer_ceil'),
     None, [1, 6, 9, 5]),
    (dict(mode='linear'), [1, 1, 2, 2], None),
    (dict(mode='linear', coordinate_transformation_mode='align_corners'), None, [1, 6, 13, 7]),
    (dict(mode='linear', coordinate_transformation_mode='asymmetric'), [1, 1, 1.5, 2.5], None),
    (dict(mode='linear', coordinate_transformation_mode='pytorch_half_pixel'), None, [1, 6, 1, 17]),
]


@pytest.mark.parametrize('attrs,scales,sizes', RESIZE_CASES, ids=[str(i) for i in range(len(RESIZE_CASES))])
@pytest.mark.parametrize('after_conv', [True, False])
def test_resize(attrs, scales, sizes, after_conv):
    inits = {'roi': np.zeros(0, np.float32)}
    if scales is not None:
        inits['scales'] = np.array(scales, np.float32)
        ins = ['roi', 'scales']
    else:
        inits['sizes'] = np.array(sizes, np.int64)
        ins = ['roi', '', 'sizes']
    src = 't' if after_conv else 'x'
    node = helper.make_node('Resize', [src] + ins, ['y'], **attrs)
    mb = with_conv([node], (1, 6, 5, 7), inits) if after_conv else \
        make_model([node], [('x', (1, 6, 5, 7))], ['y'], inits)
    check(mb, {'x': rand(1, 6, 5, 7)})


# ------------------------------------------------------------------------------- ops with axes on NHWC

def _c(name, value):
    return {name: np.asarray(value)}


AXIS_CASES = {
    'concat_axis1_with_const': ([helper.make_node('Concat', ['t', 't', 'k'], ['y'], axis=1)],
                                _c('k', rand(1, 2, 6, 7))),
    'concat_axis_-1': ([helper.make_node('Concat', ['t', 't'], ['y'], axis=-1)], {}),
    'concat_axis2': ([helper.make_node('Concat', ['t', 't'], ['y'], axis=2)], {}),
    'split_axis1_uneven': ([helper.make_node('Split', ['t', 's'], ['y', 'z'], axis=1)],
                           _c('s', np.array([2, 4], np.int64))),
    'split_axis2_equal': ([helper.make_node('Split', ['t'], ['y', 'z'], axis=2)], {}),
    'slice_channels_step2': ([helper.make_node('Slice', ['t', 'st', 'en', 'ax', 'sp'], ['y'])],
                             dict(st=np.array([1], np.int64), en=np.array([6], np.int64),
                                  ax=np.array([1], np.int64), sp=np.array([2], np.int64))),
    'slice_hw_negative': ([helper.make_node('Slice', ['t', 'st', 'en', 'ax'], ['y'])],
                          dict(st=np.array([-4, 1], np.int64), en=np.array([-1, 1000], np.int64),
                               ax=np.array([2, 3], np.int64))),
    'slice_reverse_w': ([helper.make_node('Slice', ['t', 'st', 'en', 'ax', 'sp'], ['y'])],
                        dict(st=np.array([-1], np.int64), en=np.array([-(2 ** 63)], np.int64),
                             ax=np.array([3], np.int64), sp=np.array([-1], np.int64))),
    'softmax_axis1': ([helper.make_node('Softmax', ['t'], ['y'], axis=1)], {}),
    'logsoftmax_axis2': ([helper.make_node('LogSoftmax', ['t'], ['y'], axis=2)], {}),
    # the compiled softmax along every physical position of the axis (channels last: rows; H, W: columns)
    'softmax_axis2': ([helper.make_node('Softmax', ['t'], ['y'], axis=2)], {}),
    'softmax_axis_-1': ([helper.make_node('Softmax', ['t'], ['y'], axis=-1)], {}),
    'softmax_axis0': ([helper.make_node('Softmax', ['t'], ['y'], axis=0)], {}),
    # contiguous bands of the channels-last rows: the compiled row copy
    'slice_channels_band': ([helper.make_node('Slice', ['t', 'st', 'en', 'ax'], ['y'])],
                            dict(st=np.array([1], np.int64), en=np.array([4], np.int64), ax=np.array([1], np.int64))),
    'split_axis3_uneven': ([helper.make_node('Split', ['t', 's'], ['y', 'z'], axis=3)],
                           _c('s', np.array([5, 2], np.int64))),
    'reducemean_hw_keep': ([helper.make_node('ReduceMean', ['t'], ['y'], axes=[2, 3], keepdims=1)], {}),
    'reducemax_c_nokeep': ([helper.make_node('ReduceMax', ['t'], ['y'], axes=[1], keepdims=0)], {}),
    'argmax_c': ([helper.make_node('ArgMax', ['t'], ['y'], axis=1)], {}),
    'transpose_to_nhwc': ([helper.make_node('Transpose', ['t'], ['y'], perm=[0, 2, 3, 1])], {}),
    'transpose_hw': ([helper.make_node('Transpose', ['t'], ['y'], perm=[0, 1, 3, 2])], {}),
    'reshape_flatten': ([helper.make_node('Reshape', ['t', 'sh'], ['y'])], _c('sh', np.array([1, 6, -1]))),
    'flatten': ([helper.make_node('Flatten', ['t'], ['y'], axis=1)], {}),
    'squeeze_unsqueeze': ([helper.make_node('Unsqueeze', ['t', 'a0'], ['u']),
                           helper.make_node('Squeeze', ['u', 'a0'], ['y'])], _c('a0', np.array([2]))),
    'pad_constant': ([helper.make_node('Pad', ['t', 'p', 'v'], ['y'])],
                     dict(p=np.array([0, 0, 1, 2, 0, 1, 3, 0], np.int64), v=np.array(0.5, np.float32))),
    'pad_reflect': ([helper.make_node('Pad', ['t', 'p'], ['y'], mode='reflect')],
                    dict(p=np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))),
    'depth_first_shape_chain': ([helper.make_node('Shape', ['t'], ['s']),
                                 helper.make_node('Gather', ['s', 'i0'], ['n'], axis=0),
                                 helper.make_node('Unsqueeze', ['n', 'a0'], ['n1']),
                                 helper.make_node('Concat', ['n1', 'm1'], ['shape'], axis=0),
                                 helper.make_node('Reshape', ['t', 'shape'], ['y'])],
                                dict(i0=np.array(0, np.int64), a0=np.array([0], np.int64),
                                     m1=np.array([-1], np.int64))),
}


@pytest.mark.parametrize('case', sorted(AXIS_CASES))
def test_axis_ops_on_channels_last_data(case):
    nodes, inits = AXIS_CASES[case]
    outs = ['y', 'z'] if case.startswith('split') else [('y', TensorProto.INT64)] if case == 'argmax_c' else ['y']
    mb = with_conv(nodes, (1, 6, 6, 7), inits, outputs=outs)
    check(mb, {'x': rand(1, 6, 6, 7)})


def test_softmax_opset11_flattens_from_the_axis():
    for axis in (1, 3):
        mb = with_conv([helper.make_node('Softmax', ['t'], ['y'], axis=axis)], (1, 4, 3, 5), opset=11)
        check(mb, {'x': rand(1, 4, 3, 5)})


# -------------------------------------------------------------------------------------- element-wise

UNARY_CASES = {
    'Relu': ({}, []), 'Sigmoid': ({}, []), 'Tanh': ({}, []), 'LeakyRelu': (dict(alpha=0.1), []),
    'HardSwish': ({}, []), 'HardSigmoid': (dict(alpha=0.3, beta=0.4), []), 'Elu': ({}, []),
    'Softplus': ({}, []), 'Exp': ({}, []), 'Neg': ({}, []), 'Abs': ({}, []), 'Identity': ({}, []),
    'Clip': ({}, ['lo', 'hi']), 'Clip_min_only': ({}, ['lo']), 'Clip_max_only': ({}, ['', 'hi']),
}


@pytest.mark.parametrize('case', sorted(UNARY_CASES))
def test_unary(case):
    attrs, extra = UNARY_CASES[case]
    op = case.split('_')[0]
    inits = {'lo': np.array(-0.5, np.float32), 'hi': np.array(1.5, np.float32)}
    mb = with_conv([helper.make_node(op, ['t'] + extra, ['y'], **attrs)], (1, 5, 4, 6), inits)
    check(mb, {'x': rand(1, 5, 4, 6, lo=-4, hi=4)})


def test_silu_pattern_and_relu6_fused():
    nodes = [helper.make_node('Sigmoid', ['t'], ['s']), helper.make_node('Mul', ['s', 't'], ['u']),
             helper.make_node('Conv', ['u', 'w2'], ['v']), helper.make_node('Clip', ['v', 'lo', 'hi'], ['y'])]
    inits = {'w2': rand(4, 5, 3, 3), 'lo': np.array(0, np.float32), 'hi': np.array(6, np.float32)}
    mb = with_conv(nodes, (1, 5, 8, 8), inits)
    engine = check(mb, {'x': rand(1, 5, 8, 8, lo=-3, hi=3)})
    ops = [n.op for n in engine.graph.nodes]
    assert 'Silu' not in ops and 'Clip' not in ops and 'Sigmoid' not in ops and 'Mul' not in ops
    convs = [n for n in engine.graph.nodes if n.op == 'Conv']
    assert convs[0].attrs['_activation'] == 'silu' and convs[1].attrs['_act_max'] == 6
    # without the convolution fusion the Silu step runs the standalone kernel, with the same formula
    plain = check(mb, {'x': rand(1, 5, 8, 8, lo=-3, hi=3)}, engine_kwargs={'disable_passes': ['fuse_conv_sigmoid']})
    assert 'Silu' in [n.op for n in plain.graph.nodes]


def _sigmoid_extremes(shape):
    """Inputs across the sigmoid's whole range: +-100, +-1e30, 0 and -0.0 among random values of +-20."""
    x = rand(*shape, lo=-20, hi=20).reshape(-1)
    x[:8] = [100, -100, 1e30, -1e30, 0.0, -0.0, 88.5, -88.5]
    return x.reshape(shape)


@pytest.mark.parametrize('op', ['Sigmoid', 'Silu_pattern'])
def test_sigmoid_silu_fused_or_not(op):
    # conv -> activation fused; the same activation on a value two nodes read (not fusable) and on the
    # output of an Add: the standalone kernel.  All against ONNX Runtime, extreme inputs included.
    def act(src, dst):
        if op == 'Sigmoid':
            return [helper.make_node('Sigmoid', [src], [dst])]
        return [helper.make_node('Sigmoid', [src], [dst + '_s']), helper.make_node('Mul', [src, dst + '_s'], [dst])]
    nodes = (act('t', 'a1') + [helper.make_node('Conv', ['a1', 'w2', 'b2'], ['v'], pads=[1, 1, 1, 1])]
             + act('v', 'a2') + [helper.make_node('Add', ['v', 'a2'], ['s'])] + act('s', 'y')
             + [helper.make_node('Conv', ['x', 'w3'], ['z'])] + act('z', 'y2'))
    inits = {'w2': rand(7, 5, 3, 3), 'b2': rand(7), 'w3': rand(3, 5, 1, 1)}
    mb = with_conv(nodes, (1, 5, 6, 9), inits, outputs=('y', 'y2'))
    engine = check(mb, {'x': _sigmoid_extremes((1, 5, 6, 9))})
    fused = {n.outputs[0]: n.attrs['_activation'] for n in engine.graph.nodes if '_activation' in n.attrs}
    name = 'sigmoid' if op == 'Sigmoid' else 'silu'
    assert sorted(fused.values()) == [name, name], fused          # pre_conv -> a1, w3 conv -> y2
    standalone = [n for n in engine.graph.nodes if n.op in ('Sigmoid', 'Silu')]
    assert len(standalone) == 2, [n.op for n in engine.graph.nodes]


@pytest.mark.parametrize('op', ['Sigmoid', 'Silu'])
def test_gemm_sigmoid_fused(op):
    nodes = [helper.make_node('Gemm', ['a', 'w', 'b'], ['g'], transB=1)]
    if op == 'Sigmoid':
        nodes.append(helper.make_node('Sigmoid', ['g'], ['y']))
    else:
        nodes += [helper.make_node('Sigmoid', ['g'], ['s']), helper.make_node('Mul', ['s', 'g'], ['y'])]
    mb = make_model(nodes, [('a', (5, 24))], ['y'], {'w': rand(33, 24, lo=-3, hi=3), 'b': rand(33)})
    engine = check(mb, {'a': rand(5, 24)})
    assert [n.op for n in engine.graph.nodes] == ['Gemm']
    assert engine.graph.nodes[0].attrs['_activation'] == op.lower()


BINARY_CASES = {
    'add_channel_const': ('Add', ['t', 'k'], _c('k', rand(1, 6, 1, 1))),
    'add_rank3_const': ('Add', ['t', 'k'], _c('k', rand(6, 1, 1))),
    'mul_scalar': ('Mul', ['t', 'k'], _c('k', np.array(1.7, np.float32))),
    'mul_const_first_w': ('Mul', ['k', 't'], _c('k', rand(7))),
    'sub_const_first': ('Sub', ['k', 't'], _c('k', rand(1, 6, 5, 1))),
    'sub_const': ('Sub', ['t', 'k'], _c('k', rand(1, 6, 5, 7))),
    'div_const': ('Div', ['t', 'k'], _c('k', rand(6, 1, 1, lo=1, hi=2))),
    'pow2': ('Pow', ['t', 'k'], _c('k', np.array(2.0, np.float32))),
    'pow3': ('Pow', ['t', 'k'], _c('k', np.array(3.0, np.float32))),
    'add_two_runtime': ('Add', ['t', 't2'], {}),
    'mul_runtime_broadcast': ('Mul', ['t', 'g'], {}),
    'mul_runtime_broadcast_first': ('Mul', ['g', 't'], {}),
    'add_both_broadcast': ('Add', ['hh', 'g'], {}),
    'div_runtime': ('Div', ['t', 'g'], {}),
}


@pytest.mark.parametrize('case', sorted(BINARY_CASES))
def test_binary(case):
    op, ins, inits = BINARY_CASES[case]
    inits = dict(inits)
    inits['w2'] = rand(6, 6, 1, 1)
    pre = [helper.make_node('Conv', ['t', 'w2'], ['t2']),
           helper.make_node('GlobalAveragePool', ['t2'], ['g0']),
           helper.make_node('Sigmoid', ['g0'], ['g']),
           helper.make_node('ReduceMean', ['t2'], ['hh'], axes=[1, 3], keepdims=1)]
    mb = with_conv(pre + [helper.make_node(op, ins, ['y'])], (1, 6, 5, 7), inits)
    check(mb, {'x': rand(1, 6, 5, 7)})


def test_binary_with_plain_operand_converted_to_nhwc():
    """An NHWC conv output added to a 4-D tensor that comes out of a Reshape (logical layout)."""
    nodes = [helper.make_node('Reshape', ['x2', 'sh'], ['r']), helper.make_node('Add', ['t', 'r'], ['y'])]
    mb = with_conv(nodes, (1, 4, 3, 5), dict(sh=np.array([1, 4, 3, 5], np.int64)),
                   extra_inputs=[('x2', (1, 60))])
    check(mb, {'x': rand(1, 4, 3, 5), 'x2': rand(1, 60)})


# ----------------------------------------------------------------------------------- matrix products

GEMM_CASES = {
    'transB': (dict(transB=1), (10, 24), (10,)),
    'noTransB_alpha_beta': (dict(alpha=0.5, beta=2.0), (24, 10), (1, 10)),
    'no_bias': (dict(transB=1), (10, 24), None),
    'transA': (dict(transA=1), (24, 10), (10,)),
}


@pytest.mark.parametrize('case', sorted(GEMM_CASES))
def test_gemm(case):
    attrs, wshape, bshape = GEMM_CASES[case]
    inits = {'w': rand(*wshape)}
    ins = ['a', 'w']
    if bshape:
        inits['b'] = rand(*bshape)
        ins.append('b')
    ashape = (24, 3) if attrs.get('transA') else (3, 24)
    nodes = [helper.make_node('Gemm', ins, ['g'], **attrs), helper.make_node('Relu', ['g'], ['y'])]
    mb = make_model(nodes, [('a', ashape)], ['y'], inits)
    check(mb, {'a': rand(*ashape)})


def test_matmul_const_and_runtime():
    nodes = [helper.make_node('MatMul', ['a', 'w'], ['m']), helper.make_node('MatMul', ['m', 'b'], ['y'])]
    mb = make_model(nodes, [('a', (2, 5, 8)), ('b', (2, 6, 3))], ['y'], {'w': rand(8, 6)})
    check(mb, {'a': rand(2, 5, 8), 'b': rand(2, 6, 3)})


# ------------------------------------------------------------------------------- batch normalisation

def test_batchnorm_alone_and_after_conv():
    c = 6
    bn = {k + s: v for s in ('1', '2') for k, v in (('g', rand(c, lo=0.5, hi=1.5)), ('be', rand(c)),
                                                   ('mu', rand(c)), ('var', rand(c, lo=0.5, hi=2)))}
    nodes = [helper.make_node('BatchNormalization', ['t', 'g1', 'be1', 'mu1', 'var1'], ['b1'], epsilon=1e-3),
             helper.make_node('Add', ['b1', 't'], ['s']),
             helper.make_node('BatchNormalization', ['s', 'g2', 'be2', 'mu2', 'var2'], ['y'])]
    mb = with_conv(nodes, (1, c, 5, 5), bn)
    engine = check(mb, {'x': rand(1, c, 5, 5)})
    assert [n.op for n in engine.graph.nodes].count('BatchNormalization') == 0


def test_global_pools_on_3d_data_and_argmax_last_index():
    nodes = [helper.make_node('GlobalAveragePool', ['x'], ['a']), helper.make_node('GlobalMaxPool', ['x'], ['b']),
             helper.make_node('Add', ['a', 'b'], ['y'])]
    check(make_model(nodes, [('x', (2, 4, 9))], ['y']), {'x': rand(2, 4, 9)})
    x = np.round(rand(1, 5, 3, 4) * 2) / 2                     # ties, so that the index choice matters
    mb = with_conv([helper.make_node('ArgMax', ['t'], ['y'], axis=1, select_last_index=1)], (1, 5, 3, 4),
                   outputs=[('y', TensorProto.INT64)])
    check(mb, {'x': x})


def test_misc_light_ops():
    """Where / Equal / Cast / Expand / Tile / Gather on run-time data (NumPy reference at run time)."""
    nodes = [helper.make_node('Greater', ['x', 'zero'], ['m']),
             helper.make_node('Where', ['m', 'x', 'half'], ['w']),
             helper.make_node('Cast', ['m'], ['mf'], to=TensorProto.FLOAT),
             helper.make_node('Add', ['w', 'mf'], ['a']),
             helper.make_node('Expand', ['a', 'es'], ['e']),
             helper.make_node('Tile', ['e', 'reps'], ['ti']),
             helper.make_node('Gather', ['ti', 'idx'], ['y'], axis=1)]
    inits = dict(zero=np.array(0, np.float32), half=np.array(0.5, np.float32),
                 es=np.array([2, 1, 1], np.int64), reps=np.array([1, 2, 1], np.int64),
                 idx=np.array([[0, 3], [1, 1]], np.int64))
    mb = make_model(nodes, [('x', (1, 3, 4))], ['y'], inits)
    check(mb, {'x': rand(1, 3, 4)})
