"""Soak and overload benchmarks: nothing leaks over a long run, and latency stays bounded under overload.

    python -m qvision_ros.soak                          # both, with their defaults (about half an hour)
    python -m qvision_ros.soak soak --frames 20000 --out soak_results
    python -m qvision_ros.soak overload --factor 3 --duration 30

**Soak** (:func:`run_soak`): ``--frames`` frames (default 100,000) through the composed pipeline in one
process, as ``qvision run`` does (preprocess -> engine -> decode/NMS -> drawing, and the JSON record of each
frame), single-threaded from the caller's side.  Most frames come from the shipped sample clip, looped (the
video is reopened at every loop); now and then a run of frames is handed over as ``sensor_msgs/Image``
fields in another size and encoding (:data:`VARIANTS`: every encoding of the nodes, row padding, sizes from
2 x 2 to 1920 x 1080), and every ``--malformed-every`` frames a malformed one (:data:`MALFORMED`: truncated
data, a step shorter than a row, an unknown encoding, a declared size of ten billion pixels...), which must
be refused with one of the project's errors and counted, never crash the run nor be accepted.  Every
``--block`` frames the resident memory (``/proc/self/statm``), the p50/p99/max latency of that block's
frames, the errors, the Python objects tracked by the garbage collector, the open file descriptors and the
threads are sampled.  Reported: RSS growth from the end of the warm-up to the end (target < 1 %; the
highest sample of the last tenth of the run against the highest of the first tenth after the warm-up, and
the two single samples, and the slope of a straight-line fit per 100,000 frames), and the latency drift
(median p50 and p99 of the last tenth of the blocks against the first tenth after the warm-up).

**Overload** (:func:`run_overload`): a live source (:class:`PacedSource`: camera-like, it hands over a
fresh frame every ``1 / rate`` seconds whether or not anybody keeps up) at ``--unloaded-factor`` (0.5) and
``--factor`` (3) times the rate the pipeline sustains, through the latest-frame policy of DESIGN.md
section 2: ``stream`` is :func:`qvision_ros.pipeline.stream` (what ``qvision run`` does with a camera),
``node`` is :class:`qvision_ros.nodes.policy.LatestSlot` with a producer thread standing in for the
subscription callback (what the inference node does), and ``fifo`` - a reference, not run by default - an
unbounded queue, the behaviour the policy exists to prevent.  On a shared machine the sustainable rate
changes by the minute, so the run alternates: ``--rounds`` times, measure the sustainable rate now
(:func:`measure_sustainable_rate`, frames back to back for ``--calibrate / rounds`` seconds), then an
unloaded and an overloaded slice of ``--duration / rounds`` seconds each at multiples of it.  Reported per
policy and load: frames produced, processed and dropped (every produced frame is one or the other), the
queue length (frames handed over after the one being processed and before its processing began: a queue
lets this grow without bound; with the policy it is 0, or 1-2 when a fast source hands one over in the
instant between the slot and the start of processing), and the end-to-end latency from the frame's
hand-over to its result, p50 and p99 (and its two parts: processing, and waiting before it), overloaded
against unloaded (target: p99 under 3x overload within 2x of the unloaded p99).

Everything goes into ``--out`` (default a new ``qvision_soak_<date>_<time>`` folder): ``soak.json``,
``soak.png`` (RSS and p50/p99 latency against frames), ``overload.json`` and ``overload.png`` (latency of
every frame against time, per policy and load).  The machine's load average is recorded with the figures:
on a shared machine latency figures are noisy, memory figures are not.
"""
import argparse
import gc
import json
import math
import os
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ConfigError, QVisionError
from .sources import FrameSource, open_source
from .vision.image import array_to_image_fields, image_to_array

#: (width, height, encoding, row padding in bytes) of the frames handed over as sensor_msgs/Image fields.
VARIANTS = (
    (320, 240, 'rgb8', 0),
    (640, 480, 'bgra8', 64),
    (1280, 720, 'yuyv', 0),
    (1920, 1080, 'bgr8', 0),
    (333, 517, 'mono8', 3),
    (642, 482, 'uyvy', 16),
    (96, 1000, 'rgba8', 0),
    (2, 2, 'yuv422', 0),
)

#: Kinds of malformed frames, injected in turn; each must raise a QVisionError.
MALFORMED = ('truncated_data', 'short_step', 'unknown_encoding', 'odd_width_yuv', 'zero_height',
             'huge_declared_size', 'float_pixels', 'five_channels')

#: Policies of the overload benchmark (see the module docstring).
POLICIES = ('stream', 'node', 'fifo')

SOAK_JSON, SOAK_PNG = 'soak.json', 'soak.png'
OVERLOAD_JSON, OVERLOAD_PNG = 'overload.json', 'overload.png'

_PAGE = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096


def rss_bytes():
    """Resident memory of this process now: ``/proc/self/statm`` on Linux; elsewhere the peak from
    ``getrusage`` (only an upper bound, but it never shrinks, so growth still shows)."""
    try:
        with open('/proc/self/statm', 'rb') as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == 'darwin' else peak * 1024


def open_fds():
    """Open file descriptors of this process (None where /proc is not there)."""
    try:
        return len(os.listdir('/proc/self/fd'))
    except OSError:
        return None


def _load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _ms(values, q):
    return float(np.percentile(values, q) * 1e3) if len(values) else float('nan')


# ------------------------------------------------------------------------------------------- frames


