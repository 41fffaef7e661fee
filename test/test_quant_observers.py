"""Calibration observers: golden values of the quantisation formulas (degenerate ranges included),
streaming against one-shot statistics, and the bounded histogram's exact re-binning."""
import numpy as np
import pytest

from qvision_ros.errors import ConfigError
from qvision_ros.quantization.observers import (ChannelMeanObserver, EntropyObserver, MinMaxObserver,
                                                MSEObserver, ObserverKind, PercentileObserver,
                                                StreamingHistogram, WeightScaling, activation_qparams,
                                                make_observer, quantize_weight, weight_scales)

HIST_KINDS = [ObserverKind.PERCENTILE, ObserverKind.ENTROPY, ObserverKind.MSE]


# --------------------------------------------------------------------------------------- golden values

@pytest.mark.parametrize('lo, hi, scale, zp', [
    (-1.0, 3.0, 4 / 255, 64),           # -lo / scale = 63.75 -> 64
    (-1.0, 1.0, 2 / 255, 127),          # float32(2 / 255) is a little above 2 / 255: 127.4999...
    (-0.125, 63.625, 0.25, 0),          # -lo / scale = 0.5 exactly: half to even -> 0
    (-0.375, 63.375, 0.25, 2),          # 1.5 -> 2
    (0.0, 6.0, 6 / 255, 0),             # ReLU6
    (2.0, 3.0, 3 / 255, 0),             # a positive range widened down to 0
    (-2.0, -1.0, 2 / 255, 255),         # all negative: widened up to 0, zero point at the top
    (3.0, 3.0, 3 / 255, 0),             # a single value
    (0.0, 0.0, 1.0, 0),                 # all zero: the empty range
])
def test_activation_qparams_golden(lo, hi, scale, zp):
    p = activation_qparams(lo, hi)
    assert p.scale == np.float32(scale) and p.zero_point == zp
    assert p.lo == min(lo, 0.0) and p.hi == max(hi, 0.0)
    # 0 is exact: DequantizeLinear(zero_point) == 0
    assert (zp - p.zero_point) * p.scale == 0.0
    # the range ends land on the code range
    if hi > lo or hi != 0:
        assert round((p.hi - p.lo) / p.scale) == 255


def test_activation_qparams_rejects_bad_ranges():
    for lo, hi in [(1.0, 0.0), (float('nan'), 1.0), (0.0, float('inf'))]:
        with pytest.raises(ConfigError, match='finite'):
            activation_qparams(lo, hi)


@pytest.mark.parametrize('bits, qmax', [(8, 127), (4, 7), (2, 1)])
def test_weight_scales_golden(bits, qmax):
    w = np.array([[1.0, -2.0], [0.0, 0.0], [0.5, 0.25]], np.float32)
    s = weight_scales(w, bits, WeightScaling.MINMAX)
    np.testing.assert_array_equal(s, np.float32([2 / qmax, 1.0, 0.5 / qmax]))
    q = quantize_weight(w, s, bits)
    assert q.dtype == np.int8 and q.min() >= -qmax and q.max() <= qmax
    assert q[0, 1] == -qmax and q[2, 0] == qmax and not q[1].any()      # the channel max maps to +-qmax
    # per output channel along another axis (Gemm B [K, N])
    np.testing.assert_array_equal(weight_scales(w.T, bits, WeightScaling.MINMAX, axis=1), s)


def test_weight_mse_scaling_beats_minmax_at_low_bits():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    w[:, 0, 0, 0] *= 6                                      # one outlier per channel
    for bits in (4, 2):
        errs = {}
        for scaling in (WeightScaling.MINMAX, WeightScaling.MSE):
            s = weight_scales(w, bits, scaling)
            deq = quantize_weight(w, s, bits) * s.reshape(-1, 1, 1, 1)
            errs[scaling] = float(((w - deq) ** 2).sum())
        assert errs[WeightScaling.MSE] < errs[WeightScaling.MINMAX]
    np.testing.assert_array_equal(weight_scales(w, 8), weight_scales(w, 8, WeightScaling.MINMAX))
    np.testing.assert_array_equal(weight_scales(w, 4), weight_scales(w, 4, WeightScaling.MSE))
    with pytest.raises(ConfigError, match='bits'):
        weight_scales(w, 1)


