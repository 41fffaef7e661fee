"""The pooling kernels (qvision_kernels.pool) against the NumPy references.

uint8 results are bit-exact against ``qvision_kernels.reference.pool``; float32 ones within a relative
1e-6.  Every kernel test runs once per instruction-set variant of the 'pool' family that is built and
runnable here (from the registry), with 1 and 2 threads (same bytes) and with ``out=`` given.  Window
geometries are drawn at random (kernel, stride, padding incl. asymmetric, dilation, ceil mode) such that
every window touches the image; each failing comparison prints its case, seed included.
"""
import numpy as np
import pytest

from kernel_check import assert_bitexact, isa_fixture, run_both
from qvision_kernels import KernelError
from qvision_kernels import pool as P
from qvision_kernels.reference import pool as R
from qvision_kernels.reference.pool import pool_output_size

CHANNELS = (1, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70)


isa = isa_fixture('pool')


def _geometry(r, dilation):
    """A random window geometry in which every window has a position inside the image: each pad is
    below the window extent and the image is at least one extent long (so dilated taps cannot jump
    over it)."""
    kh, kw = int(r.integers(1, 6)), int(r.integers(1, 6))
    sh, sw = int(r.integers(1, 4)), int(r.integers(1, 4))
    dh, dw = (int(r.integers(1, 3)), int(r.integers(1, 3))) if dilation else (1, 1)
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    pads = (int(r.integers(0, eh)), int(r.integers(0, ew)), int(r.integers(0, eh)), int(r.integers(0, ew)))
    form = int(r.integers(0, 3))
    if form == 0:                                   # int
        pads = (pads[0],) * 4 if pads[0] < min(eh, ew) else (0, 0, 0, 0)
        padding = pads[0]
    elif form == 1:                                 # (pad_h, pad_w)
        pads = (pads[0], pads[1], pads[0], pads[1])
        padding = (pads[0], pads[1])
    else:                                           # (top, left, bottom, right)
        padding = pads
    h, w = int(r.integers(eh, eh + 8)), int(r.integers(ew, ew + 8))
    ceil = bool(r.integers(0, 2))
    return dict(kernel=(kh, kw), stride=(sh, sw), dilation=(dh, dw), pads=pads, padding=padding, h=h, w=w,
                ceil=ceil)


# ------------------------------------------------------------------------------------------------ max

@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_max_pool2d(isa, dtype):
    rng = np.random.default_rng(1 if dtype == np.uint8 else 2)
    for c in CHANNELS:
        for k in range(3):
            seed = int(rng.integers(2 ** 31))
            r = np.random.default_rng(seed)
            g = _geometry(r, dilation=True)
            n = int(r.integers(1, 3))
            if dtype == np.uint8:
                x = r.integers(0, 256, (n, g['h'], g['w'], c), dtype=np.uint8)
            else:
                x = (r.standard_normal((n, g['h'], g['w'], c)) - 3.0).astype(np.float32)   # mostly < 0
            expected = R.max_pool2d(x, g['kernel'], g['stride'], g['pads'], g['dilation'], g['ceil'])
            ctx = 'max_pool %s seed=%d x=%s %s isa=%s' % (np.dtype(dtype).name, seed, x.shape, g, isa)
            run_both(lambda out, nt: P.max_pool2d(x, g['kernel'], g['stride'], g['padding'], g['dilation'],
                                                   g['ceil'], out=out, num_threads=nt, isa=isa),
                      expected, ctx)


