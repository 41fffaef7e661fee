"""The detector's training package (PyTorch, the 'train' extra) and the shipped default model.

ONNX Runtime is the independent oracle of the exported graph (DESIGN.md section 8).
"""
import json
import os

import numpy as np
import onnx
import onnxruntime  # noqa: F401  (the oracle; fail here when it is missing)
import pytest
import torch

from qvision_ros import synthetic
from qvision_ros.training import data, export, metrics
from qvision_ros.training.loss import DetectionLoss, TaskAlignedAssigner, box_iou
from qvision_ros.training.model import DecodedDetector, Detector, make_anchors
from qvision_ros.training.train import main, run
from qvision_ros.vision import Decoder, Letterbox, detect_format

TINY = (8, 16, 16, 32, 32)
SIZE = 128
DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'qvision_ros', 'data')
ALLOWED_OPS = {'Conv', 'Sigmoid', 'Mul', 'Add', 'Split', 'Concat', 'MaxPool', 'Resize', 'Reshape', 'Transpose',
               'Softmax', 'Sub', 'Div', 'Constant'}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _tiny(seed=0):
    torch.manual_seed(seed)
    return Detector(num_classes=5, widths=TINY, image_size=SIZE)


def _randomise_bn(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _batch(n=8, seed=0):
    return data.collate([data.training_sample(seed, 0, i, SIZE) for i in range(n)])


# ----------------------------------------------------------------------------------------- the math

def test_box_iou_and_ciou_golden_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert box_iou(a, a).item() == pytest.approx(1.0, abs=1e-6)
    assert box_iou(a, a, ciou=True).item() == pytest.approx(1.0, abs=1e-6)
    half = torch.tensor([[5.0, 0.0, 15.0, 10.0]])
    assert box_iou(a, half).item() == pytest.approx(1 / 3, abs=1e-6)
    # Same shape, centres 5 apart, enclosing box 15 x 10: CIoU = 1/3 - 25 / 325.
    assert box_iou(a, half, ciou=True).item() == pytest.approx(1 / 3 - 25 / 325, abs=1e-5)
    far = torch.tensor([[20.0, 20.0, 30.0, 30.0]])
    assert box_iou(a, far).item() == 0.0 and box_iou(a, far, ciou=True).item() < 0


def test_assigner_takes_anchors_inside_each_box_and_thin_boxes_get_one():
    points, strides = make_anchors(SIZE)
    points_px = points * strides
    A = len(points)
    gt = torch.tensor([[[10.0, 20.0, 70.0, 90.0], [100.0, 40.0, 103.0, 60.0]]])   # a big box, a 3-px-wide one
    labels = torch.tensor([[2, 4]])
    scores = torch.full((1, A, 5), 0.5)
    pred = torch.cat([points_px - strides, points_px + strides], 1)[None]      # overlaps nearby boxes
    boxes, target, fg = TaskAlignedAssigner(topk=10)(scores, pred, points_px, strides, labels, gt,
                                                     torch.tensor([[True, True]]))
    assert fg.sum() > 1 and fg.sum() <= 20
    assert (target[0, fg[0]] > 0).any(dim=1).all() and (target >= 0).all() and (target <= 1).all()
    for k, box in enumerate(gt[0]):
        mine = fg[0] & (boxes[0] == box).all(1)
        assert mine.any(), 'box %d has no positive anchor' % k
        half = torch.maximum((box[2:] - box[:2]) / 2, strides[mine] / 2)
        centre = (box[:2] + box[2:]) / 2
        assert ((points_px[mine] - centre).abs() < half).all()
        assert (target[0, mine].argmax(1) == labels[0, k]).all()
    # Padding entries are never assigned.
    _, target, fg = TaskAlignedAssigner()(scores, pred, points_px, strides, labels, gt, torch.tensor([[False, False]]))
    assert not fg.any() and target.sum() == 0


def test_decoded_output_is_the_dfl_expectation_around_anchor_points():
    model = _randomise_bn(_tiny())
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        out = DecodedDetector(model, SIZE)(x).numpy()
        raw = torch.cat([r.flatten(2) for r in model(x)], 2).numpy()
    points, strides = (t.numpy() for t in make_anchors(SIZE))
    assert out.shape == (2, 4 + 5, len(points))
    logits = raw[:, :64].reshape(2, 4, 16, -1)
    p = np.exp(logits - logits.max(2, keepdims=True))
    p /= p.sum(2, keepdims=True)
    d = (p * np.arange(16)[None, None, :, None]).sum(2)                     # [2, 4, A]
    x1 = points[:, 0] - d[:, 0]
    y1 = points[:, 1] - d[:, 1]
    x2 = points[:, 0] + d[:, 2]
    y2 = points[:, 1] + d[:, 3]
    s = strides[:, 0]
    expect = np.stack([(x1 + x2) / 2 * s, (y1 + y2) / 2 * s, (x2 - x1) * s, (y2 - y1) * s], 1)
    np.testing.assert_allclose(out[:, :4], expect, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out[:, 4:], 1 / (1 + np.exp(-raw[:, 64:])), rtol=1e-5, atol=1e-6)


def test_batch_norm_folding_leaves_outputs_unchanged():
    model = _randomise_bn(_tiny())
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        before = DecodedDetector(model, SIZE)(x)
        import copy
        after = DecodedDetector(copy.deepcopy(model).fuse(), SIZE)(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in copy.deepcopy(model).fuse().modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-3)


def test_loss_is_finite_and_decreases_over_a_few_steps():
    model = _tiny().train()
    images, labels, boxes, mask = _batch()
    assert mask.any()
    criterion = DetectionLoss(5)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss, parts = criterion(model(images), labels, boxes, mask)
        assert torch.isfinite(loss) and torch.isfinite(parts).all()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.9 * losses[0], losses


def test_loss_of_images_without_objects_is_finite():
    model = _tiny().train()
    images = torch.rand(2, 3, SIZE, SIZE)
    loss, parts = DetectionLoss(5)(model(images), torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4),
                                   torch.zeros(2, 0, dtype=torch.bool))
    assert torch.isfinite(loss) and parts[0] == 0 and parts[2] == 0
    loss.backward()


