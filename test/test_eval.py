"""qvision eval: mAP with pycocotools on hand-made cases with known answers, COCO and VOC loading, the table,
and the command end to end on a small synthetic data set (every file in tmp_path)."""
import json

import cv2
import numpy as np
import pytest

from qvision_ros import synthetic
from qvision_ros.cli import main
from qvision_ros.errors import DataError
from qvision_ros.evaluate import (ModelScore, class_to_category, coco_map, detections_to_coco, format_table,
                                  iter_images, load_coco, load_dataset)
from qvision_ros.vision.decode import Detections

GT = {
    'images': [{'id': 1, 'file_name': 'a.png', 'width': 100, 'height': 100},
               {'id': 2, 'file_name': 'b.png', 'width': 100, 'height': 100}],
    'annotations': [
        {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 30, 20], 'area': 600, 'iscrowd': 0},
        {'id': 2, 'image_id': 1, 'category_id': 2, 'bbox': [50, 50, 40, 40], 'area': 1600, 'iscrowd': 0},
        {'id': 3, 'image_id': 2, 'category_id': 1, 'bbox': [0, 0, 20, 60], 'area': 1200, 'iscrowd': 0}],
    'categories': [{'id': 1, 'name': 'car'}, {'id': 2, 'name': 'cone'}],
}


def perfect(score=0.9):
    return [{'image_id': a['image_id'], 'category_id': a['category_id'], 'bbox': list(a['bbox']),
             'score': score} for a in GT['annotations']]


def test_perfect_detections_score_one():
    m = coco_map(GT, perfect())
    assert m['map50'] == pytest.approx(1.0) and m['map'] == pytest.approx(1.0)


def test_no_detections_score_zero():
    m = coco_map(GT, [])
    assert m == {'map': 0.0, 'map50': 0.0, 'map75': 0.0}


def test_shifted_box_below_half_iou():
    dets = perfect()
    # 30 x 20 box moved right by 16 px: overlap 14 x 20 = 280, union 920 -> IoU 0.30 < 0.5
    dets[0]['bbox'] = [26, 10, 30, 20]
    dets[0]['score'] = 0.5             # ranked after the true positive of image 2
    m = coco_map(GT, dets)
    # 'car' finds 1 of its 2 boxes at precision 1: COCO's 101-point AP is 51/101 (recall 0, 0.01 .. 0.5);
    # 'cone' finds its box (AP 1).  The same at every IoU threshold.
    expect = (51 / 101 + 1) / 2
    assert m['map50'] == pytest.approx(expect) and m['map'] == pytest.approx(expect)


def test_wrong_class_and_partial_iou():
    dets = perfect()
    dets[1]['category_id'] = 1      # the cone reported as a car: a false positive for car, a miss for cone
    m = coco_map(GT, dets)
    assert m['map50'] < 0.6
    # a box at IoU 0.6 counts at 0.5 and 0.55 but not from 0.65: mAP@0.5:0.95 well below mAP@0.5
    dets = perfect()
    dets[2]['bbox'] = [0, 0, 20, 36]   # 20 x 36 inside 20 x 60: IoU 0.6
    m = coco_map(GT, dets)
    assert m['map50'] == pytest.approx(1.0)
    assert 0.5 < m['map'] < 0.9


def test_no_ground_truth_is_nan():
    gt = dict(GT, annotations=[])
    assert np.isnan(coco_map(gt, perfect())['map'])


def test_class_mapping_and_conversion(tmp_path):
    (tmp_path / 'ann.json').write_text(json.dumps(GT))
    ds = load_coco(tmp_path / 'ann.json')
    assert class_to_category(('Cone', 'car'), ds) == {0: 2, 1: 1}       # by name
    assert class_to_category(('x', 'y', 'z'), ds) == {0: 1, 1: 2}       # no name matches: by order
    det = Detections([[10, 10, 40, 30], [1, 1, 2, 2]], [0.8, 0.3], [1, 7])
    assert detections_to_coco(5, det, {1: 1}) == [{'image_id': 5, 'category_id': 1, 'bbox': [10, 10, 30, 20],
                                                   'score': pytest.approx(0.8)}]


