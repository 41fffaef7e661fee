"""The element-wise kernels (qvision_kernels.eltwise) against the NumPy references.

uint8 kernels are bit-exact against ``qvision_kernels.reference.eltwise``; float32 ones within a relative
1e-6.  Every kernel test runs once per instruction-set variant of the 'eltwise' family that is built and
runnable here (from the registry), with 1 and 2 threads (same bytes) and with ``out=`` given.  Inputs
come from seeded generators; each failing comparison prints its case (seed included).
"""
import zlib

import numpy as np
import pytest

from kernel_check import assert_allclose_rel, assert_bitexact, isa_fixture, run_both
from qvision_kernels import KernelError, _registry
from qvision_kernels import eltwise as E
from qvision_kernels.reference import eltwise as R
from qvision_kernels.requant import dequantize, quantize

# Channel counts around the vector widths (16 bytes, 32 bytes, 64 bytes).
CHANNELS = (1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70)


isa = isa_fixture('eltwise')


def _u8(rng, shape):
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _b_shapes(n, h, w, c):
    return [(n, h, w, c), (n, 1, 1, c), (1, 1, 1, c), (n, h, w, 1), (1, 1, 1, 1), (c,), (1, h, 1, c),
            (n, 1, w, 1), (h, w, c), (1, h, w, 1)]


def _quant_params(rng, kind):
    """(s_a, zp_a, s_b, zp_b, s_y, zp_y, lo, hi) for a case kind."""
    zps = [int(v) for v in rng.integers(0, 256, 3)]
    if kind == 'typical':
        s = rng.uniform(0.01, 0.1, 3)
        lo, hi = 0, 255
    elif kind == 'saturating':       # the output scale far smaller than the inputs': most values clamp
        s = [rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2), rng.uniform(0.001, 0.005)]
        lo, hi = 0, 255
    else:                            # 'bounded': fused activation bounds narrow [lo, hi]
        s = rng.uniform(0.01, 0.1, 3)
        lo = int(rng.integers(0, 100))
        hi = int(rng.integers(150, 256))
    return float(s[0]), zps[0], float(s[1]), zps[1], float(s[2]), zps[2], lo, hi


# ------------------------------------------------------------------------------------------ Add / Mul

@pytest.mark.parametrize('op', ['add', 'mul'])
@pytest.mark.parametrize('kind', ['typical', 'saturating', 'bounded'])
def test_binary_int8_bitexact(isa, op, kind):
    rng = np.random.default_rng(zlib.crc32(('%s-%s' % (op, kind)).encode()))
    kern, ref = (E.add_int8, R.add_int8) if op == 'add' else (E.mul_int8, R.mul_int8)
    for i, c in enumerate(CHANNELS):
        seed = int(rng.integers(2 ** 31))
        r = np.random.default_rng(seed)
        n, h, w = int(r.integers(1, 3)), int(r.integers(1, 8)), int(r.integers(1, 8))
        a = _u8(r, (n, h, w, c))
        sa, zpa, sb, zpb, sy, zpy, lo, hi = _quant_params(r, kind)
        if op == 'mul' and kind == 'typical':
            sy = sa * sb * 60.0      # keep products of about +-100 x +-100 inside the output range
        for bshape in _b_shapes(n, h, w, c):
            b = _u8(r, bshape)
            expected = ref(a, b, sa, zpa, sb, zpb, sy, zpy, lo, hi)
            ctx = '%s %s seed=%d a=%s b=%s scales=(%g,%g,%g) zps=(%d,%d,%d) bounds=[%d,%d] isa=%s' % (
                op, kind, seed, a.shape, bshape, sa, sb, sy, zpa, zpb, zpy, lo, hi, isa)
            run_both(lambda out, nt: kern(a, b, sa, zpa, sb, zpb, sy, zpy, act_min=lo, act_max=hi,
                                           out=out, num_threads=nt, isa=isa), expected, ctx)


@pytest.mark.parametrize('op', ['add', 'mul'])
def test_binary_int8_every_pair(isa, op):
    """Every (a, b) byte pair, with scales that leave many results exactly half-way between integers, and
    (0.3, 0.7 -> 1.0) where hundreds of Add results differ if the products are not rounded to float32 one
    by one (double products, or an FMA)."""
    a = np.repeat(np.arange(256, dtype=np.uint8), 256).reshape(1, 256, 256, 1)
    b = np.tile(np.arange(256, dtype=np.uint8), 256).reshape(1, 256, 256, 1)
    kern, ref = (E.add_int8, R.add_int8) if op == 'add' else (E.mul_int8, R.mul_int8)
    for sa, sb, sy, zpa, zpb, zpy in ((0.5, 0.25, 1.0, 128, 3, 128), (0.02, 0.02, 0.04, 0, 255, 0),
                                      (1.0, 1.0, 2.0, 100, 101, 17), (0.1, 0.3, 0.7, 250, 5, 200),
                                      (0.3, 0.7, 1.0, 128, 128, 128)):
        expected = ref(a, b, sa, zpa, sb, zpb, sy, zpy)
        y = kern(a, b, sa, zpa, sb, zpb, sy, zpy, isa=isa)
        assert_bitexact(y, expected, '%s every pair scales=(%g,%g,%g) zps=(%d,%d,%d) isa=%s'
                        % (op, sa, sb, sy, zpa, zpb, zpy, isa))