def test_minmax_observer_streams_and_ignores_non_finite():
    o = MinMaxObserver()
    o.update(np.array([1.0, 2.0], np.float32))
    o.update(np.array([[-3.0, np.nan], [np.inf, 0.5]], np.float32))
    assert o.range() == (-3.0, 2.0)
    p = o.compute()
    assert p.scale == np.float32(5 / 255) and p.zero_point == round(3 / np.float32(5 / 255))
    with pytest.raises(ConfigError, match='no finite value'):
        MinMaxObserver().compute()


@pytest.mark.parametrize('kind', list(ObserverKind))
def test_degenerate_tensors(kind):
    """All zero, a single value repeated, all negative: every observer gives a range holding 0."""
    cases = {'zero': (np.zeros(1000, np.float32), (1.0, 0)),
             'single': (np.full(1000, 3.0, np.float32), (np.float32(3 / 255), 0)),
             'negative': (-1 - np.linspace(0, 1, 1000, dtype=np.float32), (np.float32(2 / 255), 255))}
    for name, (x, (scale, zp)) in cases.items():
        o = make_observer(kind)
        for part in np.array_split(x, 3):
            o.update(part)
        p = o.compute()
        if name == 'negative' and kind != ObserverKind.MINMAX:
            # histogram observers may clip the far end; the top stays at 0
            assert p.zero_point == 255 and p.hi == 0.0 and -2.0 <= p.lo < -1.5, (kind, p)
        else:
            assert (p.scale, p.zero_point) == (scale, zp), (kind, name, p)


def test_percentile_golden():
    x = np.arange(10000, dtype=np.float32)          # 0 .. 9999
    o = PercentileObserver(99.0)
    o.update(x)
    lo, hi = o.range()
    width = o.hist.width
    assert abs(hi - np.percentile(x, 99.0)) <= width and abs(lo - np.percentile(x, 1.0)) <= width
    assert o.compute().lo == 0.0                    # the range is widened down to 0
    o = PercentileObserver(100.0)
    o.update(x)
    assert o.range() == (0.0, 9999.0)


def test_percentile_clips_an_outlier():
    """10,000 values in [0, 1) and one at 100: min-max spends the codes on the outlier, the percentile
    observer clips it and keeps [0, 1)."""
    x = np.concatenate([np.random.default_rng(1).random(10000, dtype=np.float32), [100.0]]).astype(np.float32)
    o = make_observer(ObserverKind.PERCENTILE, percentile=99.9)
    o.update(x)
    p = o.compute()
    assert p.lo == 0.0 and 0.95 <= p.hi <= 1.1, p


def test_mse_clips_a_heavy_tail():
    """Laplace data: the MSE-optimal 8-bit clipping is near 10 b (Banner et al. 2019, 9.89 b for a
    symmetric range), well inside the sample's extremes."""
    x = np.random.default_rng(4).laplace(0.0, 1.0, 200000).astype(np.float32)
    o = make_observer(ObserverKind.MSE)
    o.update(x)
    lo, hi = o.range()
    assert 7.0 < hi < 0.95 * x.max() and 0.95 * x.min() < lo < -7.0, (lo, hi, x.min(), x.max())


@pytest.mark.parametrize('kind', [ObserverKind.ENTROPY, ObserverKind.MSE])
def test_search_observers_minimise_their_criterion(kind):
    """The chosen window costs no more than the full range or a few other windows, by the observer's
    own criterion (KL divergence, expected squared error)."""
    x = np.random.default_rng(4).laplace(0.0, 1.0, 200000).astype(np.float32)
    o = make_observer(kind)
    o.update(x)
    counts, edges = o.hist.counts.astype(np.float64), o.hist.edges
    lo, hi = o.range()
    a, b = int(np.argmin(np.abs(edges - lo))), int(np.argmin(np.abs(edges - hi)))
    chosen = o._cost(counts, edges, a, b)
    assert chosen <= o._cost(counts, edges, 0, len(counts))
    z = int(np.argmin(np.abs(edges)))
    for f in (0.5, 0.8, 0.9):           # symmetric windows around 0 at a fraction of the data's extent
        assert chosen <= o._cost(counts, edges, z - int(f * z), z + int(f * (len(counts) - z))) * 1.001


@pytest.mark.parametrize('kind', [ObserverKind.ENTROPY, ObserverKind.MSE])
def test_search_observers_keep_a_uniform_range(kind):
    x = np.linspace(0, 1, 20000, dtype=np.float32)
    o = make_observer(kind)
    o.update(x)
    p = o.compute()
    assert p.lo == 0.0 and p.hi >= 0.97


