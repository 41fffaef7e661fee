"""The synthetic scene generator: determinism, exact boxes, occlusion, COCO files, video."""
import json
import os

import cv2
import numpy as np
import pytest

from qvision_ros import synthetic as S
from qvision_ros.errors import ConfigError

PLAIN = S.Photometric()          # no lighting change, blur or noise: pixels are background or object


def _scene(objects, size=(320, 240), seed=3):
    w, h = size
    bg = S.random_background(np.random.default_rng(seed), w, h)
    return S.Scene(w, h, bg, tuple(objects), PLAIN)


def _check_box(ann, w, h):
    x, y, bw, bh = ann.bbox
    assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h, (ann, w, h)
    assert bw >= 2 and bh >= 2, ann
    assert all(float(v).is_integer() for v in ann.bbox), ann     # tight pixel boxes
    assert 0 < ann.area <= bw * bh, ann
    assert S.MIN_VISIBILITY <= ann.visibility <= 1.0, ann
    assert not ann.hidden
    assert 0 <= ann.class_id < len(S.CLASSES)


def test_same_seed_same_pixels_and_boxes_other_seed_differs():
    for index in range(3):
        a_img, a_ann = S.render_scene(S.scene_for_index(7, index))
        b_img, b_ann = S.render_scene(S.scene_for_index(7, index))
        assert a_img.dtype == np.uint8 and a_img.shape == (320, 320, 3)
        assert np.array_equal(a_img, b_img) and a_ann == b_ann
    c_img, _ = S.render_scene(S.scene_for_index(8, 0))
    assert not np.array_equal(S.render_scene(S.scene_for_index(7, 0))[0], c_img)


def test_boxes_inside_the_image_and_not_degenerate_at_several_sizes():
    counts = np.zeros(len(S.CLASSES), int)
    for size in ((320, 320), (640, 480), (200, 360)):
        for index in range(12):
            scene = S.scene_for_index(11, index, size)
            image, anns = S.render_scene(scene)
            assert image.shape == (size[1], size[0], 3)
            assert len(anns) <= len(scene.objects)
            for ann in anns:
                _check_box(ann, *size)
                counts[ann.class_id] += 1
    assert (counts > 0).all(), counts


def test_object_sizes_span_small_to_half_the_image():
    sizes = [np.sqrt(o.width * o.height) for i in range(300) for o in S.scene_for_index(0, i).objects]
    assert min(sizes) < 16 and max(sizes) > 0.4 * 320
    assert min(sizes) >= S.MIN_OBJECT_SIZE * 0.95 and max(sizes) <= S.MAX_OBJECT_FRACTION * 320 + 1e-6


@pytest.mark.parametrize('class_id', range(len(S.CLASSES)))
@pytest.mark.parametrize('scale', [0.6, 1.0, 4.0])
def test_box_is_tight_around_what_is_drawn(class_id, scale):
    # Object on a plain background: every changed pixel is in the box (up to the anti-aliased rim of
    # pixels covered less than half), and every side of the box touches a pixel that changed.
    w, h = {0: (40, 20), 1: (10, 26), 2: (26, 22), 3: (10, 28), 4: (16, 24)}[class_id]
    obj = S.SceneObject(class_id, 101.3, 60.7, w * scale, h * scale, style=1234 + class_id)
    empty = _scene([])
    background, _ = S.render_scene(empty)
    image, anns = S.render_scene(_scene([obj]))
    assert len(anns) == 1 and anns[0].class_id == class_id
    ann = anns[0]
    assert ann.visibility == pytest.approx(1.0)
    x0, y0, x1, y1 = (int(v) for v in ann.xyxy)
    changed = np.abs(image.astype(int) - background.astype(int)).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert xs.min() >= x0 - 1 and xs.max() <= x1 and ys.min() >= y0 - 1 and ys.max() <= y1
    inner = changed[y0:y1, x0:x1]
    assert inner[:, 0].any() and inner[:, -1].any() and inner[0].any() and inner[-1].any()
    # The box is close to the requested extent (shapes fill their frame).
    assert abs((x1 - x0) - w * scale) <= 0.15 * w * scale + 2
    assert abs((y1 - y0) - h * scale) <= 0.15 * h * scale + 2


