"""Drawing detections on a BGR image (the visualisation half of paper 1's third layer).

Pure: takes an array, returns an array; no windows, no console output, nothing global that changes.
"""
import colorsys
import math

import cv2
import numpy as np

from ..errors import ImageError

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GOLDEN = 0.6180339887498949


def class_color(class_id):
    """Deterministic BGR colour of a class: hues spread by the golden ratio, bright and saturated."""
    hue = (int(class_id) * _GOLDEN + 0.1) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return (int(round(b * 255)), int(round(g * 255)), int(round(r * 255)))


def _text_color(bgr):
    """Black or white, whichever reads better on ``bgr`` (BT.601 luma)."""
    b, g, r = bgr
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def label_text(class_id, score=None, labels=None):
    """``'name 0.87'``: the label of ``class_id`` from ``labels`` (sequence or mapping; the id itself when
    absent) and the score with two decimals (omitted when None)."""
    name = None
    if labels is not None:
        try:
            name = labels[int(class_id)]
        except (KeyError, IndexError, TypeError):
            name = None
    name = str(int(class_id)) if name is None else str(name)
    return name if score is None else '%s %.2f' % (name, float(score))


def _put_label(img, text, x, y, color, font_scale, thickness, below=False):
    """Text with a filled background whose bottom-left is (x, y) (top-left when ``below``); clamped inside."""
    (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, thickness)
    h, w = img.shape[:2]
    box_h = th + base + 2
    top = y if below else y - box_h
    top = min(max(top, 0), max(h - box_h, 0))
    left = min(max(x, 0), max(w - tw - 2, 0))
    cv2.rectangle(img, (left, top), (left + tw + 1, top + box_h - 1), color, thickness=cv2.FILLED)
    cv2.putText(img, text, (left + 1, top + th + 1), _FONT, font_scale, _text_color(color), thickness,
                cv2.LINE_AA)


def draw_detections(image_bgr, detections, labels=None, fps=None, copy=True, thickness=2, font_scale=0.5,
                    show_scores=True):
    """Draw boxes and ``'label score'`` tags (and the frame rate, top-left, when ``fps`` is given).

    ``detections``: anything with ``boxes`` [K, 4] (x1, y1, x2, y2 pixels), ``scores`` [K], ``class_ids``
    [K] (a :class:`~qvision_ros.vision.decode.Detections`).  ``labels``: class names (sequence or mapping).
    ``copy``: draw on a copy (default) or in place (the image must then be writable and C-contiguous).
    Boxes with non-finite coordinates or entirely outside the image are skipped.  Returns the image drawn on.
    """
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 \
            or image_bgr.shape[2] != 3:
        raise ImageError('draw_detections needs an H x W x 3 uint8 BGR image, got %s'
                         % (('%s %s' % (image_bgr.dtype, image_bgr.shape)) if isinstance(image_bgr, np.ndarray)
                            else type(image_bgr).__name__))
    if copy:
        img = np.array(image_bgr, copy=True, order='C')
    else:
        if not image_bgr.flags.writeable or not image_bgr.flags.c_contiguous:
            raise ImageError('drawing in place (copy=False) needs a writable C-contiguous image')
        img = image_bgr
    h, w = img.shape[:2]
    boxes = np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(detections.scores).reshape(-1)
    class_ids = np.asarray(detections.class_ids).reshape(-1)
    thickness = max(1, int(thickness))
    for box, score, cid in zip(boxes, scores, class_ids):
        if not np.isfinite(box).all():
            continue
        x1, y1 = int(math.floor(box[0] + 0.5)), int(math.floor(box[1] + 0.5))
        x2, y2 = int(math.floor(box[2] + 0.5)) - 1, int(math.floor(box[3] + 0.5)) - 1  # last pixel inside
        x1, x2 = max(x1, 0), min(x2, w - 1)
        y1, y2 = max(y1, 0), min(y2, h - 1)
        if x2 < x1 or y2 < y1:
            continue
        color = class_color(cid)
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thickness)
        text = label_text(cid, score if show_scores else None, labels)
        (_, th), base = cv2.getTextSize(text, _FONT, font_scale, 1)
        below = y1 - (th + base + 2) < 0   # no room above: inside the box, under its top edge
        _put_label(img, text, x1, y1, color, font_scale, 1, below=below)
    if fps is not None and np.isfinite(fps):
        _put_label(img, 'FPS %.1f' % float(fps), 0, 0, (0, 0, 0), font_scale, 1, below=True)
    return img
