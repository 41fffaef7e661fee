"""Golden values for the quantisation arithmetic of qvision_kernels.requant (DESIGN.md section 3).

Rounding (half to even, in float32), saturation, the int32 -> float32 conversion of large accumulators, the
multiplier (float64, rounded once), quantize / dequantize against ONNX Runtime's QuantizeLinear /
DequantizeLinear, the bounds of fused activations (degenerate ranges included) and the folding of the input
zero point into the bias.
"""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qvision_kernels import KernelError, requant


# --------------------------------------------------------------------------------------------------------
# requantize

def test_round_half_to_even_before_the_zero_point():
    # acc * 0.5 = 0.5, 1.5, 2.5, -0.5, -1.5, 3.5, -2.5 -> 0, 2, 2, 0, -2, 4, -2; then + 100.
    y = requant.requantize(np.array([1, 3, 5, -1, -3, 7, -5]), np.float32(0.5), 100)
    assert y.dtype == np.uint8
    assert y.tolist() == [100, 102, 102, 100, 98, 104, 98]
    # Ties that exist only in float32: float32(0.1) * 5 is exactly 0.5 in float32 (0.50000000745 in
    # float64), float32(0.7) * 5 is 3.5 (3.49999994 in float64), float32(0.3) * 15 is 4.5.
    y = requant.requantize(np.array([5, 5, 15]), np.array([0.1, 0.7, 0.3], np.float32), 100)
    assert y.tolist() == [100, 104, 104]


def test_saturation_and_bounds():
    acc = np.array([-10 ** 6, -200, -129, -128, -1, 0, 1, 126, 127, 128, 10 ** 6, 2 ** 31 - 1, -2 ** 31])
    assert requant.requantize(acc, 1.0, 128).tolist() == [0, 0, 0, 0, 127, 128, 129, 254, 255, 255, 255, 255,
                                                           0]
    assert requant.requantize(acc, 1.0, 0).tolist() == [0, 0, 0, 0, 0, 0, 1, 126, 127, 128, 255, 255, 0]
    assert requant.requantize(acc, 1.0, 255).tolist() == [0, 55, 126, 127, 254, 255, 255, 255, 255, 255, 255,
                                                           255, 0]
    # Narrowed bounds (fused activations), including a single value.
    assert requant.requantize(acc, 1.0, 128, 128, 134).tolist() == [128] * 6 + [129, 134, 134, 134, 134, 134,
                                                                               128]
    assert requant.requantize(acc, 1.0, 128, 77, 77).tolist() == [77] * 13
    # A multiplier so large that float32(acc) * M overflows to +-inf still saturates; acc == 0 gives zp.
    with np.errstate(over='ignore'):
        y = requant.requantize(np.array([-3, 0, 3]), np.float32(3e38), 40)
    assert y.tolist() == [0, 40, 255]


@pytest.mark.parametrize('lo, hi', [(-1, 255), (0, 256), (10, 9), (300, 400)])
def test_bad_bounds(lo, hi):
    with pytest.raises(KernelError, match='0 <= lo <= hi <= 255'):
        requant.requantize(np.zeros(3, np.int32), 1.0, 0, lo, hi)


def test_float32_conversion_of_large_accumulators():
    # Above 2**24 not every int32 is a float32: acc is rounded to nearest even before the multiply.
    # 2**24 + 2**16 + 1 -> 2**24 + 2**16 (tie, even significand): * 2**-17 = 128.5 -> 128 (exact: 129).
    # 2**24 + 2**16 + 3 -> 2**24 + 2**16 + 4:                       * 2**-17 = 128.50003 -> 129.
    m = np.float32(2.0 ** -17)
    base = 2 ** 24 + 2 ** 16
    acc = np.array([base + 1, base + 3, base - 1, -(base + 1), 2 ** 24 + 1], np.int32)
    assert np.float32(acc[0]) == np.float32(base)
    assert requant.requantize(acc[:3], m, 0).tolist() == [128, 129, 128]
    assert requant.requantize(acc[3:4], m, 255).tolist() == [127]
    assert requant.requantize(acc[4:], np.float32(2.0 ** -16), 0).tolist() == [255]   # 256.0 saturates
    # int64 accumulators convert the same way (the references accumulate in int64).
    assert requant.requantize(acc.astype(np.int64)[:3], m, 0).tolist() == [128, 129, 128]


