"""The int8 convolution / GEMM kernels (qvision_kernels.conv: QConv2d, QLinear) against the NumPy reference.

Every test that runs a kernel is bit-exact against ``qvision_kernels.reference.conv2d_int8`` /
``gemm_int8`` and runs once per instruction-set variant usable here (fixture ``qconv_isa``, from the
registry).  Inputs come from seeded generators; the seed and every parameter of a case are printed when a
comparison fails (test/kernel_check.py), so a failure is reproduced with ``arrays(case)``.

The reference results are cached per case, so the (slow) NumPy reference runs once for all the variants.
"""
import functools
from dataclasses import dataclass, replace
from typing import Tuple

import numpy as np
import pytest

from kernel_check import assert_bitexact
from qvision_kernels import KernelError, QConv2d, QLinear, _registry, reference
from qvision_kernels.conv import MAX_REDUCTION, MODE_DIRECT, MODE_PATCH, MODE_ROWS, choose_mode

# Weights are symmetric int8 in [-127, 127] (DESIGN.md section 3).
W_MAX = 127
# Output channel counts around the 16-lane blocks and the 1/2/4-block register tiles.
OC_AROUND_TILES = (1, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 80, 96, 100, 128, 129)


@dataclass(frozen=True)
class Case:
    """One convolution: shapes, parameters and how its data are drawn (all from ``seed``)."""
    seed: int
    n: int = 1
    h: int = 8
    w: int = 8
    c: int = 8
    oc: int = 16
    kh: int = 3
    kw: int = 3
    stride: Tuple[int, int] = (1, 1)
    pads: Tuple[int, int, int, int] = (0, 0, 0, 0)   # top, left, bottom, right
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    zp_x: int = None        # None: drawn from the seed
    zp_y: int = None
    lo: int = 0
    hi: int = 255
    gain: float = 1.0       # scales the multiplier that maps the accumulators' spread to about 40 LSB
    weights: str = 'random'  # 'random' in [-127, 127], 'max' all 127, 'min' all -127
    inputs: str = 'random'   # 'random' in [0, 255], 'max' all 255
    bias: str = 'random'     # 'random' (about the accumulators' spread), 'none', 'large' (about 2**27)


def _readonly(*arrays):
    for a in arrays:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    return arrays


@functools.lru_cache(maxsize=None)
def arrays(case):
    """(x, weight, bias, zp_x, mult, zp_y) of ``case``, deterministic in ``case.seed``."""
    rng = np.random.default_rng(case.seed)
    cg = case.c // case.groups
    if case.inputs == 'max':
        x = np.full((case.n, case.h, case.w, case.c), 255, np.uint8)
    else:
        x = rng.integers(0, 256, (case.n, case.h, case.w, case.c), dtype=np.uint8)
    wshape = (case.oc, case.kh, case.kw, cg)
    if case.weights == 'max':
        w = np.full(wshape, W_MAX, np.int8)
    elif case.weights == 'min':
        w = np.full(wshape, -W_MAX, np.int8)
    else:
        w = rng.integers(-W_MAX, W_MAX + 1, wshape).astype(np.int8)
    zp_x = int(rng.integers(0, 256)) if case.zp_x is None else case.zp_x
    zp_y = int(rng.integers(0, 256)) if case.zp_y is None else case.zp_y
    # Expected spread of sum(w * (x - zp_x)): K * E[(x - zp_x)^2] * E[w^2].
    k = case.kh * case.kw * cg
    ex2 = (255.0 - zp_x) ** 2 if case.inputs == 'max' else 21717.5 - 255.0 * zp_x + zp_x ** 2.0
    ew2 = float(W_MAX ** 2) if case.weights in ('max', 'min') else W_MAX * (W_MAX + 1) / 3.0
    spread = max(1.0, np.sqrt(k * ex2 * ew2))
    if case.bias == 'large':
        bias = rng.integers(-2 ** 27, 2 ** 27, case.oc).astype(np.int32)
        spread = 2.0 ** 27
    elif case.bias == 'none':
        bias = None
    else:
        bias = rng.integers(-int(spread), int(spread) + 1, case.oc).astype(np.int32)
    mult = (case.gain * 40.0 / spread * rng.uniform(0.5, 2.0, case.oc)).astype(np.float32)
    return _readonly(x, w, bias, zp_x, mult, zp_y)


@functools.lru_cache(maxsize=None)
def expected(case):
    x, w, bias, zp_x, mult, zp_y = arrays(case)
    with np.errstate(over='ignore'):        # a huge multiplier takes float32(acc) * mult to +-inf
        y = reference.conv2d_int8(x, w, bias, zp_x, mult, zp_y, stride=case.stride, pads=case.pads,
                                  dilation=case.dilation, groups=case.groups, lo=case.lo, hi=case.hi)
    return _readonly(y)[0]


def layer(case, isa):
    x, w, bias, zp_x, mult, zp_y = arrays(case)
    return QConv2d(w, bias, zp_x, mult, zp_y, stride=case.stride, padding=case.pads,
                   dilation=case.dilation, groups=case.groups, act_min=case.lo, act_max=case.hi, isa=isa)


def check(case, isa, num_threads=1):
    """Run ``case`` on variant ``isa`` and compare bit for bit with the reference; returns the output."""
    conv = layer(case, isa)
    assert conv.isa == isa
    y = conv(arrays(case)[0], num_threads=num_threads)
    assert_bitexact(y, expected(case), context='%r isa=%s num_threads=%d depthwise=%s mode=%s'
                    % (case, isa, num_threads, conv.depthwise, conv.mode))
    return y


# --------------------------------------------------------------------------------------------------------
# Seeded random sweep: every path (1x1, direct, patch, grouped, depthwise, multiplier), odd spatial shapes,
# strides, dilations, asymmetric pads, batches, zero points, narrowed output ranges.

SWEEP_SEEDS = range(240)


def _channels(rng):
    if rng.random() < 0.5:
        return int(rng.choice([1, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65]))
    return int(rng.integers(1, 71))


