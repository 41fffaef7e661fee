"""float32 convolution and GEMM kernels (qvision_kernels.fconv) against the NumPy im2col reference.

Every instruction-set variant that is built and runs here is tested (the registry lists them).  Float
kernels fuse multiply-adds and sum in their own order, so the comparison is a tolerance relative to the
output's range (1e-5), not bit-exactness; results must however be bit-identical across thread counts.
"""
import ctypes
import mmap
import os
import platform
import shutil
import subprocess

import numpy as np
import pytest

from qvision_kernels import _registry, fconv, isa_flags
from qvision_kernels.errors import KernelError
from qvision_kernels.fconv import FConv2d, FLinear
from qvision_kernels.reference.conv import conv2d_f32_im2col
from qvision_kernels.reference.fconv import conv2d_f32, linear_f32, sigmoid_f64

from kernel_check import aarch64_cross_tools, assert_allclose_rel, assert_sigmoid_close

ISAS = _registry.usable('fconv')
RTOL = 1e-5


def test_some_variant_is_built():
    assert ISAS, 'no fconv variant is built: run python setup.py build_ext --inplace'
    for isa in ISAS:
        mod = _registry.module('fconv', isa)
        assert mod.ISA == isa
        modes = (mod.MODE_TAP, mod.MODE_ROW, mod.MODE_PATCH)
        assert modes == (fconv.MODE_TAP, fconv.MODE_ROW, fconv.MODE_PATCH)


def _pads4(padding):
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[1], padding[0], padding[1])
    return tuple(padding)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _reference(x, w, b, stride, padding, dilation, groups, act_min, act_max):
    return conv2d_f32(x, w, b, _pair(stride), _pads4(padding), _pair(dilation), groups, act_min, act_max)


def _modes(layer):
    """Every input-access mode valid for the layer (the packed weights are the same for all)."""
    if layer.depthwise:
        return [None]
    modes = [fconv.MODE_TAP, fconv.MODE_PATCH]
    if layer.groups == 1 and layer.dilation[1] == 1:
        modes.append(fconv.MODE_ROW)
    return modes


