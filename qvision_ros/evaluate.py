"""qvision eval: mAP@0.5 and mAP@0.5:0.95 of one or more detectors on a COCO- or VOC-format data set.

    qvision eval --data val/annotations.json --model detector_320.onnx detector_320.int8.onnx
    qvision eval --data qvision_ros/data/sample_road.json          # the shipped clip, shipped model
    qvision eval --data VOCdevkit/VOC2007 --split test --model yolo.onnx --labels voc.txt

Data:

* COCO: an annotations JSON (``images``, ``annotations`` with ``bbox`` = x, y, w, h, ``categories``).
  ``file_name`` is relative to ``--images`` (default: the JSON's folder).  A ``file_name`` of the form
  ``clip.mp4#12`` (with ``frame_index``), as :mod:`qvision_ros.synthetic` writes for its videos, is frame
  12 of that video.  ``qvision-synthetic dataset DIR`` writes such a data set.
* VOC: a folder with ``Annotations/*.xml`` and ``JPEGImages/`` (``--split`` picks the image ids of
  ``ImageSets/Main/<split>.txt``); ``difficult`` objects are ignored, as in the VOC protocol.

Classes are matched by name between the model's labels and the data set's categories (case-insensitive);
when no name matches, the i-th category (by id) is class i.  Scoring is pycocotools' COCOeval (an optional
dependency: ``pip install "qvision_ros[eval]"``), with every detection of score >= 0.001 and at most 100
per image, the usual protocol.  The table puts the models side by side like table 1 of the YOLOv3
quantization paper: size, accuracy, time per image and FPS, each against the first model.
"""
import contextlib
import io
import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import ConfigError, DataError

EVAL_SCORE_THRESHOLD = 0.001
EVAL_MAX_DETECTIONS = 100


def _import_cocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ConfigError('qvision eval needs pycocotools: pip install "qvision_ros[eval]" (or pip install '
                          'pycocotools)') from None
    return COCO, COCOeval


# -------------------------------------------------------------------------------------------- data sets


@dataclass
class Dataset:
    """A detection data set in COCO form (``coco``: images, annotations, categories) and where its images
    are: ``paths[image_id]`` = a file, or ``(video, frame_index)``."""
    coco: dict
    paths: dict
    name: str
    categories: list = field(default_factory=list)   # names in category-id order

    def __len__(self):
        return len(self.coco['images'])