def random_case(seed):
    rng = np.random.default_rng([20240611, seed])
    kind = ('dense', 'dense', 'dense', 'grouped', 'depthwise', 'multiplier')[seed % 6]
    if kind == 'dense':
        groups = 1
        c = int(rng.integers(1, 41)) if rng.random() < 0.5 else 4 * int(rng.integers(1, 17))
        oc = _channels(rng)
    elif kind == 'grouped':
        groups = int(rng.choice([2, 3, 4, 6]))
        c = groups * int(rng.integers(1, 13))
        oc = groups * int(rng.integers(1, 41))
    elif kind == 'depthwise':
        c = oc = groups = _channels(rng)
    else:
        c = groups = int(rng.integers(1, 25))
        oc = c * int(rng.choice([2, 3]))
    kh, kw = (int(k) for k in rng.choice([1, 1, 2, 3, 3, 5], size=2))
    stride = tuple(int(s) for s in rng.choice([1, 1, 2, 3], size=2))
    dilation = tuple(int(d) for d in rng.choice([1, 1, 1, 2], size=2))
    ext_h, ext_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    pt, pb = (int(p) for p in rng.integers(0, ext_h, size=2))
    pl, pr = (int(p) for p in rng.integers(0, ext_w, size=2))
    big = 30 if rng.random() < 0.1 else 0          # now and then many tiles per thread
    h = int(rng.integers(max(1, ext_h - pt - pb), ext_h + 12 + big))
    w = int(rng.integers(max(1, ext_w - pl - pr), ext_w + 12 + big))
    zps = [0, 255, None, None]
    zp_x, zp_y = zps[int(rng.integers(0, 4))], zps[int(rng.integers(0, 4))]
    lo, hi = 0, 255
    if rng.random() < 0.2:
        lo = int(rng.integers(0, 129))
        hi = int(rng.integers(lo, 256))
    case = Case(seed=seed, n=int(rng.choice([1, 1, 2, 3])), h=h, w=w, c=c, oc=oc, kh=kh, kw=kw, stride=stride,
                pads=(pt, pl, pb, pr), dilation=dilation, groups=groups, zp_x=zp_x, zp_y=zp_y, lo=lo, hi=hi,
                gain=float(rng.choice([1.0, 1.0, 1.0, 0.25, 4.0])),
                bias='none' if rng.random() < 0.1 else 'random')
    return case, int(rng.choice([1, 2, 3]))


@pytest.mark.parametrize('seed', SWEEP_SEEDS)
def test_random_sweep(qconv_isa, seed):
    case, num_threads = random_case(seed)
    check(case, qconv_isa, num_threads)


def test_random_sweep_is_not_degenerate():
    # The sweep must exercise the arithmetic, not only clamp: most outputs strictly inside the range,
    # and every path taken.
    inside = total = 0
    values = set()
    kinds = set()
    for seed in SWEEP_SEEDS:
        case, _ = random_case(seed)
        y = expected(case)
        inside += int(((y > case.lo) & (y < case.hi)).sum())
        total += y.size
        values.update(np.unique(y).tolist())
        cg, ocg = case.c // case.groups, case.oc // case.groups
        mode = choose_mode(cg, case.groups, case.dilation[1])
        kinds.add('depthwise' if cg == ocg == 1 else
                  {MODE_DIRECT: 'direct', MODE_ROWS: 'rows', MODE_PATCH: 'patch'}[mode])
    assert inside > 0.5 * total, 'only %d of %d sweep outputs are not clamped' % (inside, total)
    assert len(values) == 256
    assert kinds == {'depthwise', 'rows', 'patch', 'direct'}


# --------------------------------------------------------------------------------------------------------
# Targeted shapes.

