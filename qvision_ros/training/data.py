"""Training and validation samples from the synthetic scene generator.

A training sample is a fresh scene (or, with ``fresh=False``, the same scene every epoch, which can be
rendered once and kept: ``make_dataset(scenes=...)``) rendered at a
random aspect ratio whose long side is the training size, then augmented: random scale (0.7..1.35) and
placement on a grey (114) canvas - which also covers the letterbox padding of camera frames - horizontal
flip, and hue/saturation/value jitter.  Every random draw comes from ``default_rng([seed, epoch, index])``,
so a sample does not depend on the order of loading nor on the number of worker processes.

Samples are NumPy: an RGB uint8 image [S, S, 3], boxes float32 [K, 4] (x1, y1, x2, y2 pixels) and class
ids int64 [K].  :func:`collate` (PyTorch) pads a batch's boxes to the largest count.
"""
import math

import cv2
import numpy as np

from .. import synthetic

PAD_VALUE = 114
# (width / height, probability) of the rendered scenes: square, 4:3, 16:9 camera frames, portrait.
SCENE_SHAPES = ((1.0, 0.45), (4 / 3, 0.3), (16 / 9, 0.15), (3 / 4, 0.1))
MIN_KEPT_FRACTION = 0.25     # an augmented box cut by the border keeps its label above this area fraction


def scene_size(ratio, size):
    """(width, height) of a scene of aspect ``ratio`` whose long side is ``size``."""
    if ratio >= 1:
        return size, max(32, int(round(size / ratio)))
    return max(32, int(round(size * ratio))), size


def _boxes_labels(annotations):
    boxes = np.array([a.xyxy for a in annotations], np.float32).reshape(-1, 4)
    labels = np.array([a.class_id for a in annotations], np.int64)
    return boxes, labels


def hsv_jitter(bgr, rng, hue=0.015, saturation=0.4, value=0.3):
    """Random hue shift (fraction of the circle), saturation and value gains, through lookup tables."""
    h_gain = rng.uniform(-hue, hue) * 180
    s_gain = rng.uniform(1 - saturation, 1 + saturation)
    v_gain = rng.uniform(1 - value, 1 + value)
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    x = np.arange(256, dtype=np.float64)
    lut_h = np.mod(np.round(x + h_gain), 180).astype(np.uint8)
    lut_s = np.clip(np.round(x * s_gain), 0, 255).astype(np.uint8)
    lut_v = np.clip(np.round(x * v_gain), 0, 255).astype(np.uint8)
    h, s, v = cv2.split(hsv)
    hsv = cv2.merge([cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def render_training_scene(seed, index, size=320, epoch=0):
    """The un-augmented scene of a training sample -> (BGR image with long side ``size``, boxes, labels).
    ``epoch`` is part of the seed: 0 for a fixed set of scenes, the epoch number for fresh scenes."""
    rng = np.random.default_rng([int(seed), 7, int(epoch), int(index)])
    ratios, probs = zip(*SCENE_SHAPES)
    ratio = ratios[rng.choice(len(ratios), p=np.array(probs) / sum(probs))]
    w, h = scene_size(ratio, size)
    image, anns = synthetic.render_scene(synthetic.random_scene(rng, w, h))
    boxes, labels = _boxes_labels(anns)
    return image, boxes, labels


def augment_sample(image, boxes, labels, seed, epoch, index, size=320, augment=True):
    """Place a scene on the ``size`` x ``size`` canvas (fitted, then randomly scaled, moved and flipped when
    ``augment``, else centred) and jitter its colours -> (rgb, boxes, labels)."""
    h, w = image.shape[:2]
    fit = size / max(h, w)       # 1 for a scene rendered at this size
    aug = np.random.default_rng([int(seed), 8, int(epoch), int(index)])
    if augment:
        scale = fit * math.exp(aug.uniform(math.log(0.7), math.log(1.35)))
        flip = aug.random() < 0.5
        cx = size / 2 + aug.uniform(-0.2, 0.2) * size
        cy = size / 2 + aug.uniform(-0.2, 0.2) * size
    else:
        scale, flip, cx, cy = fit, False, size / 2, size / 2
    sx = -scale if flip else scale
    # x' = sx * (x - w / 2) + cx, y' = scale * (y - h / 2) + cy
    m = np.array([[sx, 0, cx - sx * w / 2], [0, scale, cy - scale * h / 2]], np.float64)
    out = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(PAD_VALUE,) * 3)
    if augment:
        out = hsv_jitter(out, aug)
    if len(boxes):
        xs = boxes[:, [0, 2]] * sx + m[0, 2]
        ys = boxes[:, [1, 3]] * scale + m[1, 2]
        t = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1)
        area = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
        t = np.clip(t, 0, size)
        cw, ch = t[:, 2] - t[:, 0], t[:, 3] - t[:, 1]
        keep = (cw >= 2) & (ch >= 2) & (cw * ch >= MIN_KEPT_FRACTION * area)
        boxes, labels = t[keep].astype(np.float32), labels[keep]
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB), boxes, labels


