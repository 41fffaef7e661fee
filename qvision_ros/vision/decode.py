"""Model outputs -> detections or class scores (paper 1's post-processing layer).

Output formats (``N`` = batch, ``A`` = candidates, ``nc`` = classes):

* ``'yolov5'`` - ``[N, A, 5 + nc]``: ``cx, cy, w, h, objectness, class scores...`` (anchor-based heads as
  exported by YOLOv5/v7); score of a box = ``objectness * best class score``.
* ``'yolov8'`` - ``[N, 4 + nc, A]``: ``cx, cy, w, h, class scores...`` (anchor-free heads: YOLOv8, 11...);
  score = best class score.  The transposed ``[N, A, 4 + nc]`` is read with ``transposed=True``.
* ``'classifier'`` - ``[N, C]`` (or ``[N, C, 1, 1]``) logits or probabilities.

Scores are taken as the model gives them (exported detectors apply the sigmoid inside the graph).  Boxes
come out in network input pixels; :class:`Decoder` runs the whole chain

    decode -> score threshold (and candidate cap) -> class filter -> drop abnormal boxes -> NMS
    -> map to source pixels (Letterbox) -> clip to the image -> drop degenerate boxes -> scores in [0, 1]

and every output it returns keeps DESIGN.md's rules: finite boxes inside the image with positive width and
height, scores in [0, 1], at most ``max_detections`` per image.
"""
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, InputError
from .nms import batched_nms, descending_order
from .preprocess import Letterbox

KINDS = ('auto', 'yolov5', 'yolov8', 'classifier')
DEFAULT_MAX_CANDIDATES = 30000
# NumPy floating-point warnings off where raw outputs are handled: NaN, Inf and values beyond float32 are
# expected there (inf * 0, 1e30 * 1e30), are dropped explicitly, and must not warn (nor raise where
# warnings are errors).
_QUIET = dict(invalid='ignore', over='ignore', divide='ignore')


@dataclass
class Detections:
    """Detections of one image: ``boxes`` float32 [K, 4] (x1, y1, x2, y2 pixels), ``scores`` float32 [K],
    ``class_ids`` int32 [K]; sorted by descending score when they come from :class:`Decoder`."""
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int32).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.class_ids):
            raise ConfigError('Detections needs as many boxes, scores and class_ids, got %d, %d, %d'
                              % (len(self.boxes), len(self.scores), len(self.class_ids)))

    def __len__(self):
        return len(self.scores)

    def select(self, index):
        """The detections at ``index`` (a boolean mask or integer indices)."""
        return Detections(self.boxes[index], self.scores[index], self.class_ids[index])


@dataclass
class Classification:
    """Top-k classes of one image: ``class_ids`` int32 [k] and ``scores`` float32 [k], best first."""
    class_ids: np.ndarray
    scores: np.ndarray

    def __len__(self):
        return len(self.scores)


# -- format detection ----------------------------------------------------------------------------------

def _dims(shape):
    """Shape with dynamic (None, str, negative) dimensions as None."""
    out = []
    for d in shape:
        if isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0:
            out.append(int(d))
        else:
            out.append(None)
    return out