def test_add_int8_golden(isa):
    # Ma = 0.5, b at its zero point: y = round_half_even((a - 128) / 2) + 128, clamped.
    a = np.array([[[[127, 128, 129, 130, 131, 133, 0, 255]]]], np.uint8)
    b = np.full_like(a, 9)
    y = E.add_int8(a, b, 0.5, 128, 1.0, 9, 1.0, 128, isa=isa)
    assert y.ravel().tolist() == [128, 128, 128, 129, 130, 130, 64, 192]   # -0.5->-0, 0.5->0, 1.5->2, 2.5->2
    # Same scales everywhere: y = clamp(a - zp + b - zp + zp).
    a = np.array([[[[10, 200, 250]]]], np.uint8)
    b = np.array([[[[20, 100, 30]]]], np.uint8)
    assert E.add_int8(a, b, 0.1, 0, 0.1, 0, 0.1, 0, isa=isa).ravel().tolist() == [30, 255, 255]
    assert E.add_int8(a, b, 0.1, 0, 0.1, 0, 0.1, 0, act_min=40, act_max=250,
                      isa=isa).ravel().tolist() == [40, 250, 250]


def test_mul_int8_golden(isa):
    # M = 0.1 * 0.1 / 0.01 = 1 (float32(1.0000000000000002) == 1): y = clamp((a-zp_a) * (b-zp_b) + zp_y).
    a = np.array([[[[5, 0, 16, 7]]]], np.uint8)
    b = np.array([[[[3, 3, 20, 0]]]], np.uint8)
    y = E.mul_int8(a, b, 0.1, 2, 0.1, 1, 0.01, 10, isa=isa)
    assert y.ravel().tolist() == [3 * 2 + 10, -2 * 2 + 10, 255, -5 + 10]


@pytest.mark.parametrize('op', ['add', 'mul'])
def test_binary_f32(isa, op):
    rng = np.random.default_rng(11 if op == 'add' else 12)
    kern, ref = (E.add_f32, R.add_f32) if op == 'add' else (E.mul_f32, R.mul_f32)
    for c in CHANNELS:
        seed = int(rng.integers(2 ** 31))
        r = np.random.default_rng(seed)
        n, h, w = int(r.integers(1, 3)), int(r.integers(1, 8)), int(r.integers(1, 8))
        a = r.standard_normal((n, h, w, c)).astype(np.float32)
        for bshape in _b_shapes(n, h, w, c):
            b = r.standard_normal(bshape).astype(np.float32)
            run_both(lambda out, nt: kern(a, b, out=out, num_threads=nt, isa=isa), ref(a, b),
                      '%s_f32 seed=%d a=%s b=%s isa=%s' % (op, seed, a.shape, bshape, isa), exact=False)


def test_binary_large_rows_and_threads(isa):
    """Rows longer than one job (16384 elements) and broadcasts over many rows, 1 vs 2 threads."""
    r = np.random.default_rng(5)
    a = _u8(r, (1, 40, 50, 70))
    for bshape in [(1, 40, 50, 70), (1, 1, 1, 1), (1, 40, 50, 1)]:
        b = _u8(r, bshape)
        expected = R.add_int8(a, b, 0.03, 100, 0.05, 90, 0.06, 120)
        run_both(lambda out, nt: E.add_int8(a, b, 0.03, 100, 0.05, 90, 0.06, 120, out=out, num_threads=nt,
                                             isa=isa), expected, 'large b=%s isa=%s' % (bshape, isa))


def test_binary_in_place_and_other_ranks(isa):
    r = np.random.default_rng(6)
    a = _u8(r, (3, 37))
    b = _u8(r, (37,))
    expected = R.mul_int8(a, b, 0.05, 128, 0.02, 3, 0.05, 7)
    y = E.mul_int8(a, b, 0.05, 128, 0.02, 3, 0.05, 7, out=a, isa=isa)
    assert y is a
    assert_bitexact(a, expected, 'mul in place [3, 37] * [37]')
    a = r.standard_normal(1000).astype(np.float32)
    assert_allclose_rel(E.add_f32(a, np.float32([2.5]), isa=isa), a + np.float32(2.5), 1e-6, '1-D + [1]')
    empty = np.zeros((0, 4, 4, 3), np.uint8)
    assert E.add_int8(empty, empty[:, :1, :1], 0.1, 0, 0.1, 0, 0.1, 0, isa=isa).shape == (0, 4, 4, 3)


def test_broadcast_plan():
    assert E._broadcast_plan((2, 5, 6, 8), (2, 1, 1, 8)) == ((1, 2, 30, 8), (0, 8, 0, 1))
    assert E._broadcast_plan((2, 5, 6, 8), (2, 5, 6, 8)) == ((1, 1, 1, 480), (0, 0, 0, 1))
    assert E._broadcast_plan((2, 5, 6, 8), (1,)) == ((1, 1, 1, 480), (0, 0, 0, 0))
    assert E._broadcast_plan((2, 5, 6, 8), (2, 5, 6, 1)) == ((1, 1, 60, 8), (0, 0, 1, 0))
    assert E._broadcast_plan((2, 5, 6, 8), (5, 1, 8)) == ((2, 5, 6, 8), (0, 8, 0, 1))