def test_max_pool2d_golden(isa):
    # Padding never wins, even against negative values; stride defaults to the kernel.
    x = -np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    y = P.max_pool2d(x, 2, isa=isa)
    assert y[0, :, :, 0].tolist() == [[-1, -3], [-9, -11]]
    y = P.max_pool2d(x, 3, stride=1, padding=1, isa=isa)
    assert y[0, 0, 0, 0] == -1 and y[0, 3, 3, 0] == -11
    # ceil mode adds the partial window at the end: 5 -> 3 with k=2, s=2.
    x = np.arange(25, dtype=np.uint8).reshape(1, 5, 5, 1)
    y = P.max_pool2d(x, 2, ceil_mode=True, isa=isa)
    assert y[0, :, :, 0].tolist() == [[6, 8, 9], [16, 18, 19], [21, 23, 24]]
    # Lists are accepted (they bypass the parameter cache) and give the same result as tuples.
    assert P.max_pool2d(x, [2, 2], [2, 2], [0, 0], ceil_mode=True, isa=isa).tolist() == y.tolist()
    # YOLO SPPF: 5x5, stride 1, padding 2 keeps the size.
    assert P.max_pool2d(np.zeros((1, 20, 20, 8), np.uint8), 5, 1, 2, isa=isa).shape == (1, 20, 20, 8)


def test_output_size_golden():
    # Values of PyTorch / ONNX Runtime MaxPool.
    assert pool_output_size(6, 3, 2, 1, 1, 1, False) == 3
    assert pool_output_size(6, 3, 2, 1, 1, 1, True) == 4
    assert pool_output_size(5, 2, 2, 0, 0, 1, True) == 3
    assert pool_output_size(5, 2, 2, 0, 0, 1, False) == 2
    assert pool_output_size(2, 1, 2, 0, 0, 1, True) == 1       # the window at 2 would start past the end
    assert pool_output_size(8, 3, 2, 0, 0, 2, False) == 2      # dilated extent 5
    assert pool_output_size(3, 5, 1, 0, 0, 1, False) == 0
    assert pool_output_size(112, 3, 2, 1, 1, 1, False) == 56   # ResNet stem


# -------------------------------------------------------------------------------------------- average

@pytest.mark.parametrize('include_pad', [False, True])
def test_avg_pool2d_int8(isa, include_pad):
    rng = np.random.default_rng(10 + include_pad)
    for c in CHANNELS:
        for k in range(3):
            seed = int(rng.integers(2 ** 31))
            r = np.random.default_rng(seed)
            g = _geometry(r, dilation=False)
            n = int(r.integers(1, 3))
            x = r.integers(0, 256, (n, g['h'], g['w'], c), dtype=np.uint8)
            sx, zpx = float(r.uniform(0.01, 0.1)), int(r.integers(0, 256))
            if k == 2:       # saturating: the output scale 20x finer than the input's
                sy = sx / 20
            else:
                sy = float(r.uniform(0.5, 2.0)) * sx
            zpy = int(r.integers(0, 256))
            expected = R.avg_pool2d_int8(x, g['kernel'], g['stride'], g['pads'], sx, zpx, sy, zpy, g['ceil'],
                                         include_pad)
            ctx = 'avg_pool u8 seed=%d x=%s %s include_pad=%s q=(%g,%d,%g,%d) isa=%s' % (
                seed, x.shape, g, include_pad, sx, zpx, sy, zpy, isa)
            run_both(lambda out, nt: P.avg_pool2d(x, g['kernel'], g['stride'], g['padding'], g['ceil'],
                                                   include_pad, sx, zpx, sy, zpy, out=out, num_threads=nt,
                                                   isa=isa), expected, ctx)


@pytest.mark.parametrize('include_pad', [False, True])
def test_avg_pool2d_f32(isa, include_pad):
    rng = np.random.default_rng(20 + include_pad)
    for c in CHANNELS:
        for k in range(2):
            seed = int(rng.integers(2 ** 31))
            r = np.random.default_rng(seed)
            g = _geometry(r, dilation=False)
            x = r.standard_normal((int(r.integers(1, 3)), g['h'], g['w'], c)).astype(np.float32)
            expected = R.avg_pool2d_f32(x, g['kernel'], g['stride'], g['pads'], g['ceil'], include_pad)
            ctx = 'avg_pool f32 seed=%d x=%s %s include_pad=%s isa=%s' % (seed, x.shape, g, include_pad, isa)
            run_both(lambda out, nt: P.avg_pool2d(x, g['kernel'], g['stride'], g['padding'], g['ceil'],
                                                   include_pad, out=out, num_threads=nt, isa=isa),
                      expected, ctx, exact=False)


