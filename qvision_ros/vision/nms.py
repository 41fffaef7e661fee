"""Greedy non-maximum suppression, vectorised in NumPy, beside a literal reference for the tests.

Definition (shared by :func:`nms` and :func:`nms_reference`):

* Candidates are visited by descending score; equal scores keep their input order (stable).
* A candidate is kept unless its IoU with an already kept box is ``> iou_threshold``.
* ``IoU(a, b) = inter / (area_a + area_b - inter)`` with ``inter = max(0, min(x2) - max(x1)) *
  max(0, min(y2) - max(y1))`` and ``area = max(0, x2 - x1) * max(0, y2 - y1)``, all in float64; a zero
  union gives IoU 0 (two empty boxes never suppress each other).
* At most ``max_output`` boxes are kept (None: no limit); the result lists indices into the inputs in the
  order they were kept (descending score).
* NaN scores are visited last; a box with a NaN coordinate has NaN IoU and so neither suppresses nor is
  suppressed (callers drop such boxes first: :class:`~qvision_ros.vision.decode.Decoder` does).

:func:`nms` processes the sorted candidates in blocks: a block is first checked against every box kept so
far, then resolved inside itself, visiting only the rows that can suppress something.  Both checks test
all pairs for intersection with four vectorised comparisons and compute the exact IoU only for the pairs
that intersect.  Work is O(candidates x kept) cheap comparisons plus one Python step per candidate that
overlaps a later one, and it stops as soon as ``max_output`` boxes are kept.
"""
import numpy as np

from ..errors import ConfigError

_BLOCK = 256


def _check(boxes, scores, iou_threshold, max_output):
    b = np.asarray(boxes)
    s = np.asarray(scores)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ConfigError('boxes must have shape [K, 4] (x1, y1, x2, y2), got %s' % (b.shape,))
    if s.shape != (b.shape[0],):
        raise ConfigError('scores must have shape [%d] to match boxes, got %s' % (b.shape[0], s.shape))
    if not (b.dtype.kind in 'fiu' and s.dtype.kind in 'fiu'):
        raise ConfigError('boxes and scores must be numeric, got %s and %s' % (b.dtype, s.dtype))
    try:
        t = float(iou_threshold)
    except (TypeError, ValueError):
        raise ConfigError('iou_threshold must be a number in [0, 1], got %r' % (iou_threshold,)) from None
    if not 0.0 <= t <= 1.0:
        raise ConfigError('iou_threshold must be in [0, 1], got %r' % (iou_threshold,))
    if max_output is not None:
        if isinstance(max_output, (bool, np.bool_)) or not isinstance(max_output, (int, np.integer)) \
                or max_output < 0:
            raise ConfigError('max_output must be None or an integer >= 0, got %r' % (max_output,))
        max_output = int(max_output)
    return b.astype(np.float64, copy=False), s, t, max_output


def descending_order(scores):
    """Indices by descending score, ties in input order, NaN last (the visiting order of NMS)."""
    s = np.asarray(scores, dtype=np.float64)
    # argsort of the negated scores is stable and puts NaN (= -NaN) at the end.
    return np.argsort(-s, kind='stable')


def _iou_pairs(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2):
    """IoU of box pairs given as coordinate arrays of equal shape (float64, the definition above)."""
    # Infinite coordinates give inf - inf = NaN on the way (no warning: that is the defined outcome).
    with np.errstate(invalid='ignore', divide='ignore', over='ignore'):
        iw = np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0.0)
        ih = np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0.0)
        inter = iw * ih
        area_a = np.maximum(ax2 - ax1, 0.0) * np.maximum(ay2 - ay1, 0.0)
        area_b = np.maximum(bx2 - bx1, 0.0) * np.maximum(by2 - by1, 0.0)
        union = area_a + area_b - inter
        # NaN anywhere gives a NaN union, for which union > 0 is False: IoU 0, no suppression.
        return np.where(union > 0.0, inter / np.where(union > 0.0, union, 1.0), 0.0)


def _overlaps(a, b, thr):
    """Boolean matrix [len(a), len(b)]: IoU(a[i], b[j]) > thr, for column tuples ``(x1, y1, x2, y2)``.

    IoU > thr >= 0 needs a positive intersection, hence ``b.x1 < a.x2``, ``a.x1 < b.x2`` and the same in y
    (exact float comparisons, cheap); only the pairs passing that test get the exact IoU.
    """
    ax1, ay1, ax2, ay2 = (c[:, None] for c in a)
    bx1, by1, bx2, by2 = (c[None, :] for c in b)
    cand = bx1 < ax2
    cand &= ax1 < bx2
    cand &= by1 < ay2
    cand &= ay1 < by2
    i, j = np.nonzero(cand)
    if len(i):
        cand[i, j] = _iou_pairs(a[0][i], a[1][i], a[2][i], a[3][i], b[0][j], b[1][j], b[2][j], b[3][j]) > thr
    return cand