# --------------------------------------------------------------------------------------------- Concat

@pytest.mark.parametrize('axis', [-1, 3, 1, 2, 0])
def test_concat_int8(isa, axis):
    rng = np.random.default_rng(20 + axis)
    for c in CHANNELS[::2]:
        seed = int(rng.integers(2 ** 31))
        r = np.random.default_rng(seed)
        base = [int(r.integers(1, 3)), int(r.integers(1, 7)), int(r.integers(1, 7)), c]
        inputs, scales, zps = [], [], []
        for k in range(int(r.integers(1, 4))):
            shape = list(base)
            shape[axis] = int(r.integers(1, 40)) if axis in (-1, 3) else int(r.integers(1, 4))
            inputs.append(_u8(r, shape))
            scales.append(float(r.uniform(0.01, 0.2)))
            zps.append(int(r.integers(0, 256)))
        sy, zpy = float(r.uniform(0.01, 0.2)), int(r.integers(0, 256))
        # One input at the output's own scale and zero point: a plain copy.
        scales[0], zps[0] = sy, zpy
        expected = R.concat_int8(inputs, scales, zps, sy, zpy, axis=axis)
        assert_bitexact(expected[tuple(slice(0, s) for s in inputs[0].shape)], inputs[0], 'copy part')
        ctx = 'concat seed=%d axis=%d shapes=%s isa=%s' % (seed, axis, [x.shape for x in inputs], isa)
        run_both(lambda out, nt: E.concat_int8(inputs, scales, zps, sy, zpy, axis=axis, out=out,
                                                num_threads=nt, isa=isa), expected, ctx)


def test_concat_int8_saturating_and_long_rows(isa):
    r = np.random.default_rng(30)
    inputs = [_u8(r, (1, 3, 4, 20000)), _u8(r, (1, 3, 4, 5))]
    scales, zps = [0.5, 0.001], [0, 255]
    expected = R.concat_int8(inputs, scales, zps, 0.01, 128)
    assert (expected == 255).mean() > 0.3
    run_both(lambda out, nt: E.concat_int8(inputs, scales, zps, 0.01, 128, out=out, num_threads=nt, isa=isa),
              expected, 'concat saturating isa=%s' % isa)


@pytest.mark.parametrize('axis', [-1, 1, 0])
def test_concat_f32(isa, axis):
    r = np.random.default_rng(40)
    for c in (1, 3, 16, 33):
        inputs = []
        for k in range(3):
            shape = [2, 3, 4, c]
            shape[axis] = int(r.integers(1, 5))
            inputs.append(r.standard_normal(shape).astype(np.float32))
        expected = R.concat_f32(inputs, axis=axis)
        run_both(lambda out, nt: E.concat_f32(inputs, axis=axis, out=out, num_threads=nt, isa=isa), expected,
                  'concat_f32 axis=%d c=%d isa=%s' % (axis, c, isa), exact=False)


# ------------------------------------------------------------------------------------------ Upsample

@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_upsample_nearest(isa, dtype):
    r = np.random.default_rng(50)
    for c in CHANNELS:
        for sh, sw in ((1, 1), (2, 2), (3, 1), (1, 2), (2, 3)):
            n, h, w = int(r.integers(1, 3)), int(r.integers(1, 7)), int(r.integers(1, 7))
            x = (_u8(r, (n, h, w, c)) if dtype == np.uint8
                 else r.standard_normal((n, h, w, c)).astype(np.float32))
            expected = R.upsample_nearest(x, sh, sw)
            run_both(lambda out, nt: E.upsample_nearest(x, sh, sw, out=out, num_threads=nt, isa=isa),
                      expected, 'upsample %s x=%s factors=(%d,%d) isa=%s' % (np.dtype(dtype).name, x.shape,
                                                                             sh, sw, isa))


