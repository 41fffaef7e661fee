"""The three stages of DESIGN.md section 1 in one process: preprocessing, int8 inference, post-processing.

    pipe = Pipeline('detector_320.onnx', PipelineConfig(num_threads=2, score_threshold=0.3))
    result = pipe.process(frame)                  # a sources.Frame or a BGR array
    result.detections.boxes                       # [K, 4] x1 y1 x2 y2 in the frame's own pixels
    for result in stream(pipe, open_source('road.mp4'), annotate=True): ...

:class:`Pipeline` is what the ``qvision`` command, the ROS nodes and the benchmarks share:

1. preprocessing - :class:`~qvision_ros.vision.Preprocessor` (letterbox or stretch to the network size,
   channel order, normalisation);
2. inference - :class:`~qvision_ros.runtime.Engine` on the model's plan (float or QDQ int8);
3. post-processing - :class:`~qvision_ros.vision.Decoder` (decode, class filter, drop NaN and degenerate
   boxes, NMS, map back to source pixels, clip, scores in [0, 1]) and, when asked,
   :func:`~qvision_ros.vision.draw_detections`.

Each stage is timed per frame (:class:`StageTimes`).  :class:`ModelInfo` is what the model file says about
itself: input name, size and layout, output shapes, decoder kind, labels (from a labels file or the ONNX
metadata ``names`` / ``imgsz`` that Ultralytics exports write), and whether it is quantised.

:func:`stream` runs a :class:`~qvision_ros.sources.FrameSource` through a pipeline.  Live sources (a camera,
or any source replayed at its own rate with ``realtime=True``) follow the latest-frame policy of DESIGN.md
section 2: a reader thread keeps only the newest frame; frames that arrive while inference is busy replace
the waiting one and are counted as dropped, never queued, so latency cannot grow under overload.  Files
read as fast as possible lose nothing: the reader thread decodes up to ``prefetch`` frames ahead.
"""
import ast
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError, ModelError, QVisionError
from .nodes.policy import LatestSlot
from .vision.decode import Decoder, Detections, detect_format
from .vision.draw import draw_detections
from .vision.preprocess import CHANNEL_ORDERS, RESIZE_MODES, Preprocessor

#: Percentiles in :class:`PipelineStats` cover at most this many of the most recent frames (fixed memory
#: for runs of any length).
LATENCY_WINDOW = 10000

STAGES = ('preprocess', 'inference', 'postprocess', 'draw')


# ------------------------------------------------------------------------------------------- labels


def load_labels(path):
    """Class names from a file: one name per line (``.txt``; blank lines at the end ignored), or a JSON
    list or ``{"id": name}`` object (``.json``).  Returns a tuple indexed by class id."""
    p = Path(path)
    try:
        text = p.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError('cannot read the labels file %s (%s); give a text file with one class name per line'
                          % (p, getattr(exc, 'strerror', None) or exc)) from None
    if p.suffix.lower() == '.json':
        try:
            names = _names_from_value(json.loads(text))
        except ValueError as exc:
            raise ConfigError('labels file %s: %s' % (p, exc)) from None
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
    if not names or any(not n for n in names):
        raise ConfigError('labels file %s must name every class, one per line with no blank lines, got %d '
                          'lines' % (p, len(names)))
    return tuple(names)


def _names_from_value(value):
    """A list of names, or a mapping {id: name} with ids 0..n-1, as a list; ValueError otherwise."""
    if isinstance(value, dict):
        try:
            items = sorted((int(k), str(v)) for k, v in value.items())
        except (TypeError, ValueError):
            raise ValueError('class names as a mapping need integer ids') from None
        if [k for k, _ in items] != list(range(len(items))):
            raise ValueError('class ids must be 0..%d without gaps' % (len(items) - 1))
        return [v for _, v in items]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError('class names must be a list of strings or a mapping {id: name}')


