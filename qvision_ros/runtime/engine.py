"""The inference engine: an ONNX model (float or QDQ-quantised) compiled to a plan of Cython kernels.

    engine = Engine('model.onnx', num_threads=2)
    engine.inputs                        # [TensorInfo(name='images', shape=(1, 3, 320, 320), dtype=float32)]
    boxes, = engine.run({'images': x})   # outputs in the model's order
    for rec in engine.profile({'images': x}, repeat=10): print(rec.name, rec.precision, rec.time_s)

At load time the model is parsed (never executed), specialised to fixed input shapes, rewritten by the
passes of :mod:`.passes` (constant folding, BN folding, QDQ patterns to int8 kernels, activation fusion),
given a channels-last layout (:mod:`.layout`) and lowered to prepared kernels with a planned memory
(:mod:`.lowering`, :mod:`.plan`).  At run time only NumPy and :mod:`qvision_kernels` are used.
"""
import threading
from typing import NamedTuple, Tuple

import numpy as np

from qvision_kernels import KernelError, resolve_num_threads

from ..errors import ConfigError, InputError
from .layout import assign_layout
from .onnx_import import ImportedModel
from .passes import OPTIONAL_PASSES, run_passes
from .plan import LayerRecord, Plan

MAX_PLANS = 8


class TensorInfo(NamedTuple):
    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype


class Engine:
    """Run a float or QDQ ONNX model on the qvision kernels.

    Parameters
    ----------
    model : path, bytes of an ONNX file, or an ``onnx.ModelProto``
    num_threads : threads for the kernels, None for every available core
    input_shapes : optional {input name: shape} fixing dynamic dimensions (a dynamic batch defaults to 1)
    disable_passes : names of optional graph passes to skip (for tests and debugging; see
        :data:`qvision_ros.runtime.passes.OPTIONAL_PASSES`)

    ``run`` may be called with another size along a dimension the model declares dynamic (e.g. a batch
    of frames): a plan for that shape is compiled on first use and kept.

    Threads: one engine may be shared by several threads (executor callbacks, several cameras).  A plan
    owns its buffers, so ``run``, ``profile`` and ``intermediates`` hold a lock while they use one: calls
    from several threads are serialised, each gets exactly the outputs it would get alone (fresh arrays,
    never views of the buffers), and plans for new shapes are compiled under the same lock.  For
    inference in parallel, use one engine per thread (``num_threads`` splits each layer instead).
    """

    def __init__(self, model, num_threads=None, input_shapes=None, disable_passes=()):
        try:
            self.num_threads = resolve_num_threads(num_threads)
        except KernelError as e:
            raise ConfigError(str(e)) from None
        self._disable = _pass_names(disable_passes)
        self._model = ImportedModel(model)
        self._lock = threading.Lock()
        self._plans = {}
        shapes = self._model.input_shapes(input_shapes)
        self._default_key = tuple(shapes[name] for name, _, _, _ in self._model.inputs)
        plan = self._plan(self._default_key)
        g = plan.graph
        self.inputs = [TensorInfo(name, shapes[name], np.dtype(dtype)) for name, _, _, dtype in self._model.inputs]
        self.outputs = [TensorInfo(name, tuple(g.values[name].shape), g.values[name].dtype)
                        for name in g.outputs]
        self.last_profile = None

    # ------------------------------------------------------------------------------------ plans
    def _plan(self, key):
        plan = self._plans.get(key)
        if plan is None:
            shapes = {name: shape for (name, _, _, _), shape in zip(self._model.inputs, key)}
            graph = self._model.to_graph(shapes)
            run_passes(graph, self._disable)
            assign_layout(graph)
            plan = Plan(graph, self.num_threads)
            if len(self._plans) >= MAX_PLANS:
                self._plans.pop(next(k for k in self._plans if k != self._default_key))
            self._plans[key] = plan
        return plan

    @property
    def graph(self):
        """The compiled graph of the default input shapes (after the passes and the layout)."""
        return self._plans[self._default_key].graph

    @property
    def memory_bytes(self):
        """Bytes of activation buffers planned for the default input shapes."""
        return self._plans[self._default_key].arena_bytes

    def _check_feeds(self, feeds):
        if not hasattr(feeds, 'keys'):
            raise InputError('run() takes a dict {input name: array}, got %s' % type(feeds).__name__)
        names = [name for name, _, _, _ in self._model.inputs]
        missing = [n for n in names if n not in feeds]
        extra = sorted(set(feeds) - set(names))
        if missing or extra:
            raise InputError('the model inputs are %s; missing %s, unknown %s' % (names, missing, extra))
        arrays, key = [], []
        for name, dims, sym, dtype in self._model.inputs:
            x = feeds[name]
            if not isinstance(x, np.ndarray):
                raise InputError('input %r must be a numpy array of %s, got %s'
                                 % (name, np.dtype(dtype).name, type(x).__name__))
            if x.dtype != dtype:
                raise InputError('input %r must be %s, got %s (convert with x.astype(np.%s))'
                                 % (name, np.dtype(dtype).name, x.dtype, np.dtype(dtype).name))
            default = self.inputs[len(arrays)].shape
            if x.shape != default:
                ok = len(x.shape) == len(dims) and all(
                    (d is None and s >= 1) or s == d for d, s in zip(dims, x.shape))
                if not ok:
                    raise InputError('input %r must have shape %s, got %s (dimensions the model declares '
                                     'fixed cannot change)' % (name, default, x.shape))
            arrays.append(np.require(x, requirements="C"))
            key.append(tuple(x.shape))
        return arrays, tuple(key)

    # -------------------------------------------------------------------------------------- run
    def run(self, feeds, profile=False):
        """Outputs for ``feeds`` ({input name: array}), in the model's output order.

        With ``profile=True`` the per-layer times of this run are kept in ``self.last_profile``
        (a list of :class:`LayerRecord`)."""
        arrays, key = self._check_feeds(feeds)
        with self._lock:
            plan = self._plan(key)
            if not profile:
                return plan.run(arrays)
            times = []
            outs = plan.run(arrays, times)
            self.last_profile = [LayerRecord(*info[:5], t, info[5]) for info, t in zip(plan.info, times)]
            return outs

    def intermediates(self, feeds):
        """Run once and return {value name: array} of every value computed (logical NCHW order, copies),
        the outputs included: for debugging and for comparing layer by layer with another runtime.  Names
        are the model's where a value survived the passes (the output of a fused int8 layer keeps the
        name of the QuantizeLinear it replaced)."""
        arrays, key = self._check_feeds(feeds)
        capture = {}
        with self._lock:
            self._plan(key).run(arrays, capture=capture)
        return capture

    def profile(self, feeds, repeat=10, warmup=1):
        """Per-layer records averaged over ``repeat`` runs (after ``warmup`` runs): a list of
        :class:`LayerRecord` (name, op, precision, input/output shapes, mean time in seconds)."""
        arrays, key = self._check_feeds(feeds)
        with self._lock:
            plan = self._plan(key)
            for _ in range(warmup):
                plan.run(arrays)
            total = np.zeros(len(plan.info))
            for _ in range(max(1, int(repeat))):
                times = []
                plan.run(arrays, times)
                total += times
            total /= max(1, int(repeat))
            records = [LayerRecord(*info[:5], float(t), info[5]) for info, t in zip(plan.info, total)]
            self.last_profile = records
        return records

    def __repr__(self):
        return 'Engine(inputs=%s, outputs=%s, num_threads=%d)' % (
            [(i.name, i.shape) for i in self.inputs], [(o.name, o.shape) for o in self.outputs],
            self.num_threads)


def _pass_names(disable):
    """``disable_passes`` as a tuple of optional pass names; ConfigError for anything else."""
    if isinstance(disable, str) or not isinstance(disable, (list, tuple, set, frozenset)):
        raise ConfigError('disable_passes must be a list of pass names, got %r' % (disable,))
    unknown = [p for p in disable if p not in OPTIONAL_PASSES]
    if unknown:
        raise ConfigError('disable_passes names %s, which are not optional passes; optional ones: %s'
                          % (unknown, sorted(OPTIONAL_PASSES)))
    return tuple(disable)


def summarize_profile(records):
    """Total time per (op, precision), largest first: a list of (op, precision, seconds, count)."""
    acc = {}
    for r in records:
        k = (r.op, r.precision)
        t, n = acc.get(k, (0.0, 0))
        acc[k] = (t + r.time_s, n + 1)
    return sorted(((op, p, t, n) for (op, p), (t, n) in acc.items()), key=lambda x: -x[2])
