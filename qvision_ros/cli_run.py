"""qvision run: detect objects in a video, image folder, camera or rosbag2 and write the results to a folder.

    qvision run road.mp4                       # the shipped detector, results in ./qvision_run_<time>/
    qvision run frames/ --model yolov8n.int8.onnx --labels coco.txt --threads 2 --out results
    qvision run 0 --realtime                   # camera 0, latest-frame policy (drops counted)
    qvision run recording/ --topic /front/image_raw --classes car,pedestrian

Written into the output folder:

* ``annotated.mp4`` - every processed frame with its detections drawn (mp4v; ``--no-video`` skips it);
* ``detections.jsonl`` - one JSON object per processed frame: ``index``, ``stamp`` (sec, nanosec),
  ``frame_id``, ``width``, ``height``, ``detections`` (``box`` x1 y1 x2 y2 in original pixels, ``score``,
  ``class_id``, ``label``);
* ``summary.json`` - model, source, options, per-stage latency (p50, p99, mean), FPS, dropped frames;
* ``detections_bag/`` - with ``--bag-out``: a rosbag2 of vision_msgs/Detection2DArray.

Progress goes to stderr; the latency table to stdout at the end.
"""
import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import cv2

from .cli import Progress
from .errors import ConfigError, DataError
from .pipeline import Pipeline, PipelineConfig, PipelineStats, stream
from .sources import open_source

DATA = Path(__file__).resolve().parent / 'data'
SAMPLE_VIDEO = DATA / 'sample_road.mp4'
SAMPLE_GROUND_TRUTH = DATA / 'sample_road.json'
SHIPPED_MODELS = (DATA / 'detector_320.int8.onnx', DATA / 'detector_320.onnx')

VIDEO_NAME = 'annotated.mp4'
JSONL_NAME = 'detections.jsonl'
SUMMARY_NAME = 'summary.json'
BAG_NAME = 'detections_bag'


def default_model():
    """The shipped int8 detector when it exists, else the shipped float one."""
    for path in SHIPPED_MODELS:
        if path.is_file():
            return path
    raise ConfigError('no shipped model found in %s (the package data is incomplete); give --model' % DATA)


# --------------------------------------------------------------------------------------- arguments


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('expected a positive integer, got %r' % text) from None
    if v < 1:
        raise argparse.ArgumentTypeError('expected a positive integer, got %r' % text)
    return v


def _number(text, ok, expected):
    try:
        v = float(text)
    except ValueError:
        v = float('nan')
    if not ok(v):
        raise argparse.ArgumentTypeError('expected %s, got %r' % (expected, text))
    return v


def unit_float(text):
    return _number(text, lambda v: 0.0 <= v <= 1.0, 'a number in [0, 1]')


def positive_float(text):
    return _number(text, lambda v: 0.0 < v < float('inf'), 'a positive number')


def image_size(text):
    """'640' or '640x480' (width x height) -> (w, h)."""
    try:
        parts = [int(p) for p in text.lower().replace(',', 'x').split('x')]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError('expected SIZE or WIDTHxHEIGHT, got %r' % text)
    return tuple(parts)


def add_model_arguments(p, several=False):
    """--model, --labels, --threads and the post-processing options (shared with eval and bench);
    ``several``: --model takes one or more files."""
    if several:
        p.add_argument('--model', '-m', nargs='+', default=None,
                       help='one or more ONNX detectors, float or QDQ int8 (default: the shipped ones)')
    else:
        p.add_argument('--model', '-m', default=None,
                       help='ONNX detector, float or QDQ int8 (default: the shipped detector, int8 when '
                            'present)')
    p.add_argument('--labels', default=None,
                   help='class names, one per line (default: the model\'s "names" metadata, else class ids)')
    p.add_argument('--threads', type=positive_int, default=None,
                   help='inference threads (default: every available core)')
    p.add_argument('--kind', choices=('auto', 'yolov8', 'yolov5'), default='auto',
                   help='output format of the model (default: from its output shape)')
    p.add_argument('--imgsz', type=image_size, default=None, metavar='SIZE',
                   help='network input size for a model with a dynamic input (e.g. 640 or 640x480)')
    p.add_argument('--iou', type=unit_float, default=0.45, help='NMS IoU threshold (default 0.45)')
    p.add_argument('--max-detections', type=positive_int, default=100,
                   help='detections kept per frame (default 100)')
    p.add_argument('--agnostic-nms', action='store_true', help='suppress overlapping boxes across classes')
    p.add_argument('--classes', default=None,
                   help='keep only these classes: ids or names, comma separated (e.g. 0,2 or car,cone)')
    p.add_argument('--resize-mode', choices=('letterbox', 'stretch'), default='letterbox',
                   help='how frames are fitted to the network input (default letterbox)')