# ------------------------------------------------------------------------------ streaming vs one-shot

def _data(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.standard_normal(30000) * 2, rng.exponential(3, 30000)]).astype(np.float32)


def test_histogram_rebinning_is_exact():
    """A histogram grown by later batches equals, count for count, the histogram of all the data
    binned directly on the final grid."""
    x = _data()
    order = np.argsort(np.abs(x), kind='stable')          # small values first: the range grows 4+ times
    h = StreamingHistogram(512)
    for part in np.array_split(x[order], 20):
        h.update(part)
    assert h.total == x.size and h.min == x.min() and h.max == x.max()
    inv = np.float32(1.0 / h.width)                      # the histogram's own binning formula, on the final grid
    direct = np.clip(np.floor(x * inv).astype(np.int64) - h.origin, 0, h.bins - 1)
    np.testing.assert_array_equal(h.counts, np.bincount(direct, minlength=h.bins))
    edges = h.edges
    assert edges[0] <= x.min() and x.max() <= edges[-1] and 0.0 in edges


@pytest.mark.parametrize('kind', list(ObserverKind))
def test_streaming_equals_one_shot_on_one_grid(kind):
    """Batches after a first one that spans the data's range: the histogram never re-bins, so every
    observer gives exactly the one-shot range."""
    x = _data(5)
    first = np.concatenate([[x.min(), x.max()], x[:1000]]).astype(np.float32)
    rest = np.array_split(x[1000:], 10)
    one = make_observer(kind)
    one.update(np.concatenate([first] + rest))
    stream = make_observer(kind)
    for part in [first] + rest:
        stream.update(part)
    assert one.range() == stream.range()
    if kind != ObserverKind.MINMAX:
        np.testing.assert_array_equal(one.hist.counts, stream.hist.counts)


@pytest.mark.parametrize('kind', list(ObserverKind))
def test_streaming_equals_one_shot(kind):
    """The same data in 25 batches or at once: min-max identical; histogram observers within a bin of
    the final (coarser) histogram, and no worse by their own criterion beyond that bin's effect."""
    x = _data(2)
    rng = np.random.default_rng(3)
    shuffled = x[rng.permutation(x.size)]
    one = make_observer(kind)
    one.update(x)
    stream = make_observer(kind)
    for part in np.array_split(shuffled, 25):
        stream.update(part)
    if kind == ObserverKind.MINMAX:
        assert one.range() == stream.range()
        return
    width = max(one.hist.width, stream.hist.width)
    (lo1, hi1), (lo2, hi2) = one.range(), stream.range()
    if kind == ObserverKind.PERCENTILE:
        assert abs(lo1 - lo2) <= width and abs(hi1 - hi2) <= width, (one.range(), stream.range(), width)
    else:
        # the search criteria are flat near their optimum: compare the criterion on one grid
        h = stream.hist
        counts, edges = h.counts.astype(np.float64), h.edges

        def cost(lo, hi):
            a = int(np.argmin(np.abs(edges - lo)))
            b = int(np.argmin(np.abs(edges - hi)))
            return stream._cost(counts, edges, a, max(b, a + 1))
        c1, c2 = cost(lo1, hi1), cost(lo2, hi2)
        assert c2 <= c1 * 1.10 + 1e-9, (kind, c1, c2)


def test_memory_is_bounded():
    """The state of a histogram observer does not grow with the data."""
    o = make_observer(ObserverKind.MSE)
    rng = np.random.default_rng(0)
    for k in range(20):
        o.update(rng.standard_normal(50000).astype(np.float32) * (k + 1))
    assert o.hist.counts.shape == (2048,) and o.hist.total == 20 * 50000


def test_channel_mean_golden():
    o = ChannelMeanObserver()
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    o.update(x[:1])
    o.update(x[1:])
    np.testing.assert_allclose(o.compute(), x.mean(axis=(0, 2, 3)))


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="observer must be one of"):
        make_observer('kl-divergence')
    with pytest.raises(ConfigError, match='percentile'):
        PercentileObserver(120)
    with pytest.raises(ConfigError, match='bins'):
        EntropyObserver(bins=16)
    with pytest.raises(ConfigError, match='no finite value'):
        MSEObserver().compute()
    assert make_observer('Entropy').kind == ObserverKind.ENTROPY