def detect_format(output_shapes, num_classes=None):
    """'yolov5', 'yolov8' or 'classifier' from the model's output shape(s); ConfigError when unsure.

    ``output_shapes``: one shape or a list of shapes (dynamic dimensions as None or a name); the first
    output decides (exporters put the detection head first).  Rules:

    * rank 2, or rank 4 with 1 x 1 spatial size -> 'classifier';
    * rank 3 ``[N, D1, D2]``: with ``num_classes`` known, ``D2 == 5 + nc`` -> 'yolov5', ``D1 == 4 + nc`` or
      ``D2 == 4 + nc`` -> 'yolov8'; without it, channels first (``D1 < D2``) -> 'yolov8' and candidates
      first (``D1 > D2``) -> 'yolov5' (the YOLOv5 export; a transposed YOLOv8 output needs num_classes
      or an explicit kind).
    """
    shapes = output_shapes
    if len(shapes) and not isinstance(shapes[0], (int, np.integer)) and shapes[0] is not None \
            and not isinstance(shapes[0], str):
        shape = shapes[0]          # a list of shapes
    else:
        shape = shapes
    dims = _dims(shape)
    if num_classes is not None:
        num_classes = _int_at_least(num_classes, 'num_classes', 1)
    if len(dims) == 2 or (len(dims) == 4 and dims[2] == 1 and dims[3] == 1):
        return 'classifier'
    if len(dims) == 3:
        _, d1, d2 = dims
        if num_classes is not None:
            if d2 == 5 + num_classes:
                return 'yolov5'
            if d1 == 4 + num_classes or d2 == 4 + num_classes:
                return 'yolov8'
            raise ConfigError('output shape %s does not fit %d classes: expected [N, A, %d] (yolov5), '
                              '[N, %d, A] or [N, A, %d] (yolov8); give kind= and the right num_classes='
                              % (list(shape), num_classes, 5 + num_classes, 4 + num_classes, 4 + num_classes))
        if d1 is not None and d2 is not None and d1 != d2:
            if d1 < d2:
                return 'yolov8' if d1 >= 5 else _unknown(shape)
            return 'yolov5' if d2 >= 6 else _unknown(shape)
    return _unknown(shape)


def _unknown(shape):
    raise ConfigError('cannot tell the output format from shape %s; expected [N, A, 5 + nc] (yolov5), '
                      '[N, 4 + nc, A] (yolov8) or [N, C] (classifier): give kind= (and num_classes=)'
                      % (list(shape),))


# -- decoders ----------------------------------------------------------------------------------------