def add_arguments(p, source=True):
    if source:
        p.add_argument('source', metavar='SOURCE',
                       help='video file, image folder or file, camera index (0, 1...), .npy array, or rosbag2 '
                            '(directory, .db3, .mcap)')
    add_model_arguments(p)
    p.add_argument('--score-threshold', type=unit_float, default=0.25,
                   help='minimum score of a detection (default 0.25)')
    p.add_argument('--out', '-o', default=None,
                   help='output folder (default: a new qvision_run_<date>_<time> in the current directory)')
    p.add_argument('--max-frames', type=positive_int, default=None, help='stop after this many frames')
    p.add_argument('--topic', default=None, help='image topic of a rosbag2 (needed when it has several)')
    p.add_argument('--no-video', action='store_true', help='do not write the annotated video')
    p.add_argument('--bag-out', action='store_true',
                   help='also write the detections as a rosbag2 of vision_msgs/Detection2DArray')
    p.add_argument('--realtime', action='store_true',
                   help='replay a file at its own frame rate with the latest-frame policy (drops counted)')
    p.add_argument('--loop', action='store_true', help='start a file again at its end (with --max-frames)')
    p.add_argument('--fps', type=positive_float, default=None,
                   help='frame rate of an image folder or array (default 30), or to override a video\'s')
    p.add_argument('--frame-id', default='camera', help='frame_id of frames without one (default camera)')
    p.add_argument('--quiet', '-q', action='store_true', help='no progress display')


# ------------------------------------------------------------------------------------------- helpers


def parse_classes(text, labels):
    """'0,2' or 'car,cone' -> sorted class ids; names are looked up in ``labels``."""
    if text is None:
        return None
    tokens = [t.strip() for t in text.replace(' ', ',').split(',') if t.strip()]
    if not tokens:
        return None
    ids = set()
    for t in tokens:
        if t.isdigit():
            ids.add(int(t))
        elif labels is not None and t in labels:
            ids.add(labels.index(t))
        else:
            known = ', '.join(labels) if labels else 'none (the model has no labels: use class ids)'
            raise ConfigError('--classes: unknown class %r; class names: %s' % (t, known))
    return sorted(ids)


def build_pipeline(args, score_threshold):
    """A :class:`Pipeline` from the shared model arguments."""
    model = Path(args.model) if args.model else default_model()
    from .pipeline import describe_model
    info = describe_model(model, labels=args.labels, kind=args.kind, input_size=args.imgsz)
    config = PipelineConfig(score_threshold=score_threshold, nms_iou_threshold=args.iou,
                            max_detections=args.max_detections, agnostic_nms=args.agnostic_nms,
                            classes=parse_classes(args.classes, info.labels), num_threads=args.threads,
                            resize_mode=args.resize_mode)
    return Pipeline(model, config, labels=args.labels, kind=args.kind, input_size=args.imgsz)


def new_output_dir(out=None, prefix='qvision_run'):
    """``out`` (created when missing), or a new ``<prefix>_<date>_<time>[_n]`` folder in the current one."""
    if out is not None:
        path = Path(out)
    else:
        stamp = datetime.datetime.now().strftime('%Y%m%d_%H%M%S')
        path = Path.cwd() / ('%s_%s' % (prefix, stamp))
        n = 2
        while path.exists():
            path = Path.cwd() / ('%s_%s_%d' % (prefix, stamp, n))
            n += 1
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError('cannot create the output folder %s: %s' % (path, exc.strerror or exc)) from None
    return path.resolve()


class VideoOut:
    """The annotated video, opened on the first frame; later frames of another size are resized to it."""

    def __init__(self, path, fps):
        self.path = Path(path)
        self.fps = float(fps)
        self._writer = None
        self._size = None
        self.frames = 0

    def write(self, image):
        h, w = image.shape[:2]
        if self._writer is None:
            self._size = (w, h)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*'mp4v'), self.fps, (w, h))
            if not self._writer.isOpened():
                self._writer = None
                raise DataError('OpenCV cannot write the video %s (no mp4v encoder in this build?); run with '
                                '--no-video to skip it' % self.path)
        if (w, h) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def close(self):
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def _bag_writer(path, frame_id, labels):
    """The rosbag2 writer of vision_msgs/Detection2DArray (qvision_ros.messages, written by the ROS layer)."""
    try:
        from .messages import DetectionBagWriter
    except ImportError:
        raise ConfigError('--bag-out needs qvision_ros.messages.DetectionBagWriter, which this installation '
                          'lacks; run without --bag-out') from None
    return DetectionBagWriter(path, labels=labels)