# -------------------------------------------------------------------------------------------- data

def test_training_samples_are_deterministic_with_boxes_inside_the_canvas():
    a = data.training_sample(3, 1, 5, SIZE)
    b = data.training_sample(3, 1, 5, SIZE)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert not np.array_equal(a[0], data.training_sample(3, 2, 5, SIZE)[0])   # fresh augmentation per epoch
    n_boxes = 0
    for i in range(20):
        rgb, boxes, labels = data.training_sample(0, 0, i, SIZE)
        assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8
        assert boxes.dtype == np.float32 and labels.dtype == np.int64 and len(boxes) == len(labels)
        assert (boxes >= 0).all() and (boxes <= SIZE).all()
        assert (boxes[:, 2] - boxes[:, 0] >= 2).all() and (boxes[:, 3] - boxes[:, 1] >= 2).all()
        n_boxes += len(boxes)
    assert n_boxes > 20
    # Without augmentation a square scene is the validation rendering of the same scene.
    image, boxes, labels = data.render_training_scene(0, 0, SIZE)
    rgb, b2, l2 = data.augment_sample(image, boxes, labels, 0, 0, 0, SIZE, augment=False)
    if image.shape[:2] == (SIZE, SIZE):
        assert np.array_equal(rgb[..., ::-1], image)
    assert np.allclose(b2, Letterbox.compute(image.shape[1], image.shape[0], SIZE, SIZE).to_network(boxes)
                       .clip(0, SIZE)) or len(b2) < len(boxes)


