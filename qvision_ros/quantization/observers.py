"""Calibration observers: streaming statistics of one tensor, turned into quantisation parameters.

An observer sees the values of a tensor batch after batch (:meth:`Observer.update`) and derives the
clipping range and the uint8 parameters at the end (:meth:`Observer.compute`).  Memory is bounded
whatever the number of batches: :class:`MinMaxObserver` keeps two numbers, the histogram observers a
:class:`StreamingHistogram` of a fixed number of bins, and :class:`ChannelMeanObserver` one sum per
channel.  No observer keeps activations.

The arithmetic (DESIGN.md section 3), in one place:

* **Activations**, uint8 asymmetric per tensor.  A clipping range ``[lo, hi]`` is first widened to
  include 0 (``lo = min(lo, 0)``, ``hi = max(hi, 0)``) so that 0 is exact, then::

      scale = float32((hi - lo) / 255)          zero_point = clamp(round_half_even(-lo / scale), 0, 255)

  An empty range (``lo == hi == 0``: an all-zero tensor) gives ``scale = 1, zero_point = 0``.
* **Weights**, int8 symmetric per output channel with ``q_max = 2 ** (bits - 1) - 1`` (127, 7, 1 at 8, 4,
  2 bits)::

      scale[c] = float32(max|w[c]| / q_max)     (1 for an all-zero channel)       zero_point = 0

  or, with :attr:`WeightScaling.MSE`, the clipping ``t[c] <= max|w[c]|`` that minimises the squared
  error of the quantised channel (a grid search; worth it below 8 bits).

Histogram observers choose ``[lo, hi]`` from the distribution:

* percentile: the ``(100 - p)`` and ``p`` percentiles (linear inside a bin), never beyond the data;
* entropy: the range whose 255-level quantised distribution has the smallest Kullback-Leibler divergence
  from the clipped distribution (the TensorRT calibration, made asymmetric: the upper end is searched
  with the lower one at the data's minimum, then the lower end with the upper one fixed; windows of at
  least 128 bins, each end clipping at most 1 % of the data);
* MSE: the range with the smallest expected squared quantisation error over the histogram (bin centres;
  values outside the range count with their clipping error), searched the same way.
"""
import enum
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

U8_LEVELS = 255
DEFAULT_BINS = 2048
MIN_BINS = 256
CHUNK = 1 << 18                 # values binned at a time (bounded temporaries)


class ObserverKind(enum.Enum):
    """How activation ranges are chosen (see the module docstring)."""
    MINMAX = 'minmax'
    PERCENTILE = 'percentile'
    ENTROPY = 'entropy'
    MSE = 'mse'


class WeightScaling(enum.Enum):
    """How per-channel weight scales are chosen: AUTO is MINMAX at 8 bits and MSE below."""
    AUTO = 'auto'
    MINMAX = 'minmax'
    MSE = 'mse'


def as_enum(enum_type, value, what):
    """``value`` (an enum member or its string value) as ``enum_type``; ConfigError otherwise."""
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(str(value).lower())
    except ValueError:
        raise ConfigError('%s must be one of %s, got %r' % (what, [m.value for m in enum_type], value)) from None


@dataclass(frozen=True)
class QParams:
    """uint8 per-tensor parameters of an activation: ``real = scale * (q - zero_point)``; ``lo``/``hi``
    is the real range they represent (0 included)."""
    scale: float
    zero_point: int
    lo: float
    hi: float


def activation_qparams(lo, hi):
    """uint8 asymmetric parameters of the range ``[lo, hi]`` widened to include 0 (module docstring).

    >>> activation_qparams(-1.0, 3.0)
    QParams(scale=0.01568627543747425, zero_point=64, lo=-1.0, hi=3.0)
    """
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ConfigError('an activation range must be finite with lo <= hi, got [%r, %r]' % (lo, hi))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0.0:
        return QParams(1.0, 0, 0.0, 0.0)
    scale = np.float32((hi - lo) / U8_LEVELS)
    if scale <= 0 or not np.isfinite(scale):
        # a range so small (or large) that float32 cannot hold its step
        scale = np.float32(max(np.finfo(np.float32).tiny, min(float(scale), 3.0e38)))
    zp = int(np.clip(np.rint(-lo / np.float64(scale)), 0, U8_LEVELS))
    return QParams(float(scale), zp, lo, hi)


def weight_qmax(bits):
    """Largest int8 code of a symmetric weight of ``bits`` bits: 127, 7 or 1 at 8, 4 or 2 bits."""
    if bits not in (2, 3, 4, 5, 6, 7, 8):
        raise ConfigError('weight bits must be an integer from 2 to 8, got %r' % (bits,))
    return 2 ** (bits - 1) - 1