def test_requantize_is_float32_throughout():
    # Against a literal scalar model: float32(acc) * float32(M) in float32, rint, + zp, clamp.
    rng = np.random.default_rng(3)
    acc = rng.integers(-2 ** 31, 2 ** 31, 20000).astype(np.int64)
    acc[:1000] = rng.integers(-3000, 3000, 1000)
    mult = rng.uniform(0, 1e-7, 20000).astype(np.float32)
    mult[:1000] = np.array([0.1, 0.3, 0.7, 0.5, 0.25], np.float32)[rng.integers(0, 5, 1000)]
    zp = 77
    want = []
    for a, m in zip(acc.tolist(), mult.tolist()):
        v = float(np.float32(np.float32(a) * np.float32(m)))
        r = int(np.rint(v)) + zp
        want.append(min(255, max(0, r)))
    assert requant.requantize(acc, mult, zp).tolist() == want


def test_per_channel_multiplier_broadcasts_on_the_last_axis():
    acc = np.arange(24).reshape(2, 3, 4) * 10
    mult = np.array([0.0, 0.1, 0.5, 1.0], np.float32)
    y = requant.requantize(acc, mult, 3)
    assert y.shape == (2, 3, 4)
    assert y[1, 2].tolist() == [3, 3 + 21, 3 + 110, 3 + 230]     # acc 200, 210, 220, 230
    assert y[0, 0].tolist() == [3, 4, 3 + 10, 3 + 30]               # acc 0, 10, 20, 30


# --------------------------------------------------------------------------------------------------------
# multiplier

def test_multiplier_golden_values():
    # float32 scales as they come from ONNX.  One rounding from float64 gives 0x3ea4881e; the float32 chain
    # (s_in * s_w) / s_out that ONNX Runtime uses gives 0x3ea4881d.
    s_in, s_w, s_out = np.float32(0.0517), np.float32(0.0951), np.float32(0.0153)
    m = requant.multiplier(s_in, s_w, s_out)
    assert m.dtype == np.float32 and m.shape == ()
    assert m.view(np.uint32) == 0x3ea4881e
    assert (np.float32(s_in * s_w) / s_out).view(np.uint32) == 0x3ea4881d
    m = requant.multiplier(np.float32(0.0829), np.float32(0.0415), np.float32(0.0554))
    assert m.view(np.uint32) == 0x3d7e5cc2
    assert requant.multiplier(0.5, 0.25, 2.0) == np.float32(0.0625)


def test_multiplier_is_float64_rounded_once():
    rng = np.random.default_rng(11)
    s_in = rng.uniform(1e-4, 1, 1000).astype(np.float32)
    s_w = rng.uniform(1e-5, 0.1, 1000).astype(np.float32)
    s_out = rng.uniform(1e-3, 1, 1000).astype(np.float32)
    for i in range(1000):
        want = np.float32(float(s_in[i]) * float(s_w[i]) / float(s_out[i]))
        assert requant.multiplier(s_in[i], s_w[i], s_out[i]) == want
    # Per channel: s_w is a vector, the result float32 of the same shape.
    m = requant.multiplier(s_in[0], s_w, s_out[0])
    assert m.dtype == np.float32 and m.shape == (1000,)
    assert np.array_equal(m, (np.float64(s_in[0]) * s_w.astype(np.float64) / np.float64(s_out[0]))
                          .astype(np.float32))


# --------------------------------------------------------------------------------------------------------
# quantize / dequantize against ONNX Runtime

def _ort_session(op, in_type, n, scale, zero_point):
    inits = [numpy_helper.from_array(np.array(scale, np.float32), 'scale'),
             numpy_helper.from_array(np.array(zero_point), 'zero_point')]
    out_type = TensorProto.FLOAT if op == 'DequantizeLinear' else helper.np_dtype_to_tensor_dtype(
        np.asarray(zero_point).dtype)
    node = helper.make_node(op, ['x', 'scale', 'zero_point'], ['y'])
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info('x', in_type, [n])],
                              [helper.make_tensor_value_info('y', out_type, [n])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=['CPUExecutionProvider'])


def _sweep(scale):
    # Multiples of scale / 4 (ties at odd multiples of scale / 2), random values, and far out of range.
    s = np.float32(scale)
    k = np.arange(-1200, 1201, dtype=np.float32)
    x = np.concatenate([k * s / np.float32(4), np.float32(0.5) * s * k[::7],
                        np.random.default_rng(2).uniform(-300, 300, 3000).astype(np.float32) * s,
                        np.array([0.0, -0.0, 1e30, -1e30, 3.4e38, -3.4e38, np.inf, -np.inf], np.float32)])
    return x.astype(np.float32)