def test_collate_pads_boxes():
    images, labels, boxes, mask = data.collate([
        (np.zeros((SIZE, SIZE, 3), np.uint8), np.array([[1, 2, 30, 40]], np.float32), np.array([3])),
        (np.full((SIZE, SIZE, 3), 255, np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))])
    assert images.shape == (2, 3, SIZE, SIZE) and images.dtype == torch.float32
    assert images[1].min() == 1.0 and images[0].max() == 0.0
    assert labels.tolist() == [[3], [0]] and mask.tolist() == [[True], [False]]
    assert boxes[0, 0].tolist() == [1, 2, 30, 40]


# ------------------------------------------------------------------------------------------ metrics

class _Det:
    def __init__(self, boxes, scores, class_ids):
        self.boxes, self.scores, self.class_ids = np.array(boxes, float).reshape(-1, 4), np.array(scores), \
            np.array(class_ids)


def test_average_precision_golden_values():
    gt = [(np.array([[0, 0, 10, 10]]), np.array([0]))]
    perfect = metrics.evaluate_map([_Det([[0, 0, 10, 10]], [0.9], [0])], gt, 2)
    assert perfect['map'] == 1.0 and np.isnan(perfect['ap'][1]) and perfect['num_gt'] == [1, 0]
    # A false positive ranked above the true positive: precision 1/2 at recall 1 -> AP 0.5.
    fp_first = metrics.evaluate_map([_Det([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])], gt, 1)
    assert fp_first['map'] == pytest.approx(0.5)
    # Wrong class or IoU below 0.5: AP 0; a duplicate after the true positive: AP stays 1.
    assert metrics.evaluate_map([_Det([[0, 0, 10, 10]], [0.9], [1])], gt, 2)['map'] == 0.0
    assert metrics.evaluate_map([_Det([[5, 0, 15, 10]], [0.9], [0])], gt, 1)['map'] == 0.0
    dup = metrics.evaluate_map([_Det([[0, 0, 10, 10], [0, 0, 10, 9]], [0.9, 0.8], [0, 0])], gt, 1)
    assert dup['map'] == 1.0
    # Two ground truths, one found: AP 0.5.  A detection on an ignored box is neither TP nor FP.
    gt2 = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]), np.array([0, 0, 0]),
            np.array([False, False, True]))]
    res = metrics.evaluate_map([_Det([[40, 40, 50, 50], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])], gt2, 1)
    assert res['map'] == pytest.approx(0.5) and res['num_gt'] == [2]
    assert metrics.average_precision([], []) == 0.0


# ------------------------------------------------------------------------------------------- export

def test_export_matches_onnxruntime_and_decodes_with_the_vision_layer(tmp_path):
    model = _randomise_bn(_tiny())
    path = export.export_onnx(model, str(tmp_path / 'm.onnx'), SIZE, names=synthetic.CLASSES)
    proto = onnx.load(path)
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS
    assert [i.name for i in proto.graph.input] == ['images']
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, SIZE, SIZE]
    a = sum((SIZE // s) ** 2 for s in (8, 16, 32))
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [1, 9, a]
    assert proto.opset_import[0].version >= 13
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta['names']) == list(synthetic.CLASSES)
    x = np.stack([data.training_sample(1, 0, i, SIZE)[0] for i in range(3)]).transpose(0, 3, 1, 2) / np.float32(255)
    got = export.onnxruntime_outputs(path, x)
    want = export.torch_outputs(model, x, SIZE)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-3)
    assert detect_format([got.shape], 5) == 'yolov8'
    dets = Decoder(kind='yolov8', num_classes=5, score_threshold=0.0, max_detections=50)(got)
    assert len(dets) == 3
    for d in dets:
        assert 0 < len(d) <= 50 and (d.boxes[:, 2] > d.boxes[:, 0]).all() and (d.class_ids < 5).all()


