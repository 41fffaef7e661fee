"""Drawing detections (qvision_ros.vision.draw)."""
import numpy as np
import pytest

from qvision_ros.errors import ImageError
from qvision_ros.vision.decode import Detections
from qvision_ros.vision.draw import class_color, draw_detections, label_text

GRAY = 90


def _image(h=240, w=320):
    return np.full((h, w, 3), GRAY, np.uint8)


def _changed(a, b):
    return (a != b).any(axis=2)


def test_pixels_change_on_the_box_and_nowhere_far_from_it():
    img = _image()
    det = Detections([[100, 120, 200, 200]], [0.87], [5])
    out = draw_detections(img, det, labels=['a', 'b', 'c', 'd', 'e', 'person'])
    assert out is not img and (img == GRAY).all()                  # copy by default: input untouched
    changed = _changed(out, img)
    # The four edges carry the class colour.
    colour = list(class_color(5))
    for y, x in ((120, 150), (199, 150), (160, 100), (160, 199)):
        assert out[y, x].tolist() == colour, (y, x)
    # The interior below the label and everything far from the box and its label stay as they were.
    assert not changed[140:190, 110:190].any()
    far = np.ones_like(changed)
    far[90:215, 85:215] = False            # box plus a margin, label tag above the top edge included
    assert not changed[far].any()
    # The label tag sits above the box, on a filled background of the class colour.
    assert changed[100:119, 100:140].mean() > 0.9


def test_label_moves_inside_when_the_box_touches_the_top():
    img = _image()
    out = draw_detections(img, Detections([[10, 0, 120, 80]], [0.5], [1]))
    changed = _changed(out, img)
    assert changed[3:12, 15:40].mean() > 0.9          # tag drawn under the top edge
    assert not changed[100:].any()


def test_empty_detections_leave_the_image_unchanged():
    img = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    out = draw_detections(img, Detections())
    assert out is not img
    np.testing.assert_array_equal(out, img)
    same = draw_detections(img, Detections(), copy=False)
    assert same is img


def test_in_place_drawing():
    img = _image()
    ref = img.copy()
    out = draw_detections(img, Detections([[10, 10, 50, 50]], [0.5], [0]), copy=False)
    assert out is img and _changed(img, ref).any()
    ro = _image()
    ro.setflags(write=False)
    with pytest.raises(ImageError, match='writable'):
        draw_detections(ro, Detections(), copy=False)


def test_fps_is_drawn_in_the_top_left_corner_only():
    img = _image()
    out = draw_detections(img, Detections(), fps=29.97)
    changed = _changed(out, img)
    assert changed[:20, :60].mean() > 0.5
    assert not changed[30:].any() and not changed[:, 120:].any()
    np.testing.assert_array_equal(draw_detections(img, Detections(), fps=float('nan')), img)


def test_abnormal_and_outside_boxes_are_skipped_safely():
    img = _image()
    det = Detections([[np.nan, 0, 10, 10], [400, 300, 500, 400], [-50, -50, -10, -10], [300, 200, 900, 900]],
                     [0.5, 0.5, 0.5, 0.5], [0, 1, 2, 3])
    out = draw_detections(img, det)
    changed = _changed(out, img)
    assert changed[200:, 300:].any()                  # the partly visible box is drawn, clipped
    assert not changed[:150, :250].any()              # nothing for NaN or fully outside boxes


def test_colours_are_deterministic_and_distinct():
    first = [class_color(c) for c in range(20)]
    assert first == [class_color(c) for c in range(20)]
    assert len(set(first)) == 20
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in first)
    assert class_color(np.int32(7)) == class_color(7)


def test_label_text():
    assert label_text(2, 0.876, ['a', 'b', 'car']) == 'car 0.88'
    assert label_text(7, 0.5, ['a']) == '7 0.50'
    assert label_text(7, 0.5, {7: 'truck'}) == 'truck 0.50'
    assert label_text(3) == '3'
    img = _image()
    with_scores = draw_detections(img, Detections([[100, 100, 200, 200]], [0.5], [0]), labels=['x'])
    without = draw_detections(img, Detections([[100, 100, 200, 200]], [0.5], [0]), labels=['x'],
                              show_scores=False)
    assert _changed(with_scores, img).sum() > _changed(without, img).sum()


def test_bad_image():
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), 'image'):
        with pytest.raises(ImageError, match='H x W x 3 uint8'):
            draw_detections(bad, Detections())