TARGETED = {
    '1x1': Case(seed=1, h=7, w=9, c=64, oc=100, kh=1, kw=1),
    '1x1_stride2': Case(seed=2, h=9, w=8, c=32, oc=40, kh=1, kw=1, stride=(2, 2)),
    '3x3_s1': Case(seed=3, h=11, w=10, c=16, oc=48, pads=(1, 1, 1, 1)),
    '3x3_s2': Case(seed=4, h=13, w=12, c=24, oc=33, stride=(2, 2), pads=(1, 1, 1, 1)),
    '3x3_s2_nopad': Case(seed=5, h=12, w=13, c=8, oc=64, stride=(2, 2)),
    '5x5': Case(seed=6, h=12, w=11, c=12, oc=20, kh=5, kw=5, pads=(2, 2, 2, 2)),
    '7x7': Case(seed=7, h=14, w=15, c=8, oc=17, kh=7, kw=7, stride=(2, 2), pads=(3, 3, 3, 3)),
    '1x7_7x1': Case(seed=8, h=9, w=12, c=16, oc=31, kh=1, kw=7, pads=(0, 3, 0, 3)),
    'dilation2': Case(seed=9, h=12, w=12, c=16, oc=32, dilation=(2, 2), pads=(2, 2, 2, 2)),
    'dilation_2x3': Case(seed=10, h=13, w=14, c=5, oc=16, dilation=(2, 3), pads=(1, 0, 2, 3)),
    'asym_pads': Case(seed=11, h=9, w=10, c=8, oc=24, pads=(0, 1, 2, 0)),
    'asym_pads_big': Case(seed=12, h=6, w=7, c=4, oc=16, pads=(2, 0, 0, 2), stride=(1, 2)),
    'asym_pads_patch': Case(seed=13, h=8, w=9, c=3, oc=16, pads=(1, 2, 0, 1), stride=(2, 2)),
    'groups2_cg8': Case(seed=14, h=8, w=8, c=16, oc=32, groups=2, pads=(1, 1, 1, 1)),
    'groups2_cg6': Case(seed=15, h=8, w=7, c=12, oc=40, groups=2, pads=(1, 1, 1, 1)),
    'groups3_cg5': Case(seed=16, h=7, w=9, c=15, oc=21, groups=3, pads=(1, 1, 1, 1)),
    'groups3_cg4_ocg17': Case(seed=17, h=7, w=7, c=12, oc=51, groups=3, stride=(2, 2), pads=(1, 1, 1, 1)),
    'groups4_cg4': Case(seed=18, h=6, w=6, c=16, oc=68, groups=4, kh=1, kw=1),
    'groups4_cg3': Case(seed=19, h=6, w=8, c=12, oc=16, groups=4, pads=(1, 1, 1, 1)),
    'groups4_cg16_ocg33': Case(seed=20, h=5, w=6, c=64, oc=132, groups=4, pads=(1, 1, 1, 1)),
    'depthwise3x3_c1': Case(seed=21, h=9, w=9, c=1, oc=1, groups=1, pads=(1, 1, 1, 1)),
    'depthwise3x3_c17': Case(seed=22, h=9, w=8, c=17, oc=17, groups=17, pads=(1, 1, 1, 1)),
    'depthwise3x3_s2_c32': Case(seed=23, h=10, w=11, c=32, oc=32, groups=32, stride=(2, 2), pads=(1, 1, 1, 1)),
    'depthwise5x5_c64': Case(seed=24, h=9, w=10, c=64, oc=64, groups=64, kh=5, kw=5, pads=(2, 2, 2, 2)),
    'depthwise_dil2_c33': Case(seed=25, h=9, w=9, c=33, oc=33, groups=33, dilation=(2, 2), pads=(2, 2, 2, 2)),
    'depthwise_asym_c15': Case(seed=26, h=7, w=8, c=15, oc=15, groups=15, pads=(0, 2, 1, 0), stride=(2, 1)),
    'depthwise_c96_batch3': Case(seed=27, n=3, h=6, w=5, c=96, oc=96, groups=96, pads=(1, 1, 1, 1)),
    # rows wide enough for the four-pixel interior tiles, with remainders, and channel tails that end at
    # the last byte of the input (no padding: the last tile reads right up to the end)
    'depthwise3x3_wide_c72': Case(seed=134, h=5, w=37, c=72, oc=72, groups=72, pads=(1, 1, 1, 1)),
    'depthwise3x3_s2_wide_c24': Case(seed=135, h=6, w=41, c=24, oc=24, groups=24, stride=(2, 2),
                                     pads=(1, 1, 1, 1)),
    'depthwise_dil2_wide_c16': Case(seed=136, h=7, w=30, c=16, oc=16, groups=16, dilation=(2, 2),
                                    pads=(2, 2, 2, 2)),
    'depthwise_nopad_c8': Case(seed=137, n=2, h=4, w=23, c=8, oc=8, groups=8),
    'depthwise5x5_nopad_c40': Case(seed=138, h=6, w=29, c=40, oc=40, groups=40, kh=5, kw=5, stride=(1, 2)),
    'multiplier2_c8': Case(seed=28, h=8, w=8, c=8, oc=16, groups=8, pads=(1, 1, 1, 1)),
    'multiplier2_c17': Case(seed=29, h=7, w=9, c=17, oc=34, groups=17, stride=(2, 2), pads=(1, 1, 1, 1)),
    'patch_c1': Case(seed=30, h=10, w=10, c=1, oc=8, pads=(1, 1, 1, 1)),
    'patch_c2': Case(seed=31, h=9, w=10, c=2, oc=20, kh=5, kw=5, pads=(2, 2, 2, 2)),
    'patch_c5': Case(seed=32, h=8, w=9, c=5, oc=33, pads=(1, 1, 1, 1)),
    'patch_c7_1x1': Case(seed=33, h=8, w=9, c=7, oc=16, kh=1, kw=1),
    'patch_c30': Case(seed=34, h=6, w=7, c=30, oc=64, pads=(1, 1, 1, 1)),
    'first_layer_128_s2': Case(seed=35, h=128, w=128, c=3, oc=16, stride=(2, 2), pads=(1, 1, 1, 1)),
    'first_layer_128_s1': Case(seed=36, h=128, w=128, c=3, oc=16, pads=(1, 1, 1, 1)),
    'first_layer_6x6_s2': Case(seed=37, h=64, w=64, c=3, oc=16, kh=6, kw=6, stride=(2, 2), pads=(2, 2, 2, 2)),
    'batch2': Case(seed=38, n=2, h=7, w=6, c=8, oc=24, pads=(1, 1, 1, 1)),
    'batch3_patch': Case(seed=39, n=3, h=5, w=7, c=3, oc=17, stride=(2, 2), pads=(1, 1, 1, 1)),
    'one_pixel_out': Case(seed=40, n=2, h=3, w=3, c=8, oc=20),
    'one_pixel_out_patch': Case(seed=41, n=3, h=3, w=3, c=3, oc=65),
    'one_pixel_in_1x1': Case(seed=42, h=1, w=1, c=16, oc=33, kh=1, kw=1),
    'one_pixel_in_padded': Case(seed=43, h=1, w=1, c=8, oc=16, pads=(1, 1, 1, 1)),
    'reduction_3x3x512': Case(seed=44, h=6, w=6, c=512, oc=64, pads=(1, 1, 1, 1)),
    'reduction_1x1x2048': Case(seed=45, h=3, w=4, c=2048, oc=48, kh=1, kw=1),
    'no_bias': Case(seed=46, h=6, w=6, c=8, oc=24, bias='none'),
    # float32(acc) rounds: |acc| > 2**24, so the int32 -> float32 conversion of the kernel must round as
    # the reference does (to nearest even).
    'large_accumulators': Case(seed=47, h=6, w=6, c=512, oc=40, pads=(1, 1, 1, 1), bias='large'),
    'large_accumulators_dw': Case(seed=48, h=6, w=6, c=40, oc=40, groups=40, bias='large'),
    'tiny_multiplier': Case(seed=53, c=8, oc=24, pads=(1, 1, 1, 1), gain=1e-41),   # subnormal float32
    'zero_multiplier': Case(seed=54, c=3, oc=24, pads=(1, 1, 1, 1), gain=0.0),
    'zp_x0_zp_y0': Case(seed=49, c=8, oc=24, zp_x=0, zp_y=0, pads=(1, 1, 1, 1)),
    'zp_x255_zp_y255': Case(seed=50, c=8, oc=24, zp_x=255, zp_y=255, pads=(1, 1, 1, 1)),
    'zp_x255_zp_y0_dw': Case(seed=51, c=24, oc=24, groups=24, zp_x=255, zp_y=0, pads=(1, 1, 1, 1)),
    'zp_x0_zp_y255_patch': Case(seed=52, c=3, oc=24, zp_x=0, zp_y=255, pads=(1, 1, 1, 1)),
}


@pytest.mark.parametrize('name', sorted(TARGETED))
def test_targeted(qconv_isa, name):
    check(TARGETED[name], qconv_isa)


@pytest.mark.parametrize('oc', OC_AROUND_TILES)
def test_output_channels_around_tiles(qconv_isa, oc):
    for case in (Case(seed=100 + oc, h=5, w=7, c=16, oc=oc, kh=1, kw=1),                      # 1x1
                 Case(seed=200 + oc, h=6, w=5, c=8, oc=oc, pads=(1, 1, 1, 1)),                # direct 3x3
                 Case(seed=300 + oc, h=7, w=6, c=3, oc=oc, stride=(2, 2), pads=(1, 1, 1, 1)),  # patch
                 Case(seed=400 + oc, h=5, w=5, c=8, oc=2 * oc, groups=2, pads=(1, 1, 1, 1)),  # grouped
                 Case(seed=500 + oc, h=5, w=6, c=oc, oc=oc, groups=oc, pads=(1, 1, 1, 1))):   # depthwise
        check(case, qconv_isa)


def test_output_pixels_around_row_tiles(qconv_isa):
    # The register tile of each channel-width class has TILE_ROWS rows and TILE_BLOCKS blocks of 16
    # channels; pixel counts around multiples of the rows hit the remainder tile (duplicated, unstored rows).
    mod = _registry.module('qconv', qconv_isa)
    assert set(mod.TILE_ROWS) == set(mod.TILE_BLOCKS)
    seed = 1000
    for key in sorted(mod.TILE_ROWS):
        mr, nb = mod.TILE_ROWS[key], mod.TILE_BLOCKS[key]
        assert mr >= 1 and nb >= 1
        for oc in (16 * nb, 16 * nb - 5):
            for p in sorted({1, mr - 1, mr, mr + 1, 2 * mr - 1, 2 * mr, 2 * mr + 1, 3 * mr + 2} - {0}):
                seed += 1
                check(Case(seed=seed, h=1, w=p, c=8, oc=oc, kh=1, kw=1), qconv_isa)
                check(Case(seed=seed, n=2, h=1, w=p, c=3, oc=oc, pads=(1, 1, 1, 1)), qconv_isa)
                check(Case(seed=seed, n=3, h=p, w=1, c=4, oc=oc, kh=3, kw=1, pads=(1, 0, 1, 0)), qconv_isa, 2)