def test_checkpoint_round_trip(tmp_path):
    model = _randomise_bn(_tiny())
    export.save_checkpoint(str(tmp_path / 'c.pt'), model, {'epoch': 3})
    loaded, extra = export.load_checkpoint(str(tmp_path / 'c.pt'))
    assert extra == {'epoch': 3}
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(DecodedDetector(loaded, SIZE)(x), DecodedDetector(model, SIZE)(x))


@pytest.mark.parametrize('scenes', ['--fresh-scenes', '--fixed-scenes'])
def test_main_runs_one_short_epoch_and_writes_a_checked_model(tmp_path, scenes):
    out = str(tmp_path / 'run')
    summary = run(['--out', out, '--epochs', '1', '--images', '16', '--val-images', '8', '--imgsz', str(SIZE),
                    '--batch', '8', '--widths', ','.join(map(str, TINY)), '--warmup', '2', scenes])
    assert summary['fresh_scenes'] == (scenes == '--fresh-scenes')
    for name in ('detector_%d.onnx' % SIZE, 'labels.txt', 'metrics.json', 'best.pt', 'last.pt', 'train.log'):
        assert os.path.exists(os.path.join(out, name)), name
    assert open(os.path.join(out, 'labels.txt')).read().split('\n')[:5] == list(synthetic.CLASSES)
    assert np.isfinite(summary['final_loss']) and summary['iterations'] == 2
    assert summary['onnx_max_abs_diff'] < 1e-2
    assert 0.0 <= summary['val_map50_onnx'] <= 1.0
    assert json.load(open(os.path.join(out, 'metrics.json')))['epochs_run'] == 1


def test_main_rejects_bad_arguments(tmp_path):
    for argv in (['--epochs', '0'], ['--imgsz', '100'], ['--widths', '8,16'], []):
        with pytest.raises(SystemExit):
            main((['--out', str(tmp_path)] if argv else []) + argv)


# ------------------------------------------------------------------------------ the shipped default

def test_shipped_detector_finds_objects_in_fresh_scenes():
    path = os.path.join(DATA_DIR, 'detector_320.onnx')
    labels = open(os.path.join(DATA_DIR, 'labels.txt')).read().split()
    assert labels == list(synthetic.CLASSES)
    assert os.path.getsize(path) < 8 * 2 ** 20
    proto = onnx.load(path)
    assert {n.op_type for n in proto.graph.node} <= ALLOWED_OPS
    # Scenes of a seed used neither for training (0) nor for validation (1), through the letterbox
    # geometry of a 4:3 camera frame.
    frames, gts = [], []
    for i in range(24):
        image, anns = synthetic.render_scene(synthetic.scene_for_index(20240, i, (320, 240)))
        frames.append(image)
        gts.append((np.array([a.xyxy for a in anns]).reshape(-1, 4), np.array([a.class_id for a in anns])))
    lb = Letterbox.compute(320, 240, 320, 320)
    x = np.full((len(frames), 320, 320, 3), 114, np.uint8)
    x[:, lb.pad_y:lb.pad_y + 240] = np.stack(frames)[..., ::-1]
    out = export.onnxruntime_outputs(path, x.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    dets = Decoder(kind='yolov8', num_classes=5, score_threshold=0.001, nms_iou_threshold=0.6,
                   max_detections=100)(out, letterbox=lb)
    result = metrics.evaluate_map(dets, gts, 5)
    assert result['map'] >= 0.8, result


def test_shipped_sample_video_has_its_ground_truth():
    import cv2
    names = [n for n in os.listdir(DATA_DIR) if n.startswith('sample') and n.endswith(('.mp4', '.avi'))]
    assert len(names) == 1, os.listdir(DATA_DIR)
    video = os.path.join(DATA_DIR, names[0])
    assert os.path.getsize(video) < 6 * 2 ** 20
    gt = json.load(open(os.path.splitext(video)[0] + '.json'))
    cap = cv2.VideoCapture(video)
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == len(gt['images']) == int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) and count > 0
    cap.release()