@dataclass
class RawImage:
    """The fields of a sensor_msgs/Image that matter here (what a subscription callback receives)."""
    data: object
    width: int
    height: int
    encoding: str
    step: int
    is_bigendian: int = 0

    def to_array(self):
        """``H x W x C`` view of the data (:func:`~qvision_ros.vision.image.image_to_array`)."""
        return image_to_array(self.data, self.width, self.height, self.encoding, self.step, self.is_bigendian)


def _encode(bgr, encoding):
    """A BGR image as ``encoding`` (H x W x C as image_to_array would return it)."""
    canonical = {'yuv422': 'uyvy', 'yuv422_yuy2': 'yuyv'}.get(encoding, encoding)
    codes = {'bgr8': None, 'rgb8': cv2.COLOR_BGR2RGB, 'bgra8': cv2.COLOR_BGR2BGRA, 'rgba8': cv2.COLOR_BGR2RGBA,
             'mono8': cv2.COLOR_BGR2GRAY, 'uyvy': cv2.COLOR_BGR2YUV_UYVY, 'yuyv': cv2.COLOR_BGR2YUV_YUY2}
    code = codes[canonical]
    out = bgr if code is None else cv2.cvtColor(bgr, code)
    return out[:, :, None] if out.ndim == 2 else out


def raw_image(bgr, encoding, padding=0):
    """:class:`RawImage` of a BGR image in ``encoding`` with ``padding`` bytes after each row."""
    fields = array_to_image_fields(_encode(bgr, encoding), encoding)
    if padding:
        h, row = fields['height'], fields['step']
        padded = np.zeros((h, row + padding), np.uint8)
        padded[:, :row] = np.frombuffer(fields['data'], np.uint8).reshape(h, row)
        fields['data'], fields['step'] = padded.tobytes(), row + padding
    return RawImage(fields['data'], fields['width'], fields['height'], fields['encoding'], fields['step'])


def variant_frames(seed=0):
    """One :class:`RawImage` per entry of :data:`VARIANTS`: a synthetic road scene resized to that size."""
    from . import synthetic
    frames = []
    for k, (w, h, encoding, padding) in enumerate(VARIANTS):
        scene, _ = synthetic.render_scene(synthetic.scene_for_index(seed, k, size=(640, 480)))
        interp = cv2.INTER_AREA if w * h < 640 * 480 else cv2.INTER_LINEAR
        frames.append(raw_image(cv2.resize(scene, (w, h), interpolation=interp), encoding, padding))
    return frames