def training_sample(seed, epoch, index, size=320, augment=True, fresh=True):
    """One training sample (see the module docstring) -> (rgb, boxes, labels)."""
    scene = render_training_scene(seed, index, size, epoch if fresh else 0)
    return augment_sample(*scene, seed, epoch, index, size, augment)


def validation_set(n_images, seed, size=320):
    """The first ``n_images`` scenes of ``seed`` at ``size`` x ``size`` as :func:`synthetic.generate_dataset`
    draws them (no augmentation): list of (rgb, boxes, labels)."""
    out = []
    for i in range(n_images):
        image, anns = synthetic.render_scene(synthetic.scene_for_index(seed, i, (size, size)))
        boxes, labels = _boxes_labels(anns)
        out.append((cv2.cvtColor(image, cv2.COLOR_BGR2RGB), boxes, labels))
    return out


def to_tensor_batch(images):
    """List of RGB uint8 [S, S, 3] -> float32 tensor [B, 3, S, S] in [0, 1] (the network input)."""
    import torch
    x = torch.from_numpy(np.ascontiguousarray(np.stack(images)))
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def collate(samples):
    """[(rgb, boxes, labels)] -> images [B, 3, S, S] float32, labels [B, M] long, boxes [B, M, 4],
    mask [B, M] bool (M = most boxes in one image, padding masked out)."""
    import torch
    images = to_tensor_batch([s[0] for s in samples])
    m = max([len(s[2]) for s in samples] + [0])
    labels = torch.zeros(len(samples), m, dtype=torch.long)
    boxes = torch.zeros(len(samples), m, 4)
    mask = torch.zeros(len(samples), m, dtype=torch.bool)
    for i, (_, b, lab) in enumerate(samples):
        k = len(lab)
        if k:
            labels[i, :k] = torch.from_numpy(lab)
            boxes[i, :k] = torch.from_numpy(b)
            mask[i, :k] = True
    return images, labels, boxes, mask


def make_dataset(n_images, seed, size=320, augment=True, fresh=True, scenes=None):
    """A ``torch.utils.data.Dataset`` of training samples; call ``set_epoch`` before each epoch.

    ``scenes``: pre-rendered scenes (a list of :func:`render_training_scene` results, index = sample
    index) to augment instead of rendering them again - the fixed-scene mode with the rendering paid once.
    """
    from torch.utils.data import Dataset

    class _Synthetic(Dataset):
        def __init__(self):
            self.epoch = 0
            self.size = size

        def set_epoch(self, epoch, size=None):
            """Samples of ``epoch``, at ``size`` (None: the size given to make_dataset)."""
            self.epoch = int(epoch)
            self.size = self.size if size is None else int(size)

        def __len__(self):
            return n_images

        def __getitem__(self, index):
            if scenes is not None:
                return augment_sample(*scenes[index], seed, self.epoch, index, self.size, augment)
            return training_sample(seed, self.epoch, index, self.size, augment, fresh)

    return _Synthetic()