def test_avg_pool2d_golden(isa):
    # 2x2 windows of a 3x3 image with padding 1 at the top-left only, s_x = s_y, zp 0.
    x = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9], np.uint8).reshape(1, 3, 3, 1)
    kw = dict(x_scale=0.1, x_zero_point=0, y_scale=0.1, y_zero_point=0, isa=isa)
    y = P.avg_pool2d(x, 2, 2, (1, 1, 0, 0), **kw)
    assert y[0, :, :, 0].tolist() == [[1, 2], [6, 7]]            # 1/1, 5/2 -> 2 (tie to even), 11/2, 28/4
    y = P.avg_pool2d(x, 2, 2, (1, 1, 0, 0), count_include_pad=True, **kw)
    assert y[0, :, :, 0].tolist() == [[0, 1], [3, 7]]            # 1/4 -> 0, 5/4 -> 1, 11/4 -> 3, 28/4
    # ceil mode: the overhang beyond the padded input never counts, with or without include_pad.
    x = np.full((1, 3, 3, 1), 8, np.uint8)
    for include_pad in (False, True):
        y = P.avg_pool2d(x, 2, 2, 0, ceil_mode=True, count_include_pad=include_pad, **kw)
        assert y[0, :, :, 0].tolist() == [[8, 8], [8, 8]]


def test_avg_pool2d_ties(isa):
    """Sums of two values with s_x = s_y: odd sums land exactly half-way and round to even."""
    x = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing='ij'), axis=-1).astype(np.uint8)
    x = np.ascontiguousarray(x.reshape(1, 256 * 256, 2, 1))          # each row holds one (a, b) pair
    for zpx, zpy in ((0, 0), (128, 128), (3, 250)):
        expected = R.avg_pool2d_int8(x, (1, 2), (1, 2), (0, 0, 0, 0), 0.05, zpx, 0.05, zpy)
        y = P.avg_pool2d(x, (1, 2), x_scale=0.05, x_zero_point=zpx, y_scale=0.05, y_zero_point=zpy, isa=isa)
        assert_bitexact(y, expected, 'avg ties zps=(%d,%d) isa=%s' % (zpx, zpy, isa))
    y = P.avg_pool2d(x, (1, 2), x_scale=0.05, x_zero_point=0, y_scale=0.05, y_zero_point=0, isa=isa)
    s = x.astype(np.int64).sum(axis=2)[0, :, 0]
    assert y[0, :, 0, 0].tolist() == np.rint(s / 2).astype(int).tolist()


# ------------------------------------------------------------------------------------- global average

def test_global_avg_pool2d(isa):
    rng = np.random.default_rng(30)
    for c in CHANNELS:
        seed = int(rng.integers(2 ** 31))
        r = np.random.default_rng(seed)
        n, h, w = int(r.integers(1, 3)), int(r.integers(1, 12)), int(r.integers(1, 12))
        x = r.integers(0, 256, (n, h, w, c), dtype=np.uint8)
        sx, zpx, zpy = float(r.uniform(0.01, 0.1)), int(r.integers(0, 256)), int(r.integers(0, 256))
        for sy in (sx * float(r.uniform(0.5, 2.0)), sx / 50):
            expected = R.global_avg_pool2d_int8(x, sx, zpx, sy, zpy)
            run_both(lambda out, nt: P.global_avg_pool2d(x, sx, zpx, sy, zpy, out=out, num_threads=nt,
                                                          isa=isa),
                      expected, 'gap u8 seed=%d x=%s q=(%g,%d,%g,%d) isa=%s' % (seed, x.shape, sx, zpx, sy, zpy,
                                                                              isa))
        xf = r.standard_normal((n, h, w, c)).astype(np.float32) + 1.0
        run_both(lambda out, nt: P.global_avg_pool2d(xf, out=out, num_threads=nt, isa=isa),
                  R.global_avg_pool2d_f32(xf), 'gap f32 seed=%d x=%s isa=%s' % (seed, xf.shape, isa), exact=False)