def malformed_frame(kind, good):
    """A malformed frame of ``kind`` (:data:`MALFORMED`) made from the good BGR image ``good``: a
    :class:`RawImage` whose fields lie, or an array the pipeline must refuse."""
    h, w = good.shape[:2]
    data = np.ascontiguousarray(good).tobytes()
    if kind == 'truncated_data':
        return RawImage(data[:len(data) // 2], w, h, 'bgr8', w * 3)
    if kind == 'short_step':
        return RawImage(data, w, h, 'bgr8', w * 3 - 1)
    if kind == 'unknown_encoding':
        return RawImage(data, w, h, '32FC1', w * 3)
    if kind == 'odd_width_yuv':
        return RawImage(data, 3, 2, 'yuyv', 6)
    if kind == 'zero_height':
        return RawImage(b'', w, 0, 'bgr8', w * 3)
    if kind == 'huge_declared_size':
        return RawImage(data, 100_000, 100_000, 'bgr8', 300_000)
    if kind == 'float_pixels':
        return good.astype(np.float32)
    if kind == 'five_channels':
        return np.zeros((h, w, 5), np.uint8)
    raise ConfigError('unknown kind of malformed frame %r; one of %s' % (kind, ', '.join(MALFORMED)))


def _base_frames(kind, seed):
    """Endless BGR frames: the shipped sample clip looped ('video') or 64 synthetic scenes in turn."""
    if kind == 'video':
        from .cli_run import SAMPLE_VIDEO
        with open_source(SAMPLE_VIDEO, loop=True) as src:
            for frame in src:
                yield frame.image
        return
    from . import synthetic
    pool = [synthetic.render_scene(synthetic.scene_for_index(seed, 100 + k, size=(480, 360)))[0]
            for k in range(64)]
    while True:
        yield from pool


# --------------------------------------------------------------------------------------------- soak


@dataclass
class SoakConfig:
    """Options of :func:`run_soak` (see the module docstring)."""
    frames: int = 100_000
    block: int = 1000               # frames per sample
    warmup: object = None           # frames before the RSS baseline; None: 5 %, at least two variant cycles
    source: str = 'video'           # 'video' (the sample clip looped) or 'synthetic'
    malformed_every: int = 997      # one malformed frame in this many (0: none)
    vary_every: int = 250           # a run of frames in another size / encoding starts every this many
    vary_len: int = 10              # ... and lasts this many frames (0: none)
    annotate: bool = True
    seed: int = 0

    def __post_init__(self):
        for name in ('frames', 'block', 'vary_every'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError('soak %s must be a positive integer, got %r' % (name, v))
        for name in ('malformed_every', 'vary_len'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError('soak %s must be an integer >= 0, got %r' % (name, v))
        if self.source not in ('video', 'synthetic'):
            raise ConfigError("soak source must be 'video' or 'synthetic', got %r" % (self.source,))
        if self.warmup is not None and (isinstance(self.warmup, bool) or not isinstance(self.warmup, int)
                                        or not 0 <= self.warmup < self.frames):
            raise ConfigError('soak warmup must be an integer in [0, frames), got %r' % (self.warmup,))

    @property
    def warmup_frames(self):
        """Frames of the warm-up: 5 % of the run (at least two cycles of the variants, at most half the
        run) unless given, rounded up to whole blocks and whole cycles of the variants (so that the RSS
        baseline is sampled at the same point of the cycle as the end), and ending before the last block."""
        w = self.warmup
        if w is None:
            w = max(self.frames // 20, 2 * self.cycle)
            w = min(w, self.frames // 2)
        step = self.block * self.cycle // math.gcd(self.block, self.cycle)
        w = -(-w // step) * step
        return min(w, (self.frames - 1) // self.block * self.block)

    @property
    def cycle(self):
        """Frames after which the sizes and encodings repeat (1 without variants)."""
        return self.vary_every * len(VARIANTS) if self.vary_len else 1

    def kind_of(self, i):
        """What frame ``i`` is: ('malformed', kind), ('variant', index) or ('base', None)."""
        m = self.malformed_every
        if m and i % m == m - 1:
            return 'malformed', MALFORMED[(i // m) % len(MALFORMED)]
        if self.vary_len and i % self.vary_every < self.vary_len:
            return 'variant', (i // self.vary_every) % len(VARIANTS)
        return 'base', None

    def expected_malformed(self):
        return self.frames // self.malformed_every if self.malformed_every else 0


def run_soak(pipe, config=None, progress=None):
    """Run the soak on ``pipe`` (a :class:`~qvision_ros.pipeline.Pipeline`); returns the JSON-ready report.

    ``progress``: a :class:`~qvision_ros.cli.Progress` (or None)."""
    cfg = config if config is not None else SoakConfig()
    variants = variant_frames(cfg.seed)
    base = _base_frames(cfg.source, cfg.seed)
    label = pipe.model.label
    lat = np.zeros(cfg.block, np.float64)    # latencies of the current block, reused
    n_lat = 0
    processed = 0
    processed_by_kind = {'base': 0, 'variant': 0}
    errors = {}                               # malformed kind -> {error type: count}
    refused_good = []                         # good frames refused (a bug): first few reasons
    accepted_bad = {}                         # malformed kinds that were processed (a bug)
    unclassified = []                         # exceptions that are not QVisionError: first few
    n_unclassified = 0
    n_refused_good = 0
    record_bytes = 0
    samples = []
    pipe.warmup()
    good = next(base)   # the clip opened or the scenes rendered before the clock starts
    gc.collect()
    t_start = time.perf_counter()
    rss0 = rss_bytes()
    try:
        for i in range(cfg.frames):
            what, arg = cfg.kind_of(i)
            if what == 'base' and i:
                good = next(base)
            if what == 'malformed':
                item = malformed_frame(arg, good)
            elif what == 'variant':
                item = variants[arg]
            else:
                item = good
            t0 = time.perf_counter()
            try:
                if isinstance(item, RawImage):
                    result = pipe.process(item.to_array(), annotate=cfg.annotate, encoding=item.encoding)
                else:
                    result = pipe.process(item, annotate=cfg.annotate)
                record_bytes += len(json.dumps(result.to_dict(label)))
                dt = time.perf_counter() - t0
                if what == 'malformed':
                    accepted_bad[arg] = accepted_bad.get(arg, 0) + 1
                else:
                    processed_by_kind[what] += 1
                processed += 1
                lat[n_lat] = dt
                n_lat += 1
            except QVisionError as exc:
                if what == 'malformed':
                    per = errors.setdefault(arg, {})
                    per[type(exc).__name__] = per.get(type(exc).__name__, 0) + 1
                else:
                    n_refused_good += 1
                    if len(refused_good) < 5:
                        refused_good.append('frame %d (%s): %s' % (i, what, exc))
            except Exception as exc:  # noqa: BLE001 - what the soak exists to find: counted, reported
                n_unclassified += 1
                if len(unclassified) < 5:
                    unclassified.append('frame %d (%s %s): %s: %s' % (i, what, arg, type(exc).__name__, exc))
            done = i + 1
            if done % cfg.block == 0 or done == cfg.frames:
                block = lat[:n_lat]
                samples.append({
                    'frames': done, 'elapsed_s': round(time.perf_counter() - t_start, 3),
                    'rss_mb': rss_bytes() / 2**20, 'processed': processed,
                    'errors': sum(sum(v.values()) for v in errors.values()),
                    'unclassified': n_unclassified, 'dropped': 0,
                    'p50_ms': _ms(block, 50), 'p99_ms': _ms(block, 99),
                    'max_ms': float(block.max() * 1e3) if n_lat else float('nan'),
                    'mean_ms': float(block.mean() * 1e3) if n_lat else float('nan'),
                    'gc_objects': len(gc.get_objects()), 'open_fds': open_fds(),
                    'threads': threading.active_count()})
                n_lat = 0
                if progress is not None:
                    s = samples[-1]
                    progress.update(done, 'RSS %.1f MB, p50 %.1f ms, p99 %.1f ms, errors %d'
                                    % (s['rss_mb'], s['p50_ms'], s['p99_ms'], s['errors']))
    finally:
        base.close()
    wall = time.perf_counter() - t_start
    n_errors = sum(sum(v.values()) for v in errors.values())
    report = {
        'config': asdict(cfg), 'warmup_frames': cfg.warmup_frames, 'pipeline': _describe_pipeline(pipe),
        'load_average_end': _load_average(), 'wall_s': wall, 'fps': processed / wall if wall > 0 else None,
        'frames': cfg.frames, 'processed': processed, 'processed_by_kind': processed_by_kind, 'errors': n_errors,
        'expected_malformed': cfg.expected_malformed(), 'errors_by_kind': errors,
        'malformed_accepted': accepted_bad, 'good_frames_refused': n_refused_good,
        'good_frames_refused_examples': refused_good, 'unclassified': n_unclassified,
        'unclassified_examples': unclassified, 'dropped': 0, 'record_bytes': record_bytes,
        'rss_before_mb': rss0 / 2**20, 'samples': samples,
    }
    report.update(_soak_figures(samples, cfg))
    report['accounting_ok'] = (processed + n_errors + n_refused_good + n_unclassified == cfg.frames
                               and n_errors == cfg.expected_malformed() and not accepted_bad
                               and n_refused_good == 0 and n_unclassified == 0)
    return report


def _soak_figures(samples, cfg):
    """RSS growth and latency drift from the samples after the warm-up.

    RSS growth is given two ways: the last sample against the first one after the warm-up
    (``rss_growth_point_pct``), and - the headline ``rss_growth_pct``, less sensitive to which buffers
    happen to be allocated at one sampling instant - the highest sample of the last window against the
    highest of the first window after the warm-up, each window a tenth of the samples after it (at least one
    cycle of the variants)."""
    after = [s for s in samples if s['frames'] >= cfg.warmup_frames]
    if not after:
        return {}
    rss = [s['rss_mb'] for s in after]
    k = min(max(1, -(-len(after) // 10), -(-cfg.cycle // cfg.block)), max(1, len(after) // 2))
    out = {'rss_warm_mb': rss[0], 'rss_end_mb': rss[-1], 'rss_max_mb': max(rss),
           'rss_growth_point_pct': (rss[-1] / rss[0] - 1.0) * 100.0,
           'rss_window_samples': k, 'rss_first_window_max_mb': max(rss[:k]),
           'rss_last_window_max_mb': max(rss[-k:]),
           'rss_growth_target_pct': 1.0}
    out['rss_growth_pct'] = (out['rss_last_window_max_mb'] / out['rss_first_window_max_mb'] - 1.0) * 100.0
    out['rss_growth_ok'] = out['rss_growth_pct'] < 1.0
    if len(after) >= 3:
        x = np.array([s['frames'] for s in after], np.float64)
        out['rss_slope_mb_per_100k'] = float(np.polyfit(x, rss, 1)[0] * 1e5)
    lat = [s for s in after[1:] if s['p50_ms'] == s['p50_ms']]   # blocks after the baseline, not empty
    if len(lat) >= 2:
        k = max(1, len(lat) // 10)
        first, last = lat[:k], lat[-k:]
        for q in ('p50', 'p99'):
            a = float(np.median([s[q + '_ms'] for s in first]))
            b = float(np.median([s[q + '_ms'] for s in last]))
            out['%s_first_ms' % q], out['%s_last_ms' % q] = a, b
            out['%s_drift_pct' % q] = (b / a - 1.0) * 100.0
        out['p50_ms_overall_median'] = float(np.median([s['p50_ms'] for s in lat]))
        out['p99_ms_overall_median'] = float(np.median([s['p99_ms'] for s in lat]))
        if len(lat) >= 3:
            xs = np.array([s['frames'] for s in lat], np.float64)
            out['p50_slope_ms_per_100k'] = float(np.polyfit(xs, [s['p50_ms'] for s in lat], 1)[0] * 1e5)
    return out


def _describe_pipeline(pipe):
    m = pipe.model
    return {'model': str(m.path), 'precision': m.precision, 'input': [m.input_width, m.input_height],
            'threads': pipe.engine.num_threads, 'input_quantized': bool(pipe.input_quantized)}


# ----------------------------------------------------------------------------------------- overload


class PacedSource(FrameSource):
    """A camera-like live source: a fresh copy of the next of ``images`` every ``1 / rate`` seconds,
    whether or not anybody keeps up (like a camera driver), for ``duration_s`` seconds or ``max_frames``.

    Frames are due on a fixed schedule (``t0 + k / rate``); a frame handed over late does not shift the
    ones after it (the source catches up), except after a stall of more than a second.  ``stamp_ns`` is the
    ``time.perf_counter_ns()`` of the hand-over.  :attr:`produced` counts frames handed over;
    :attr:`handover_ns` holds their hand-over times (index order), :attr:`due_s` when each was due
    (``time.perf_counter()`` seconds) and :attr:`late_s` the difference.
    """
    kind = 'paced'
    live = True

    def __init__(self, images, rate, duration_s=None, max_frames=None, copy=True, frame_id='camera'):
        super().__init__('paced %.1f Hz' % float(rate), max_frames=max_frames, frame_id=frame_id,
                         fps=float(rate))
        if not images:
            raise ConfigError('a paced source needs at least one image')
        if not (np.isfinite(rate) and rate > 0):
            raise ConfigError('rate must be a positive number of frames per second, got %r' % (rate,))
        if duration_s is None and max_frames is None:
            raise ConfigError('give a duration or a number of frames for a paced source (it never ends)')
        self.images = list(images)
        self.rate = float(rate)
        self.duration_s = None if duration_s is None else float(duration_s)
        self.copy = bool(copy)
        self.produced = 0
        self.handover_ns = []
        self.due_s = []
        self.late_s = []
        self.started = None
        self.finished = None

    def _pass_count(self):
        if self.duration_s is None:
            return self.max_frames
        n = int(np.ceil(self.duration_s * self.rate))
        return n if self.max_frames is None else min(n, self.max_frames)

    def _pass(self):
        period = 1.0 / self.rate
        t0 = time.perf_counter()
        self.started = t0
        k = 0
        try:
            while self.duration_s is None or k * period < self.duration_s:
                due = t0 + k * period
                now = time.perf_counter()
                if due - now > 0:
                    time.sleep(due - now)
                    now = time.perf_counter()
                elif now - due > 1.0:        # stalled (suspended?): start the schedule again from now
                    t0 += now - due
                image = self.images[k % len(self.images)]
                image = image.copy() if self.copy else image
                stamp = time.perf_counter_ns()
                self.due_s.append(due)
                self.late_s.append(stamp / 1e9 - due)
                self.handover_ns.append(stamp)
                self.produced += 1
                yield stamp, None, image
                k += 1
        finally:
            self.finished = time.perf_counter()

    def achieved_rate(self):
        """Frames per second actually handed over (None before two frames)."""
        if len(self.handover_ns) < 2:
            return None
        return (len(self.handover_ns) - 1) / ((self.handover_ns[-1] - self.handover_ns[0]) / 1e9)


def measure_sustainable_rate(pipe, images, seconds=5.0, annotate=True):
    """Frames per second ``pipe`` sustains back to back on ``images`` for ``seconds`` (at least 5
    frames), and the per-frame processing times (s)."""
    times = []
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < seconds or k < 5:
        t = time.perf_counter()
        pipe.process(images[k % len(images)], annotate=annotate)
        times.append(time.perf_counter() - t)
        k += 1
    return k / (time.perf_counter() - t0), times


class _Box:
    """Hand-over between a producer thread and the consumer: the nodes' LatestSlot or a plain FIFO."""

    def __init__(self, policy):
        self.policy = policy
        if policy == 'node':
            from .nodes.policy import LatestSlot
            self._slot = LatestSlot()
        else:
            self._q = queue.Queue()
            self.dropped = 0

    def put(self, item):
        if self.policy == 'node':
            self._slot.put('camera', item)
        else:
            self._q.put(item)

    def close(self):
        if self.policy == 'node':
            self._slot.close()
        else:
            self._q.put(None)

    def get(self):
        """The next item, or None at the end."""
        if self.policy == 'node':
            return self._slot.take_all(timeout=None).get('camera')
        return self._q.get()

    @property
    def dropped_count(self):
        return self._slot.dropped if self.policy == 'node' else 0


def _threaded(pipe, src, policy, annotate):
    """Results of ``src`` through a producer thread and a :class:`_Box`: yields (frame, result, latency)."""
    box = _Box(policy)
    stop = threading.Event()
    failures = []

    def produce():
        try:
            for frame in src:
                if stop.is_set():
                    break
                box.put((frame, time.perf_counter()))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            failures.append(exc)
        finally:
            box.close()

    thread = threading.Thread(target=produce, name='qvision-soak-producer', daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is None:
                break
            frame, arrival = item
            result = pipe.process(frame, annotate=annotate)
            yield frame, result, time.perf_counter() - arrival, box.dropped_count
    finally:
        stop.set()
        thread.join(timeout=5.0)
    if failures:
        raise failures[0]


def run_live(pipe, images, rate, duration_s, policy='stream', annotate=True):
    """One live phase: a :class:`PacedSource` at ``rate`` for ``duration_s`` seconds through ``policy``.

    Returns the raw figures: counts (``produced``, ``processed``, ``dropped``), the source's achieved rate
    and lateness, and per processed frame (lists in processing order) ``t_s`` (end of processing, from the
    source's start), ``latency`` (hand-over to result, s), ``processing`` (s), ``queue`` (frames handed
    over after it and before its processing began) and ``index``.  :func:`summarize_phase` turns one or
    more of these into the reported figures.
    """
    from .pipeline import PipelineStats, stream
    if policy not in POLICIES:
        raise ConfigError('policy must be one of %s, got %r' % (', '.join(POLICIES), policy))
    src = PacedSource(images, rate, duration_s=duration_s)
    raw = {'t_s': [], 'latency': [], 'processing': [], 'queue': [], 'index': []}
    dropped = 0
    if policy == 'stream':
        stats = PipelineStats()
        results = ((None, r, r.latency_s, None) for r in stream(pipe, src, annotate=annotate, live=True,
                                                                  stats=stats))
    else:
        stats = None
        results = _threaded(pipe, src, policy, annotate)
    with src:
        for _, result, lat, drops in results:
            end = time.perf_counter()
            began_ns = int((end - result.times.total) * 1e9)
            # Frames handed over after this one, before its processing began: what waited behind it.
            newer = int(np.searchsorted(np.asarray(src.handover_ns[result.index + 1:], np.int64), began_ns,
                                        side='right'))
            raw['t_s'].append(end - src.started)
            raw['latency'].append(lat)
            raw['processing'].append(result.times.total)
            raw['queue'].append(newer)
            raw['index'].append(result.index)
            if drops is not None:
                dropped = drops
    if stats is not None:
        dropped = stats.dropped
    raw.update(policy=policy, asked_rate=float(rate), achieved_rate=src.achieved_rate(),
               duration_s=float(duration_s), produced=src.produced, processed=len(raw['latency']),
               dropped=int(dropped), source_late=list(src.late_s),
               wall_s=max(raw['t_s'][-1] if raw['t_s'] else 0.0,
                          (src.finished or time.perf_counter()) - src.started))
    return raw


def summarize_phase(parts):
    """Figures of one or more :func:`run_live` results of the same policy and rate (interleaved rounds)."""
    cat = {k: [v for p in parts for v in p[k]] for k in ('latency', 'processing', 'queue', 'source_late')}
    t, offset = [], 0.0
    for p in parts:                      # rounds one after the other on the plot's time axis
        t.extend(offset + v for v in p['t_s'])
        offset += max([p['duration_s']] + p['t_s'][-1:])
    lat = np.asarray(cat['latency'])
    proc = np.asarray(cat['processing'])
    wait = lat - proc                    # time between hand-over and the start of processing
    produced = sum(p['produced'] for p in parts)
    processed = sum(p['processed'] for p in parts)
    dropped = sum(p['dropped'] for p in parts)
    wall = sum(p['wall_s'] for p in parts)
    return {
        'policy': parts[0]['policy'], 'asked_rate': float(np.mean([p['asked_rate'] for p in parts])),
        'achieved_rate': float(np.mean([p['achieved_rate'] for p in parts if p['achieved_rate']])),
        'rounds': len(parts), 'duration_s': sum(p['duration_s'] for p in parts),
        'produced': produced, 'processed': processed, 'dropped': dropped,
        'unaccounted': produced - processed - dropped,
        'processed_fps': processed / wall if wall > 0 else None,
        'queue_length_max': int(max(cat['queue'])) if cat['queue'] else 0,
        'latency_p50_ms': _ms(lat, 50), 'latency_p99_ms': _ms(lat, 99),
        'latency_max_ms': float(lat.max() * 1e3) if processed else float('nan'),
        'processing_p50_ms': _ms(proc, 50), 'processing_p99_ms': _ms(proc, 99),
        'wait_p50_ms': _ms(wait, 50), 'wait_p99_ms': _ms(wait, 99),
        'source_late_p99_ms': _ms(cat['source_late'], 99),
        'in_order': all(all(a < b for a, b in zip(p['index'], p['index'][1:])) for p in parts),
        'series': {'t_s': t, 'latency_ms': (lat * 1e3).tolist(), 'queue_length': cat['queue']},
    }


@dataclass
class OverloadConfig:
    """Options of :func:`run_overload` (see the module docstring)."""
    factor: float = 3.0
    unloaded_factor: float = 0.5
    duration_s: float = 20.0        # per load and policy, split over the rounds
    rounds: int = 5                 # unloaded and overloaded slices alternate, so both see the same machine
    calibrate_s: float = 5.0
    policies: tuple = ('stream', 'node')
    annotate: bool = True
    pool: int = 32                  # distinct frames of the sample clip the source cycles through

    def __post_init__(self):
        for name in ('factor', 'unloaded_factor', 'duration_s', 'calibrate_s'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (np.isfinite(v) and v > 0):
                raise ConfigError('overload %s must be a positive number, got %r' % (name, v))
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ConfigError('overload rounds must be a positive integer, got %r' % (self.rounds,))
        self.policies = tuple(self.policies)
        bad = [p for p in self.policies if p not in POLICIES]
        if bad or not self.policies:
            raise ConfigError('overload policies must be some of %s, got %r' % (', '.join(POLICIES),
                                                                                self.policies))


def sample_frames(n):
    """The first ``n`` frames of the shipped sample clip (BGR)."""
    from .cli_run import SAMPLE_VIDEO
    with open_source(SAMPLE_VIDEO, max_frames=n) as src:
        return [f.image for f in src]


def run_overload(pipe, config=None, log=None):
    """For each policy, ``rounds`` rounds of: the sustainable rate now (``calibrate_s / rounds`` seconds
    back to back), an unloaded slice and an overloaded slice at multiples of it.  Alternating short slices
    and measuring the rate in each round keeps a shared machine's changing load out of the comparison.
    Returns the JSON-ready report."""
    cfg = config if config is not None else OverloadConfig()
    log = log or (lambda msg: None)
    images = sample_frames(cfg.pool)
    pipe.warmup()
    report = {'config': asdict(cfg), 'pipeline': _describe_pipeline(pipe), 'load_average_start': _load_average(),
              'policies': {}}
    loads = (('unloaded', cfg.unloaded_factor), ('overload', cfg.factor))
    all_rates, all_times = [], []
    for policy in cfg.policies:
        parts = {name: [] for name, _ in loads}
        rates = []
        for _ in range(cfg.rounds):
            rate, times = measure_sustainable_rate(pipe, images, cfg.calibrate_s / cfg.rounds, cfg.annotate)
            rates.append(rate)
            all_times.extend(times)
            for name, factor in loads:
                parts[name].append(run_live(pipe, images, rate * factor, cfg.duration_s / cfg.rounds, policy,
                                            cfg.annotate))
        all_rates.extend(rates)
        phases = {'sustainable_fps': rates}
        log('%-6s sustainable rate per round: %s FPS' % (policy, ', '.join('%.1f' % r for r in rates)))
        for name, factor in loads:
            phase = phases[name] = summarize_phase(parts[name])
            phase['factor'] = factor
            log('%-6s %-8s %.1fx: source %.1f FPS, processed %d (%.1f FPS), dropped %d, queue max %d, '
                'latency p50 %.1f ms p99 %.1f ms (processing p99 %.1f ms, wait p99 %.1f ms)'
                % (policy, name, factor, phase['achieved_rate'], phase['processed'], phase['processed_fps'] or 0,
                   phase['dropped'], phase['queue_length_max'], phase['latency_p50_ms'], phase['latency_p99_ms'],
                   phase['processing_p99_ms'], phase['wait_p99_ms']))
        ratio = phases['overload']['latency_p99_ms'] / phases['unloaded']['latency_p99_ms']
        phases['p99_ratio'] = ratio
        phases['p99_ratio_target'] = 2.0
        phases['p99_ratio_ok'] = bool(ratio <= 2.0)
        report['policies'][policy] = phases
    report['sustainable_fps'] = float(np.median(all_rates))
    report['calibration_p50_ms'] = _ms(all_times, 50)
    report['calibration_p99_ms'] = _ms(all_times, 99)
    report['load_average_end'] = _load_average()
    return report


# ---------------------------------------------------------------------------------------------- plots


def _figure(rows, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, height * rows))
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(rows, 1, k + 1) for k in range(rows)]


def plot_soak(report, path):
    """RSS and the p50/p99 latency of each block against the frame count, as a PNG."""
    s = report['samples']
    x = [v['frames'] for v in s]
    fig, (a, b) = _figure(2, 3.2)
    a.plot(x, [v['rss_mb'] for v in s], color='tab:blue')
    a.set_ylabel('RSS (MB)')
    a.set_title('soak: %d frames, RSS %+.2f %% after the warm-up, %.1f FPS'
                % (report['frames'], report.get('rss_growth_pct', float('nan')), report['fps'] or 0))
    b.plot(x, [v['p50_ms'] for v in s], label='p50', color='tab:green')
    b.plot(x, [v['p99_ms'] for v in s], label='p99', color='tab:red')
    b.set_ylabel('latency per block (ms)')
    b.set_xlabel('frames')
    b.legend(loc='upper right')
    for ax in (a, b):
        ax.axvline(report['warmup_frames'], color='grey', linestyle=':', linewidth=1)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)


def plot_overload(report, path):
    """End-to-end latency of every frame against time, unloaded and overloaded, one panel per policy."""
    policies = report['policies']
    fig, axes = _figure(len(policies), 3.0)
    for ax, (policy, phases) in zip(axes, policies.items()):
        for name, color in (('unloaded', 'tab:green'), ('overload', 'tab:red')):
            ph = phases[name]
            ax.plot(ph['series']['t_s'], ph['series']['latency_ms'], '.', markersize=2, color=color,
                    label='%s %.1fx: p99 %.1f ms, dropped %d' % (name, ph['factor'], ph['latency_p99_ms'],
                                                                ph['dropped']))
            ax.axhline(ph['latency_p99_ms'], color=color, linestyle=':', linewidth=1)
        ax.set_title('%s: p99 overload / unloaded = %.2f' % (policy, phases['p99_ratio']))
        ax.set_ylabel('latency (ms)')
        ax.legend(loc='upper right', fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel('time in the phase (s), rounds end to end')
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)


# ------------------------------------------------------------------------------------------- command


def _plot(fn, report, path, log):
    """``fn(report, path)``, or a note when matplotlib is not installed (the JSON has every figure)."""
    try:
        fn(report, path)
    except ImportError:
        log('matplotlib is not installed, so there is no %s (pip install "qvision_ros[report]")' % path.name)


def _write_json(path, report):
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(report, f, indent=1)


def _soak_lines(r):
    lines = ['soak: %d frames in %.0f s (%.1f FPS): processed %d, errors %d (expected %d malformed), '
             'unclassified %d, good frames refused %d, dropped 0'
             % (r['frames'], r['wall_s'], r['fps'] or 0, r['processed'], r['errors'], r['expected_malformed'],
                r['unclassified'], r['good_frames_refused'])]
    if 'rss_growth_pct' in r:
        lines.append('RSS after the warm-up (%d frames) %.1f MB, at the end %.1f MB (%+.3f %%), max %.1f MB; '
                     'highest of the first and last %d samples %.1f -> %.1f MB: growth %+.3f %% (target < 1 %%: '
                     '%s)' % (r['warmup_frames'], r['rss_warm_mb'], r['rss_end_mb'], r['rss_growth_point_pct'],
                              r['rss_max_mb'], r['rss_window_samples'], r['rss_first_window_max_mb'],
                              r['rss_last_window_max_mb'], r['rss_growth_pct'],
                              'met' if r['rss_growth_ok'] else 'MISSED'))
    if 'p50_drift_pct' in r:
        lines.append('latency per block: p50 %.2f -> %.2f ms (%+.1f %%), p99 %.2f -> %.2f ms (%+.1f %%), first '
                     'and last tenth after the warm-up' % (r['p50_first_ms'], r['p50_last_ms'], r['p50_drift_pct'],
                                                          r['p99_first_ms'], r['p99_last_ms'],
                                                          r['p99_drift_pct']))
    for ex in r['unclassified_examples'] + r['good_frames_refused_examples']:
        lines.append('  ' + ex)
    return lines


def add_arguments(p):
    from .cli_run import positive_float, positive_int
    p.add_argument('benchmark', nargs='?', choices=('soak', 'overload', 'all'), default='all',
                   help='which benchmark to run (default: both)')
    p.add_argument('--model', '-m', default=None,
                   help='ONNX detector (default: the shipped detector, int8 when present)')
    p.add_argument('--threads', type=positive_int, default=2, help='inference threads (default 2)')
    p.add_argument('--out', '-o', default=None,
                   help='output folder (default: a new qvision_soak_<date>_<time> in the current directory)')
    p.add_argument('--no-annotate', action='store_true', help='do not draw the detections on each frame')
    p.add_argument('--no-plot', action='store_true', help='write the JSON files only')
    p.add_argument('--quiet', '-q', action='store_true', help='no progress display')
    s = p.add_argument_group('soak')
    s.add_argument('--frames', type=positive_int, default=100_000, help='frames of the soak (default 100000)')
    s.add_argument('--block', type=positive_int, default=1000, help='frames per sample (default 1000)')
    s.add_argument('--warmup', type=int, default=None,
                   help='frames before the RSS baseline (default: 5 %%, at least two cycles of the variants)')
    s.add_argument('--source', choices=('video', 'synthetic'), default='video',
                   help='base frames: the sample clip looped, or synthetic scenes (default video)')
    s.add_argument('--malformed-every', type=int, default=997, help='one malformed frame in N (0: none)')
    s.add_argument('--vary-every', type=positive_int, default=250,
                   help='a run of frames in another size and encoding every N frames (default 250)')
    s.add_argument('--vary-len', type=int, default=10, help='length of that run (default 10; 0: none)')
    o = p.add_argument_group('overload')
    o.add_argument('--factor', type=positive_float, default=3.0,
                   help='source rate in multiples of the sustainable rate (default 3)')
    o.add_argument('--unloaded-factor', type=positive_float, default=0.5,
                   help='rate of the unloaded reference phase (default 0.5)')
    o.add_argument('--duration', type=positive_float, default=20.0, help='seconds per phase (default 20)')
    o.add_argument('--rounds', type=positive_int, default=5,
                   help='unloaded and overloaded slices alternate this many times (default 5)')
    o.add_argument('--calibrate', type=positive_float, default=5.0,
                   help='seconds to measure the sustainable rate (default 5)')
    o.add_argument('--policy', default='stream,node',
                   help='comma-separated policies: stream, node, fifo (default stream,node)')


def run(args):
    """Run the chosen benchmarks; exit status 1 when a frame was not accounted for or an error escaped
    classification (the targets are reported, not enforced)."""
    from .cli import Progress
    from .cli_run import default_model, new_output_dir
    from .pipeline import Pipeline, PipelineConfig

    def log(msg):
        if not args.quiet:
            print('qvision soak: ' + msg, file=sys.stderr, flush=True)

    soak_cfg = SoakConfig(frames=args.frames, block=args.block, warmup=args.warmup, source=args.source,
                          malformed_every=args.malformed_every, vary_every=args.vary_every,
                          vary_len=args.vary_len, annotate=not args.no_annotate)
    over_cfg = OverloadConfig(factor=args.factor, unloaded_factor=args.unloaded_factor,
                              duration_s=args.duration, rounds=args.rounds, calibrate_s=args.calibrate,
                              policies=[p.strip() for p in args.policy.split(',') if p.strip()],
                              annotate=not args.no_annotate)
    model = Path(args.model) if args.model else default_model()
    out = new_output_dir(args.out, prefix='qvision_soak')
    pipe = Pipeline(model, PipelineConfig(num_threads=args.threads))
    log('%r; load average %s; writing to %s' % (pipe, _load_average(), out))
    command = getattr(args, 'command_line', None) or ' '.join(['qvision'] + sys.argv[1:])
    status = 0
    if args.benchmark in ('soak', 'all'):
        progress = Progress('soak', soak_cfg.frames, enabled=not args.quiet)
        try:
            report = run_soak(pipe, soak_cfg, progress)
        finally:
            progress.close()
        report['command'] = command
        _write_json(out / SOAK_JSON, report)
        if not args.no_plot:
            _plot(plot_soak, report, out / SOAK_PNG, log)
        print('\n'.join(_soak_lines(report)))
        status = status or (0 if report['accounting_ok'] else 1)
    if args.benchmark in ('overload', 'all'):
        report = run_overload(pipe, over_cfg, log)
        report['command'] = command
        _write_json(out / OVERLOAD_JSON, report)
        if not args.no_plot:
            _plot(plot_overload, report, out / OVERLOAD_PNG, log)
        print('overload: sustainable %.1f FPS; source at %.1fx' % (report['sustainable_fps'], over_cfg.factor))
        for policy, ph in report['policies'].items():
            u, o = ph['unloaded'], ph['overload']
            print('  %-6s processed %d of %d (dropped %d, unaccounted %d), queue max %d; latency p99 %.1f ms '
                  'vs %.1f ms unloaded: %.2fx (target <= 2x: %s)'
                  % (policy, o['processed'], o['produced'], o['dropped'], o['unaccounted'],
                     o['queue_length_max'], o['latency_p99_ms'], u['latency_p99_ms'], ph['p99_ratio'],
                     'met' if ph['p99_ratio_ok'] else 'MISSED'))
            if o['unaccounted'] or u['unaccounted']:
                status = 1
    print('results in %s' % out)
    return status


def main(argv=None):
    """``python -m qvision_ros.soak``: see the module docstring."""
    parser = argparse.ArgumentParser(prog='python -m qvision_ros.soak',
                                     description=__doc__.strip().split('\n')[0])
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = ' '.join(['python -m qvision_ros.soak'] + argv)
    try:
        return run(args)
    except QVisionError as exc:
        print('qvision soak: error: %s' % exc, file=sys.stderr)
        return 2


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