@pytest.mark.filterwarnings('ignore:overflow encountered')     # 3.4e38 / 1e-3 is inf: saturates
@pytest.mark.parametrize('scale', [0.5, 0.25, 1.0, 0.1, 0.0235, 6.0 / 255, 1e-3, 7.3])
@pytest.mark.parametrize('zero_point', [np.uint8(0), np.uint8(128), np.uint8(255), np.uint8(3),
                                        np.int8(0), np.int8(-128), np.int8(127), np.int8(-5)])
def test_quantize_matches_onnx_quantizelinear(scale, zero_point):
    x = _sweep(scale)
    sess = _ort_session('QuantizeLinear', TensorProto.FLOAT, x.size, scale, zero_point)
    theirs = sess.run(None, {'x': x})[0]
    ours = requant.quantize(x, np.float32(scale), int(zero_point), dtype=zero_point.dtype.type)
    assert ours.dtype == theirs.dtype
    bad = np.flatnonzero(ours != theirs)
    assert bad.size == 0, ('QuantizeLinear scale=%r zp=%r: %d of %d differ, first x=%r ours=%r ORT=%r'
                           % (scale, zero_point, bad.size, x.size, x[bad[0]], ours[bad[0]], theirs[bad[0]]))


def test_quantize_golden_values():
    x = np.array([0.25, 0.75, 1.25, -0.25, -0.75, 100.0, -100.0, 6.0], np.float32)
    assert requant.quantize(x, 0.5, 10).tolist() == [10, 12, 12, 10, 8, 210, 0, 22]
    assert requant.quantize(x, 0.5, 10, dtype=np.int8).tolist() == [10, 12, 12, 10, 8, 127, -128, 22]
    assert requant.quantize(np.float32(1000.0), 1.0, 0)[()] == 255


@pytest.mark.parametrize('scale', [0.5, 0.1, 0.0235, 7.3])
@pytest.mark.parametrize('zero_point', [np.uint8(0), np.uint8(200), np.uint8(255), np.int8(-128), np.int8(9)])
def test_dequantize_matches_onnx_dequantizelinear(scale, zero_point):
    info = np.iinfo(zero_point.dtype)
    q = np.arange(info.min, info.max + 1).astype(zero_point.dtype)
    sess = _ort_session('DequantizeLinear', helper.np_dtype_to_tensor_dtype(q.dtype), q.size, scale, zero_point)
    theirs = sess.run(None, {'x': q})[0]
    ours = requant.dequantize(q, np.float32(scale), int(zero_point))
    assert ours.dtype == np.float32
    assert np.array_equal(ours.view(np.int32), theirs.view(np.int32))


def test_dequantize_then_quantize_is_identity():
    q = np.arange(256, dtype=np.uint8)
    for scale, zp in ((0.0235, 17), (7.3, 0), (1e-3, 255)):
        assert np.array_equal(requant.quantize(requant.dequantize(q, scale, zp), scale, zp), q)


# --------------------------------------------------------------------------------------------------------
# activation_bounds

@pytest.mark.parametrize('kind, scale, zp, clip, want', [
    (None, 0.1, 37, (), (0, 255)),
    ('relu', 0.1, 37, (), (37, 255)),
    ('relu', 0.1, 0, (), (0, 255)),            # zero point 0: ReLU clamps nothing
    ('relu', 0.1, 255, (), (255, 255)),        # zero point 255: every output is <= 0, ReLU gives 0 = 255
    ('relu6', 0.1, 10, (), (10, 70)),
    ('relu6', 6.0 / 255, 0, (), (0, 255)),     # the range is exactly [0, 6]
    ('relu6', 0.01, 128, (), (128, 255)),      # 6 is beyond the range: no upper clamp
    ('relu6', 0.1, 255, (), (255, 255)),
    ('relu6', 0.05, 0, (), (0, 120)),
    ('clip', 0.1, 100, (-1.0, 1.0), (90, 110)),
    ('clip', 0.1, 100, (0.5, 0.5), (105, 105)),    # a single-value range
    ('clip', 0.1, 100, (-100.0, 100.0), (0, 255)),  # wider than the representable range
    ('clip', 0.1, 100, (None, 2.0), (0, 120)),
    ('clip', 0.1, 100, (-2.0, None), (80, 255)),
    ('clip', 0.1, 100, (None, None), (0, 255)),
    ('clip', 0.2, 100, (0.1, 0.3), (100, 102)),     # bounds on ties: 0.5 -> 0, 1.5 -> 2
    ('clip', 0.1, 0, (0.0, 0.0), (0, 0)),
])
def test_activation_bounds_golden(kind, scale, zp, clip, want):
    got = requant.activation_bounds(kind, np.float32(scale), zp, *clip)
    assert tuple(int(v) for v in got) == want
    assert all(isinstance(v, int) for v in got)