def nms(boxes, scores, iou_threshold, max_output=None):
    """Greedy NMS: indices (intp) of the kept boxes, by descending score (definition in the module doc).

    ``boxes`` [K, 4] as x1, y1, x2, y2; ``scores`` [K].
    """
    b, s, thr, max_output = _check(boxes, scores, iou_threshold, max_output)
    n = b.shape[0]
    limit = n if max_output is None else min(max_output, n)
    if limit == 0:
        return np.zeros(0, np.intp)
    order = descending_order(s)
    cols = tuple(np.ascontiguousarray(b[order, k]) for k in range(4))
    kept = np.empty(limit, np.intp)                        # positions in the sorted order
    kept_cols = tuple(np.empty(limit, np.float64) for _ in range(4))
    nk = 0
    for start in range(0, n, _BLOCK):
        blk = tuple(c[start:start + _BLOCK] for c in cols)
        if nk:
            alive = ~_overlaps(blk, tuple(c[:nk] for c in kept_cols), thr).any(axis=1)
        else:
            alive = np.ones(len(blk[0]), bool)
        if not alive.any():
            continue
        over = np.triu(_overlaps(blk, blk, thr), k=1)      # over[i, j]: i (higher score) suppresses j
        for i in np.flatnonzero(over.any(axis=1)):
            if alive[i]:
                alive &= ~over[i]
        idx = np.flatnonzero(alive)[:limit - nk]
        kept[nk:nk + len(idx)] = idx + start
        for kc, bc in zip(kept_cols, blk):
            kc[nk:nk + len(idx)] = bc[idx]
        nk += len(idx)
        if nk >= limit:
            break
    return order[kept[:nk]]


def batched_nms(boxes, scores, class_ids, iou_threshold, max_output=None, agnostic=False):
    """Class-aware NMS: boxes only suppress boxes of the same class (all boxes when ``agnostic``).

    Runs :func:`nms` once per class present and merges the kept boxes by descending score (ties in input
    order), then keeps the first ``max_output``: the same result as one greedy pass over all boxes in which
    boxes of different classes never overlap.  Returns indices (intp) into the inputs.
    """
    b, s, thr, max_output = _check(boxes, scores, iou_threshold, max_output)
    c = np.asarray(class_ids)
    if c.shape != s.shape or c.dtype.kind not in 'iu':
        raise ConfigError('class_ids must be integers of shape %s, got %s %s' % (s.shape, c.dtype, c.shape))
    if agnostic or b.shape[0] == 0:
        return nms(b, s, thr, max_output)
    classes, inverse = np.unique(c, return_inverse=True)
    if len(classes) == 1:
        return nms(b, s, thr, max_output)
    inverse = inverse.reshape(-1)
    by_class = np.argsort(inverse, kind='stable')
    bounds = np.searchsorted(inverse[by_class], np.arange(len(classes) + 1))
    pieces = []
    for k in range(len(classes)):
        members = by_class[bounds[k]:bounds[k + 1]]          # ascending input index
        pieces.append(members[nms(b[members], s[members], thr, max_output)])
    kept = np.concatenate(pieces)
    kept.sort()                                               # input order, so that ties stay stable
    kept = kept[descending_order(s[kept])]
    return kept if max_output is None else kept[:max_output]


def iou_reference(a, b):
    """IoU of two boxes with Python floats, written out (exists for testing)."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw = max(min(ax2, bx2) - max(ax1, bx1), 0.0)
    ih = max(min(ay2, by2) - max(ay1, by1), 0.0)
    inter = iw * ih
    area_a = max(ax2 - ax1, 0.0) * max(ay2 - ay1, 0.0)
    area_b = max(bx2 - bx1, 0.0) * max(by2 - by1, 0.0)
    union = area_a + area_b - inter
    return inter / union if union > 0.0 else 0.0


def nms_reference(boxes, scores, iou_threshold, max_output=None, class_ids=None):
    """The obvious greedy NMS loop (exists for testing :func:`nms` and :func:`batched_nms`).

    Visit boxes by descending score (ties: lower index first); keep a box unless a kept box of the same
    class (any class when ``class_ids`` is None) overlaps it with IoU > threshold; stop at max_output.
    """
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    keep = []
    for i in order:
        if max_output is not None and len(keep) >= max_output:
            break
        suppressed = False
        for k in keep:
            if class_ids is not None and class_ids[k] != class_ids[i]:
                continue
            if iou_reference(boxes[i], boxes[k]) > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            keep.append(i)
    return np.array(keep, dtype=np.intp)