def _parse_literal(text):
    """JSON, else a Python literal (Ultralytics writes ``{0: 'person', ...}``); never evaluates code."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


# ---------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself (see :func:`describe_model`)."""
    path: str
    input_name: str
    input_shape: tuple          # concrete, batch 1
    layout: str                 # 'nchw' or 'nhwc'
    input_width: int
    input_height: int
    output_shapes: tuple        # as declared (None for a dynamic dimension)
    kind: str                   # 'yolov8', 'yolov5', 'classifier' or 'auto' (decided on the first output)
    num_classes: object         # int or None
    labels: object              # tuple of names or None
    quantized: bool             # has QuantizeLinear / DequantizeLinear nodes
    size_bytes: int
    metadata: dict = field(default_factory=dict, compare=False)

    @property
    def precision(self):
        return 'int8' if self.quantized else 'fp32'

    def label(self, class_id):
        """Name of a class (its id as text when there are no labels or the id is beyond them)."""
        if self.labels is not None and 0 <= int(class_id) < len(self.labels):
            return self.labels[int(class_id)]
        return str(int(class_id))


def _load_model_proto(model):
    from .runtime.onnx_import import _load_proto
    if isinstance(model, (str, os.PathLike)) and not os.path.isfile(os.fspath(model)):
        raise ModelError('model file %s does not exist; give the path of an ONNX model (float or QDQ int8)'
                         % os.fspath(model))
    return _load_proto(model)


def _dims(vi):
    t = vi.type.tensor_type
    if not t.HasField('shape'):
        return None
    return tuple(d.dim_value if d.HasField('dim_value') and d.dim_value > 0 else None for d in t.shape.dim)


def _describe(model, labels, kind, input_size, channel_order):
    """(:class:`ModelInfo`, parsed ModelProto): see :func:`describe_model`."""
    proto = _load_model_proto(model)
    path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else '<model>'
    size = os.path.getsize(path) if path != '<model>' else proto.ByteSize()
    metadata = {p.key: p.value for p in proto.metadata_props}
    inits = {t.name for t in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in inits]
    if len(inputs) != 1:
        raise ModelError('the pipeline runs models with one image input; %s has %d inputs (%s)'
                         % (path, len(inputs), ', '.join(vi.name for vi in inputs)))
    vi = inputs[0]
    dims = _dims(vi)
    if dims is None or len(dims) != 4:
        raise ModelError('input %r of %s must be an image batch [N, 3, H, W] or [N, H, W, 3], got %s'
                         % (vi.name, path, dims))
    if dims[1] == 3:
        layout, h_axis = 'nchw', 2
    elif dims[3] == 3:
        layout, h_axis = 'nhwc', 1
    else:
        raise ModelError('input %r of %s has shape %s: no axis of 3 colour channels at position 1 (NCHW) or '
                         '3 (NHWC)' % (vi.name, path, list(dims)))
    h, w = dims[h_axis], dims[h_axis + 1]
    if input_size is None and (h is None or w is None):
        imgsz = _parse_literal(metadata.get('imgsz', ''))
        if isinstance(imgsz, int):
            imgsz = [imgsz, imgsz]
        if isinstance(imgsz, (list, tuple)) and len(imgsz) == 2 and all(isinstance(v, int) for v in imgsz):
            input_size = (imgsz[1], imgsz[0])   # Ultralytics writes [height, width]
    if input_size is not None:
        try:
            iw, ih = (int(v) for v in input_size)
        except (TypeError, ValueError):
            raise ConfigError('input size must be (width, height), got %r' % (input_size,)) from None
        if iw < 1 or ih < 1 or (w is not None and w != iw) or (h is not None and h != ih):
            raise ConfigError('input size %dx%d does not fit the model input %s of %s'
                              % (iw, ih, list(dims), path))
        w, h = iw, ih
    if w is None or h is None:
        raise ModelError('the input size of %s is dynamic (%s) and the model has no imgsz metadata; give the '
                         'size (e.g. --imgsz 640)' % (path, list(dims)))
    shape = [1, 3, h, w] if layout == 'nchw' else [1, h, w, 3]
    names = None
    if labels is None and 'names' in metadata:
        try:
            names = tuple(_names_from_value(_parse_literal(metadata['names'])))
        except ValueError:
            names = None   # unreadable metadata: behave as if there were none
    if labels is None and names is None and path != '<model>':
        beside = Path(path).with_name('labels.txt')
        if beside.is_file():
            names = load_labels(beside)
    elif isinstance(labels, (str, os.PathLike)):
        names = load_labels(labels)
    elif labels is not None:
        names = tuple(str(v) for v in labels)
    outputs = tuple(_dims(o) for o in proto.graph.output)
    num_classes = len(names) if names else None
    if kind == 'auto' and outputs and outputs[0] is not None:
        try:
            kind = detect_format([outputs[0]], num_classes)
        except ConfigError as exc:
            if num_classes is None:
                raise
            raise ConfigError('%s has %d class names, which does not fit its output %s; check the labels '
                              'file (%s)' % (path, num_classes, list(outputs[0]), exc)) from None
    elif kind not in ('auto', 'yolov5', 'yolov8', 'classifier'):
        raise ConfigError("kind must be 'auto', 'yolov5', 'yolov8' or 'classifier', got %r" % (kind,))
    if num_classes is None and kind in ('yolov5', 'yolov8') and outputs and outputs[0] is not None:
        d = outputs[0]
        if kind == 'yolov5' and d[2] is not None:
            num_classes = d[2] - 5
        elif kind == 'yolov8' and d[1] is not None and d[2] is not None:
            fits = [v for v in d[1:] if v >= 5]   # the axis that can hold 4 box values and a class
            num_classes = (fits[0] if len(fits) == 1 else min(d[1], d[2])) - 4
    if channel_order not in CHANNEL_ORDERS:
        raise ConfigError('channel_order must be one of %s, got %r' % (CHANNEL_ORDERS, channel_order))
    quantized = any(n.op_type in ('QuantizeLinear', 'DequantizeLinear', 'QLinearConv', 'ConvInteger')
                    for n in proto.graph.node)
    info = ModelInfo(path, vi.name, tuple(shape), layout, int(w), int(h), outputs, kind, num_classes, names,
                     quantized, int(size), metadata)
    return info, proto