def test_coco_video_frames_and_errors(tmp_path):
    frames = [np.full((32, 48, 3), 30 * i, np.uint8) for i in range(5)]
    vw = cv2.VideoWriter(str(tmp_path / 'clip.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10, (48, 32))
    for f in frames:
        vw.write(f)
    vw.release()
    d = {'images': [{'id': 7, 'file_name': 'clip.avi#3', 'frame_index': 3},
                    {'id': 8, 'file_name': 'clip.avi#1', 'frame_index': 1}],
         'annotations': [], 'categories': [{'id': 1, 'name': 'car'}]}
    (tmp_path / 'ann.json').write_text(json.dumps(d))
    got = dict(iter_images(load_coco(tmp_path / 'ann.json')))
    assert set(got) == {7, 8}
    assert abs(int(got[7].mean()) - 90) <= 3 and abs(int(got[8].mean()) - 30) <= 3
    (tmp_path / 'bad.json').write_text('{"images": 3}')
    with pytest.raises(DataError, match='not a COCO'):
        load_dataset(tmp_path / 'bad.json')
    with pytest.raises(DataError, match='no such file'):
        load_dataset(tmp_path / 'none.json')
    d['images'][0]['file_name'] = 'missing.png'
    (tmp_path / 'm.json').write_text(json.dumps(d))
    with pytest.raises(DataError, match='--images'):
        list(iter_images(load_coco(tmp_path / 'm.json')))


VOC_XML = """<annotation><filename>{name}.jpg</filename><size><width>100</width><height>80</height></size>
<object><name>car</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>40</xmax>
<ymax>50</ymax></bndbox></object>
<object><name>dog</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax>
<ymax>10</ymax></bndbox></object></annotation>"""


def test_voc_folder(tmp_path):
    (tmp_path / 'Annotations').mkdir()
    (tmp_path / 'JPEGImages').mkdir()
    (tmp_path / 'ImageSets' / 'Main').mkdir(parents=True)
    for name in ('000001', '000002'):
        (tmp_path / 'Annotations' / (name + '.xml')).write_text(VOC_XML.format(name=name))
    (tmp_path / 'ImageSets' / 'Main' / 'val.txt').write_text('000002\n')
    ds = load_dataset(tmp_path)
    assert [c['name'] for c in ds.coco['categories']] == ['car', 'dog'] and len(ds) == 2
    car = ds.coco['annotations'][0]
    assert car['bbox'] == [10.0, 20.0, 30.0, 30.0] and car['iscrowd'] == 0   # 1-based inclusive -> 0-based
    assert ds.coco['annotations'][1]['iscrowd'] == 1                          # difficult: ignored
    assert str(ds.paths[1]).endswith('JPEGImages/000001.jpg')
    val = load_dataset(tmp_path, split='val', class_names=['car'])
    assert len(val) == 1 and len(val.coco['annotations']) == 1
    with pytest.raises(DataError, match='split'):
        load_dataset(tmp_path, split='test')
    m = coco_map(val.coco, [{'image_id': 1, 'category_id': 1, 'bbox': [10, 20, 30, 30], 'score': 1.0}])
    assert m['map50'] == pytest.approx(1.0)


def test_table_against_first_row():
    rows = [ModelScore('a/fp32.onnx', 'fp32', 4_000_000, 0.9, 0.6, 10, 20.0, 50.0),
            ModelScore('a/int8.onnx', 'int8', 1_000_000, 0.88, 0.58, 10, 10.0, 100.0)]
    text = '\n'.join(format_table(rows))
    assert '-75.0 %' in text and '-50 %' in text and 'fp32.onnx' in text and '0.880' in text


def test_eval_command_on_synthetic_scenes(tmp_path, capsys):
    ann = synthetic.generate_dataset(str(tmp_path / 'val'), 6, seed=3, size=(320, 320), image_format='png')
    out_json = tmp_path / 'table.json'
    assert main(['eval', '--data', ann, '--threads', '1', '-q', '--json', str(out_json)]) == 0
    text = capsys.readouterr().out
    assert 'mAP@0.5' in text and '6 images' in text
    table = json.loads(out_json.read_text())
    assert table['images'] == 6 and len(table['rows']) >= 1
    for row in table['rows']:
        assert 0.5 < row['map50'] <= 1.0 and row['map'] <= row['map50']
    assert main(['eval', '--data', str(tmp_path / 'nothing.json')]) == 2
