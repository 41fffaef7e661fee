"""ONNX Runtime as an independent oracle for the int8 convolution kernels.

Single-node QLinearConv models (NCHW uint8 in and out, int8 OIHW weights with per-output-channel scales
and zero point 0, int32 bias) are run by ONNX Runtime on the CPU, with graph optimisation enabled and
disabled, and compared with QConv2d / QLinear given the same quantised tensors.  ONNX Runtime computes the
multiplier ``s_x * s_w / s_y`` in float32 (two roundings) where qvision rounds once from float64
(requant.multiplier), so an output may differ by one LSB where the product lands next to a rounding tie;
anything more is a bug on one side.  The fraction of differing outputs is printed (``pytest -s``) and
bounded.
"""
import functools

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernel_check import assert_within
from qvision_kernels import QConv2d, QLinear, requant

# ONNX Runtime's U8S8 kernels on x86 CPUs without VNNI multiply with VPMADDUBSW, whose int16 sum of two
# u8 * s8 products saturates beyond 32767 (255 * 127 * 2 does); with |w| <= 63 that cannot happen, so the
# oracle is exact on every x86 CPU (the same reason as the reduce_range option of ORT's quantizer).
W_ORT = 63
# Outputs allowed to differ by one LSB (multiplier rounded differently near a tie); measured ~0.
MAX_DIFFERING_FRACTION = 0.002


def qlinearconv_model(x_shape, w_oihw, bias, x_scale, x_zp, w_scale, y_scale, y_zp, strides, pads, dilations,
                      group):
    """A one-node ONNX model ``y = QLinearConv(x, ...)`` with every parameter an initializer."""
    inits = [
        numpy_helper.from_array(np.array(x_scale, np.float32), 'x_scale'),
        numpy_helper.from_array(np.array(x_zp, np.uint8), 'x_zero_point'),
        numpy_helper.from_array(w_oihw, 'w'),
        numpy_helper.from_array(np.asarray(w_scale, np.float32), 'w_scale'),
        numpy_helper.from_array(np.array(0, np.int8), 'w_zero_point'),
        numpy_helper.from_array(np.array(y_scale, np.float32), 'y_scale'),
        numpy_helper.from_array(np.array(y_zp, np.uint8), 'y_zero_point'),
        numpy_helper.from_array(bias, 'bias'),
    ]
    node = helper.make_node(
        'QLinearConv', ['x', 'x_scale', 'x_zero_point', 'w', 'w_scale', 'w_zero_point', 'y_scale',
                        'y_zero_point', 'bias'], ['y'],
        kernel_shape=list(w_oihw.shape[2:]), strides=list(strides), pads=list(pads),
        dilations=list(dilations), group=group)
    graph = helper.make_graph([node], 'qlinearconv', [helper.make_tensor_value_info('x', TensorProto.UINT8,
                                                                                  list(x_shape))],
                              [helper.make_tensor_value_info('y', TensorProto.UINT8, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    return model


def run_ort(model, x, optimize):
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=['CPUExecutionProvider'])
    return sess.run(None, {'x': x})[0]


# name: (n, c, h, w, oc, kh, kw, stride, pads (top, left, bottom, right), dilation, group, zp_x)
CASES = {
    'conv3x3': (1, 16, 12, 12, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, None),
    'conv3x3_s2_batch2': (2, 8, 13, 11, 24, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1, None),
    'conv1x1': (1, 64, 7, 7, 100, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1, None),
    'conv5x5_dilation2': (1, 8, 14, 14, 17, 5, 5, (1, 1), (4, 4, 4, 4), (2, 2), 1, None),
    'conv7x7_s2': (1, 4, 19, 18, 33, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), 1, None),
    'asym_pads_stride_1x2': (1, 12, 9, 10, 20, 3, 3, (1, 2), (0, 1, 2, 0), (1, 1), 1, None),
    'grouped_3x8': (1, 24, 8, 8, 48, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 3, None),
    'grouped_4x3': (1, 12, 8, 9, 20, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 4, None),
    'depthwise3x3_s2': (1, 32, 10, 10, 32, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 32, None),
    'depthwise5x5_batch2': (2, 17, 9, 9, 17, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), 17, None),
    'depth_multiplier2': (1, 8, 8, 8, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 8, None),
    'first_layer_cin3': (1, 3, 128, 128, 16, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1, None),
    'first_layer_6x6': (1, 3, 64, 64, 16, 6, 6, (2, 2), (2, 2, 2, 2), (1, 1), 1, None),
    'reduction_3x3x256': (1, 256, 6, 6, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, None),
    'zp_x0': (1, 16, 8, 8, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, 0),
    'zp_x255': (1, 16, 8, 8, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, 255),
}


def _spread(k, zp_x):
    # Expected spread of sum(w * (x - zp_x)) for uniform x in [0, 255] and w in [-63, 63].
    return max(1.0, np.sqrt(k * (21717.5 - 255.0 * zp_x + zp_x ** 2.0) * W_ORT * (W_ORT + 1) / 3.0))