def describe_model(model, labels=None, kind='auto', input_size=None, channel_order='rgb'):
    """:class:`ModelInfo` of an ONNX model (path, bytes or ModelProto).

    ``labels``: a labels file path or a sequence of names; default: the model's ``names`` metadata, else
    a ``labels.txt`` in the model's folder.
    ``kind``: 'auto' (from the output shapes and the number of classes) or a decoder kind.
    ``input_size``: ``(width, height)`` for a model whose input size is dynamic (default: the ``imgsz``
    metadata); it must agree with a fixed input size.
    """
    return _describe(model, labels, kind, input_size, channel_order)[0]


# --------------------------------------------------------------------------------------- the pipeline


@dataclass
class PipelineConfig:
    """Options of the three stages (the ROS parameters of DESIGN.md section 2 use the same names)."""
    score_threshold: float = 0.25
    nms_iou_threshold: float = 0.45
    max_detections: int = 100
    agnostic_nms: bool = False
    classes: object = None          # None: all; else a sequence of class ids to keep
    num_threads: object = None      # None: every available core
    resize_mode: str = 'letterbox'
    pad_value: int = 114
    channel_order: str = 'rgb'
    mean: object = (0.0, 0.0, 0.0)  # normalisation: (pixel / 255 - mean) / std, in the network's order
    std: object = (1.0, 1.0, 1.0)
    prequantize: bool = True        # feed an int8 model's input already quantised (same results, faster)

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError('resize_mode must be one of %s, got %r' % (RESIZE_MODES, self.resize_mode))


@dataclass
class StageTimes:
    """Seconds spent in each stage for one frame (``draw`` is 0 when nothing was drawn)."""
    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    draw: float = 0.0

    @property
    def total(self):
        return self.preprocess + self.inference + self.postprocess + self.draw