# --------------------------------------------------------------------------------------------------------
# Saturation and the edges of the integer ranges.

def test_saturation_huge_multiplier(qconv_isa):
    # Every nonzero accumulator lands far outside [0, 255]: outputs are 0 or 255 (zp_y where acc == 0).
    for seed, kw in ((60, {}), (61, dict(c=3)), (62, dict(c=16, oc=16, groups=16))):
        case = Case(seed=seed, pads=(1, 1, 1, 1), gain=1e6, **kw)
        y = check(case, qconv_isa)
        assert (y == 0).mean() > 0.3 and (y == 255).mean() > 0.3
        big = replace(case, seed=seed + 100, gain=1e38)   # float32(acc) * mult overflows to +-inf
        check(big, qconv_isa)


@pytest.mark.parametrize('lo_hi', [(128, 255), (128, 128 + 60), (100, 140), (0, 0), (255, 255), (77, 77)])
def test_fused_activation_bounds(qconv_isa, lo_hi):
    # act_min/act_max narrow the output like a fused ReLU / ReLU6 / Clip; a single-value range included.
    lo, hi = lo_hi
    for seed, kw in ((70, {}), (71, dict(c=3)), (72, dict(c=24, oc=24, groups=24))):
        y = check(Case(seed=seed + lo + 7 * hi, zp_y=128, lo=lo, hi=hi, pads=(1, 1, 1, 1), gain=3.0, **kw),
                  qconv_isa)
        assert y.min() == lo and y.max() == hi


@pytest.mark.parametrize('weights', ['max', 'min'])
@pytest.mark.parametrize('zp_x', [0, 128, 255])
def test_extreme_weights_and_inputs(qconv_isa, weights, zp_x):
    # All weights +-127 against all-255 inputs: the largest products the dot-product instructions see
    # (the AVX2 emulation must not saturate its int16 intermediates).
    for seed, kw in ((80, dict(c=64, oc=48)), (81, dict(c=3, oc=17)), (82, dict(c=16, oc=16, groups=16)),
                     (83, dict(c=512, oc=16, kh=1, kw=1))):
        check(Case(seed=seed, inputs='max', weights=weights, zp_x=zp_x, zp_y=128, pads=(1, 1, 1, 1),
                   gain=0.3, **kw), qconv_isa)
        check(Case(seed=seed, weights=weights, zp_x=zp_x, zp_y=None, pads=(0, 1, 2, 1), **kw), qconv_isa)


def test_round_half_to_even(qconv_isa):
    # One-hot weights and mult = 0.5: acc = bias + (x - zp_x), so every odd accumulator is a tie.
    x = np.tile(np.arange(256, dtype=np.uint8).reshape(1, 4, 64, 1), (1, 1, 1, 4))
    bias = np.array([0, 1, -3, 7], np.int32)
    onehot = np.zeros((4, 1, 1, 4), np.int8)
    onehot[np.arange(4), 0, 0, np.arange(4)] = 1
    mult = np.float32(0.5)
    for zp_x, zp_y in ((128, 128), (0, 0), (255, 255), (3, 250)):
        for w, groups, path in ((onehot, 1, 'direct'), (onehot[..., :3], 1, 'rows'),
                                (np.ones((4, 1, 1, 1), np.int8), 4, 'depthwise')):
            xin = np.ascontiguousarray(x[..., :w.shape[3] * groups])
            want = reference.conv2d_int8(xin, w, bias, zp_x, mult, zp_y, groups=groups)
            got = QConv2d(w, bias, zp_x, mult, zp_y, groups=groups, isa=qconv_isa)(xin)
            assert_bitexact(got, want, 'ties %s zp_x=%d zp_y=%d isa=%s' % (path, zp_x, zp_y, qconv_isa))
    # Golden values: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2 (then + zp_y = 100).
    xs = np.array([129, 131, 133, 127, 125], np.uint8).reshape(1, 1, 5, 1)
    one = np.ones((1, 1, 1, 1), np.int8)
    y = QConv2d(one, None, 128, 0.5, 100, isa=qconv_isa)(xs)
    assert y.ravel().tolist() == [100, 102, 102, 100, 98]