def quantize_weight(w, scale, bits):
    """int8 codes ``clamp(round_half_even(w / scale[c]), -q_max, q_max)`` of ``w`` [C, ...] (float32
    arithmetic, as QuantizeLinear)."""
    qmax = weight_qmax(bits)
    s = np.asarray(scale, np.float32).reshape((-1,) + (1,) * (np.ndim(w) - 1))
    q = np.rint(np.asarray(w, np.float32) / s)
    return np.clip(q, -qmax, qmax).astype(np.int8)


def weight_scales(w, bits=8, scaling=WeightScaling.AUTO, axis=0):
    """Per-channel float32 scales of the weight ``w`` along ``axis`` (module docstring).  An all-zero
    channel gets scale 1."""
    scaling = as_enum(WeightScaling, scaling, 'weight scaling')
    qmax = weight_qmax(bits)
    w = np.moveaxis(np.asarray(w, np.float32), axis, 0).reshape(np.shape(w)[axis], -1)
    amax = np.abs(w).max(axis=1) if w.size else np.zeros(len(w), np.float32)
    if scaling == WeightScaling.AUTO:
        scaling = WeightScaling.MINMAX if bits == 8 else WeightScaling.MSE
    if scaling == WeightScaling.MSE:
        amax = _mse_weight_clip(w, amax, qmax)
    scale = (amax.astype(np.float64) / qmax).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def _mse_weight_clip(w, amax, qmax, steps=64):
    """Per row, the clipping value in ``amax * (0.3 .. 1]`` minimising ``sum (w - Q(w))^2``."""
    best = amax.astype(np.float64).copy()
    best_err = np.full(len(w), np.inf)
    for f in np.linspace(1.0, 0.3, steps):
        t = amax * f
        s = np.where(t > 0, t / qmax, 1.0).reshape(-1, 1)
        err = ((w - np.clip(np.rint(w / s), -qmax, qmax) * s) ** 2).sum(axis=1)
        better = err < best_err
        best[better], best_err[better] = t[better], err[better]
    return best


# ---------------------------------------------------------------------------------------------- observers

class Observer:
    """Protocol of an activation observer: ``update(x)`` per batch, then ``compute()`` -> :class:`QParams`.

    ``update`` ignores non-finite values; ``compute`` before any finite value raises ConfigError."""

    kind = None

    def update(self, x):
        raise NotImplementedError

    def range(self):
        """The chosen clipping range ``(lo, hi)`` before it is widened to include 0."""
        raise NotImplementedError

    def compute(self):
        lo, hi = self.range()
        return activation_qparams(lo, hi)