@dataclass
class Result:
    """Detections of one frame, in its own pixels, with the frame's header and the stage times."""
    index: int
    stamp_ns: int
    frame_id: str
    width: int
    height: int
    detections: Detections
    times: StageTimes
    annotated: object = None       # BGR image with the detections drawn, when asked for
    latency_s: object = None       # live sources: from the frame's arrival to this result (:func:`stream`)

    def to_dict(self, labels=None):
        """The JSON-lines record of this frame (boxes x1, y1, x2, y2 in original pixels)."""
        det = self.detections
        items = []
        for box, score, cid in zip(det.boxes.tolist(), det.scores.tolist(), det.class_ids.tolist()):
            label = labels(cid) if callable(labels) else (
                labels[cid] if labels is not None and 0 <= cid < len(labels) else str(cid))
            items.append({'box': [round(v, 2) for v in box], 'score': round(score, 4), 'class_id': int(cid),
                          'label': label})
        return {'index': int(self.index), 'stamp': {'sec': int(self.stamp_ns // 1_000_000_000),
                                                    'nanosec': int(self.stamp_ns % 1_000_000_000)},
                'frame_id': self.frame_id, 'width': int(self.width), 'height': int(self.height),
                'detections': items}


class Pipeline:
    """Preprocess -> infer -> post-process for one model; reusable from the CLI, the nodes and benchmarks.

    ``model``: ONNX path (float or QDQ int8), bytes or ModelProto.  ``labels``: labels file or names
    (default: the model's metadata).  ``kind``: decoder kind or 'auto'.  ``input_size``: (width, height)
    for a model with a dynamic input.  ``engine``: an already built :class:`~qvision_ros.runtime.Engine`
    of the same model (to share one).

    Not thread-safe: one instance per thread (buffers are reused between frames).
    """

    def __init__(self, model, config=None, *, labels=None, kind='auto', input_size=None, engine=None):
        from .runtime import Engine

        self.config = config if config is not None else PipelineConfig()
        if not isinstance(self.config, PipelineConfig):
            raise ConfigError('config must be a PipelineConfig, got %s' % type(self.config).__name__)
        c = self.config
        self.model, proto = _describe(model, labels, kind, input_size, c.channel_order)
        m = self.model
        if m.kind == 'classifier':
            raise ConfigError('%s is a classifier (output %s); the pipeline runs detectors (YOLOv5- or YOLOv8-'
                              'style outputs)' % (m.path, list(m.output_shapes[0])))
        self.decoder = Decoder(kind=m.kind, num_classes=m.num_classes, score_threshold=c.score_threshold,
                               nms_iou_threshold=c.nms_iou_threshold, max_detections=c.max_detections,
                               agnostic_nms=c.agnostic_nms, classes=c.classes)
        if engine is None:
            engine = Engine(proto, num_threads=c.num_threads, input_shapes={m.input_name: m.input_shape})
        self.engine = engine
        # An int8 (QDQ) model whose input goes straight into a QuantizeLinear takes the input already
        # quantised: the preprocessing's lookup table writes q = quantize((p / 255 - mean) / std) directly,
        # bit-exact with the model's own QuantizeLinear (DESIGN.md section 3), saving a float tensor and a
        # quantisation pass per frame.
        q = getattr(engine, 'quantized_inputs', {}).get(m.input_name) if c.prequantize else None
        common = dict(resize_mode=c.resize_mode, pad_value=c.pad_value, channel_order=c.channel_order,
                      mean=c.mean, std=c.std)
        if q is not None:
            self.preprocessor = Preprocessor(m.input_width, m.input_height, input_scale=q.scale,
                                             input_zero_point=q.zero_point, dtype=q.dtype,
                                             layout=q.layout.lower(), **common)
            self._input = np.zeros(q.shape, q.dtype)
        else:
            self.preprocessor = Preprocessor(m.input_width, m.input_height, layout=m.layout, **common)
            self._input = np.zeros(m.input_shape, np.float32)
        self.input_quantized = q is not None
        self._feeds = {m.input_name: self._input}

    @property
    def labels(self):
        return self.model.labels

    def process(self, frame, annotate=False, fps=None, encoding='bgr8'):
        """Run the three stages on ``frame`` (a :class:`~qvision_ros.sources.Frame`, or an image array in
        ``encoding``: BGR ``H x W x 3`` uint8 by default).  ``annotate``: also draw the detections (and
        ``fps`` when given) on a copy of the image, returned as :attr:`Result.annotated`."""
        if hasattr(frame, 'image'):
            image, index, stamp, frame_id = frame.image, frame.index, frame.stamp_ns, frame.frame_id
        else:
            image, index, stamp, frame_id = frame, 0, 0, ''
        t0 = time.perf_counter()
        _, lb = self.preprocessor(image, out=self._input, encoding=encoding)
        t1 = time.perf_counter()
        outputs = self.engine.run(self._feeds)
        t2 = time.perf_counter()
        det = self.decoder(outputs, lb)[0]
        t3 = time.perf_counter()
        annotated = None
        if annotate:
            if encoding != 'bgr8':
                from .vision.image import to_bgr
                image = to_bgr(image, encoding)
            annotated = draw_detections(image, det, labels=self.model.labels, fps=fps)
        t4 = time.perf_counter()
        return Result(int(index), int(stamp), str(frame_id), lb.src_w, lb.src_h, det,
                      StageTimes(t1 - t0, t2 - t1, t3 - t2, t4 - t3), annotated)

    def warmup(self, runs=2):
        """Run the engine on the input buffer a few times (first-call costs out of the measurements)."""
        for _ in range(runs):
            self.engine.run(self._feeds)

    def __repr__(self):
        m = self.model
        return 'Pipeline(%s, %s %dx%d %s, %d threads)' % (m.path, m.precision, m.input_width, m.input_height,
                                                          m.kind, self.engine.num_threads)


# ------------------------------------------------------------------------------------------ statistics


class LatencyWindow:
    """The most recent ``capacity`` values in a fixed ring buffer, plus the count and sum of all."""

    def __init__(self, capacity=LATENCY_WINDOW):
        self._buf = np.zeros(int(capacity), np.float64)
        self.count = 0
        self.total = 0.0

    @property
    def capacity(self):
        return len(self._buf)

    def add(self, value):
        self._buf[self.count % len(self._buf)] = value
        self.count += 1
        self.total += value

    def values(self):
        return self._buf[:min(self.count, len(self._buf))]

    def percentile(self, q):
        v = self.values()
        return float(np.percentile(v, q)) if len(v) else float('nan')

    @property
    def mean(self):
        return self.total / self.count if self.count else float('nan')


class PipelineStats:
    """Per-stage latency (p50, p99 over the last :data:`LATENCY_WINDOW` frames), throughput and drops."""

    def __init__(self, window=LATENCY_WINDOW):
        self.stages = {name: LatencyWindow(window) for name in STAGES + ('total', 'latency')}
        self.frames = 0
        self.dropped = 0        # live frames replaced by a newer one before inference took them
        self.skipped = 0        # corrupt frames the source could not read
        self.start = time.perf_counter()
        self.end = None
        self._last = None
        self._rate = None

    def add(self, result):
        t = result.times
        for name in STAGES:
            self.stages[name].add(getattr(t, name))
        self.stages['total'].add(t.total)
        if result.latency_s is not None:
            self.stages['latency'].add(result.latency_s)
        self.frames += 1
        now = time.perf_counter()
        if self._last is not None:
            dt = now - self._last
            if dt > 0:   # exponential moving average of the output rate, for the on-screen figure
                inst = 1.0 / dt
                self._rate = inst if self._rate is None else 0.9 * self._rate + 0.1 * inst
        self._last = now

    def record(self, name, seconds):
        """Add a time for a stage of the caller's own (e.g. writing the outputs); shown in the table."""
        window = self.stages.get(name)
        if window is None:
            window = self.stages[name] = LatencyWindow(self.stages['total'].capacity)
        window.add(seconds)

    @property
    def rate(self):
        """Recent output rate (frames per second), or None before two frames."""
        return self._rate

    def finish(self):
        self.end = time.perf_counter()

    @property
    def wall_s(self):
        return (self.end if self.end is not None else time.perf_counter()) - self.start

    @property
    def fps(self):
        return self.frames / self.wall_s if self.wall_s > 0 else float('nan')

    def summary(self):
        """A JSON-ready dict: per stage p50/p99/mean in milliseconds, frames, fps, dropped, skipped."""
        stages = {}
        for name, w in self.stages.items():
            if w.count:
                stages[name] = {'p50_ms': w.percentile(50) * 1e3, 'p99_ms': w.percentile(99) * 1e3,
                                'mean_ms': w.mean * 1e3, 'frames': w.count}
        return {'frames': self.frames, 'wall_s': self.wall_s, 'fps': self.fps, 'dropped': self.dropped,
                'skipped': self.skipped, 'stages_ms': stages}

    def table(self):
        """The end-of-run table as text lines."""
        rows = ['%-12s %10s %10s %10s' % ('stage', 'p50 ms', 'p99 ms', 'mean ms')]
        for name, w in self.stages.items():
            if w.count:
                rows.append('%-12s %10.2f %10.2f %10.2f' % (name, w.percentile(50) * 1e3,
                                                           w.percentile(99) * 1e3, w.mean * 1e3))
        rows.append('frames %d in %.2f s: %.1f FPS end to end; dropped %d (latest-frame policy), skipped %d '
                    '(unreadable)' % (self.frames, self.wall_s, self.fps, self.dropped, self.skipped))
        return rows


# ---------------------------------------------------------------------------------------------- stream


class LatestFrameSlot(LatestSlot):
    """A mailbox of one: ``put`` replaces a waiting item (counted in :attr:`dropped`), ``get`` takes it.

    The latest-frame policy of DESIGN.md section 2 in its smallest form: whatever the producer's rate,
    at most one frame waits, so the consumer's latency is bounded by one frame period plus its own work.
    It is the nodes' :class:`~qvision_ros.nodes.policy.LatestSlot` with a single camera.
    """

    def put(self, item):
        super().put(None, item)

    def get(self, timeout=None):
        """The waiting item (blocks until there is one); None once closed and empty, or on timeout."""
        return self.take_all(timeout).get(None)


class _BoundedQueue:
    """Blocking FIFO of ``size`` items with the slot's interface (files read as fast as possible)."""
    dropped = 0

    def __init__(self, size, stop):
        self._q = queue.Queue(maxsize=max(1, int(size)))
        self._stop = stop
        self.received = 0

    def put(self, item):
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                self.received += 1
                return
            except queue.Full:
                continue

    def close(self):
        self.put(None)

    def get(self, timeout=None):
        return self._q.get(timeout=timeout)


def _reader(source, box, stop, realtime, errors):
    """Producer thread: frames of ``source`` (paced by their stamps when ``realtime``) into ``box``."""
    try:
        t0 = None
        s0 = None
        for frame in source:
            if stop.is_set():
                break
            if realtime:
                now = time.perf_counter()
                if t0 is None:
                    t0, s0 = now, frame.stamp_ns
                due = t0 + max(0, frame.stamp_ns - s0) / 1e9
                if due - now > 1.0:      # a gap of more than a second in the stamps: do not sleep through it
                    t0 -= due - now - 1.0
                    due = now + 1.0
                while due > now and not stop.is_set():
                    time.sleep(min(due - now, 0.05))
                    now = time.perf_counter()
            box.put((frame, time.perf_counter()))
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
        errors.append(exc)
    finally:
        box.close()


def stream(pipeline, source, *, annotate=False, realtime=False, live=None, prefetch=2, stats=None):
    """Yield a :class:`Result` for each frame of ``source`` that is processed.

    ``live``: apply the latest-frame policy (default: ``source.live or realtime``).  ``realtime``: replay
    the source at its own rate (stamps) instead of as fast as possible.  ``prefetch``: frames decoded
    ahead for non-live sources.  ``stats``: a :class:`PipelineStats` to update (dropped and skipped frames
    included).  With the latest-frame policy the results carry ``latency_s``, from the frame's arrival (the
    reader handing it over) to its result.
    """
    live = bool(getattr(source, 'live', False) or realtime) if live is None else bool(live)
    stop = threading.Event()
    box = LatestFrameSlot() if live else _BoundedQueue(prefetch, stop)
    errors = []
    thread = threading.Thread(target=_reader, args=(source, box, stop, realtime, errors),
                              name='qvision-reader', daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is None:
                break
            frame, arrival = item
            fps = stats.rate if stats is not None else None
            result = pipeline.process(frame, annotate=annotate, fps=fps)
            if live:   # for a file read ahead, the time in the read-ahead queue is no latency of interest
                result.latency_s = time.perf_counter() - arrival
            if stats is not None:
                stats.dropped = box.dropped
                stats.skipped = getattr(source, 'skipped', 0)
                stats.add(result)
            yield result
    finally:
        stop.set()
        if not live:   # unblock a reader waiting to put
            try:
                while True:
                    box._q.get_nowait()
            except queue.Empty:
                pass
        thread.join(timeout=5.0)
        if stats is not None:
            stats.dropped = box.dropped
            stats.skipped = getattr(source, 'skipped', 0)
            stats.finish()
    if errors:
        exc = errors[0]
        if isinstance(exc, QVisionError):
            raise exc
        raise DataError('reading %s failed: %s: %s' % (getattr(source, 'name', 'the source'),
                                                       type(exc).__name__, exc)) from exc