@pytest.mark.parametrize('path', ['direct', 'rows', 'patch', 'depthwise'])
def test_int32_wraparound_inside_the_reduction(qconv_isa, path):
    # The bias sits near 2**31 - 1: the first kernel row (w = +127, x = 255) takes the int32 accumulator
    # past 2**31 - 1, the other two rows (w = -127) bring it back.  The final value fits in int32, so
    # wrapping int32 arithmetic (VPDPBUSD, or the C loops) gives exactly the reference's int64 result.
    c, oc, groups = {'direct': (64, 16, 1), 'rows': (3, 16, 1), 'patch': (6, 16, 2),
                     'depthwise': (16, 16, 16)}[path]
    cg = c // groups
    w = np.full((oc, 3, 3, cg), -W_MAX, np.int8)
    w[:, 0] = W_MAX
    x = np.full((1, 3, 3, c), 255, np.uint8)
    row = 3 * cg * 255 * W_MAX                    # what one kernel row adds (or subtracts)
    bias = np.full(oc, 2 ** 31 - 1 - row // 2, np.int32)
    assert int(bias[0]) + row > 2 ** 31 - 1 and -2 ** 31 <= int(bias[0]) - row < 2 ** 31
    mult = np.full(oc, 2.0 ** -24, np.float32)
    got = QConv2d(w, bias, 0, mult, 0, groups=groups, isa=qconv_isa)(x)
    want = reference.conv2d_int8(x, w, bias, 0, mult, 0, groups=groups)
    assert_bitexact(got, want, 'int32 wrap-around %s isa=%s' % (path, qconv_isa))
    assert 0 < want.min() < 255


# --------------------------------------------------------------------------------------------------------
# Threads and output buffers.

THREAD_CASES = (
    Case(seed=90, n=2, h=13, w=11, c=16, oc=80, pads=(1, 1, 1, 1)),                       # direct
    Case(seed=91, n=1, h=33, w=31, c=3, oc=16, stride=(2, 2), pads=(1, 1, 1, 1)),          # patch
    Case(seed=92, n=3, h=9, w=10, c=48, oc=48, groups=48, pads=(1, 1, 1, 1)),              # depthwise
    Case(seed=93, n=1, h=9, w=9, c=24, oc=36, groups=3, kh=1, kw=1),                       # grouped 1x1
    Case(seed=94, n=1, h=1, w=2, c=8, oc=16, kh=1, kw=1),                                  # fewer jobs
    Case(seed=95, n=1, h=2, w=3, c=5, oc=5, groups=5, kh=1, kw=1),                         # fewer rows
)


@pytest.mark.parametrize('index', range(len(THREAD_CASES)))
def test_num_threads_give_identical_outputs(qconv_isa, index):
    case = THREAD_CASES[index]
    outs = [check(case, qconv_isa, num_threads=nt) for nt in (1, 2, 3, 7)]
    for y in outs[1:]:
        assert np.array_equal(y, outs[0])
    y = layer(case, qconv_isa)(arrays(case)[0], num_threads=None)   # None: every available core
    assert_bitexact(y, expected(case), '%r num_threads=None' % (case,))


LUT_SEEDS = range(0, 240, 7)


@pytest.mark.parametrize('seed', LUT_SEEDS)
def test_fused_lookup_table(qconv_isa, seed):
    """``lut=`` applies a table to every output byte: exactly ``lut[reference]`` on every path (dense,
    grouped, depthwise, channel multiplier) and thread count, and nothing outside the output changes."""
    case, num_threads = random_case(seed)
    lut = np.random.default_rng(seed).permutation(256).astype(np.uint8)
    x, w, bias, zp_x, mult, zp_y = arrays(case)
    conv = QConv2d(w, bias, zp_x, mult, zp_y, stride=case.stride, padding=case.pads, dilation=case.dilation,
                   groups=case.groups, act_min=case.lo, act_max=case.hi, lut=lut, isa=qconv_isa)
    want = lut[expected(case)]
    for nt in sorted({1, num_threads, 3}):
        y = conv(x, num_threads=nt)
        assert_bitexact(y, want, context='%r lut isa=%s num_threads=%d depthwise=%s mode=%s'
                        % (case, qconv_isa, nt, conv.depthwise, conv.mode))


def test_fused_lookup_table_checked():
    x, w, bias, zp_x, mult, zp_y = arrays(THREAD_CASES[0])
    for bad in (np.zeros(255, np.uint8), np.zeros(256, np.int8), list(range(256))):
        with pytest.raises(KernelError, match='lut must be'):
            QConv2d(w, bias, zp_x, mult, zp_y, lut=bad)


def test_out_given(qconv_isa):
    for case in (TARGETED['3x3_s2'], TARGETED['patch_c5'], TARGETED['depthwise3x3_c17']):
        conv = layer(case, qconv_isa)
        x = arrays(case)[0]
        out = np.full(conv.output_shape(x.shape), 0xA5, np.uint8)   # stale contents must be overwritten
        y = conv(x, out=out, num_threads=2)
        assert y is out
        assert_bitexact(out, expected(case), '%r out= isa=%s' % (case, qconv_isa))


def test_no_write_outside_out(qconv_isa):
    # out is a window of a larger buffer: the bytes on either side must survive (remainder channels of
    # the last block, the last group, the last pixel of a partial row tile).
    cases = (TARGETED['3x3_s2'], TARGETED['groups3_cg5'], TARGETED['patch_c5'], TARGETED['depthwise3x3_c17'],
             TARGETED['multiplier2_c17'], Case(seed=120, h=1, w=7, c=8, oc=1, kh=1, kw=1),
             Case(seed=121, h=3, w=3, c=3, oc=129))
    for case in cases:
        conv = layer(case, qconv_isa)
        x = arrays(case)[0]
        shape = conv.output_shape(x.shape)
        size = int(np.prod(shape))
        buf = np.full(size + 128, 0x5A, np.uint8)
        out = buf[64:64 + size].reshape(shape)
        conv(x, out=out, num_threads=2)
        assert (buf[:64] == 0x5A).all() and (buf[64 + size:] == 0x5A).all(), \
            'write outside out: %r isa=%s' % (case, qconv_isa)
        assert_bitexact(out, expected(case), '%r isa=%s (out inside a larger buffer)' % (case, qconv_isa))
    fc = QLinear(np.ones((3, 8), np.int8), None, 0, 0.01, 0, isa=qconv_isa)
    buf = np.full(5 * 3 + 128, 0x5A, np.uint8)
    fc(np.full((5, 8), 200, np.uint8), out=buf[64:64 + 15].reshape(5, 3))
    assert (buf[:64] == 0x5A).all() and (buf[79:] == 0x5A).all() and (buf[64:79] == 16).all()


def test_wrong_out_rejected(qconv_isa):
    case = TARGETED['3x3_s1']
    conv = layer(case, qconv_isa)
    x = arrays(case)[0]
    shape = conv.output_shape(x.shape)
    bad = [np.empty(shape, np.int8), np.empty(shape[:3] + (shape[3] + 1,), np.uint8),
           np.empty(shape[1:], np.uint8), np.empty(shape[::-1], np.uint8).T,
           np.empty(shape[:3] + (2 * shape[3],), np.uint8)[..., ::2]]
    for out in bad:
        with pytest.raises(KernelError, match='out must be'):
            conv(x, out=out)
    lin = QLinear(np.ones((4, 8), np.int8), None, 0, 0.1, 0, isa=qconv_isa)
    xl = np.zeros((3, 8), np.uint8)
    for out in (np.empty((3, 5), np.uint8), np.empty((3, 4), np.int32), np.empty((4, 3), np.uint8).T):
        with pytest.raises(KernelError, match='out must be'):
            lin(xl, out=out)


def test_non_contiguous_input(qconv_isa):
    case = TARGETED['3x3_s2']
    x = arrays(case)[0]
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    view = nchw.transpose(0, 2, 3, 1)           # NHWC view of an NCHW buffer
    assert not view.flags.c_contiguous
    assert_bitexact(layer(case, qconv_isa)(view), expected(case), 'non-contiguous input')


# --------------------------------------------------------------------------------------------------------
# QLinear (the GEMM: a 1x1 convolution over M pixels).

GEMM_M = (1, 5, 64, 1000)
GEMM_K = (1, 3, 4, 17, 256)
GEMM_N = (1, 16, 17, 64, 129, 33)


@pytest.mark.parametrize('m', GEMM_M)
@pytest.mark.parametrize('k', GEMM_K)
def test_qlinear(qconv_isa, m, k):
    index = GEMM_M.index(m) * len(GEMM_K) + GEMM_K.index(k)
    n = GEMM_N[index % len(GEMM_N)]
    rng = np.random.default_rng([7, m, k])
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-W_MAX, W_MAX + 1, (n, k)).astype(np.int8)
    zp_x, zp_y = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    spread = np.sqrt(k * (21717.5 - 255.0 * zp_x + zp_x ** 2.0) * W_MAX * (W_MAX + 1) / 3.0)
    bias = rng.integers(-int(spread), int(spread) + 1, n).astype(np.int32)
    mult = (40.0 / spread * rng.uniform(0.5, 2.0, n)).astype(np.float32)
    lo, hi = (0, 255) if index % 3 else (zp_y // 2, 255 - (255 - zp_y) // 3)
    fc = QLinear(w, bias, zp_x, mult, zp_y, act_min=lo, act_max=hi, isa=qconv_isa)
    assert fc.isa == qconv_isa and (fc.out_features, fc.in_features) == (n, k)
    want = reference.gemm_int8(x, w, bias, zp_x, mult, zp_y, lo, hi)
    context = 'QLinear M=%d K=%d N=%d zp_x=%d zp_y=%d lo=%d hi=%d isa=%s' % (m, k, n, zp_x, zp_y, lo, hi,
                                                                           qconv_isa)
    assert_bitexact(fc(x), want, context)
    out = np.full((m, n), 3, np.uint8)
    assert fc(x, out=out, num_threads=3) is out
    assert_bitexact(out, want, context + ' out= num_threads=3')


def test_qlinear_matches_reference_conv(qconv_isa):
    # gemm_int8 and conv2d_int8 agree on a 1x1 convolution (the references are consistent with each other).
    case = Case(seed=110, n=1, h=1, w=37, c=20, oc=50, kh=1, kw=1)
    x, w, bias, zp_x, mult, zp_y = arrays(case)
    fc = QLinear(w.reshape(50, 20), bias, zp_x, mult, zp_y, isa=qconv_isa)
    want = reference.gemm_int8(x.reshape(37, 20), w.reshape(50, 20), bias, zp_x, mult, zp_y)
    assert np.array_equal(want, expected(case).reshape(37, 50))
    assert_bitexact(fc(np.ascontiguousarray(x.reshape(37, 20))), want, 'QLinear vs 1x1 conv')


# --------------------------------------------------------------------------------------------------------
# Validation: bad arguments raise KernelError (with a message naming the problem) before any C code runs.

def _conv_args(**over):
    rng = np.random.default_rng(5)
    args = dict(weight=rng.integers(-5, 6, (8, 3, 3, 4)).astype(np.int8), bias=np.zeros(8, np.int32),
                x_zero_point=10, multiplier=0.01, y_zero_point=20)
    args.update(over)
    return args


@pytest.mark.parametrize('over, match', [
    (dict(weight=np.zeros((8, 3, 3, 4), np.uint8)), 'weight must be int8'),
    (dict(weight=np.zeros((8, 3, 3, 4), np.int16)), 'weight must be int8'),
    (dict(weight=np.zeros((8, 3, 3, 4), np.float32)), 'weight must be int8'),
    (dict(weight=np.zeros((8, 3, 4), np.int8)), 'weight must be int8'),
    (dict(weight=np.zeros((0, 3, 3, 4), np.int8)), 'empty'),
    (dict(weight=np.zeros((8, 3, 3, 0), np.int8)), 'empty'),
    (dict(weight=np.zeros((1, 1, 1, MAX_REDUCTION + 1), np.int8), bias=None), 'overflows int32'),
    (dict(bias=np.zeros(8, np.int64)), 'bias must be int32'),
    (dict(bias=np.zeros(8, np.float32)), 'bias must be int32'),
    (dict(bias=np.zeros(7, np.int32)), 'bias must be int32'),
    (dict(groups=3), 'groups=3 must divide'),
    (dict(groups=0), 'groups=0 must divide'),
    (dict(groups=-2), 'groups=-2 must divide'),
    (dict(groups=1.5), 'groups must be a positive int'),
    (dict(groups=(1, 1)), 'groups must be a positive int'),
    (dict(padding=-1), 'padding'),
    (dict(padding=(1, 1, 1)), 'padding'),
    (dict(padding=(0, 0, -1, 0)), 'padding'),
    (dict(padding=1.5), 'padding'),
    (dict(padding='same'), 'padding'),
    (dict(stride=0), 'stride'),
    (dict(stride=(1, 0)), 'stride'),
    (dict(stride=(1, 1, 1)), 'stride'),
    (dict(stride=1.5), 'stride'),
    (dict(stride=(2, 1.5)), 'stride'),
    (dict(dilation=0), 'dilation'),
    (dict(dilation=(1, -1)), 'dilation'),
    (dict(act_min=200, act_max=100), 'act_min 200 > act_max 100'),
    (dict(act_min=-1), 'act_min'),
    (dict(act_max=256), 'act_max'),
    (dict(x_zero_point=-1), 'x_zero_point'),
    (dict(x_zero_point=256), 'x_zero_point'),
    (dict(y_zero_point=-1), 'y_zero_point'),
    (dict(y_zero_point=300), 'y_zero_point'),
    (dict(multiplier=float('nan')), 'multiplier'),
    (dict(multiplier=-0.5), 'multiplier'),
    (dict(multiplier=float('inf')), 'multiplier'),
    (dict(multiplier=1e39), 'multiplier'),     # finite in float64, infinite in float32
    (dict(multiplier=np.full(8, 0.1, np.float32) * np.array([1, 1, 1, -1, 1, 1, 1, 1], np.float32)),
     'multiplier'),
    (dict(multiplier=np.array([0.1, np.nan] * 4)), 'multiplier'),
    (dict(multiplier=np.full(7, 0.1)), 'multiplier'),
    (dict(isa='no-such-isa'), 'unknown instruction set'),
])
@pytest.mark.filterwarnings('ignore:overflow encountered')
def test_qconv2d_bad_parameters(over, match):
    with pytest.raises(KernelError, match=match):
        QConv2d(**_conv_args(**over))


def test_qconv2d_bad_inputs(qconv_isa):
    conv = QConv2d(**_conv_args(isa=qconv_isa))
    good = np.zeros((1, 5, 5, 4), np.uint8)
    assert conv(good).shape == (1, 3, 3, 8)
    for x, match in ((good.astype(np.int8), 'uint8 NHWC'), (good.astype(np.float32), 'uint8 NHWC'),
                     (good[0], 'uint8 NHWC'), (good[None], 'uint8 NHWC'), (good.tolist(), 'uint8 NHWC'),
                     (np.zeros((1, 5, 5, 3), np.uint8), 'input has 3 channels, the layer expects 4'),
                     (np.zeros((1, 5, 5, 8), np.uint8), 'input has 8 channels, the layer expects 4'),
                     (np.zeros((1, 2, 2, 4), np.uint8), 'smaller than the kernel'),
                     (np.zeros((1, 2, 9, 4), np.uint8), 'smaller than the kernel'),
                     (np.zeros((1, 9, 1, 4), np.uint8), 'smaller than the kernel')):
        with pytest.raises(KernelError, match=match):
            conv(x)
    for nt in (0, -1, 1.5, '2', True):
        with pytest.raises(KernelError, match='num_threads'):
            conv(good, num_threads=nt)
    # Dilation makes the kernel bigger than it looks; padding makes a small input acceptable.
    dil = QConv2d(**_conv_args(dilation=3, isa=qconv_isa))
    with pytest.raises(KernelError, match='smaller than the kernel'):
        dil(np.zeros((1, 6, 6, 4), np.uint8))
    assert dil(np.zeros((1, 7, 7, 4), np.uint8)).shape == (1, 1, 1, 8)
    assert QConv2d(**_conv_args(padding=1, isa=qconv_isa))(np.zeros((1, 1, 1, 4), np.uint8)).shape == \
        (1, 1, 1, 8)


def test_integer_parameters_of_any_integer_type(qconv_isa):
    # NumPy integers, lists and integer arrays are as good as Python ints (e.g. attributes read from ONNX).
    case = TARGETED['asym_pads']
    x, w, bias, zp_x, mult, zp_y = arrays(case)
    for stride, pads, dilation, groups in (((1, 1), [0, 1, 2, 0], [1, 1], 1),
                                           (np.int64(1), np.array([0, 1, 2, 0]), np.array([1, 1]),
                                            np.int32(1))):
        conv = QConv2d(w, bias, np.uint8(zp_x), mult, np.int64(zp_y), stride=stride, padding=pads,
                       dilation=dilation, groups=groups, isa=qconv_isa)
        assert_bitexact(conv(x), expected(case), 'integer types %r' % ((stride, pads, dilation, groups),))


def test_non_contiguous_parameters(qconv_isa):
    # Weights as an OHWI view of an OIHW buffer (as read from ONNX), float64 per-channel multipliers that
    # are exactly float32 values, a strided bias: packed once, same result.
    for name in ('3x3_s2', 'patch_c5', 'depthwise3x3_c17', 'groups3_cg5'):
        case = TARGETED[name]
        x, w, bias, zp_x, mult, zp_y = arrays(case)
        w_view = np.ascontiguousarray(w.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
        b_view = np.repeat(bias, 2)[::2]
        assert not b_view.flags.c_contiguous and (w.shape[3] == 1 or not w_view.flags.c_contiguous)
        conv = QConv2d(w_view, b_view, zp_x, mult.astype(np.float64), zp_y, stride=case.stride,
                       padding=case.pads, dilation=case.dilation, groups=case.groups, isa=qconv_isa)
        assert_bitexact(conv(x), expected(case), '%r non-contiguous parameters isa=%s' % (case, qconv_isa))


def test_grouped_channel_mismatch(qconv_isa):
    # weight [OC, KH, KW, C/groups]: with groups=2 a [8, 3, 3, 4] weight expects 8 input channels.
    conv = QConv2d(**_conv_args(groups=2, isa=qconv_isa))
    assert conv.in_channels == 8
    with pytest.raises(KernelError, match='input has 4 channels, the layer expects 8'):
        conv(np.zeros((1, 5, 5, 4), np.uint8))


def test_bias_fold_overflow_rejected():
    w = np.full((2, 3, 3, 64), -W_MAX, np.int8)
    with pytest.raises(KernelError, match='overflows int32'):
        QConv2d(w, np.full(2, 2 ** 31 - 1000, np.int32), 255, 0.001, 0)


def test_qlinear_bad_arguments(qconv_isa):
    with pytest.raises(KernelError, match='weight must be int8'):
        QLinear(np.zeros((4, 8, 1), np.int8), None, 0, 0.1, 0)
    with pytest.raises(KernelError, match='weight must be int8'):
        QLinear(np.zeros((4, 8), np.uint8), None, 0, 0.1, 0)
    with pytest.raises(KernelError, match='x_zero_point'):
        QLinear(np.zeros((4, 8), np.int8), None, 256, 0.1, 0)
    with pytest.raises(KernelError, match='multiplier'):
        QLinear(np.zeros((4, 8), np.int8), None, 0, -0.1, 0)
    with pytest.raises(KernelError, match='act_min'):
        QLinear(np.zeros((4, 8), np.int8), None, 0, 0.1, 0, act_min=9, act_max=8)
    fc = QLinear(np.zeros((4, 8), np.int8), None, 0, 0.1, 0, isa=qconv_isa)
    for x, match in ((np.zeros((3, 8), np.int8), 'uint8'), (np.zeros((1, 3, 8), np.uint8), 'uint8'),
                     (np.zeros(8, np.uint8), 'uint8'), (np.zeros((3, 7), np.uint8), 'input has 7 features')):
        with pytest.raises(KernelError, match=match):
            fc(x)


@pytest.mark.parametrize('path', ['direct', 'rows', 'patch', 'depthwise', 'gemm'])
def test_minus_128_weights(qconv_isa, path):
    # DESIGN.md keeps weights in [-127, 127], but QAT exports from PyTorch use the full int8 range: -128
    # must be exact too (255 * -128 fits VPMADDUBSW's int16 in the AVX2 emulation; SDOT takes it).
    rng = np.random.default_rng(128)
    c, oc, groups, k = {'direct': (16, 20, 1, 3), 'rows': (3, 16, 1, 3), 'patch': (6, 16, 2, 3),
                        'depthwise': (24, 24, 24, 3), 'gemm': (64, 33, 1, 1)}[path]
    w = rng.choice(np.array([-128, -127, 127, 0, 1], np.int8), size=(oc, k, k, c // groups))
    x = np.full((2, 7, 9, c), 255, np.uint8)
    x[1] = rng.integers(0, 256, size=x[1].shape, dtype=np.uint8)
    mult = np.full(oc, 1.0 / 2 ** 14, np.float32)
    bias = rng.integers(-1000, 1000, size=oc, dtype=np.int32)
    got = QConv2d(w, bias, 3, mult, 128, padding=k // 2, groups=groups, isa=qconv_isa)(x)
    want = reference.conv2d_int8(x, w, bias, 3, mult, 128, pads=(k // 2,) * 4, groups=groups)
    assert_bitexact(got, want, '-128 weights path=%s isa=%s' % (path, qconv_isa))


# --------------------------------------------------------------------------------------------------------
# The 3-wide depthwise path (qv_dw3_tile4: VBMI byte gathers and one VPDPBUSD per kernel row, 4-pixel tiles
# over whole rows, borders from zero-point-padded copies).  Taken on the avx512vnni variant when the CPU
# has VBMI (module flag DW3), for kw == 3, dilation_w == 1, stride_w 1 or 2 and at least 4 output columns;
# every other variant and case runs the per-tap path, so these cases check both.

DW3_CHANNELS = (1, 8, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 80)


def _dw3_case(seed, c, **kw):
    return Case(seed=seed, c=c, oc=c, groups=c, **kw)


def _check_dw3(case, isa, num_threads=1):
    """check() that also says whether the 3-wide path ran, and checks it ran where it should."""
    conv = layer(case, isa)
    wo = (case.w + case.pads[1] + case.pads[3] - (case.kw - 1) * case.dilation[1] - 1) // case.stride[1] + 1
    wanted = (_registry.module('qconv', isa).DW3 and case.kw == 3 and case.dilation[1] == 1
              and case.stride[1] in (1, 2) and wo >= 4)
    y = conv(arrays(case)[0], num_threads=num_threads)
    took = conv._w3 is not None and wo >= 4 and case.stride[1] in (1, 2)
    assert took == wanted, (case, isa)
    assert_bitexact(y, expected(case), context='%r isa=%s num_threads=%d 3-wide path=%s'
                    % (case, isa, num_threads, took))
    return conv, y


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('c', DW3_CHANNELS)
def test_depthwise_3wide_channels_and_widths(qconv_isa, stride, c):
    # Channels around the 16-lane blocks (a tail goes to the per-tap tile), output widths around the
    # 4-pixel tile (the last tile shifted left, Wo = 3 not taking the path), borders on both sides.
    for i, w in enumerate((5, 7, 8, 9, 10, 13, 17)):
        _check_dw3(_dw3_case(1700 + 40 * c + 8 * stride + i, c, h=4, w=w, stride=(stride, stride),
                             pads=(1, 1, 1, 1)), qconv_isa)


DW3_CASES = (
    _dw3_case(1801, 32, n=3, h=6, w=11, pads=(1, 1, 1, 1)),                        # batch > 1
    _dw3_case(1802, 48, h=7, w=12, pads=(0, 0, 0, 0)),                             # no padding
    _dw3_case(1803, 40, h=7, w=15, pads=(2, 3, 1, 2), stride=(2, 2)),              # wide, asymmetric
    _dw3_case(1804, 24, h=6, w=9, pads=(0, 2, 1, 0), stride=(1, 2)),               # left pad only
    _dw3_case(1805, 16, h=5, w=10, kh=5, pads=(2, 1, 2, 1)),                       # 5x3 kernel
    _dw3_case(1806, 17, h=6, w=10, kh=1, pads=(0, 1, 0, 1), stride=(2, 1)),       # 1x3 kernel
    _dw3_case(1807, 33, h=9, w=11, dilation=(2, 1), pads=(2, 1, 2, 1)),            # dilated rows only
    _dw3_case(1808, 64, h=4, w=6, pads=(3, 4, 3, 4)),                              # pads wider than a tile
    _dw3_case(1809, 16, n=2, h=3, w=4, pads=(0, 0, 0, 0)),                         # 2 output columns
    _dw3_case(1810, 96, h=5, w=30, stride=(2, 2), pads=(0, 0, 1, 1)),              # ONNX-style s2 pads
)


@pytest.mark.parametrize('index', range(len(DW3_CASES)))
def test_depthwise_3wide_geometry_and_threads(qconv_isa, index):
    case = DW3_CASES[index]
    outs = [_check_dw3(case, qconv_isa, num_threads=nt)[1] for nt in (1, 2, 3, 7)]
    for y in outs[1:]:
        assert np.array_equal(y, outs[0])


@pytest.mark.parametrize('stride', [1, 2])
def test_depthwise_3wide_extremes(qconv_isa, stride):
    # -128/127 weights against 0/255 inputs (VPDPBUSD takes u8 x s8 without saturation), with zero points
    # at both ends and a clamp inside the range (the byte clamp after the packs).
    rng = np.random.default_rng(1900 + stride)
    for c, zp_x, zp_y, lo, hi in ((48, 0, 255, 0, 255), (33, 255, 0, 0, 255), (64, 128, 128, 20, 230)):
        w = rng.choice(np.array([-128, 127], np.int8), size=(c, 3, 3, 1))
        x = rng.choice(np.array([0, 255], np.uint8), size=(2, 6, 13, c))
        x[1, :, :4] = 255
        mult = rng.uniform(1.0 / 2 ** 12, 1.0 / 2 ** 9, c).astype(np.float32)
        bias = rng.integers(-2 ** 17, 2 ** 17, size=c, dtype=np.int32)
        conv = QConv2d(w, bias, zp_x, mult, zp_y, stride=stride, padding=1, groups=c, act_min=lo, act_max=hi,
                       isa=qconv_isa)
        got = conv(x)
        want = reference.conv2d_int8(x, w, bias, zp_x, mult, zp_y, stride=(stride, stride), pads=(1, 1, 1, 1),
                                     groups=c, lo=lo, hi=hi)
        assert_bitexact(got, want, 'extremes c=%d zp_x=%d stride=%d isa=%s' % (c, zp_x, stride, qconv_isa))
        assert got.min() == lo and got.max() == hi


def test_depthwise_3wide_huge_multiplier_and_lut(qconv_isa):
    # Outputs beyond int32 in float (only the upper clamp is applied in float on this path) and a fused
    # table, with threads: the table must see every byte of every tile, shifted last tiles included.
    case = _dw3_case(1950, 40, n=2, h=7, w=14, pads=(1, 1, 1, 1), gain=1e9)
    _check_dw3(case, qconv_isa)
    case = _dw3_case(1951, 40, n=2, h=7, w=14, pads=(1, 1, 1, 1))
    x, w, bias, zp_x, mult, zp_y = arrays(case)
    lut = np.random.default_rng(1951).permutation(256).astype(np.uint8)
    conv = QConv2d(w, bias, zp_x, mult, zp_y, padding=1, groups=40, lut=lut, isa=qconv_isa)
    for nt in (1, 2, 3):
        assert_bitexact(conv(x, num_threads=nt), lut[expected(case)], 'lut num_threads=%d' % nt)


def test_depthwise_3wide_packing():
    # The row packing the 3-wide path reads: per kernel row and channel the bytes w(kx=0..2), 0.
    from qvision_kernels.conv import pack_dw3
    w = np.arange(-60, -60 + 20 * 2 * 3, dtype=np.int8).reshape(20, 2, 3, 1)
    p = pack_dw3(w, 32)
    assert p.shape == (2, 32) and p.dtype == np.int32
    b = p.view(np.int8).reshape(2, 32, 4)
    assert np.array_equal(b[:, :20, :3], w[:, :, :, 0].transpose(1, 0, 2))
    assert not b[:, :, 3].any() and not b[:, 20:].any()