def _run_case(isa, rng, n, h, w, c, oc, k, stride=1, padding=0, dilation=1, groups=1, act=(None, None),
              bias=True, all_modes=True, num_threads=1):
    kh, kw = _pair(k)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = rng.standard_normal((oc, kh, kw, c // groups)).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32) if bias else None
    layer = FConv2d(wt, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
                    act_min=act[0], act_max=act[1], isa=isa)
    expected = _reference(x, wt, b, stride, padding, dilation, groups, *act)
    default_mode = layer.mode
    for mode in (_modes(layer) if all_modes else [default_mode]):
        layer.mode = mode
        got = layer(x, num_threads=num_threads)
        ctx = dict(isa=isa, x=x.shape, w=wt.shape, stride=stride, padding=padding, dilation=dilation,
                   groups=groups, act=act, mode=mode, default_mode=default_mode, threads=num_threads)
        assert_allclose_rel(got, expected, RTOL, ctx)
    layer.mode = default_mode
    return layer, x, expected


@pytest.mark.parametrize('isa', ISAS)
def test_random_shapes(isa):
    rng = np.random.default_rng(1234)
    chans = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70]
    for case in range(36):
        k = int(rng.choice([1, 3, 5, 7]))
        stride = int(rng.choice([1, 2]))
        dilation = int(rng.choice([1, 1, 2])) if k > 1 else 1
        groups = int(rng.choice([1, 1, 1, 2, 3]))
        cg = int(rng.choice(chans))
        ocg = int(rng.choice(chans))
        span = dilation * (k - 1) + 1
        padding = tuple(int(v) for v in rng.integers(0, k // 2 + 1, size=4))
        h = int(rng.integers(max(1, span - padding[0] - padding[2]), span + 9))
        w = int(rng.integers(max(1, span - padding[1] - padding[3]), span + 9))
        n = int(rng.choice([1, 1, 2]))
        _run_case(isa, rng, n, h, w, cg * groups, ocg * groups, k, stride, padding, dilation, groups)


@pytest.mark.parametrize('isa', ISAS)
def test_output_channel_blocks(isa):
    # Around every multiple of 16 up to 8 blocks: tails, remainder kernels (e.g. 5, 6, 7 blocks on a tile
    # of 4) and every tile width.
    rng = np.random.default_rng(7)
    for oc in [1, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 80, 96, 111, 112, 113, 128]:
        _run_case(isa, rng, 1, 6, 7, 8, oc, 3, padding=1, all_modes=False)
        _run_case(isa, rng, 1, 5, 3, 24, oc, 1, all_modes=False)


@pytest.mark.parametrize('isa', ISAS)
def test_input_channels(isa):
    # Around the mode thresholds (patch below 8, row below 64) and the vector width.
    rng = np.random.default_rng(11)
    for c in [1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70]:
        _run_case(isa, rng, 1, 7, 9, c, 20, 3, stride=1, padding=1)


@pytest.mark.parametrize('isa', ISAS)
def test_first_layer_three_channels(isa):
    rng = np.random.default_rng(3)
    _run_case(isa, rng, 2, 37, 45, 3, 16, 3, stride=2, padding=1)
    _run_case(isa, rng, 1, 40, 33, 3, 32, 6, stride=2, padding=2)      # YOLOv5 stem
    _run_case(isa, rng, 1, 29, 31, 3, 64, 7, stride=2, padding=3)      # ResNet stem
    _run_case(isa, rng, 1, 23, 19, 3, 24, 3, stride=1, padding=(0, 2, 1, 0), act=(0.0, None))


@pytest.mark.parametrize('isa', ISAS)
def test_grouped(isa):
    rng = np.random.default_rng(5)
    for groups, cg, ocg in [(2, 8, 8), (2, 16, 17), (3, 5, 7), (3, 33, 16), (4, 1, 2), (2, 64, 40)]:
        _run_case(isa, rng, 2, 9, 8, groups * cg, groups * ocg, 3, stride=1, padding=1, groups=groups)
        _run_case(isa, rng, 1, 10, 11, groups * cg, groups * ocg, 3, stride=2, padding=(1, 0, 0, 1),
                  dilation=2, groups=groups)


@pytest.mark.parametrize('isa', ISAS)
def test_depthwise(isa):
    rng = np.random.default_rng(9)
    for c in [1, 3, 15, 16, 17, 31, 32, 33, 48, 64, 65]:
        for k, stride, padding, dilation in [(3, 1, 1, 1), (3, 2, 1, 1), (5, 1, 2, 1),
                                             (3, 1, (2, 0, 1, 2), 2), (5, 2, (0, 1, 2, 0), 1)]:
            layer, _, _ = _run_case(isa, rng, 2, 9, 10, c, c, k, stride, padding, dilation, groups=c,
                                    act=(0.0, 6.0) if c % 2 else (None, None))
            assert layer.depthwise


@pytest.mark.parametrize('isa', ISAS)
def test_fused_activation(isa):
    rng = np.random.default_rng(13)
    for act in [(0.0, None), (0.0, 6.0), (-0.5, 0.25), (None, 1.0), (2.0, 2.0)]:
        _run_case(isa, rng, 1, 8, 8, 16, 40, 3, padding=1, act=act)
        _run_case(isa, rng, 1, 8, 8, 24, 24, 3, padding=1, groups=24, act=act)
        layer, x, expected = _run_case(isa, rng, 1, 5, 6, 3, 17, 3, padding=1, act=act)
        y = layer(x)
        lo = -np.inf if act[0] is None else act[0]
        hi = np.inf if act[1] is None else act[1]
        assert y.min() >= lo and y.max() <= hi


@pytest.mark.parametrize('isa', ISAS)
def test_tiny_outputs(isa):
    rng = np.random.default_rng(17)
    _run_case(isa, rng, 1, 1, 1, 8, 16, 3, padding=1)                  # one pixel, all taps but one padding
    _run_case(isa, rng, 3, 7, 7, 5, 33, 7)                             # one pixel per image, batch of 3
    _run_case(isa, rng, 1, 1, 1, 70, 70, 1)                            # 1x1 on one pixel
    _run_case(isa, rng, 2, 2, 3, 3, 16, 3, stride=2, padding=1)
    _run_case(isa, rng, 1, 1, 2, 17, 17, 3, padding=1, groups=17)      # depthwise, fewer pixels than a tile
    _run_case(isa, rng, 4, 3, 1, 16, 64, (3, 1), padding=(1, 0))       # rectangular kernel
    _run_case(isa, rng, 1, 4, 9, 9, 18, (1, 5), padding=(0, 2), dilation=(1, 2))


@pytest.mark.parametrize('isa', ISAS)
def test_no_bias_and_nan_propagation(isa):
    rng = np.random.default_rng(19)
    _run_case(isa, rng, 1, 6, 6, 12, 20, 3, padding=1, bias=False)
    # A NaN input reaches the outputs whose receptive field holds it, through the fused clamp too.
    for groups, c, oc in [(1, 4, 20), (1, 40, 20), (8, 8, 8)]:
        x = rng.standard_normal((1, 6, 6, c)).astype(np.float32)
        x[0, 2, 3, 0] = np.nan
        wt = rng.standard_normal((oc, 3, 3, c // groups)).astype(np.float32)
        layer = FConv2d(wt, None, padding=1, groups=groups, act_min=0.0, act_max=6.0, isa=isa)
        expected = np.isnan(conv2d_f32_im2col(x, wt, None, pads=(1, 1, 1, 1), groups=groups))
        for mode in _modes(layer):
            layer.mode = mode
            got = np.isnan(layer(x))
            assert np.array_equal(got, expected), (isa, groups, c, mode, got.sum(), expected.sum())


@pytest.mark.parametrize('isa', ISAS)
def test_threads_give_identical_results(isa):
    rng = np.random.default_rng(23)
    for (n, h, w, c, oc, k, stride, groups) in [(2, 23, 17, 32, 80, 3, 1, 1), (1, 31, 9, 3, 16, 3, 2, 1),
                                                (1, 13, 14, 24, 24, 3, 1, 24), (1, 11, 7, 12, 36, 1, 1, 3),
                                                (1, 2, 2, 8, 8, 3, 1, 1)]:
        x = rng.standard_normal((n, h, w, c)).astype(np.float32)
        wt = rng.standard_normal((oc, k, k, c // groups)).astype(np.float32)
        b = rng.standard_normal(oc).astype(np.float32)
        layer = FConv2d(wt, b, stride=stride, padding=k // 2, groups=groups, act_min=-1.0, isa=isa)
        y1 = layer(x, num_threads=1)
        for nt in (2, 3, None):
            assert np.array_equal(layer(x, num_threads=nt), y1), (isa, x.shape, wt.shape, nt)
        expected = _reference(x, wt, b, stride, k // 2, 1, groups, -1.0, None)
        assert_allclose_rel(y1, expected, RTOL, (isa, x.shape, wt.shape))


@pytest.mark.parametrize('isa', ISAS)
def test_out_argument(isa):
    rng = np.random.default_rng(29)
    x = rng.standard_normal((2, 6, 5, 20)).astype(np.float32)
    wt = rng.standard_normal((33, 3, 3, 20)).astype(np.float32)
    layer = FConv2d(wt, None, padding=1, isa=isa)
    out = np.full(layer.output_shape(x.shape), np.nan, np.float32)
    assert layer(x, out=out) is out
    assert_allclose_rel(out, conv2d_f32_im2col(x, wt, None, pads=(1, 1, 1, 1)), RTOL, isa)
    # a non-contiguous input is accepted (copied)
    xt = np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    assert not xt.flags.c_contiguous
    assert np.array_equal(layer(xt), out)
    for bad in [np.empty(out.shape, np.float64), np.empty((2, 6, 5, 32), np.float32),
                np.empty((2, 6, 5, 66), np.float32)[..., ::2], [[0.0]]]:
        with pytest.raises(KernelError):
            layer(x, out=bad)
    ro = np.empty(out.shape, np.float32)
    ro.flags.writeable = False
    with pytest.raises(KernelError):
        layer(x, out=ro)
    same = FConv2d(rng.standard_normal((20, 1, 1, 20)).astype(np.float32), None, isa=isa)
    with pytest.raises(KernelError, match='overlap'):
        same(x, out=x)


def _guarded_empty(shape):
    """A float32 array that ends exactly where an inaccessible page begins: reading or writing one element
    past its end kills the process with SIGSEGV instead of passing unnoticed."""
    nbytes = int(np.prod(shape)) * 4
    page = mmap.PAGESIZE
    total = (nbytes + page - 1) // page * page + page
    buf = mmap.mmap(-1, total)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(addr + total - page, page, 0) == 0, ctypes.get_errno()   # PROT_NONE
    return np.frombuffer(buf, np.float32, count=nbytes // 4, offset=total - page - nbytes).reshape(shape)


@pytest.mark.parametrize('isa', ISAS)
def test_no_access_past_the_arrays(isa):
    # Channel tails (masked loads and stores) and the last pixel, with input and output each followed by
    # a guard page (Linux; the package targets Linux only).
    rng = np.random.default_rng(41)
    for c, oc, k, groups in [(17, 17, 3, 17), (33, 33, 5, 33), (3, 17, 3, 1), (5, 33, 1, 1), (18, 9, 3, 3),
                             (70, 20, 3, 1)]:
        wt = rng.standard_normal((oc, k, k, c // groups)).astype(np.float32)
        layer = FConv2d(wt, None, padding=k // 2, groups=groups, isa=isa)
        x = _guarded_empty((1, 5, 7, c))
        x[...] = rng.standard_normal(x.shape)
        out = _guarded_empty(layer.output_shape(x.shape))
        expected = conv2d_f32_im2col(x, wt, None, pads=(k // 2,) * 4, groups=groups)
        for mode in _modes(layer):
            layer.mode = mode
            layer(x, out=out)
            assert_allclose_rel(out, expected, RTOL, (isa, c, oc, k, groups, mode))


@pytest.mark.parametrize('isa', ISAS)
def test_linear(isa):
    rng = np.random.default_rng(31)
    for m, k, n in [(1, 1, 1), (1, 3, 16), (5, 16, 17), (13, 17, 64), (100, 64, 65), (7, 300, 33),
                    (33, 65, 130)]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        wt = rng.standard_normal((n, k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        for act in [(None, None), (0.0, None), (0.0, 6.0)]:
            layer = FLinear(wt, b, act_min=act[0], act_max=act[1], isa=isa)
            expected = linear_f32(x, wt, b, act[0], act[1])
            got = layer(x, num_threads=2)
            assert got.shape == (m, n)
            assert_allclose_rel(got, expected, RTOL, (isa, m, k, n, act))
            assert np.array_equal(layer(x, num_threads=1), got)
    layer = FLinear(wt, None, isa=isa)
    out = np.empty((m, n), np.float32)
    assert layer(x, out=out) is out
    assert_allclose_rel(out, x @ wt.T, RTOL, isa)
    assert layer(np.empty((0, k), np.float32)).shape == (0, n)


def _assert_fused_matches(got, pre, expected, activation, ctx):
    """A fused sigmoid / SiLU: within a few ulps of the exact activation of the same layer's unfused
    output ``pre`` (the same accumulators), and within RTOL of the reference convolution scaled by the
    activation's slope (sigmoid <= 1/4, SiLU < 1.1) times the pre-activation range."""
    assert_sigmoid_close(got, sigmoid_f64(pre, activation == 'silu'), ctx)
    slope = 1.1 if activation == 'silu' else 0.25
    tol = RTOL * slope * max(float(np.abs(pre).max(initial=0.0)), 1.0)
    diff = np.abs(got.astype(np.float64) - expected)
    assert diff.max(initial=0.0) <= tol, (ctx, diff.max(), tol)


# (n, h, w, c, oc, k, stride, padding, groups): channel blocks around every tile width and remainder
# chunk, pixel counts around the tile rows (6, 8, 12, 14 on AVX-512; 6 and 4 elsewhere), depthwise layers
# with channel tails, a grouped layer and a stem with patches.
SIGMOID_CASES = [(1, 5, 7, 8, 1, 3, 1, 1, 1), (1, 4, 3, 16, 17, 1, 1, 0, 1), (1, 3, 5, 24, 33, 3, 1, 1, 1),
                 (1, 7, 2, 12, 64, 1, 1, 0, 1), (1, 2, 7, 9, 65, 3, 1, 1, 1), (1, 13, 1, 20, 80, 1, 1, 0, 1),
                 (2, 3, 5, 32, 113, 3, 2, 1, 1), (1, 9, 9, 3, 16, 3, 2, 1, 1), (1, 6, 7, 17, 17, 3, 1, 1, 17),
                 (1, 5, 9, 33, 33, 3, 2, 1, 33), (1, 4, 4, 64, 64, 5, 1, 2, 64), (1, 6, 6, 12, 30, 3, 1, 1, 3)]


@pytest.mark.parametrize('activation', ['sigmoid', 'silu'])
@pytest.mark.parametrize('isa', ISAS)
def test_fused_sigmoid_silu(isa, activation):
    rng = np.random.default_rng(43)
    for (n, h, w, c, oc, k, stride, padding, groups) in SIGMOID_CASES:
        x = rng.standard_normal((n, h, w, c)).astype(np.float32)
        # weights scaled so that the pre-activations reach about +-30: both tails and the middle
        wt = (rng.standard_normal((oc, k, k, c // groups)) * 8 / np.sqrt(k * k * c / groups)).astype(np.float32)
        b = rng.standard_normal(oc).astype(np.float32)
        plain = FConv2d(wt, b, stride=stride, padding=padding, groups=groups, isa=isa)
        fused = FConv2d(wt, b, stride=stride, padding=padding, groups=groups, isa=isa, activation=activation)
        assert fused.activation == activation and fused.depthwise == (groups == c == oc)
        expected = _reference(x, wt, b, stride, padding, 1, groups, None, None)
        expected = sigmoid_f64(expected, activation == 'silu')
        for mode in _modes(fused):
            plain.mode = fused.mode = mode
            pre = plain(x)
            got = fused(x, num_threads=1)
            ctx = dict(isa=isa, activation=activation, x=x.shape, w=wt.shape, groups=groups, mode=mode)
            _assert_fused_matches(got, pre, expected, activation, ctx)
            assert np.array_equal(fused(x, num_threads=2), got), ctx
            assert np.array_equal(plain(x, num_threads=2), pre), ctx


def _identity_layer(c, isa, activation, depthwise):
    """A 1x1 layer whose output is its input exactly: identity weights (depthwise: one weight per
    channel, so that a NaN stays in its channel), no bias."""
    if depthwise:
        return FConv2d(np.ones((c, 1, 1, 1), np.float32), None, groups=c, isa=isa, activation=activation)
    return FConv2d(np.eye(c, dtype=np.float32).reshape(c, 1, 1, c), None, isa=isa, activation=activation)


@pytest.mark.parametrize('activation', ['sigmoid', 'silu'])
@pytest.mark.parametrize('isa', ISAS)
def test_fused_sigmoid_extreme_inputs(isa, activation):
    silu = activation == 'silu'
    rng = np.random.default_rng(47)
    special = np.array([100, -100, 1e30, -1e30, 0, 87.0, -87.0, 87.5, -87.5, 88.8, -88.8, 104, -104, 20, -20,
                        17, -17, 1e-30, -1e-30, 3.4e38, -3.4e38, 0.5, -0.5], np.float32)
    for c, depthwise in [(23, False), (23, True), (40, True)]:
        x = np.concatenate([special[:c], rng.uniform(-110, 110, max(0, c - special.size))]).astype(np.float32)
        x = np.stack([x, np.roll(x, 5), -x]).reshape(1, 3, 1, c)
        if depthwise:
            x[0, 1, 0, 3] = np.nan
        layer = _identity_layer(c, isa, activation, depthwise)
        for nt in (1, 2):
            y = layer(x, num_threads=nt)
            ctx = (isa, activation, c, depthwise, nt)
            assert_sigmoid_close(y, sigmoid_f64(x, silu), ctx)
            finite = np.isfinite(x)
            assert np.isfinite(y[finite]).all(), ctx
            assert np.array_equal(np.isnan(y), np.isnan(x)), ctx
            if not silu:
                assert np.nanmin(y) >= 0 and np.nanmax(y) <= 1, ctx
                assert np.all(y[x >= 88] == 1) and np.all(y[x <= -88] == 0), ctx
            else:
                assert np.array_equal(y[x >= 88], x[x >= 88]) and np.all(y[x <= -88] == 0), ctx


@pytest.mark.parametrize('isa', ISAS)
def test_linear_fused_sigmoid_silu(isa):
    rng = np.random.default_rng(53)
    for m, k, n in [(1, 3, 16), (7, 33, 17), (40, 64, 130)]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        wt = (rng.standard_normal((n, k)) * 6 / np.sqrt(k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        pre = FLinear(wt, b, isa=isa)(x)
        for activation in ('sigmoid', 'silu'):
            layer = FLinear(wt, b, isa=isa, activation=activation)
            got = layer(x, num_threads=2)
            _assert_fused_matches(got, pre, linear_f32(x, wt, b, activation=activation), activation,
                                  (isa, m, k, n, activation))
            assert np.array_equal(layer(x, num_threads=1), got)


SIGMOID_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'c', 'test_qv_fsigmoid.c')


def _sigmoid_shim(tmp_path, cc, flags, isa, runner=()):
    """Compile test/c/test_qv_fsigmoid.c for ``isa`` (the kernels' float flags: -O3, FMA contraction as
    the compiler likes) and run it: every input within 3e-7 of double-precision exp."""
    exe = str(tmp_path / ('fsigmoid_' + isa))
    include = os.path.join(os.path.dirname(fconv.__file__), 'include')
    subprocess.run([cc, '-O3', '-std=c99', '-fno-math-errno', '-I', include] + flags
                   + ['-DQV_ISA_%s=1' % isa.upper(), SIGMOID_C, '-o', exe, '-lm'], check=True, capture_output=True)
    run = subprocess.run(list(runner) + [exe], capture_output=True, text=True, timeout=300)
    # the float shim of an Arm build names itself 'generic' (its lanes are the generic ones)
    assert run.returncode == 0 and ' 0 failed' in run.stdout, run.stdout + run.stderr
    assert run.stdout.split(':')[0] in (isa, 'generic'), run.stdout


@pytest.mark.parametrize('isa', [i for i in isa_flags.X86_64 if i in ISAS])
def test_sigmoid_formula_x86(tmp_path, isa):
    if platform.machine().lower() not in ('x86_64', 'amd64') or not shutil.which('gcc'):
        pytest.skip('x86-64 with gcc only')
    _sigmoid_shim(tmp_path, 'gcc', isa_flags.X86_64[isa], isa)


@pytest.mark.parametrize('isa', list(isa_flags.AARCH64))
def test_sigmoid_formula_aarch64_under_qemu(tmp_path, isa):
    # Arm builds take the generic lanes of qv_fsimd.h (with FMA contraction there): same formula.
    cc, runner = aarch64_cross_tools()
    _sigmoid_shim(tmp_path, cc, ['-static'] + isa_flags.AARCH64[isa], isa, runner=runner)


def test_bad_activation():
    w = np.ones((4, 1, 1, 4), np.float32)
    for kwargs in [dict(activation='relu'), dict(activation='SILU'), dict(activation='silu', act_min=0.0),
                   dict(activation='sigmoid', act_max=1.0)]:
        with pytest.raises(KernelError):
            FConv2d(w, None, **kwargs)
    with pytest.raises(KernelError):
        FLinear(np.ones((4, 4), np.float32), None, activation='tanh')
    mod = _registry.module('fconv', ISAS[-1])
    assert (mod.ACT_CLAMP, mod.ACT_SIGMOID, mod.ACT_SILU) == (fconv.ACT_CLAMP, fconv.ACTIVATIONS['sigmoid'],
                                                            fconv.ACTIVATIONS['silu'])


def test_bad_arguments():
    rng = np.random.default_rng(37)
    w = rng.standard_normal((8, 3, 3, 4)).astype(np.float32)
    x = rng.standard_normal((1, 5, 5, 4)).astype(np.float32)
    bad_layers = [
        dict(weight=w.astype(np.float64), bias=None),
        dict(weight=w[0], bias=None),
        dict(weight=w, bias=np.zeros(8, np.float64)),
        dict(weight=w, bias=np.zeros(7, np.float32)),
        dict(weight=w, bias=None, groups=3),
        dict(weight=w, bias=None, groups=0),
        dict(weight=w, bias=None, stride=0),
        dict(weight=w, bias=None, dilation=(1, 0)),
        dict(weight=w, bias=None, padding=-1),
        dict(weight=w, bias=None, padding=(1, 2, 3)),
        dict(weight=w, bias=None, act_min=1.0, act_max=0.0),
        dict(weight=w, bias=None, act_min=float('nan')),
        dict(weight=w, bias=None, isa='no-such-isa'),
        dict(weight=np.zeros((0, 3, 3, 4), np.float32), bias=None),
    ]
    for kwargs in bad_layers:
        with pytest.raises(KernelError):
            FConv2d(**kwargs)
    layer = FConv2d(w, None, padding=0)
    for bad_x in [x.astype(np.float64), x[0], x[..., :3], np.zeros((1, 2, 2, 4), np.float32), x.tolist()]:
        with pytest.raises(KernelError):
            layer(bad_x)
    for nt in [0, -1, 1.5, True]:
        with pytest.raises(KernelError):
            layer(x, num_threads=nt)
    with pytest.raises(KernelError):
        FLinear(np.zeros((4, 3), np.float64), None)
    lin = FLinear(np.zeros((4, 3), np.float32), None)
    for bad_x in [np.zeros((2, 4), np.float32), np.zeros((2, 3), np.float64), np.zeros(3, np.float32)]:
        with pytest.raises(KernelError):
            lin(bad_x)
    with pytest.raises(KernelError):
        lin(np.zeros((2, 3), np.float32), out=np.zeros((2, 5), np.float32))