def _int_at_least(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError('%s must be an integer >= %d, got %r' % (name, minimum, value))
    return int(value)


def _threshold(value, name):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError('%s must be a number in [0, 1], got %r' % (name, value)) from None
    if not 0.0 <= v <= 1.0:
        raise ConfigError('%s must be in [0, 1], got %r' % (name, value))
    return v


def _as_batch(output, rank, what):
    a = np.asarray(output)
    if a.dtype.kind not in 'fiu':
        raise InputError('%s output must be numeric, got dtype %s' % (what, a.dtype))
    if a.ndim == rank - 1:
        a = a[None]
    if a.ndim != rank:
        raise InputError('%s output must have %d dimensions, got shape %s' % (what, rank, a.shape))
    return a


def _xywh_to_xyxy(xywh):
    cx, cy, w, h = (xywh[:, i] for i in range(4))
    half_w = w * np.float32(0.5)
    half_h = h * np.float32(0.5)
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


def _finish(rows, scores, class_ids, score_threshold, max_candidates):
    """Keep finite scores >= threshold, at most max_candidates (the best), as network-pixel Detections."""
    keep = np.flatnonzero(np.isfinite(scores) & (scores >= score_threshold))
    if len(keep) > max_candidates:
        part = np.argpartition(-scores[keep], max_candidates - 1)[:max_candidates]
        keep = np.sort(keep[part])
    boxes = _xywh_to_xyxy(rows[keep, :4].astype(np.float32))
    return Detections(boxes, scores[keep], class_ids[keep])


def decode_yolov5(output, score_threshold=0.25, num_classes=None, max_candidates=DEFAULT_MAX_CANDIDATES):
    """``[N, A, 5 + nc]`` (or ``[A, 5 + nc]``) -> one :class:`Detections` per image, network pixels.

    Score = objectness x best class score; candidates with a score >= ``score_threshold`` (finite) are
    kept, the best ``max_candidates`` of them if more.  Extra trailing columns beyond ``5 + num_classes``
    (e.g. mask coefficients) are ignored when ``num_classes`` is given.
    """
    out = _as_batch(output, 3, 'yolov5')
    nc = out.shape[2] - 5 if num_classes is None else _int_at_least(num_classes, 'num_classes', 1)
    if nc < 1 or out.shape[2] < 5 + nc:
        raise InputError('yolov5 output needs [N, A, 5 + nc] with nc >= 1%s, got shape %s'
                         % ('' if num_classes is None else ' = %d' % nc, out.shape))
    thr = _threshold(score_threshold, 'score_threshold')
    max_candidates = _int_at_least(max_candidates, 'max_candidates', 1)
    results = []
    with np.errstate(**_QUIET):   # NaN / Inf in raw outputs are expected and filtered below
        for image in out:
            obj = image[:, 4].astype(np.float32)
            # Objectness bounds the score from above (class scores are probabilities): a cheap first filter.
            pre = np.flatnonzero(obj >= thr) if thr > 0 else np.arange(len(obj))
            rows = image[pre]
            cls = rows[:, 5:5 + nc].astype(np.float32)
            cid = _argmax_rows(cls)
            best = cls[np.arange(len(rows)), cid]
            results.append(_finish(rows, obj[pre] * best, cid, thr, max_candidates))
    return results


def decode_yolov8(output, score_threshold=0.25, num_classes=None, transposed=False,
                  max_candidates=DEFAULT_MAX_CANDIDATES):
    """``[N, 4 + nc, A]`` (or ``[N, A, 4 + nc]`` with ``transposed=True``) -> one :class:`Detections` per
    image, network pixels.  Score = best class score.  With ``num_classes`` given, extra rows after the
    class scores (mask coefficients, keypoints) are ignored.
    """
    out = _as_batch(output, 3, 'yolov8')
    if not transposed:
        out = out.transpose(0, 2, 1)   # a view: [N, A, 4 + nc]
    nc = out.shape[2] - 4 if num_classes is None else _int_at_least(num_classes, 'num_classes', 1)
    if nc < 1 or out.shape[2] < 4 + nc:
        raise InputError('yolov8 output needs %s with nc >= 1%s, got shape %s'
                         % ('[N, A, 4 + nc]' if transposed else '[N, 4 + nc, A]',
                            '' if num_classes is None else ' = %d' % nc,
                            np.asarray(output).shape))
    thr = _threshold(score_threshold, 'score_threshold')
    max_candidates = _int_at_least(max_candidates, 'max_candidates', 1)
    results = []
    with np.errstate(**_QUIET):   # NaN / Inf in raw outputs are expected and filtered below
        for image in out:
            cls = image[:, 4:4 + nc].astype(np.float32)
            cid = _argmax_rows(cls)
            best = cls[np.arange(len(cls)), cid]
            results.append(_finish(image, best, cid, thr, max_candidates))
    return results


def _argmax_rows(scores):
    """Per-row argmax as int32, NaN treated as -inf (a NaN class score never wins)."""
    if scores.shape[0] == 0:
        return np.zeros(0, np.int32)
    nan = np.isnan(scores)
    if nan.any():
        scores = np.where(nan, -np.inf, scores)
    return scores.argmax(axis=1).astype(np.int32)


def softmax(logits, axis=-1):
    """Numerically stable softmax in float64; NaN logits count as -inf, +inf logits share all the mass,
    a row with no finite or +inf entry gives zeros."""
    x = np.array(logits, dtype=np.float64)
    x[np.isnan(x)] = -np.inf
    pos = np.isposinf(x)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid='ignore', over='ignore'):
        e = np.exp(np.where(pos, 0.0, x) - m)
        e = np.where(pos.any(axis=axis, keepdims=True), pos.astype(np.float64), e)
        total = e.sum(axis=axis, keepdims=True)
        return np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)