def _describe_source(src):
    bits = [src.kind]
    if src.fps:
        bits.append('%.1f fps' % src.fps)
    if src.count is not None:
        bits.append('%d frames' % src.count)
    return '%s (%s)' % (src.name, ', '.join(bits))


def _class_counts(counts, labels):
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ', '.join('%s %d' % (labels(c), n) for c, n in ordered) or 'none'


# ----------------------------------------------------------------------------------------------- run


def run(args):
    """qvision run: see the module docstring.  Returns the exit status."""
    src = open_source(args.source, topic=args.topic, loop=args.loop, max_frames=args.max_frames,
                      frame_id=args.frame_id, fps=args.fps)
    with src:
        pipe = build_pipeline(args, args.score_threshold)
        out = new_output_dir(args.out)
        m = pipe.model
        print('qvision: %s %s %dx%d, %d thread%s, on %s' % (
            Path(m.path).name, m.precision, m.input_width, m.input_height, pipe.engine.num_threads,
            '' if pipe.engine.num_threads == 1 else 's', _describe_source(src)), file=sys.stderr)
        print('qvision: writing to %s' % out, file=sys.stderr)
        return _process(args, src, pipe, out)


def _process(args, src, pipe, out):
    video = None if args.no_video else VideoOut(out / VIDEO_NAME, src.fps or 30.0)
    bag = _bag_writer(out / BAG_NAME, args.frame_id, pipe.model.labels) if args.bag_out else None
    progress = Progress('qvision run', src.count, enabled=not args.quiet)
    counts = {}
    status = 0
    error = None
    pipe.warmup()
    stats = PipelineStats()   # the clock starts after the warm-up
    try:
        with open(out / JSONL_NAME, 'w', encoding='utf-8') as jsonl:
            try:
                for result in stream(pipe, src, annotate=video is not None, realtime=args.realtime,
                                     stats=stats):
                    t0 = time.perf_counter()
                    jsonl.write(json.dumps(result.to_dict(pipe.model.label)) + '\n')
                    if video is not None:
                        video.write(result.annotated)
                    if bag is not None:
                        bag.write(result)
                    stats.record('output', time.perf_counter() - t0)
                    for c in result.detections.class_ids.tolist():
                        counts[c] = counts.get(c, 0) + 1
                    progress.update(stats.frames, '%d detections, dropped %d' % (len(result.detections),
                                                                                 stats.dropped))
            except KeyboardInterrupt:
                status = 0 if src.live else 130
                print('\nqvision: interrupted; finishing the outputs', file=sys.stderr)
            except DataError as exc:   # the source failed part-way: keep what was done, then report it
                error = exc
    except OSError as exc:
        raise DataError('cannot write to %s: %s' % (out, exc.strerror or exc)) from None
    finally:
        progress.close()
        if video is not None:
            video.close()
        if bag is not None:
            bag.close()
        stats.finish()
    written = [JSONL_NAME, SUMMARY_NAME]
    if video is not None and video.frames:
        written.insert(0, VIDEO_NAME)
    if bag is not None:
        written.append(BAG_NAME + '/')
    summary = {
        'model': {'path': str(Path(pipe.model.path).resolve()), 'precision': pipe.model.precision,
                  'input': [pipe.model.input_width, pipe.model.input_height], 'kind': pipe.model.kind,
                  'labels': list(pipe.model.labels or ()), 'size_bytes': pipe.model.size_bytes},
        'source': {'spec': str(args.source), 'kind': src.kind, 'fps': src.fps, 'count': src.count},
        'options': {'threads': pipe.engine.num_threads, 'score_threshold': args.score_threshold,
                    'iou': args.iou, 'max_detections': args.max_detections, 'classes': args.classes,
                    'realtime': bool(args.realtime)},
        'stats': stats.summary(),
        'detections_per_class': {pipe.model.label(c): n for c, n in sorted(counts.items())},
        'files': written,
        'error': None if error is None else str(error),
    }
    with open(out / SUMMARY_NAME, 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=1)
    print('\n'.join(stats.table()))
    print('detections: %d (%s)' % (sum(counts.values()), _class_counts(counts, pipe.model.label)))
    print('results in %s: %s' % (out, ', '.join(written)))
    if error is not None:
        raise error
    return status