def test_global_avg_pool2d_sum_beyond_float32(isa):
    """Sums above 2**24 are rounded by the int32 -> float32 conversion exactly as in the reference."""
    r = np.random.default_rng(31)
    x = r.integers(200, 256, (1, 300, 300, 3), dtype=np.uint8)
    expected = R.global_avg_pool2d_int8(x, 0.02, 0, 0.0201, 3)
    run_both(lambda out, nt: P.global_avg_pool2d(x, 0.02, 0, 0.0201, 3, out=out, num_threads=nt, isa=isa),
              expected, 'gap large sums isa=%s' % isa)


# ----------------------------------------------------------------------------------------------- errors

def test_errors():
    x = np.zeros((1, 6, 6, 4), np.uint8)
    q = dict(x_scale=0.1, x_zero_point=0, y_scale=0.1, y_zero_point=0)
    bad_calls = [
        lambda: P.max_pool2d(x.astype(np.int8), 2),                          # dtype
        lambda: P.max_pool2d(x[0], 2),                                       # rank
        lambda: P.max_pool2d(x[:, ::2], 2),                                  # not contiguous
        lambda: P.max_pool2d(x, 0),                                          # kernel
        lambda: P.max_pool2d(x, (2, 2, 2)),
        lambda: P.max_pool2d(x, 2.5),
        lambda: P.max_pool2d(x, 2, stride=0),                                # stride
        lambda: P.max_pool2d(x, 2, dilation=0),
        lambda: P.max_pool2d(x, 2, padding=-1),                              # padding
        lambda: P.max_pool2d(x, 2, padding=(1, 1, 1)),
        lambda: P.max_pool2d(x, 7),                                          # larger than the image
        lambda: P.max_pool2d(np.zeros((1, 1, 1, 1), np.uint8), 3, 1, 3),     # a window only in padding
        lambda: P.max_pool2d(np.zeros((1, 3, 3, 1), np.uint8), 2, 1, 0, dilation=4),
        lambda: P.max_pool2d(x, 2, out=np.zeros((1, 3, 3, 5), np.uint8)),    # out
        lambda: P.max_pool2d(x, 2, out=np.zeros((1, 3, 3, 4), np.float32)),
        lambda: P.max_pool2d(x, 2, num_threads=-1),
        lambda: P.max_pool2d(x, 2, isa='no-such-isa'),
        lambda: P.avg_pool2d(x, 2),                                          # uint8 needs scales
        lambda: P.avg_pool2d(x, 2, x_scale=0.1, x_zero_point=0, y_scale=0.1),
        lambda: P.avg_pool2d(x.astype(np.float32), 2, **q),                  # float32 takes none
        lambda: P.avg_pool2d(x, 2, x_scale=0.0, x_zero_point=0, y_scale=0.1, y_zero_point=0),
        lambda: P.avg_pool2d(x, 2, x_scale=0.1, x_zero_point=300, y_scale=0.1, y_zero_point=0),
        lambda: P.avg_pool2d(x, 2, x_scale=1e38, x_zero_point=0, y_scale=1e-38, y_zero_point=0),
        lambda: P.avg_pool2d(x, 2, 2, 2, **q),                               # window only in padding
        lambda: P.avg_pool2d(x, 2, out=np.zeros((1, 3, 3, 4), np.float32), **q),
        lambda: P.global_avg_pool2d(x),
        lambda: P.global_avg_pool2d(np.zeros((1, 0, 3, 2), np.uint8), **q),
        lambda: P.global_avg_pool2d(x, out=np.zeros((1, 6, 6, 4), np.uint8), **q),
        lambda: P.global_avg_pool2d(x.astype(np.float64)),
    ]
    for call in bad_calls:
        with pytest.raises(KernelError):
            call()