def decode_classifier(logits, top_k=5, apply_softmax=True):
    """``[N, C]`` (or ``[C]``, ``[N, C, 1, 1]``) -> one :class:`Classification` per image.

    The ``top_k`` best classes (at most C) by descending score, ties by lower class id.  With
    ``apply_softmax`` the scores are softmax probabilities (see :func:`softmax`); without, the raw values,
    of which NaN entries are left out (so fewer than ``top_k`` may come back).
    """
    a = np.asarray(logits)
    if a.ndim == 4 and a.shape[2:] == (1, 1):
        a = a[:, :, 0, 0]
    a = _as_batch(a, 2, 'classifier')
    if a.shape[1] < 1:
        raise InputError('classifier output has no classes: shape %s' % (a.shape,))
    top_k = _int_at_least(top_k, 'top_k', 1)
    scores = softmax(a, axis=1) if apply_softmax else a.astype(np.float64)
    results = []
    for row in scores:
        order = descending_order(row)
        order = order[~np.isnan(row[order])][:top_k]
        results.append(Classification(order.astype(np.int32), row[order].astype(np.float32)))
    return results


# -- the whole chain ---------------------------------------------------------------------------------

class Decoder:
    """Decode, filter, suppress and map back: model outputs -> one result per image of the batch.

    ``kind``: 'auto' (:func:`detect_format` on the first call), 'yolov5', 'yolov8' or 'classifier'.
    ``classes``: None (or empty) for all classes, else the class ids to keep (applied after choosing each
    box's best class).
    ``transposed``: for yolov8, True for ``[N, A, 4 + nc]``; None decides from the shape (with
    num_classes known: where ``4 + nc`` is; otherwise the smaller axis holds the channels).
    ``top_k``: classes returned per image for a classifier.
    """

    def __init__(self, kind='auto', num_classes=None, score_threshold=0.25, nms_iou_threshold=0.45,
                 max_detections=300, agnostic_nms=False, classes=None, max_candidates=DEFAULT_MAX_CANDIDATES,
                 transposed=None, top_k=5):
        if not isinstance(kind, str) or kind not in KINDS:
            raise ConfigError('kind must be one of %s, got %r' % (KINDS, kind))
        self.kind = kind
        self.num_classes = None if num_classes is None else _int_at_least(num_classes, 'num_classes', 1)
        self.score_threshold = _threshold(score_threshold, 'score_threshold')
        self.nms_iou_threshold = _threshold(nms_iou_threshold, 'nms_iou_threshold')
        self.max_detections = _int_at_least(max_detections, 'max_detections', 1)
        if not isinstance(agnostic_nms, (bool, np.bool_)):
            raise ConfigError('agnostic_nms must be a bool, got %r' % (agnostic_nms,))
        self.agnostic_nms = bool(agnostic_nms)
        if classes is None or (np.ndim(classes) == 1 and len(classes) == 0):
            self.classes = None
        else:
            c = np.asarray(classes)
            if c.ndim != 1 or c.dtype.kind not in 'iu' or (c < 0).any():
                raise ConfigError('classes must be None or a list of class ids >= 0, got %r' % (classes,))
            self.classes = np.unique(c).astype(np.int32)
        self.max_candidates = _int_at_least(max_candidates, 'max_candidates', 1)
        if transposed is not None and not isinstance(transposed, (bool, np.bool_)):
            raise ConfigError('transposed must be None, True or False, got %r' % (transposed,))
        self.transposed = transposed
        self.top_k = _int_at_least(top_k, 'top_k', 1)
        self._resolved = None if kind == 'auto' else kind

    def resolve_kind(self, output_shapes):
        """The format this decoder uses for outputs of these shapes (fixed after the first call)."""
        if self._resolved is None:
            self._resolved = detect_format(output_shapes, self.num_classes)
        return self._resolved

    def __call__(self, outputs, letterbox=None):
        """Outputs (one array or the model's list of outputs; the first is decoded) -> list, one per image:
        :class:`Detections` for detectors, :class:`Classification` for a classifier.

        ``letterbox``: None (boxes stay in network pixels, not clipped), one :class:`Letterbox` for every
        image, or a sequence with one per image (several cameras in one batch).
        """
        output = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        output = np.asarray(output)
        kind = self.resolve_kind([output.shape])
        if kind == 'classifier':
            return decode_classifier(output, self.top_k)
        if kind == 'yolov5':
            raw = decode_yolov5(output, self.score_threshold, self.num_classes, self.max_candidates)
        else:
            transposed = self.transposed
            if transposed is None:
                transposed = self._guess_transposed(output.shape)
            raw = decode_yolov8(output, self.score_threshold, self.num_classes, transposed, self.max_candidates)
        if letterbox is None or isinstance(letterbox, Letterbox):
            boxes = [letterbox] * len(raw)
        else:
            boxes = list(letterbox)
            if len(boxes) != len(raw) or not all(lb is None or isinstance(lb, Letterbox) for lb in boxes):
                raise ConfigError('letterbox must be None, a Letterbox or one Letterbox per image (%d), got %r'
                                  % (len(raw), letterbox))
        return [self.postprocess(det, lb) for det, lb in zip(raw, boxes)]

    def _guess_transposed(self, shape):
        """True when a yolov8 output is [N, A, 4 + nc]: where 4 + num_classes is, else the smaller axis
        that can hold channels (at least 5)."""
        if len(shape) < 2:
            return False                   # decode_yolov8 refuses the rank
        dims = shape[-2:]
        if self.num_classes is not None:
            if dims[0] == 4 + self.num_classes:
                return False
            if dims[1] == 4 + self.num_classes:
                return True
        fits = [axis for axis in (0, 1) if dims[axis] >= 5]
        if len(fits) == 1:
            return fits[0] == 1
        return dims[0] > dims[1]

    def postprocess(self, det, letterbox=None):
        """Network-pixel candidates -> final detections (class filter, sanity, NMS, map, clip)."""
        with np.errstate(**_QUIET):
            return self._postprocess(det, letterbox)

    def _postprocess(self, det, letterbox):
        if self.classes is not None and len(det):
            det = det.select(np.isin(det.class_ids, self.classes))
        boxes = det.boxes
        # Abnormal values out before NMS, so that they cannot take a slot or suppress anything.
        ok = np.isfinite(boxes).all(axis=1) & np.isfinite(det.scores)
        ok &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if letterbox is not None:
            x0, y0, x1, y1 = letterbox.content   # boxes entirely in the padding can never become valid
            ok &= (boxes[:, 2] > x0) & (boxes[:, 0] < x1) & (boxes[:, 3] > y0) & (boxes[:, 1] < y1)
        if not ok.all():
            det = det.select(ok)
        keep = batched_nms(det.boxes, det.scores, det.class_ids, self.nms_iou_threshold, self.max_detections,
                           agnostic=self.agnostic_nms)
        det = det.select(keep)
        boxes = det.boxes
        if letterbox is not None:
            boxes = letterbox.to_source(boxes.astype(np.float64))
            np.clip(boxes[:, 0::2], 0.0, letterbox.src_w, out=boxes[:, 0::2])
            np.clip(boxes[:, 1::2], 0.0, letterbox.src_h, out=boxes[:, 1::2])
            boxes = boxes.astype(np.float32)
        valid = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        scores = np.clip(det.scores, 0.0, 1.0)
        return Detections(boxes[valid], scores[valid], det.class_ids[valid])

    def __repr__(self):
        return ('Decoder(kind=%r, num_classes=%r, score_threshold=%r, nms_iou_threshold=%r, max_detections=%r, '
                'agnostic_nms=%r, classes=%r)' % (self.kind, self.num_classes, self.score_threshold,
                                                  self.nms_iou_threshold, self.max_detections, self.agnostic_nms,
                                                  None if self.classes is None else self.classes.tolist()))


__all__ = ['Detections', 'Classification', 'Decoder', 'decode_yolov5', 'decode_yolov8', 'decode_classifier',
           'detect_format', 'softmax', 'KINDS']