def _finite(x):
    """``x`` flattened as float32, with non-finite values removed (only when there are some)."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    x = x.reshape(-1)
    if x.size and not (np.isfinite(x.min()) and np.isfinite(x.max())):
        x = x[np.isfinite(x)]
    return x


class MinMaxObserver(Observer):
    """The smallest and largest value seen."""

    kind = ObserverKind.MINMAX

    def __init__(self):
        self.min = math.inf
        self.max = -math.inf
        self.count = 0

    def update(self, x):
        x = _finite(x)
        if x.size:
            self.min = min(self.min, float(x.min()))
            self.max = max(self.max, float(x.max()))
            self.count += x.size

    def range(self):
        if not self.count:
            raise ConfigError('the observer has seen no finite value: nothing to calibrate from')
        return self.min, self.max


class StreamingHistogram:
    """A histogram of a fixed number of bins whose range grows with the data, re-binned exactly.

    Bin ``i`` covers ``[(origin + i) * width, (origin + i + 1) * width)`` with an integer ``origin``, so 0
    is always a bin edge and the range always holds 0 (a value goes to bin
    ``floor(x * float32(1 / width)) - origin``, computed in float32).  When a batch falls outside, the width is doubled
    (``k`` times) and the origin moved to a multiple of the new width: the new edges are old edges, so
    the old counts merge into the new bins without approximation.  Exact ``min`` and ``max`` are kept
    beside the counts.
    """

    def __init__(self, bins=DEFAULT_BINS):
        if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool) or bins < MIN_BINS:
            raise ConfigError('a histogram needs an integer number of bins >= %d, got %r' % (MIN_BINS, bins))
        self.bins = int(bins)
        self.counts = np.zeros(self.bins, np.int64)
        self.width = None           # None until a non-zero value has been seen
        self.origin = 0
        self.zeros = 0              # values seen while the width was still undefined (all exactly 0)
        self.min = math.inf
        self.max = -math.inf

    @property
    def total(self):
        return int(self.counts.sum()) + self.zeros

    @property
    def edges(self):
        """The ``bins + 1`` bin edges (float64)."""
        return (self.origin + np.arange(self.bins + 1)) * float(self.width)

    def _fits(self, lo, hi, width, origin):
        return origin * width <= lo and hi <= (origin + self.bins) * width

    def _grow(self, lo, hi):
        """Make the range cover [lo, hi] (with 0 inside)."""
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if self.width is None:
            if hi - lo <= 0:
                return False
            # bins - 1 widths cover the span whatever the alignment of origin
            self.width = (hi - lo) / (self.bins - 1)
            self.origin = int(math.floor(lo / self.width))
            if self.zeros:
                self.counts[-self.origin if -self.origin < self.bins else self.bins - 1] += self.zeros
                self.zeros = 0
            return True
        if self._fits(lo, hi, self.width, self.origin):
            return True
        lo, hi = min(lo, self.origin * self.width), max(hi, (self.origin + self.bins) * self.width)
        k = 1
        while True:
            width = self.width * 2 ** k
            origin = int(math.floor(lo / width))
            if self._fits(lo, hi, width, origin):
                break
            k += 1
        old = self.origin + np.arange(self.bins)                 # absolute old bin indices
        merged = np.zeros(self.bins, np.int64)
        np.add.at(merged, np.floor_divide(old, 2 ** k) - origin, self.counts)
        self.counts = merged
        self.width, self.origin = width, origin
        return True

    def update(self, x):
        x = _finite(x)
        if not x.size:
            return
        lo, hi = float(x.min()), float(x.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        if not self._grow(lo, hi):
            self.zeros += x.size
            return
        # bin = floor(x * float32(1 / width)) - origin, in float32: exact under the width doublings of
        # _grow (scaling by a power of two commutes with the rounding), so re-binning stays exact
        inv = np.float32(1.0 / self.width)
        origin = np.float32(self.origin)
        n = self.bins
        buf = np.empty(min(CHUNK, x.size), np.float32)
        for start in range(0, x.size, CHUNK):
            part = x[start:start + CHUNK]
            t = buf[:part.size]
            np.multiply(part, inv, out=t)
            np.floor(t, out=t)
            t -= origin
            np.clip(t, 0, n - 1, out=t)
            self.counts += np.bincount(t.astype(np.intp), minlength=n)

    def range_or_none(self):
        """``(min, max)`` of the data or None before any finite value."""
        if self.width is None and not self.zeros:
            return None
        return self.min, self.max


class HistogramObserver(Observer):
    """Base of the observers that choose a range from a :class:`StreamingHistogram`."""

    def __init__(self, bins=DEFAULT_BINS):
        self.hist = StreamingHistogram(bins)

    def update(self, x):
        self.hist.update(x)

    def range(self):
        h = self.hist
        if h.range_or_none() is None:
            raise ConfigError('the observer has seen no finite value: nothing to calibrate from')
        if h.width is None or h.min == h.max:
            return h.min, h.max
        lo, hi = self._choose(h.counts.astype(np.float64), h.edges)
        # never beyond the data
        return max(lo, h.min), min(hi, h.max)

    def _choose(self, counts, edges):
        raise NotImplementedError


class PercentileObserver(HistogramObserver):
    """Range from the ``100 - percentile`` and ``percentile`` percentiles of the data."""

    kind = ObserverKind.PERCENTILE

    def __init__(self, percentile=99.99, bins=DEFAULT_BINS):
        super().__init__(bins)
        if not isinstance(percentile, (int, float)) or isinstance(percentile, bool) or \
                not 50.0 < float(percentile) <= 100.0:
            raise ConfigError('percentile must be a number in (50, 100], got %r' % (percentile,))
        self.percentile = float(percentile)

    def _choose(self, counts, edges):
        q = self.percentile / 100.0
        return _quantile(counts, edges, 1.0 - q), _quantile(counts, edges, q)


def _quantile(counts, edges, q):
    """Value below which a fraction ``q`` of the histogram lies (linear inside the bin)."""
    cum = np.cumsum(counts)
    total = cum[-1]
    target = q * total
    i = int(np.searchsorted(cum, target, side='left'))
    i = min(i, len(counts) - 1)
    before = cum[i - 1] if i > 0 else 0.0
    frac = 0.0 if counts[i] == 0 else (target - before) / counts[i]
    return float(edges[i] + min(max(frac, 0.0), 1.0) * (edges[i + 1] - edges[i]))


def _zero_bin(edges):
    """Index of the edge at 0 (always an edge of a StreamingHistogram)."""
    return int(np.argmin(np.abs(edges)))


class _SearchObserver(HistogramObserver):
    """Coordinate search of the clipping window ``[edges[a], edges[b]]`` (0 inside) minimising
    :meth:`_cost`: first ``b`` with ``a`` at the data's lower end, then ``a`` with that ``b``; windows
    narrower than ``min_width`` bins are not tried, and at most ``candidates`` positions per end."""

    candidates = 128
    min_width = 1
    max_clip = 1.0          # largest fraction of the data one end may clip

    def _choose(self, counts, edges):
        z = _zero_bin(edges)
        nz = np.flatnonzero(counts)
        a0, b0 = min(int(nz[0]), z), max(int(nz[-1]) + 1, z)      # the data's extent in bins, 0 inside
        total = counts.sum()
        above = total - np.cumsum(counts)                   # above[i]: mass right of bin i
        below = np.concatenate([[0.0], np.cumsum(counts)])  # below[i]: mass left of bin i
        ups = [b for b in range(max(z + 1, a0 + self.min_width), b0 + 1)
               if above[b - 1] <= self.max_clip * total]
        b = self._search(counts, edges, a0, ups, upper=True) if ups else b0
        lows = [a for a in range(a0, min(z, b - self.min_width) + 1) if below[a] <= self.max_clip * total]
        a = self._search(counts, edges, b, lows, upper=False) if lows else a0
        return float(edges[a]), float(edges[b])

    def _search(self, counts, edges, fixed, positions, upper):
        """The best free end among ``positions`` (thinned to ``candidates``, the last one kept)."""
        positions = list(positions)
        if len(positions) > self.candidates:
            pick = np.unique(np.linspace(0, len(positions) - 1, self.candidates).round().astype(int))
            positions = [positions[i] for i in pick]
        costs = [self._cost(counts, edges, *((fixed, p) if upper else (p, fixed))) for p in positions]
        return positions[int(np.argmin(costs))]


class EntropyObserver(_SearchObserver):
    """Range minimising the KL divergence between the clipped and the quantised distribution."""

    kind = ObserverKind.ENTROPY
    min_width = 128
    max_clip = 0.01         # KL would otherwise fold the bulk of a distribution away from 0 onto one bin

    def _cost(self, counts, edges, a, b):
        width = b - a
        p = counts[a:b].copy()
        p[0] += counts[:a].sum()
        p[-1] += counts[b:].sum()
        # the window's 255 levels: bin j of the window goes to level floor(j * 255 / width)
        levels = min(U8_LEVELS, width)
        level = (np.arange(width) * levels) // width
        inside = counts[a:b]
        nonzero = inside > 0
        sums = np.bincount(level, weights=inside, minlength=levels)
        used = np.bincount(level, weights=nonzero.astype(np.float64), minlength=levels)
        q = np.where(nonzero, sums[level] / np.maximum(used[level], 1), 0.0)
        return _kl(p, q)


def _kl(p, q, eps=1e-10):
    """KL(p || q) of two unnormalised histograms; q smoothed where p has mass and q none."""
    ps, qs = p.sum(), q.sum()
    if ps <= 0:
        return 0.0
    p = p / ps
    q = q / qs if qs > 0 else q
    mask = p > 0
    qm = np.maximum(q[mask], eps)
    return float(np.sum(p[mask] * np.log(p[mask] / qm)))


class MSEObserver(_SearchObserver):
    """Range minimising the expected squared error of quantise-dequantise over the histogram."""

    kind = ObserverKind.MSE

    def _cost(self, counts, edges, a, b):
        lo, hi = float(edges[a]), float(edges[b])
        qp = activation_qparams(lo, hi)
        centres = (edges[:-1] + edges[1:]) / 2
        q = np.clip(np.rint(centres / qp.scale) + qp.zero_point, 0, U8_LEVELS)
        err = (centres - (q - qp.zero_point) * qp.scale) ** 2
        return float(np.dot(counts, err))


class ChannelMeanObserver:
    """Mean of every channel (axis 1) of an activation: the statistic of bias correction."""

    def __init__(self):
        self.sum = None
        self.count = 0

    def update(self, x):
        x = np.asarray(x)
        if x.ndim < 2:
            x = x.reshape(1, -1)
        axes = (0,) + tuple(range(2, x.ndim))
        s = x.sum(axis=axes, dtype=np.float64)
        self.sum = s if self.sum is None else self.sum + s
        self.count += x.size // x.shape[1]

    def compute(self):
        if self.sum is None or not self.count:
            raise ConfigError('the channel-mean observer has seen no data')
        return self.sum / self.count


OBSERVERS = {
    ObserverKind.MINMAX: MinMaxObserver,
    ObserverKind.PERCENTILE: PercentileObserver,
    ObserverKind.ENTROPY: EntropyObserver,
    ObserverKind.MSE: MSEObserver,
}


def make_observer(kind, percentile=99.99, bins=DEFAULT_BINS):
    """A new observer of ``kind`` (:class:`ObserverKind` or its name)."""
    kind = as_enum(ObserverKind, kind, 'observer')
    if kind == ObserverKind.MINMAX:
        return MinMaxObserver()
    if kind == ObserverKind.PERCENTILE:
        return PercentileObserver(percentile, bins)
    return OBSERVERS[kind](bins)
