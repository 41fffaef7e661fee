"""Sensitivity analysis: how much error each layer and each block adds when it alone is quantised, and
an automatic choice of the blocks to keep float within an accuracy budget.

    report = sensitivity('detector.onnx', 'frames/', metric=my_map, budget=0.005)
    report.layers[0].sqnr_db, report.blocks, report.choice['keep_float_blocks']
    write_report(report, 'report/')          # report/sensitivity.json and report/sensitivity.png

The model is calibrated once (every tensor any plan may quantise, :func:`.ptq.calibrate`); each variant
is then written as a QDQ model and run on our engine.  The error of a variant is the SQNR of its outputs
against the float model's on the evaluation inputs (by default the first ``n_eval`` calibration inputs):
the SQNR of each output channel in dB, averaged over the channels (:func:`sqnr_db`; higher is better).  With ``metric`` - a callback
``metric(model_bytes) -> float``, higher is better (e.g. mAP on labelled data) - the blocks, the full
int8 model and the float model are also scored by the task metric; per layer only with ``layer_metric``.

The choice: every subset of the blocks (backbone, neck, head) kept float, tried from the smallest model
up; the first whose metric is within ``budget`` of the float model's (without a metric: whose SQNR is at
least ``min_sqnr_db``) is chosen.  The decode sub-graph stays float in every variant (head-aware default).
"""
import itertools
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from ..errors import ConfigError
from .analysis import BLOCK_NAMES
from ..cli import Progress
from .plan import make_plan
from .ptq import Prepared, QuantConfig, calibrate
from .qdq import write_qdq

DEFAULT_BUDGET = 0.01           # metric points (e.g. 1 mAP point as a fraction)
DEFAULT_MIN_SQNR_DB = 30.0


@dataclass
class LayerError:
    """One unit quantised alone."""
    name: str
    op: str
    kind: str
    block: Optional[str]
    sqnr_db: float
    metric: Optional[float] = None


@dataclass
class Variant:
    """A partially quantised model: the blocks kept float, its size, error and metric."""
    keep_float_blocks: List[str]
    size_bytes: int
    sqnr_db: float
    metric: Optional[float] = None


@dataclass
class SensitivityReport:
    layers: List[LayerError]
    blocks: Dict[str, Variant]                 # block -> the model with only that block quantised
    fp32: Variant
    int8: Variant                              # everything but the decode quantised
    choice: Variant
    variants: List[Variant] = field(default_factory=list)     # every variant evaluated, smallest first
    budget: Optional[float] = None
    min_sqnr_db: Optional[float] = None
    eval_inputs: int = 0
    calibration_images: int = 0
    block_nodes: Dict[str, int] = field(default_factory=dict)

    def to_dict(self):
        d = asdict(self)
        for key in ('fp32', 'int8', 'choice'):
            d[key] = asdict(getattr(self, key))
        return _finite(d)