def _read_json(path):
    try:
        with open(path, 'rb') as f:
            return json.loads(f.read().decode('utf-8'))
    except OSError as exc:
        raise DataError('cannot read %s: %s' % (path, exc.strerror or exc)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError('%s is not valid JSON (%s); give a COCO annotations file' % (path, exc)) from None


def load_coco(path, images=None):
    """A :class:`Dataset` from a COCO annotations file (see the module docstring for the image paths)."""
    path = Path(path)
    d = _read_json(path)
    if not isinstance(d, dict) or not all(isinstance(d.get(k), list) for k in ('images', 'annotations',
                                                                               'categories')):
        raise DataError('%s is not a COCO detection file: it needs lists "images", "annotations" and '
                        '"categories"' % path)
    root = Path(images) if images is not None else path.parent
    paths = {}
    try:
        for im in d['images']:
            name = str(im['file_name'])
            video, sep, frame = name.rpartition('#')
            if sep and video.lower().endswith(('.mp4', '.avi', '.mkv', '.mov')):
                paths[im['id']] = (root / video, int(im.get('frame_index', frame)))
            else:
                paths[im['id']] = root / name
            im.setdefault('width', 0)
            im.setdefault('height', 0)
        for i, a in enumerate(d['annotations']):
            a.setdefault('id', i + 1)
            a.setdefault('iscrowd', 0)
            if 'area' not in a:
                a['area'] = float(a['bbox'][2]) * float(a['bbox'][3])
        cats = sorted(d['categories'], key=lambda c: c['id'])
        names = [str(c['name']) for c in cats]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError('%s: malformed COCO entry (%s: %s); every image needs id and file_name, every '
                        'annotation image_id, category_id and bbox [x, y, w, h], every category id and name'
                        % (path, type(exc).__name__, exc)) from None
    return Dataset(d, paths, path.name, names)


def _voc_ids(root, split):
    if split is None:
        return sorted(p.stem for p in (root / 'Annotations').glob('*.xml'))
    f = root / 'ImageSets' / 'Main' / ('%s.txt' % split)
    try:
        return [line.split()[0] for line in f.read_text().splitlines() if line.strip()]
    except OSError:
        raise DataError('VOC split file %s not found; give an existing --split (e.g. val, test) or none '
                        'for every annotation' % f) from None


def load_voc(root, split=None, class_names=None):
    """A :class:`Dataset` from a PASCAL VOC folder (Annotations/*.xml, JPEGImages/).

    Categories are ``class_names`` when given (objects of other names are left out), else every name seen,
    sorted."""
    root = Path(root)
    if not (root / 'Annotations').is_dir():
        raise DataError('%s is not a VOC folder: it has no Annotations/ (give the folder holding '
                        'Annotations/ and JPEGImages/, e.g. VOCdevkit/VOC2007)' % root)
    records = []
    seen = set()
    for image_id, stem in enumerate(_voc_ids(root, split), start=1):
        xml_path = root / 'Annotations' / ('%s.xml' % stem)
        try:
            tree = ET.parse(str(xml_path)).getroot()
            fname = tree.findtext('filename') or (stem + '.jpg')
            size = tree.find('size')
            w = int(float(size.findtext('width'))) if size is not None else 0
            h = int(float(size.findtext('height'))) if size is not None else 0
            objs = []
            for o in tree.iter('object'):
                name = (o.findtext('name') or '').strip()
                bb = o.find('bndbox')
                x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
                difficult = (o.findtext('difficult') or '0').strip() == '1'
                objs.append((name, x1 - 1, y1 - 1, x2, y2, difficult))   # VOC pixels are 1-based, inclusive
                seen.add(name)
        except (OSError, ET.ParseError, AttributeError, TypeError, ValueError) as exc:
            raise DataError('cannot read the VOC annotation %s (%s); check the file' % (xml_path, exc)) from None
        records.append((image_id, fname, w, h, objs))
    names = list(class_names) if class_names is not None else sorted(seen)
    index = {n: i for i, n in enumerate(names)}
    coco = {'images': [], 'annotations': [], 'categories': [{'id': i + 1, 'name': n} for i, n in enumerate(names)]}
    paths = {}
    for image_id, fname, w, h, objs in records:
        coco['images'].append({'id': image_id, 'file_name': fname, 'width': w, 'height': h})
        paths[image_id] = root / 'JPEGImages' / fname
        for name, x1, y1, x2, y2, difficult in objs:
            if name not in index:
                continue
            coco['annotations'].append({'id': len(coco['annotations']) + 1, 'image_id': image_id,
                                        'category_id': index[name] + 1, 'bbox': [x1, y1, x2 - x1, y2 - y1],
                                        'area': (x2 - x1) * (y2 - y1), 'iscrowd': int(difficult)})
    return Dataset(coco, paths, root.name, names)


def load_dataset(path, images=None, split=None, class_names=None):
    """COCO JSON file or VOC folder -> :class:`Dataset`."""
    p = Path(path)
    if not p.exists():
        raise DataError('%s: no such file or folder; give a COCO annotations .json or a VOC folder' % p)
    if p.is_dir():
        return load_voc(p, split, class_names)
    return load_coco(p, images)


def iter_images(dataset, max_images=None):
    """``(image_id, BGR image)`` for the data set's images (video frames read in one pass per video)."""
    images = dataset.coco['images'][:max_images] if max_images else dataset.coco['images']
    videos = {}
    for im in images:
        ref = dataset.paths[im['id']]
        if isinstance(ref, tuple):
            videos.setdefault(ref[0], {})[ref[1]] = im['id']
    decoded = {}
    for video, wanted in videos.items():
        cap = cv2.VideoCapture(str(video))
        if not cap.isOpened():
            raise DataError('cannot open the video %s named by the annotations' % video)
        try:
            last = max(wanted)
            for index in range(last + 1):
                ok, frame = cap.read()
                if not ok:
                    raise DataError('%s ends at frame %d but the annotations use frame %d' % (video, index, last))
                if index in wanted:
                    decoded[wanted[index]] = frame
        finally:
            cap.release()
    for im in images:
        ref = dataset.paths[im['id']]
        if isinstance(ref, tuple):
            yield im['id'], decoded.pop(im['id'])
            continue
        image = cv2.imread(str(ref), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError('cannot read the image %s of the data set; check --images (the folder the '
                            'file names are relative to)' % ref)
        yield im['id'], image


# -------------------------------------------------------------------------------------------- scoring


def class_to_category(labels, dataset):
    """Model class id -> data set category id: by name (case-insensitive), else by order."""
    cats = sorted(dataset.coco['categories'], key=lambda c: c['id'])
    by_name = {str(c['name']).lower(): c['id'] for c in cats}
    if labels:
        mapping = {i: by_name[n.lower()] for i, n in enumerate(labels) if n.lower() in by_name}
        if mapping:
            return mapping
    return {i: c['id'] for i, c in enumerate(cats)}


def coco_map(coco_gt, detections):
    """mAP@0.5:0.95 and mAP@0.5 (COCOeval) of ``detections`` against the COCO dict ``coco_gt``.

    ``detections``: COCO result dicts (``image_id``, ``category_id``, ``bbox`` x y w h, ``score``).
    Returns ``{'map': ..., 'map50': ..., 'map75': ...}``; 0.0 for no detections, NaN when the data set has
    no (non-crowd) annotations.  pycocotools' console output is swallowed.
    """
    COCO, COCOeval = _import_cocotools()
    if not any(not a.get('iscrowd', 0) for a in coco_gt['annotations']):
        return {'map': float('nan'), 'map50': float('nan'), 'map75': float('nan')}
    if not detections:
        return {'map': 0.0, 'map50': 0.0, 'map75': 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {'images': coco_gt['images'], 'annotations': coco_gt['annotations'],
                      'categories': coco_gt['categories']}
        gt.createIndex()
        dt = gt.loadRes(list(detections))
        ev = COCOeval(gt, dt, 'bbox')
        ev.params.imgIds = sorted({im['id'] for im in coco_gt['images']})
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    return {'map': max(0.0, float(s[0])), 'map50': max(0.0, float(s[1])), 'map75': max(0.0, float(s[2]))}


def detections_to_coco(image_id, det, class_map):
    """:class:`~qvision_ros.vision.Detections` of one image -> COCO result dicts (unmapped classes left out)."""
    out = []
    for (x1, y1, x2, y2), s, c in zip(det.boxes.tolist(), det.scores.tolist(), det.class_ids.tolist()):
        if c in class_map:
            out.append({'image_id': image_id, 'category_id': class_map[c], 'bbox': [x1, y1, x2 - x1, y2 - y1],
                        'score': s})
    return out


@dataclass
class ModelScore:
    """One row of the eval table."""
    model: str
    precision: str
    size_bytes: int
    map50: float
    map: float
    images: int
    ms_per_image: float      # median time of the three stages per image
    fps: float               # 1 / mean time of the three stages

    def to_dict(self):
        return dict(self.__dict__)


def evaluate_pipeline(pipe, dataset, max_images=None, progress=None):
    """Run ``pipe`` on every image of ``dataset`` and score it (:class:`ModelScore`)."""
    class_map = class_to_category(pipe.model.labels, dataset)
    results = []
    times = []
    n = 0
    pipe.warmup()
    for image_id, image in iter_images(dataset, max_images):
        r = pipe.process(image)
        times.append(r.times.total)
        results.extend(detections_to_coco(image_id, r.detections, class_map))
        n += 1
        if progress is not None:
            progress.update(n)
    gt = dataset.coco
    if max_images:
        keep = {im['id'] for im in gt['images'][:max_images]}
        gt = dict(gt, images=[im for im in gt['images'] if im['id'] in keep],
                  annotations=[a for a in gt['annotations'] if a['image_id'] in keep])
    scores = coco_map(gt, results)
    t = np.asarray(times) if times else np.array([np.nan])
    m = pipe.model
    return ModelScore(str(m.path), m.precision, m.size_bytes, scores['map50'], scores['map'], n,
                      float(np.median(t)) * 1e3, float(1.0 / np.mean(t)))


def format_table(rows):
    """The FP32 vs INT8 table: every row against the first (size and time change in percent)."""
    head = '%-28s %-9s %-19s %8s %13s %16s %8s' % ('model', 'precision', 'size MB', 'mAP@0.5', 'mAP@0.5:0.95',
                                                   'ms/image', 'FPS')
    lines = [head, '-' * len(head)]
    base = rows[0] if rows else None
    for r in rows:
        size = '%.2f' % (r.size_bytes / 1e6)
        ms = '%.2f' % r.ms_per_image
        if r is not base and base.size_bytes and base.ms_per_image > 0:
            size += ' (%+.1f %%)' % (100.0 * (r.size_bytes / base.size_bytes - 1))
            ms += ' (%+.0f %%)' % (100.0 * (r.ms_per_image / base.ms_per_image - 1))
        lines.append('%-28s %-9s %-19s %8.3f %13.3f %16s %8.1f' % (os.path.basename(r.model)[:28], r.precision,
                                                                   size, r.map50, r.map, ms, r.fps))
    return lines


# ------------------------------------------------------------------------------------------- command


def add_arguments(p):
    from .cli_run import add_model_arguments, positive_int
    p.add_argument('--data', '-d', required=True,
                   help='COCO annotations .json, or a VOC folder (Annotations/, JPEGImages/)')
    p.add_argument('--images', default=None, help='folder the COCO file names are relative to '
                                                  '(default: the annotation file\'s folder)')
    p.add_argument('--split', default=None, help='VOC: ImageSets/Main/<split>.txt (default: every annotation)')
    add_model_arguments(p, several=True)
    p.add_argument('--max-images', type=positive_int, default=None, help='evaluate the first N images only')
    p.add_argument('--json', default=None, help='also write the table to this JSON file')
    p.add_argument('--quiet', '-q', action='store_true', help='no progress display')


def run(args):
    from .cli import Progress
    from .cli_run import SHIPPED_MODELS, build_pipeline

    _import_cocotools()   # fail before any work when it is missing
    models = args.model or [str(p) for p in reversed(SHIPPED_MODELS) if p.is_file()]
    labels_for_voc = None
    if args.labels:
        from .pipeline import load_labels
        labels_for_voc = load_labels(args.labels)
    dataset = load_dataset(args.data, images=args.images, split=args.split, class_names=labels_for_voc)
    total = min(len(dataset), args.max_images or len(dataset))
    rows = []
    for model in models:
        ns = _copy_args(args, model=model)
        pipe = build_pipeline(ns, EVAL_SCORE_THRESHOLD)
        progress = Progress('eval %s' % os.path.basename(model), total, enabled=not args.quiet)
        rows.append(evaluate_pipeline(pipe, dataset, args.max_images, progress))
        progress.close()
    print('%s: %d images, %d objects, %d classes; %d thread(s)'
          % (dataset.name, total, sum(1 for a in dataset.coco['annotations'] if not a.get('iscrowd')),
             len(dataset.coco['categories']), pipe.engine.num_threads))
    print('\n'.join(format_table(rows)))
    if args.json:
        try:
            with open(args.json, 'w', encoding='utf-8') as f:
                json.dump({'data': str(args.data), 'images': total, 'rows': [r.to_dict() for r in rows]}, f,
                          indent=1)
        except OSError as exc:
            raise DataError('cannot write %s: %s' % (args.json, exc.strerror or exc)) from None
    return 0


def _copy_args(args, **changes):
    import argparse
    ns = argparse.Namespace(**vars(args))
    for k, v in changes.items():
        setattr(ns, k, v)
    return ns
