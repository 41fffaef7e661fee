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


class QuantizedInput(NamedTuple):
    """A float model input whose only reader is a per-tensor QuantizeLinear: the engine also takes it
    already quantised, ``q = clip(round_half_to_even(x / scale) + zero_point)`` of ``dtype``, in the
    physical ``layout`` ('NHWC' for images) and ``shape`` given here - what
    :class:`qvision_ros.vision.Preprocessor` writes with ``input_scale``/``input_zero_point``, which saves
    the float tensor and its quantisation pass at every frame."""
    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int
    layout: str


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
        self.quantized_inputs = {q.name: q for q in (_input_quantizer(g, name) for name in g.inputs) if q}
        self.last_profile = None

    # ------------------------------------------------------------------------------------ plans
    def _plan(self, key, prequantized=()):
        """The plan for input shapes ``key`` (logical shapes), whose inputs named in ``prequantized`` are
        fed already quantised (see :class:`QuantizedInput`)."""
        full_key = (key, tuple(prequantized))
        plan = self._plans.get(full_key)
        if plan is None:
            shapes = {name: shape for (name, _, _, _), shape in zip(self._model.inputs, key)}
            graph = self._model.to_graph(shapes)
            run_passes(graph, self._disable)
            assign_layout(graph)
            for name in prequantized:
                _cut_input_quantizer(graph, name)
            plan = Plan(graph, self.num_threads)
            if len(self._plans) >= MAX_PLANS:
                self._plans.pop(next(k for k in self._plans if k != (self._default_key, ())))
            self._plans[full_key] = plan
        return plan

    @property
    def graph(self):
        """The compiled graph of the default input shapes (after the passes and the layout)."""
        return self._plans[(self._default_key, ())].graph

    @property
    def memory_bytes(self):
        """Bytes of activation buffers planned for the default input shapes."""
        return self._plans[(self._default_key, ())].arena_bytes

    def _check_feeds(self, feeds):
        """(arrays in input order, logical shapes key, names of the inputs given already quantised)."""
        if not hasattr(feeds, 'keys'):
            raise InputError('run() takes a dict {input name: array}, got %s' % type(feeds).__name__)
        names = [name for name, _, _, _ in self._model.inputs]
        missing = [n for n in names if n not in feeds]
        extra = [k for k in feeds if k not in names]
        if missing or extra:
            raise InputError('the model inputs are %s; missing %s, unknown %s' % (names, missing, extra))
        arrays, key, prequantized = [], [], []
        for name, dims, sym, dtype in self._model.inputs:
            x = feeds[name]
            if not isinstance(x, np.ndarray):
                raise InputError('input %r must be a numpy array of %s, got %s'
                                 % (name, np.dtype(dtype).name, type(x).__name__))
            default = self.inputs[len(arrays)].shape
            q = self.quantized_inputs.get(name)
            if q is not None and x.dtype == q.dtype and x.dtype != dtype:
                # another batch size where the model declares the batch dynamic, like the float input
                batch_ok = (len(x.shape) == len(q.shape) == len(dims) and x.shape[1:] == q.shape[1:]
                            and x.shape[0] >= 1 and (x.shape[0] == q.shape[0] or dims[0] is None))
                if not batch_ok:
                    raise InputError('quantised input %r must have the physical (%s) shape %s, got %s'
                                     % (name, q.layout, q.shape, x.shape))
                arrays.append(np.require(x, requirements='C'))
                key.append((x.shape[0],) + tuple(default[1:]))
                prequantized.append(name)
                continue
            if x.dtype != dtype:
                also = (' or %s %s already quantised (engine.quantized_inputs)' % (q.dtype.name, q.shape)
                        if q is not None else '')
                raise InputError('input %r must be %s%s, got %s (convert with x.astype(np.%s))'
                                 % (name, np.dtype(dtype).name, also, x.dtype, np.dtype(dtype).name))
            if x.shape != default:
                ok = len(x.shape) == len(dims) and all(
                    (d is None and s >= 1) or s == d for d, s in zip(dims, x.shape))
                if not ok:
                    raise InputError('input %r must have shape %s, got %s (dimensions the model declares '
                                     'fixed cannot change)' % (name, default, x.shape))
            arrays.append(np.require(x, requirements="C"))
            key.append(tuple(x.shape))
        return arrays, tuple(key), tuple(prequantized)

    # -------------------------------------------------------------------------------------- run
    def run(self, feeds, profile=False):
        """Outputs for ``feeds`` ({input name: array}), in the model's output order.

        With ``profile=True`` the per-layer times of this run are kept in ``self.last_profile``
        (a list of :class:`LayerRecord`)."""
        arrays, key, preq = self._check_feeds(feeds)
        with self._lock:
            plan = self._plan(key, preq)
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
        arrays, key, preq = self._check_feeds(feeds)
        capture = {}
        with self._lock:
            self._plan(key, preq).run(arrays, capture=capture)
        return capture

    def profile(self, feeds, repeat=10, warmup=1):
        """Per-layer records averaged over ``repeat`` runs (after ``warmup`` runs): a list of
        :class:`LayerRecord` (name, op, precision, input/output shapes, mean time in seconds)."""
        arrays, key, preq = self._check_feeds(feeds)
        with self._lock:
            plan = self._plan(key, preq)
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


def _input_quantizer(graph, name):
    """The :class:`QuantizedInput` of graph input ``name`` when its only reader is a per-tensor
    QuantizeLinear with constant parameters (a QDQ model's first node), else None."""
    readers = graph.consumers().get(name, [])
    if len(readers) != 1 or name in graph.outputs:
        return None
    q = readers[0]
    if q.op != 'QuantizeLinear' or q.inputs[0] != name or len(q.outputs) != 1 or q.outputs[0] in graph.outputs:
        return None
    scale = graph.values[q.inputs[1]].const if len(q.inputs) > 1 and q.inputs[1] else None
    zp = graph.values[q.inputs[2]].const if len(q.inputs) > 2 and q.inputs[2] else None
    if scale is None or scale.size != 1 or (len(q.inputs) > 2 and q.inputs[2] and (zp is None or zp.size != 1)):
        return None
    out = graph.values[q.outputs[0]]
    return QuantizedInput(name, tuple(out.physical_shape()), np.dtype(out.dtype), float(scale.reshape(-1)[0]),
                          0 if zp is None else int(zp.reshape(-1)[0]), out.layout or 'plain')


def _cut_input_quantizer(graph, name):
    """Graph input ``name`` is fed already quantised: the output of its QuantizeLinear becomes the graph
    input (in its physical layout) and the QuantizeLinear goes."""
    q = graph.consumers()[name][0]
    graph.nodes.remove(q)
    graph.inputs[graph.inputs.index(name)] = q.outputs[0]


def summarize_profile(records):
    """Total time per (op, precision), largest first: a list of (op, precision, seconds, count)."""
    acc = {}
    for r in records:
        k = (r.op, r.precision)
        t, n = acc.get(k, (0.0, 0))
        acc[k] = (t + r.time_s, n + 1)
    return sorted(((op, p, t, n) for (op, p), (t, n) in acc.items()), key=lambda x: -x[2])