def test_upsample_golden(isa):
    x = np.arange(4, dtype=np.uint8).reshape(1, 2, 2, 1)
    y = E.upsample_nearest(x, 2, 2, isa=isa)
    assert y[0, :, :, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


# ----------------------------------------------------------------------------------- Lookup tables

NAMED = [('identity', {}), ('relu', {}), ('sigmoid', {}), ('silu', {}), ('hardswish', {}),
         ('hardsigmoid', {}), ('hardsigmoid', {'alpha': 1 / 6}), ('leakyrelu', {}),
         ('leakyrelu', {'alpha': 0.1}), ('tanh', {}), ('clip', {'min': 0.0, 'max': 6.0}),
         ('clip', {'min': -1.0})]


@pytest.mark.parametrize('fn,params', NAMED, ids=lambda v: str(v))
def test_make_lut_matches_entrywise_reference(fn, params):
    r = np.random.default_rng(60)
    f0, defaults = E.LUT_FUNCTIONS[fn]
    kw = dict(defaults, **params)
    for k in range(4):
        sx, zpx = float(r.uniform(0.005, 0.2)), int(r.integers(0, 256))
        sy, zpy = float(r.uniform(0.002, 0.05)), int(r.integers(0, 256))
        table = E.make_lut(fn, sx, zpx, sy, zpy, **params)
        assert table.dtype == np.uint8 and table.shape == (256,)
        expected = R.make_lut(lambda x: f0(x, **kw), sx, zpx, sy, zpy)
        assert_bitexact(table, expected, '%s %s scales=(%g,%g) zps=(%d,%d)' % (fn, params, sx, zpx, sy, zpy))


def test_make_lut_golden():
    sx, zpx = 0.1, 100
    # sigmoid(0) = 0.5 -> quantize(0.5) at the zero point.
    for sy, zpy in ((1 / 256, 0), (0.003, 17)):
        t = E.make_lut('sigmoid', sx, zpx, sy, zpy)
        assert t[zpx] == quantize(np.float32(0.5), sy, zpy)
    # Same scale and zero point: relu is max(q, zp), identity is q, clip(lo, hi) clamps q.
    q = np.arange(256)
    assert E.make_lut('relu', sx, zpx, sx, zpx).tolist() == np.maximum(q, zpx).tolist()
    assert E.make_lut('identity', sx, zpx, sx, zpx).tolist() == q.tolist()
    assert E.make_lut('clip', sx, zpx, sx, zpx, min=-2.0, max=3.0).tolist() == np.clip(q, 80, 130).tolist()
    # hardswish(0) = silu(0) = 0; hardswish(x) = x for x >= 3 (q >= 130 here), 0 for x <= -3.
    for fn in ('hardswish', 'silu', 'tanh', 'leakyrelu'):
        assert E.make_lut(fn, sx, zpx, sx, zpx)[zpx] == zpx
    hs = E.make_lut('hardswish', sx, zpx, sx, zpx)
    assert hs[130:].tolist() == q[130:].tolist() and set(hs[:71].tolist()) == {zpx}
    # Saturation: tanh of large inputs is +-1; with s_y = 1/127 and zp 128 that is 255 and 1.
    th = E.make_lut('tanh', 0.5, 128, 1 / 127, 128)
    assert th[255] == 255 and th[0] == 1
    # Callables go through the same DQ -> f -> Q.
    t = E.make_lut(lambda x: 2.0 * x, sx, zpx, sx, zpx)
    assert t.tolist() == np.clip(2 * (q - zpx) + zpx, 0, 255).tolist()
    assert E.make_lut(np.exp, 0.05, 128, 0.2, 0).tolist() == \
        R.make_lut(np.exp, 0.05, 128, 0.2, 0).tolist()
    assert dequantize(t[zpx], sx, zpx) == 0


def test_lut_apply(isa):
    r = np.random.default_rng(70)
    table = _u8(r, 256)
    for shape in [(7,), (3, 5), (2, 3, 4, 65), (1, 40, 50, 17), (2, 1, 3, 1, 5), (0, 3)]:
        x = _u8(r, shape)
        run_both(lambda out, nt: E.lut_apply(x, table, out=out, num_threads=nt, isa=isa),
                  R.lut_apply(x, table), 'lut shape=%s isa=%s' % (shape, isa))


@pytest.mark.parametrize('vbmi', [False, True])
def test_lut_paths_every_length(isa, vbmi):
    # Both table-lookup paths of qv_lut.h (scalar, and AVX-512 VBMI byte permutes where the CPU has them),
    # at every length around the 64-byte vector (masked tail) and at a job boundary (CHUNK = 16384).
    mod = _registry.module('eltwise', isa)
    if vbmi and not mod.HAS_VBMI:
        pytest.skip('this CPU has no AVX-512 VBMI')
    r = np.random.default_rng(71)
    table = _u8(r, 256)
    for n in list(range(0, 200)) + [16383, 16384, 16385, 40000]:
        x = _u8(r, n)
        out = np.full(n + 64, 7, np.uint8)
        mod.lut_apply(x, table, out[:n], 2, vbmi)
        assert_bitexact(out[:n], table[x], 'lut n=%d vbmi=%s isa=%s' % (n, vbmi, isa))
        assert (out[n:] == 7).all(), 'wrote past the end (n=%d)' % n
    x = np.arange(256, dtype=np.uint8)          # every index, both halves of the table
    out = np.empty(256, np.uint8)
    mod.lut_apply(x, table, out, 1, vbmi)
    assert_bitexact(out, table, 'lut identity indices vbmi=%s' % vbmi)


# ------------------------------------------------------------------------------------------- Errors

def test_errors():
    a = np.zeros((1, 4, 4, 8), np.uint8)
    q = (0.1, 0, 0.1, 0, 0.1, 0)
    bad_calls = [
        lambda: E.add_int8(a.astype(np.int8), a, *q),                              # dtype
        lambda: E.add_int8(a, a.astype(np.float32), *q),
        lambda: E.add_int8(a, np.zeros((1, 4, 4, 3), np.uint8), *q),               # not broadcastable
        lambda: E.add_int8(a, np.zeros((2, 4, 4, 8), np.uint8), *q),               # would grow a
        lambda: E.add_int8(a, np.zeros((1, 1, 4, 4, 8), np.uint8), *q),            # more dimensions
        lambda: E.add_int8(a, a, *q, out=np.zeros((1, 4, 4, 7), np.uint8)),        # out shape
        lambda: E.add_int8(a, a, *q, out=np.zeros((1, 4, 4, 8), np.float32)),      # out dtype
        lambda: E.add_int8(a, a, *q, out=np.zeros((1, 4, 8, 8), np.uint8)[:, :, ::2]),  # out strides
        lambda: E.add_int8(a[:, :, ::2], a[:, :, ::2], *q),                        # not contiguous
        lambda: E.add_int8(a, a, 0.0, 0, 0.1, 0, 0.1, 0),                          # scale
        lambda: E.add_int8(a, a, 0.1, 256, 0.1, 0, 0.1, 0),                        # zero point
        lambda: E.add_int8(a, a, 0.1, 0, 0.1, 0, float('nan'), 0),
        lambda: E.add_int8(a, a, 1e30, 0, 0.1, 0, 1e-30, 0),                       # multiplier
        lambda: E.add_int8(a, a, *q, act_min=200, act_max=100),                    # bounds
        lambda: E.mul_int8(a, a, *q, act_max=256),
        lambda: E.add_int8(a, a, *q, num_threads=0),
        lambda: E.add_int8(a, a, *q, isa='no-such-isa'),
        lambda: E.add_f32(a, a),
        lambda: E.mul_f32(a.astype(np.float32), np.zeros((5,), np.float32)),
        lambda: E.concat_int8([a, a], [0.1], [0, 0], 0.1, 0),                       # counts
        lambda: E.concat_int8([a, a[:, :3]], [0.1, 0.1], [0, 0], 0.1, 0),           # shapes
        lambda: E.concat_int8([a, a], [0.1, 0.1], [0, 0], 0.1, 0, axis=4),          # axis
        lambda: E.concat_int8([], [], [], 0.1, 0),
        lambda: E.concat_int8(a, [0.1], [0], 0.1, 0),
        lambda: E.concat_int8([a, a], [0.1, 0.1], [0, 0], 0.1, 0, out=np.zeros((1, 4, 4, 8), np.uint8)),
        lambda: E.concat_f32([a, a]),
        lambda: E.upsample_nearest(a, 0, 2),
        lambda: E.upsample_nearest(a, 2.0, 2),
        lambda: E.upsample_nearest(a[0], 2, 2),
        lambda: E.upsample_nearest(a.astype(np.int32), 2, 2),
        lambda: E.upsample_nearest(a, 2, 2, out=np.zeros((1, 8, 8, 8), np.float32)),
        lambda: E.make_lut('softsign', 0.1, 0, 0.1, 0),
        lambda: E.make_lut('sigmoid', 0.1, 0, 0.1, 0, alpha=1.0),
        lambda: E.make_lut('relu', -0.1, 0, 0.1, 0),
        lambda: E.make_lut(lambda x: x * np.nan, 0.1, 0, 0.1, 0),
        lambda: E.make_lut(lambda x: x[:10], 0.1, 0, 0.1, 0),
        lambda: E.lut_apply(a, np.zeros(255, np.uint8)),
        lambda: E.lut_apply(a.astype(np.int8), np.zeros(256, np.uint8)),
        lambda: E.lut_apply(a, np.zeros(256, np.uint8), out=np.zeros((1, 4, 4, 9), np.uint8)),
    ]
    for i, call in enumerate(bad_calls):
        with pytest.raises(KernelError):
            call()


# ---------------------------------------------------------------------------------- QuantizeLinear

def _float_cases(rng, shape):
    """float32 data that hits every branch: ordinary values, exact half-way points x = (k + 0.5) * s,
    values far outside the range, +-inf, NaN, -0.0 and subnormals."""
    x = rng.normal(0.0, 3.0, size=shape).astype(np.float32)
    flat = x.reshape(-1)
    k = rng.integers(-300, 300, size=flat.size)
    pick = rng.random(flat.size)
    flat[pick < 0.2] = ((k + 0.5) * 0.05).astype(np.float32)[pick < 0.2]
    specials = np.array([np.inf, -np.inf, np.nan, -0.0, 1e-40, -1e-40, 1e30, -1e30], np.float32)
    n = min(flat.size, specials.size)
    where = rng.choice(flat.size, n, replace=False)
    flat[where] = specials[:n]
    return x


@pytest.mark.parametrize('dtype', [np.uint8, np.int8])
def test_quantize_f32(isa, dtype):
    rng = np.random.default_rng(11 if dtype == np.uint8 else 12)
    info = np.iinfo(dtype)
    for shape in [(1,), (7,), (16385,), (3, 50, 70), (2, 33, 65, 3)]:
        for scale, zp in [(0.05, int(rng.integers(info.min, info.max + 1))), (0.05, info.min), (1e-3, 0)]:
            x = _float_cases(rng, shape)
            expected = R.quantize_f32(x, scale, zp, dtype)
            run_both(lambda out, nt: E.quantize_f32(x, scale, zp, dtype, out=out, num_threads=nt, isa=isa),
                     expected, 'quantize %s %s s=%g zp=%d isa=%s' % (np.dtype(dtype).name, shape, scale, zp, isa))


@pytest.mark.parametrize('dtype', [np.uint8, np.int8])
def test_quantize_nchw_to_nhwc(isa, dtype):
    rng = np.random.default_rng(21)
    zp = 3 if dtype == np.uint8 else -3
    for shape in [(1, 3, 5, 7), (2, 3, 17, 1030), (1, 1, 4, 4), (1, 16, 9, 33), (3, 5, 2, 2049)]:
        x = _float_cases(rng, shape)
        expected = np.ascontiguousarray(R.quantize_f32(x, 0.03, zp, dtype).transpose(0, 2, 3, 1))
        run_both(lambda out, nt: E.quantize_f32(x, 0.03, zp, dtype, nchw_to_nhwc=True, out=out, num_threads=nt,
                                                isa=isa),
                 expected, 'quantize NCHW->NHWC %s %s isa=%s' % (np.dtype(dtype).name, shape, isa))


def test_quantize_reference_is_quantize_linear():
    """The reference agrees with requant.quantize (the formula of DESIGN.md) wherever that is defined,
    and maps NaN to the zero point."""
    x = np.array([0.0, 0.025, 0.075, -0.025, 12.7, -1e9, np.inf, np.nan], np.float32)
    got = R.quantize_f32(x, 0.05, 128)
    assert got.tolist()[:-1] == quantize(x[:-1], 0.05, 128).tolist()
    assert got.tolist() == [128, 128, 130, 128, 255, 0, 255, 128]


def test_quantize_errors():
    x = np.zeros((1, 3, 4, 4), np.float32)
    with pytest.raises(KernelError, match='scale'):
        E.quantize_f32(x, 0.0, 0)
    with pytest.raises(KernelError, match='zero_point'):
        E.quantize_f32(x, 0.1, 200, np.int8)
    with pytest.raises(KernelError, match='uint8 or int8'):
        E.quantize_f32(x, 0.1, 0, np.int16)
    with pytest.raises(KernelError, match='4 dimensions'):
        E.quantize_f32(x[0], 0.1, 0, nchw_to_nhwc=True)
    with pytest.raises(KernelError, match='float32'):
        E.quantize_f32(x.astype(np.float64), 0.1, 0)
    with pytest.raises(KernelError, match='out must be'):
        E.quantize_f32(x, 0.1, 0, nchw_to_nhwc=True, out=np.zeros((1, 3, 4, 4), np.uint8))


# ------------------------------------------------------------------------------------- Sigmoid / SiLU

def _sigmoid_inputs(rng, n):
    """Every float32 magnitude scale from 1e-30 to 1e30 with both signs, a dense sweep of [-110, 110] and
    the special values."""
    mags = 10.0 ** rng.uniform(-30, 30, n // 2) * rng.choice([-1.0, 1.0], n // 2)
    sweep = rng.uniform(-110, 110, n - n // 2)
    special = [0.0, -0.0, 100, -100, 1e30, -1e30, 87.33, -87.33, -87.34, 88.8, -88.8, 3.4e38, -3.4e38,
               np.inf, -np.inf, np.nan, 1e-45, -1e-45]
    return np.concatenate([special, mags, sweep]).astype(np.float32)


@pytest.mark.parametrize('silu', [False, True])
def test_sigmoid_f32_accuracy(isa, silu):
    from kernel_check import assert_sigmoid_close
    from qvision_kernels.reference.fconv import sigmoid_f64
    r = np.random.default_rng(90)
    x = _sigmoid_inputs(r, 200000)
    exact = sigmoid_f64(x, silu)
    y1 = E.sigmoid_f32(x, silu, isa=isa)
    assert_sigmoid_close(y1, exact, (isa, silu))
    # -0.0: sigmoid 0.5, SiLU -0.0 (sign kept); saturation is exact; NaN stays NaN
    z = E.sigmoid_f32(np.array([-0.0, 0.0, 100, -100, 1e30, -1e30, np.nan], np.float32), silu, isa=isa)
    if silu:
        assert np.signbit(z[0]) and not np.signbit(z[1]) and z[0] == 0 and z[1] == 0
        assert list(z[2:6]) == [100, 0, np.float32(1e30), 0] and np.signbit(z[3]) and np.signbit(z[5])
    else:
        assert list(z[:6]) == [0.5, 0.5, 1, 0, 1, 0]
    assert np.isnan(z[6])
    # 2 threads, out= and in place give the same bytes
    y2 = np.full_like(x, 7)
    assert E.sigmoid_f32(x, silu, out=y2, num_threads=2, isa=isa) is y2
    assert_bitexact(y2.view(np.uint32), y1.view(np.uint32), (isa, silu, '2 threads'))    # NaN bits too
    xi = x.copy()
    E.sigmoid_f32(xi, silu, out=xi, num_threads=2, isa=isa)
    assert_bitexact(xi.view(np.uint32), y1.view(np.uint32), (isa, silu, 'in place'))


def test_sigmoid_f32_every_length(isa):
    # Lengths around the 16-float block (masked tail) and a job boundary (CHUNK = 16384), any shape.
    from kernel_check import assert_sigmoid_close
    from qvision_kernels.reference.fconv import sigmoid_f64
    r = np.random.default_rng(91)
    for n in list(range(0, 40)) + [16384 - 1, 16384, 16384 + 17, 3 * 16384 + 5]:
        x = (r.standard_normal(n) * 20).astype(np.float32)
        for silu in (False, True):
            y = E.sigmoid_f32(x, silu, num_threads=2, isa=isa)
            assert y.shape == x.shape
            assert_sigmoid_close(y, sigmoid_f64(x, silu), (isa, n, silu))
    x = (r.standard_normal((2, 5, 7, 33)) * 10).astype(np.float32)
    assert_sigmoid_close(E.sigmoid_f32(x, True, isa=isa), sigmoid_f64(x, True), 'NHWC')


def test_sigmoid_f32_variants_agree():
    # Every variant computes the same formula (the SIMD ones with fused multiply-adds): within 2 ulp.
    isas = _registry.usable('eltwise')
    x = _sigmoid_inputs(np.random.default_rng(92), 50000)
    for silu in (False, True):
        ys = [E.sigmoid_f32(x, silu, isa=i) for i in isas]
        for i, y in zip(isas[1:], ys[1:]):
            np.testing.assert_allclose(y, ys[0], rtol=2.4e-7, atol=1e-37, err_msg='%s vs %s' % (i, isas[0]))


def test_sigmoid_f32_bad_arguments():
    with pytest.raises(KernelError):
        E.sigmoid_f32(np.zeros(4, np.float64))
    with pytest.raises(KernelError):
        E.sigmoid_f32(np.zeros((4, 4), np.float32)[:, ::2])
    with pytest.raises(KernelError):
        E.sigmoid_f32(np.zeros(4, np.float32), out=np.zeros(5, np.float32))


# ------------------------------------------------------------------------------------------ Softmax

SOFTMAX_CASES = [((1, 16, 4, 2100), 1), ((3, 7, 5), 0), ((3, 7, 5), 1), ((3, 7, 5), 2), ((3, 7, 5), -1),
                 ((1000, 16), -1), ((129, 3), 1), ((2, 300, 1), 1), ((2, 5, 257), 1), ((1, 9, 513), 1),
                 ((4, 1, 6), 1), ((17,), 0), ((7, 300), 1), ((2, 5000), -1)]


def _softmax_close(y, expected, context):
    # values in [0, 1] summing to 1 along the axis: x - max rounded to float32 costs |x - max| * 6e-8 of
    # relative error, the exp and the sum a few ulps
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6, err_msg=str(context))


@pytest.mark.parametrize('shape,axis', SOFTMAX_CASES)
def test_softmax_f32(isa, shape, axis):
    r = np.random.default_rng(zlib.crc32(repr((shape, axis)).encode()))
    x = (r.standard_normal(shape) * 4 + r.uniform(-50, 50)).astype(np.float32)
    expected = R.softmax_f32(x, axis)
    y1 = E.softmax_f32(x, axis, isa=isa)
    assert y1.dtype == np.float32 and y1.shape == x.shape
    _softmax_close(y1, expected, (shape, axis, isa))
    # 2 threads, out= and in place: the same bytes
    y2 = np.full_like(x, 7)
    assert E.softmax_f32(x, axis, out=y2, num_threads=2, isa=isa) is y2
    assert_bitexact(y2, y1, (shape, axis, isa, '2 threads'))
    xi = x.copy()
    E.softmax_f32(xi, axis, out=xi, num_threads=2, isa=isa)
    assert_bitexact(xi, y1, (shape, axis, isa, 'in place'))


def test_softmax_f32_special_values(isa):
    x = np.array([[0, 1, 2, 3],             # ordinary
                  [-np.inf, 0, -np.inf, 0],  # -inf: weight 0
                  [1e30, 0, -1e30, 1e30],   # huge spreads: exp underflows to exactly 0
                  [5, np.nan, 5, 5],         # a NaN makes the row NaN (as NumPy)
                  [np.nan, 5, 5, 5],
                  [-88, -88, -88, -88]], np.float32)
    y = E.softmax_f32(x, -1, isa=isa)
    _softmax_close(y[:3], R.softmax_f32(x[:3], -1), isa)
    assert y[1].tolist() == [0, 0.5, 0, 0.5] and y[2].tolist() == [0.5, 0, 0, 0.5]
    assert np.isnan(y[3:5]).all()
    assert y[5].tolist() == [0.25] * 4
    # the same along a strided axis (the column path)
    yt = E.softmax_f32(np.ascontiguousarray(x.T), 0, isa=isa)
    assert_bitexact(np.isnan(yt.T), np.isnan(y), isa)
    np.testing.assert_array_equal(yt.T[~np.isnan(y)], y[~np.isnan(y)])
    # and along long rows (the row code: partial maxima and sums)
    long = np.zeros((2, 400), np.float32)
    long[0, 5] = np.nan
    long[1, :200] = -np.inf
    yl = E.softmax_f32(long, -1, isa=isa)
    assert np.isnan(yl[0]).all() and (yl[1, :200] == 0).all()
    np.testing.assert_allclose(yl[1, 200:], 1 / 200, rtol=1e-6)


def test_softmax_f32_bad_arguments():
    with pytest.raises(KernelError, match='axis'):
        E.softmax_f32(np.zeros((2, 3), np.float32), axis=2)
    with pytest.raises(KernelError):
        E.softmax_f32(np.zeros((2, 3), np.float64))
    with pytest.raises(KernelError, match='out must be'):
        E.softmax_f32(np.zeros((2, 3), np.float32), out=np.zeros((3, 2), np.float32))
    assert E.softmax_f32(np.zeros((0, 3), np.float32)).shape == (0, 3)


# ---------------------------------------------------------------------------------- DequantizeLinear

@pytest.mark.parametrize('dtype', [np.uint8, np.int8])
def test_dequantize_f32(isa, dtype):
    r = np.random.default_rng(95 + np.dtype(dtype).itemsize + (dtype == np.int8))
    info = np.iinfo(dtype)
    for shape in [(0,), (1,), (33,), (1, 40, 40, 64), (16384 + 5,), (3, 16384)]:
        q = r.integers(info.min, info.max + 1, shape).astype(dtype)
        for zp in (info.min, 0, int(r.integers(info.min, info.max + 1)), info.max):
            scale = float(r.uniform(1e-4, 0.5))
            expected = R.dequantize_f32(q, scale, zp)
            run_both(lambda out, nt: E.dequantize_f32(q, scale, zp, out=out, num_threads=nt, isa=isa),
                     expected, 'dequantize %s %s s=%g zp=%d isa=%s' % (np.dtype(dtype).name, shape, scale, zp, isa))


def test_dequantize_reference_is_dequantize_linear():
    q = np.arange(256, dtype=np.uint8)
    assert R.dequantize_f32(q, 0.05, 128).tolist() == dequantize(q, 0.05, 128).astype(np.float32).tolist()


def test_dequantize_errors():
    q = np.zeros((2, 3), np.uint8)
    with pytest.raises(KernelError, match='uint8 or int8'):
        E.dequantize_f32(q.astype(np.int16), 0.1, 0)
    with pytest.raises(KernelError, match='zero_point'):
        E.dequantize_f32(q.view(np.int8), 0.1, 200)
    with pytest.raises(KernelError, match='scale'):
        E.dequantize_f32(q, 0.0, 0)
    with pytest.raises(KernelError, match='C-contiguous'):
        E.dequantize_f32(np.zeros((4, 4), np.uint8)[:, ::2], 0.1, 0)


# ---------------------------------------------------------------------------------------- band copies

def test_copy_rows(isa):
    """copy_rows against NumPy slicing: row widths around the 16/8/4-byte steps and the 256-byte memcpy
    switch, row counts around a job (512 rows), both directions, 1 and 2 threads."""
    mod = _registry.module('eltwise', isa)
    r = np.random.default_rng(97)
    for rows in (1, 3, 511, 512, 1300):
        for width in (1, 3, 4, 7, 8, 15, 16, 17, 24, 31, 48, 255, 256, 257, 300):
            for nt in (1, 2):
                pad = int(r.integers(0, 40))
                src = _u8(r, (rows, width + pad))
                dst = _u8(r, (rows, width + 5))
                expected = dst.copy()
                expected[:, 2:2 + width] = src[:, pad:pad + width]
                mod.copy_rows(src.reshape(-1), pad, width + pad, dst.reshape(-1), 2, width + 5, rows, width, nt)
                assert_bitexact(dst, expected, (isa, rows, width, pad, nt))
    with pytest.raises(ValueError, match='do not fit'):
        mod.copy_rows(np.zeros(10, np.uint8), 0, 5, np.zeros(10, np.uint8), 1, 5, 2, 5, 1)
    with pytest.raises(ValueError, match='do not fit'):
        mod.copy_rows(np.zeros(10, np.uint8), 0, 3, np.zeros(10, np.uint8), 0, 5, 2, 5, 1)


@pytest.mark.parametrize('vbmi', [False, True])
def test_lut_rows(isa, vbmi):
    """lut_rows against table[x] written into a band: widths around the stack buffer (4096 bytes) and
    the copy steps, row counts around a job, 1 and 2 threads; VBMI only where the CPU has it."""
    mod = _registry.module('eltwise', isa)
    vbmi = vbmi and mod.HAS_VBMI
    r = np.random.default_rng(98)
    table = _u8(r, 256)
    for rows in (1, 5, 512, 1100):
        for width in (1, 7, 16, 24, 48, 64, 300, 4095, 4096, 5000):
            if rows * width > 3_000_000:
                continue
            for nt in (1, 2):
                x = _u8(r, (rows, width))
                dst = _u8(r, (rows, width + 9))
                expected = dst.copy()
                expected[:, 3:3 + width] = table[x]
                mod.lut_rows(x.reshape(-1), table, dst.reshape(-1), 3, width + 9, rows, width, nt, vbmi)
                assert_bitexact(dst, expected, (isa, vbmi, rows, width, nt))
    with pytest.raises(ValueError, match='do not fit'):
        mod.lut_rows(np.zeros(9, np.uint8), table, np.zeros(20, np.uint8), 0, 5, 2, 5, 1, False)
    with pytest.raises(ValueError, match='256'):
        mod.lut_rows(np.zeros(10, np.uint8), table[:255], np.zeros(20, np.uint8), 0, 5, 2, 5, 1, False)