def test_hidden_objects_are_not_drawn_or_are_flagged():
    near = S.SceneObject(0, 40, 60, 160, 100, style=5)      # bottom at 160: nearer
    far = S.SceneObject(4, 36, 80, 30, 50, style=6)         # bottom at 130, mostly behind the car
    gone = S.SceneObject(3, 90, 70, 20, 60, style=7)        # entirely behind the car
    only_near, near_anns = S.render_scene(_scene([near]))
    image, anns = S.render_scene(_scene([near, far, gone]))
    assert [a.class_id for a in anns] == [0]
    assert np.array_equal(image, only_near)                  # the hidden cone is not drawn at all
    drawn, flagged = S.render_scene(_scene([near, far, gone]), drop_hidden=False)
    assert not np.array_equal(drawn, only_near)
    assert [a.class_id for a in flagged] == [4, 0]           # far to near; no pixel of the sign: no entry
    assert flagged[0].hidden and flagged[0].visibility < S.MIN_VISIBILITY
    assert not flagged[1].hidden and flagged[1] == near_anns[0]


def test_partly_hidden_object_keeps_the_box_of_its_visible_part():
    far = S.SceneObject(1, 100, 40, 30, 90, style=8)         # pedestrian, bottom at 130
    near = S.SceneObject(0, 116, 90, 120, 60, style=9)       # car hiding its lower right part, bottom at 150
    _, alone = S.render_scene(_scene([far]))
    _, anns = S.render_scene(_scene([far, near]))
    assert [a.class_id for a in anns] == [1, 0]
    ped, car = anns
    assert S.MIN_VISIBILITY <= ped.visibility < 0.95
    assert ped.area < alone[0].area
    assert ped.xyxy[1] == alone[0].xyxy[1]                   # the head is still visible
    assert ped.xyxy[3] <= car.xyxy[3]


def test_object_cut_by_the_border_is_clipped():
    obj = S.SceneObject(0, -30, 100, 120, 60, style=2)
    _, anns = S.render_scene(_scene([obj]))
    assert len(anns) == 1
    x, y, w, h = anns[0].bbox
    assert x == 0 and 80 <= w <= 92 and anns[0].visibility < 0.85


def test_scenes_without_objects_exist_and_render_without_annotations():
    counts = [len(S.scene_for_index(0, i).objects) for i in range(200)]
    assert 0 in counts and max(counts) > 5
    empty = S.random_scene(np.random.default_rng(1), 320, 320, empty_probability=1.0)
    image, anns = S.render_scene(empty)
    assert anns == [] and image.shape == (320, 320, 3)


def test_generate_dataset_writes_coco_and_is_reproducible(tmp_path):
    path = S.generate_dataset(str(tmp_path / 'a'), 16, seed=4, size=(160, 120), image_format='png')
    again = S.generate_dataset(str(tmp_path / 'b'), 16, seed=4, size=(160, 120), image_format='png')
    other = S.generate_dataset(str(tmp_path / 'c'), 16, seed=5, size=(160, 120), image_format='png')
    assert path == str(tmp_path / 'a' / 'annotations.json')
    raw = open(path, 'rb').read()
    assert raw == open(again, 'rb').read() and raw != open(other, 'rb').read()
    coco = json.loads(raw)
    assert set(coco) >= {'images', 'annotations', 'categories'}
    assert coco['categories'] == [{'id': i + 1, 'name': n, 'supercategory': 'road'} for i, n in enumerate(S.CLASSES)]
    images = {im['id']: im for im in coco['images']}
    assert len(images) == 16
    for im in coco['images']:
        file_a = tmp_path / 'a' / im['file_name']
        assert file_a.read_bytes() == (tmp_path / 'b' / im['file_name']).read_bytes()
        decoded = cv2.imread(str(file_a))
        assert decoded.shape == (im['height'], im['width'], 3) == (120, 160, 3)
    # PNG is lossless: the files hold exactly the rendered scenes.
    first = cv2.imread(str(tmp_path / 'a' / coco['images'][0]['file_name']))
    assert np.array_equal(first, S.render_scene(S.scene_for_index(4, 0, (160, 120)))[0])
    ids = [a['id'] for a in coco['annotations']]
    assert len(set(ids)) == len(ids) > 0
    for a in coco['annotations']:
        assert a['image_id'] in images and 1 <= a['category_id'] <= 5 and a['iscrowd'] == 0
        x, y, w, h = a['bbox']
        assert len(a['bbox']) == 4 and w >= 2 and h >= 2 and x >= 0 and y >= 0 and x + w <= 160 and y + h <= 120
        assert 0 < a['area'] <= w * h