@functools.lru_cache(maxsize=None)
def quantized_case(name):
    """The quantised tensors of case ``name`` in ONNX layouts, seeded by the case's position."""
    n, c, h, w, oc, kh, kw, stride, pads, dilation, group, zp_x = CASES[name]
    rng = np.random.default_rng([31337, sorted(CASES).index(name)])
    x = rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)
    weight = rng.integers(-W_ORT, W_ORT + 1, (oc, c // group, kh, kw)).astype(np.int8)
    zp_x = int(rng.integers(0, 256)) if zp_x is None else zp_x
    zp_y = int(rng.integers(0, 256))
    spread = _spread(kh * kw * c // group, zp_x)
    bias = rng.integers(-int(spread), int(spread) + 1, oc).astype(np.int32)
    x_scale = np.float32(rng.uniform(0.005, 0.05))
    w_scale = rng.uniform(0.001, 0.02, oc).astype(np.float32)
    y_scale = np.float32(x_scale * float(np.mean(w_scale)) * spread / 40.0)
    return dict(x=x, w=weight, bias=bias, x_scale=x_scale, x_zp=zp_x, w_scale=w_scale, y_scale=y_scale,
                y_zp=zp_y, stride=stride, pads=pads, dilation=dilation, group=group)


@functools.lru_cache(maxsize=None)
def ort_output(name, optimize):
    q = quantized_case(name)
    model = qlinearconv_model(q['x'].shape, q['w'], q['bias'], q['x_scale'], q['x_zp'], q['w_scale'],
                              q['y_scale'], q['y_zp'], q['stride'], q['pads'], q['dilation'], q['group'])
    return run_ort(model, q['x'], optimize)


def compare(ours, theirs, context):
    """At most one LSB apart, and few outputs differing at all; returns the differing fraction."""
    assert_within(ours, theirs, 1, context)
    frac = float(np.mean(ours != theirs))
    print('%s: %d outputs, %.4f %% differ by 1 LSB' % (context, ours.size, 100.0 * frac))
    assert frac <= MAX_DIFFERING_FRACTION, '%s: %.4f %% of the outputs differ' % (context, 100.0 * frac)
    # Not a vacuous comparison: the outputs are spread over the range, not clamped.
    assert len(np.unique(theirs)) > min(50, theirs.size // 4), context
    return frac


@pytest.mark.parametrize('optimize', [False, True], ids=['ort_opt_off', 'ort_opt_all'])
@pytest.mark.parametrize('name', sorted(CASES))
def test_qlinearconv_matches_onnxruntime(qconv_isa, name, optimize):
    q = quantized_case(name)
    x_nhwc = np.ascontiguousarray(q['x'].transpose(0, 2, 3, 1))
    w_ohwi = np.ascontiguousarray(q['w'].transpose(0, 2, 3, 1))
    mult = requant.multiplier(q['x_scale'], q['w_scale'], q['y_scale'])
    conv = QConv2d(w_ohwi, q['bias'], q['x_zp'], mult, q['y_zp'], stride=q['stride'], padding=q['pads'],
                   dilation=q['dilation'], groups=q['group'], isa=qconv_isa)
    ours = conv(x_nhwc, num_threads=2)
    theirs = ort_output(name, optimize).transpose(0, 2, 3, 1)
    compare(ours, theirs, 'QLinearConv %s isa=%s ort_optimize=%s' % (name, qconv_isa, optimize))


@pytest.mark.parametrize('optimize', [False, True], ids=['ort_opt_off', 'ort_opt_all'])
@pytest.mark.parametrize('m, k, n', [(1, 3, 16), (5, 17, 33), (64, 256, 100), (300, 64, 129)])
def test_fully_connected_as_1x1_qlinearconv(qconv_isa, m, k, n, optimize):
    # The FC path (QLinear) against ORT without QGemm: M pixels of a 1x1 QLinearConv over [M, K, 1, 1].
    rng = np.random.default_rng([4242, m, k, n])
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-W_ORT, W_ORT + 1, (n, k)).astype(np.int8)
    zp_x, zp_y = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    spread = _spread(k, zp_x)
    bias = rng.integers(-int(spread), int(spread) + 1, n).astype(np.int32)
    x_scale = np.float32(0.0173)
    w_scale = rng.uniform(0.001, 0.02, n).astype(np.float32)
    y_scale = np.float32(x_scale * float(np.mean(w_scale)) * spread / 40.0)
    model = qlinearconv_model((m, k, 1, 1), w.reshape(n, k, 1, 1), bias, x_scale, zp_x, w_scale, y_scale, zp_y,
                              (1, 1), (0, 0, 0, 0), (1, 1), 1)
    theirs = run_ort(model, x.reshape(m, k, 1, 1), optimize).reshape(m, n)
    fc = QLinear(w, bias, zp_x, requant.multiplier(x_scale, w_scale, y_scale), zp_y, isa=qconv_isa)
    compare(fc(x), theirs, 'FC M=%d K=%d N=%d isa=%s ort_optimize=%s' % (m, k, n, qconv_isa, optimize))


def test_ort_multiplier_differs_from_ours_somewhere():
    # The reason for the 1-LSB allowance, checked rather than assumed: over these cases' scales, a float32
    # chain s_x * s_w / s_y (ONNX Runtime) and one rounding from float64 (requant.multiplier) disagree for
    # some channels and never by more than one float32 ulp.
    total = differ = 0
    for name in CASES:
        q = quantized_case(name)
        ours = requant.multiplier(q['x_scale'], q['w_scale'], q['y_scale'])
        chain = (np.float32(q['x_scale']) * q['w_scale'].astype(np.float32)) / np.float32(q['y_scale'])
        ulps = np.abs(ours.view(np.int32).astype(np.int64) - chain.astype(np.float32).view(np.int32))
        assert ulps.max() <= 1, name
        total += ours.size
        differ += int((ulps > 0).sum())
    assert 0 < differ < total