@pytest.mark.filterwarnings('ignore:overflow encountered')
@pytest.mark.parametrize('scale, zp', [(0.1, 37), (0.1, 0), (0.1, 255), (6.0 / 255, 0), (0.0235, 128),
                                       (0.05, 250), (1.7, 3)])
def test_activation_bounds_equal_quantising_the_activated_value(scale, zp):
    # clamp(quantize(x), lo, hi) == quantize(f(x)) for every real x: the fused clamp is exact.
    x = _sweep(scale)[:-2]          # no infinities
    scale = np.float32(scale)
    q = requant.quantize(x, scale, zp)
    for kind, f, clip in (('relu', lambda v: np.maximum(v, 0), ()),
                          ('relu6', lambda v: np.clip(v, 0, 6), ()),
                          ('clip', lambda v: np.clip(v, -1.5, 0.7), (-1.5, 0.7)),
                          ('clip', lambda v: np.clip(v, 0.25, 0.25), (0.25, 0.25))):
        lo, hi = requant.activation_bounds(kind, scale, zp, *clip)
        want = requant.quantize(f(x).astype(np.float32), scale, zp)
        assert np.array_equal(np.clip(q, lo, hi), want), (kind, clip, scale, zp)


def test_activation_bounds_unknown_kind():
    with pytest.raises(KernelError, match='unknown fused activation'):
        requant.activation_bounds('gelu', 0.1, 0)


# --------------------------------------------------------------------------------------------------------
# fold_input_zero_point

def test_fold_input_zero_point_matches_the_direct_formula():
    rng = np.random.default_rng(5)
    for shape in ((16, 3, 3, 8), (7, 1, 1, 300), (1, 5, 5, 1), (33, 64)):
        w = rng.integers(-127, 128, shape).astype(np.int8)
        bias = rng.integers(-10 ** 6, 10 ** 6, shape[0]).astype(np.int32)
        for zp in (0, 1, 128, 255):
            got = requant.fold_input_zero_point(bias, w, zp)
            assert got.dtype == np.int32 and got.shape == (shape[0],)
            want = [int(b) - zp * int(w[o].astype(np.int64).sum()) for o, b in enumerate(bias)]
            assert got.tolist() == want
            # The folded form gives the same accumulator: bias + sum(w * (x - zp)).
            x = rng.integers(0, 256, shape[1:])
            o = int(rng.integers(0, shape[0]))
            direct = int(bias[o]) + int((w[o].astype(np.int64) * (x - zp)).sum())
            assert int(got[o]) + int((w[o].astype(np.int64) * x).sum()) == direct
        none = requant.fold_input_zero_point(None, w, 200)
        assert none.tolist() == [-200 * int(w[o].astype(np.int64).sum()) for o in range(shape[0])]


def test_fold_input_zero_point_overflow():
    w = np.full((2, 3, 3, 64), -127, np.int8)     # sum(w) = -73152; zp 255 adds 18653760
    room = 255 * 127 * 576
    ok = requant.fold_input_zero_point(np.full(2, 2 ** 31 - 1 - room, np.int32), w, 255)
    assert ok.tolist() == [2 ** 31 - 1] * 2
    with pytest.raises(KernelError, match='overflows int32'):
        requant.fold_input_zero_point(np.full(2, 2 ** 31 - room, np.int32), w, 255)
    with pytest.raises(KernelError, match='overflows int32'):
        requant.fold_input_zero_point(np.full(2, -2 ** 31 + room - 1, np.int32), -w, 255)
    ok = requant.fold_input_zero_point(np.full(2, -2 ** 31 + room, np.int32), -w, 255)
    assert ok.tolist() == [-2 ** 31] * 2
