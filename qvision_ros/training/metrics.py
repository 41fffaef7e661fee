"""VOC-style mean average precision in NumPy (the quick check of training; ``qvision eval`` uses
pycocotools).

For each class, detections of every image are sorted by descending score; each one is a true positive
when its best-overlapping ground-truth box of that class in its image (IoU >= threshold) is not yet taken,
else a false positive - except that a detection whose best match is an *ignored* ground truth (e.g. a
hidden object flagged in the video) counts as neither.  AP is the area under the precision envelope
(precision made non-increasing from the right) over recall, integrated at every recall step (VOC 2010+
"all points").  mAP is the mean over the classes that have ground truth.
"""
import numpy as np


def box_iou_matrix(a, b):
    """IoU of boxes a [N, 4] x b [M, 4] (x1, y1, x2, y2) -> [N, M] float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(recall, precision):
    """Area under the precision envelope; ``recall`` non-decreasing, both 1-D of the same length."""
    r = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    p = np.concatenate([[1.0], np.asarray(precision, np.float64), [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def evaluate_map(detections, ground_truth, num_classes, iou_threshold=0.5):
    """mAP of per-image detections against per-image ground truth.

    ``detections``: one entry per image with ``boxes`` [K, 4], ``scores`` [K], ``class_ids`` [K] (e.g.
    :class:`qvision_ros.vision.Detections`).  ``ground_truth``: one ``(boxes [G, 4], labels [G])`` or
    ``(boxes, labels, ignore [G] bool)`` per image.  Returns a dict: ``map`` (float, NaN when no class has
    ground truth), ``ap`` (per class, NaN for classes without ground truth), ``num_gt`` per class,
    ``recall`` per class at the lowest score (NaN without ground truth).
    """
    if len(detections) != len(ground_truth):
        raise ValueError('need one detection entry per image: %d detections, %d ground truths'
                         % (len(detections), len(ground_truth)))
    ap = np.full(num_classes, np.nan)
    rec = np.full(num_classes, np.nan)
    num_gt = np.zeros(num_classes, np.int64)
    gts = []
    for g in ground_truth:
        boxes = np.asarray(g[0], np.float64).reshape(-1, 4)
        labels = np.asarray(g[1], np.int64).reshape(-1)
        ignore = np.asarray(g[2], bool).reshape(-1) if len(g) > 2 else np.zeros(len(labels), bool)
        gts.append((boxes, labels, ignore))
        for c in range(num_classes):
            num_gt[c] += int(np.sum((labels == c) & ~ignore))
    for c in range(num_classes):
        if num_gt[c] == 0:
            continue
        scores, image_ids, boxes = [], [], []
        for i, d in enumerate(detections):
            sel = np.asarray(d.class_ids) == c
            if sel.any():
                scores.append(np.asarray(d.scores, np.float64)[sel])
                boxes.append(np.asarray(d.boxes, np.float64).reshape(-1, 4)[sel])
                image_ids.append(np.full(int(sel.sum()), i))
        if not scores:
            ap[c], rec[c] = 0.0, 0.0
            continue
        scores, image_ids, boxes = np.concatenate(scores), np.concatenate(image_ids), np.concatenate(boxes)
        order = np.argsort(-scores, kind='stable')
        taken = {}
        tp, fp = [], []
        for k in order:
            g_boxes, g_labels, g_ignore = gts[image_ids[k]]
            idx = np.flatnonzero(g_labels == c)
            outcome = 'fp'
            if len(idx):
                ious = box_iou_matrix(boxes[k:k + 1], g_boxes[idx])[0]
                j = int(np.argmax(ious))
                if ious[j] >= iou_threshold:
                    if g_ignore[idx[j]]:
                        outcome = 'skip'
                    elif not taken.get((image_ids[k], idx[j])):
                        taken[(image_ids[k], idx[j])] = True
                        outcome = 'tp'
            if outcome != 'skip':
                tp.append(outcome == 'tp')
                fp.append(outcome == 'fp')
        tp_cum = np.cumsum(tp)
        fp_cum = np.cumsum(fp)
        recall = tp_cum / num_gt[c]
        precision = tp_cum / np.maximum(tp_cum + fp_cum, 1)
        ap[c] = average_precision(recall, precision) if len(tp) else 0.0
        rec[c] = float(recall[-1]) if len(tp) else 0.0
    valid = ~np.isnan(ap)
    return {'map': float(np.mean(ap[valid])) if valid.any() else float('nan'), 'ap': ap.tolist(),
            'num_gt': num_gt.tolist(), 'recall': rec.tolist()}