def _finite(obj):
    """JSON-safe: infinities as strings."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return 'inf' if obj > 0 else ('-inf' if obj < 0 else 'nan')
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


MAX_SQNR_DB = 100.0


def sqnr_db(outputs, reference):
    """Error of a list of output lists against a reference, in dB: ``mean_c(min(MAX, 10 log10(S_c / E_c)))``
    with ``S_c = sum y^2`` and ``E_c = sum (y_q - y)^2`` per output channel ``c`` (axis 1; the whole tensor
    for outputs of rank < 2) over all outputs, channels of zero signal left out; :data:`MAX_SQNR_DB` for
    identical outputs.  Channels count alike whatever their scale, so a detector's class scores (0..1)
    weigh as much as its box coordinates (0..640); averaging decibels rather than noise ratios keeps one
    channel of near-zero signal (a class absent from the evaluation frames, whose background scores only
    carry rounding noise) from setting the figure alone."""
    num, den = None, None
    for outs, refs in zip(outputs, reference):
        n, d = [], []
        for o, r in zip(outs, refs):
            r = np.asarray(r, np.float64)
            e = np.asarray(o, np.float64) - r
            axes = tuple(a for a in range(r.ndim) if a != 1) if r.ndim >= 2 else None
            n.append(np.atleast_1d(np.sum(r * r, axis=axes)))
            d.append(np.atleast_1d(np.sum(e * e, axis=axes)))
        n, d = np.concatenate(n), np.concatenate(d)
        num, den = (n, d) if num is None else (num + n, den + d)
    keep = num > 0
    if not keep.any():
        return 0.0
    floor = 10 ** (-MAX_SQNR_DB / 10)
    ratio = np.maximum(den[keep] / num[keep], floor)
    return float(np.mean(np.minimum(-10.0 * np.log10(ratio), MAX_SQNR_DB)))


class _Evaluator:
    """Writes, runs and scores model variants (cached by the set of nodes kept float)."""

    def __init__(self, prep, calibration, config, inputs, metric):
        from ..runtime import Engine
        self.prep, self.cal, self.config, self.inputs, self.metric = prep, calibration, config, inputs, metric
        self.num_threads = config.num_threads
        fp32 = prep.proto.SerializeToString()
        engine = Engine(fp32, num_threads=self.num_threads)
        self.reference = [engine.run(x) for x in inputs]
        self.fp32 = Variant(list(BLOCK_NAMES), len(fp32), MAX_SQNR_DB, metric(fp32) if metric else None)
        self._cache = {}

    def model(self, keep):
        plan = make_plan(self.prep.analysis, keep)
        if not plan.quantized:
            return None
        proto, _ = write_qdq(self.prep.proto, self.prep.analysis, plan, self.cal, self.config.weight_bits,
                             self.config.weight_scaling, self.config.bias_correction)
        return proto.SerializeToString()

    def run(self, keep, with_metric=True, blocks=()):
        key = (frozenset(keep), with_metric)
        if key in self._cache:
            return self._cache[key]
        from ..runtime import Engine
        data = self.model(keep)
        if data is None:
            v = Variant(list(blocks), self.fp32.size_bytes, MAX_SQNR_DB, self.fp32.metric)
        else:
            engine = Engine(data, num_threads=self.num_threads)
            outs = [engine.run(x) for x in self.inputs]
            score = self.metric(data) if (self.metric and with_metric) else None
            v = Variant(list(blocks), len(data), sqnr_db(outs, self.reference), score)
        self._cache[key] = v
        return v


def sensitivity(model, calib=None, config=None, metric: Optional[Callable] = None, budget=None,
                min_sqnr_db=None, eval_inputs=None, n_eval=8, layers=True, layer_metric=False,
                calibration=None):
    """The :class:`SensitivityReport` of ``model`` (see the module docstring).  ``calib`` and ``config``
    as for :func:`.ptq.quantize` (or a ready ``calibration``, then with ``eval_inputs``: a list of feed
    dicts)."""
    config = config or QuantConfig()
    prep = model if isinstance(model, Prepared) else Prepared(model, config)
    if budget is not None and (not isinstance(budget, (int, float)) or budget < 0):
        raise ConfigError('budget must be a number >= 0 (metric points), got %r' % (budget,))
    if calibration is None:
        if calib is None:
            raise ConfigError('sensitivity() needs calibration data (calib) or a calibration')
        calibration = calibrate(prep, calib, config, keep_samples=n_eval)
    inputs = list(eval_inputs) if eval_inputs is not None else list(calibration.samples)
    if not inputs:
        raise ConfigError('no evaluation inputs: give eval_inputs (feed dicts) or n_eval > 0')
    inputs = [x if isinstance(x, dict) else {prep.input_names[0]: x} for x in inputs]
    a = prep.analysis
    ev = _Evaluator(prep, calibration, config, inputs, metric)
    every = {n.name for n in a.nodes}
    base_keep = prep.keep_float_nodes(config)
    blocks = {b: set(a.block_nodes(b, (config.blocks or {}).get(b))) - a.decode for b in _block_names(a, config)}
    block_of = {n: b for b, ns in blocks.items() for n in ns}

    int8 = ev.run(base_keep, blocks=())
    alone = {}
    for b, nodes in blocks.items():
        if nodes:
            alone[b] = ev.run(base_keep | (every - nodes), blocks=[o for o in blocks if o != b])

    layer_errors = []
    if layers:
        units = [u for u in a.units if u.quantizable and not base_keep.intersection(u.nodes)]
        bar = Progress('sensitivity', len(units), enabled=config.progress)
        for k, u in enumerate(units):
            v = ev.run(base_keep | (every - set(u.nodes)), with_metric=layer_metric)
            layer_errors.append(LayerError(u.name, '+'.join(u.ops), u.kind, block_of.get(u.nodes[0]), v.sqnr_db,
                                           v.metric))
            bar.update(k + 1)
        if units:
            bar.close()

    # the automatic choice: smallest model within the budget
    if metric is not None:
        budget = DEFAULT_BUDGET if budget is None else float(budget)
        ok = lambda v: v.metric is not None and v.metric >= ev.fp32.metric - budget      # noqa: E731
        min_sqnr_db = None
    else:
        min_sqnr_db = DEFAULT_MIN_SQNR_DB if min_sqnr_db is None else float(min_sqnr_db)
        ok = lambda v: v.sqnr_db >= min_sqnr_db                                             # noqa: E731
        budget = None
    names = [b for b in blocks if blocks[b]]
    subsets = [list(c) for r in range(len(names) + 1) for c in itertools.combinations(names, r)]
    sized = []
    for s in subsets:
        keep = base_keep | set().union(*[blocks[b] for b in s]) if s else base_keep
        data = ev.model(keep)
        sized.append((len(data) if data is not None else ev.fp32.size_bytes, s, keep))
    sized.sort(key=lambda t: (t[0], len(t[1])))
    variants, choice = [], None
    for size, s, keep in sized:
        v = ev.run(keep, blocks=s)
        v = Variant(s, v.size_bytes, v.sqnr_db, v.metric)
        variants.append(v)
        if ok(v):
            choice = v
            break
    if choice is None:
        choice = Variant(names, ev.fp32.size_bytes, MAX_SQNR_DB, ev.fp32.metric)
    return SensitivityReport(layer_errors, alone, ev.fp32, int8, choice, variants, budget, min_sqnr_db, len(inputs),
                             calibration.num_images, {b: len(n) for b, n in blocks.items()})


def _block_names(analysis, config):
    """The user's blocks when given (``config.blocks``), else backbone, neck and head."""
    return list(config.blocks) if config.blocks else list(BLOCK_NAMES)