def test_generate_dataset_jpeg_and_bad_arguments(tmp_path):
    path = S.generate_dataset(str(tmp_path), 2, seed=0, size=64)
    coco = json.load(open(path))
    assert all(im['file_name'].endswith('.jpg') and os.path.exists(tmp_path / im['file_name']) for im in coco['images'])
    for kwargs in ({'n_images': -1}, {'n_images': 2, 'image_format': 'gif'}, {'n_images': 2, 'size': (10, 10)},
                   {'n_images': 2, 'seed': -3}, {'n_images': 2, 'size': 'big'}):
        with pytest.raises(ConfigError):
            S.generate_dataset(str(tmp_path / 'x'), **kwargs)


@pytest.mark.parametrize('name', ['clip.mp4', 'clip.avi'])
def test_video_reads_back_with_its_frame_count_and_size(tmp_path, name):
    path, gt_path = S.write_video(str(tmp_path / name), n_frames=24, seed=2, size=(192, 144), fps=12)
    assert os.path.exists(path) and path.endswith(('.mp4', '.avi'))
    cap = cv2.VideoCapture(path)
    assert cap.isOpened()
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 24
    assert frames[0].shape == (144, 192, 3)
    # Lossy codec, but the frames are the rendered scenes.
    ref, _ = S.render_scene(S.video_scene(2, 5, 24, (192, 144)), drop_hidden=False)
    assert np.abs(frames[5].astype(float) - ref).mean() < 12
    coco = json.load(open(gt_path))
    assert [im['frame_index'] for im in coco['images']] == list(range(24))
    assert len(coco['annotations']) > 0
    for a in coco['annotations']:
        x, y, w, h = a['bbox']
        assert x >= 0 and y >= 0 and x + w <= 192 and y + h <= 144
        assert a['iscrowd'] == (1 if a['visibility'] < S.MIN_VISIBILITY else 0) or w < 2 or h < 2


def test_video_objects_move_between_frames():
    a = S.video_scene(0, 10, 150, (320, 240)).objects
    b = S.video_scene(0, 11, 150, (320, 240)).objects
    moved = {o.style: (o.x, o.y, o.width) for o in a}
    assert any(o.style in moved and moved[o.style] != (o.x, o.y, o.width) for o in b)


def test_bad_video_arguments(tmp_path):
    for kwargs in ({'n_frames': 0}, {'fps': 0}, {'size': (8, 8)}):
        with pytest.raises(ConfigError):
            S.write_video(str(tmp_path / 'v.mp4'), **kwargs)


def test_command_line_writes_a_dataset_and_a_video(tmp_path, capsys):
    S.main(['dataset', str(tmp_path / 'd'), '--images', '3', '--size', '96x64', '--seed', '2'])
    coco = json.load(open(tmp_path / 'd' / 'annotations.json'))
    assert len(coco['images']) == 3 and coco['images'][0]['width'] == 96 and coco['images'][0]['height'] == 64
    S.main(['video', str(tmp_path / 'v.mp4'), '--frames', '5', '--size', '96'])
    assert os.path.exists(capsys.readouterr().out.split()[-2])
    with pytest.raises(SystemExit):
        S.main(['dataset', str(tmp_path / 'e'), '--images', '-2'])
