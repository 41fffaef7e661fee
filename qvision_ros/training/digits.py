"""A VGG-style classifier of scikit-learn's bundled handwritten digits: the small stand-in for paper 3's
VGG-16 on CIFAR-10 in the bit-width experiment (:mod:`qvision_ros.quantization.bitwidth`).

    python -m qvision_ros.training.digits --out runs/digits

Data (:func:`load_data`): ``sklearn.datasets.load_digits`` - 1,797 greyscale 8 x 8 images with 17 levels
(0..16), scaled to [0, 1] and upsampled bilinearly to ``size`` x ``size`` (32 by default), one channel;
a fixed stratified split (20 % test, seed 0).  Nothing is downloaded: the data ships with scikit-learn.

Model (:class:`DigitsVGG`): VGG-style stages of two Conv3x3-BN-ReLU and a 2 x 2 max pool (widths 16, 32,
64), global average pool, flatten, Linear to 10 classes.  Input ``images`` float32 [1, 1, S, S], output
``logits`` [1, 10].  Trained with SGD (Nesterov momentum, cosine learning rate), random shifts of up to 2
pixels as augmentation; about a minute on one CPU thread.

Needs PyTorch and scikit-learn (the ``train`` extra).
"""
import argparse
import copy
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

INPUT_NAME = 'images'
OUTPUT_NAME = 'logits'
NUM_CLASSES = 10
DEFAULT_SIZE = 32
MAX_LEVEL = 16.0            # load_digits pixel values are 0..16


@dataclass
class DigitsData:
    """float32 NCHW images in [0, 1] and int64 labels of the fixed split."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(size=DEFAULT_SIZE, test_fraction=0.2, seed=0):
    """The digits at ``size`` x ``size`` (bilinear upsampling of the 8 x 8 originals), split stratified by
    class with ``test_fraction`` held out (``sklearn.model_selection.train_test_split``, ``seed``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not isinstance(size, int) or size < 8 or size % 8:
        raise ConfigError('digits image size must be a multiple of 8 >= 8, got %r' % (size,))
    if not 0 < test_fraction < 1:
        raise ConfigError('test_fraction must be in (0, 1), got %r' % (test_fraction,))
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / MAX_LEVEL)[:, None]
    if size != 8:
        x = nn.functional.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)
    x = x.clamp_(0, 1).numpy()
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                                        stratify=y)
    return DigitsData(np.ascontiguousarray(x_train), y_train, np.ascontiguousarray(x_test), y_test)


class DigitsVGG(nn.Module):
    """Stages of (Conv3x3-BN-ReLU) x ``convs`` + MaxPool 2x2 with ``widths`` channels, global average pool,
    Linear."""

    def __init__(self, widths=(16, 32, 64), convs=2, num_classes=NUM_CLASSES, in_channels=1):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            for _ in range(convs):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@dataclass
class TrainOptions:
    """epochs, batch size, peak SGD learning rate (cosine to 0), weight decay, maximum random shift in
    pixels (augmentation), seed, PyTorch threads."""
    epochs: int = 12
    batch: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    shift: int = 2
    seed: int = 0
    threads: int = 1

    def check(self):
        for name in ('epochs', 'batch', 'threads'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError('TrainOptions.%s must be an int >= 1, got %r' % (name, v))
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.shift < DEFAULT_SIZE // 2:
            raise ConfigError('TrainOptions needs lr > 0, weight_decay >= 0 and 0 <= shift < 16, got %r'
                              % (self,))


def shift_images(x, shift, generator):
    """Each image moved by a random (dy, dx) in [-shift, shift] pixels, zero-filled."""
    if shift == 0:
        return x
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (shift, shift, shift, shift))
    d = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, d[i, 0]:d[i, 0] + h, d[i, 1]:d[i, 1] + w] for i in range(n)])


def batches(x, y, batch, shuffle=False, generator=None, shift=0):
    """(images, labels) tensors of ``batch`` samples (the last one smaller), optionally shuffled and
    shifted."""
    order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    for i in range(0, len(x), batch):
        idx = order[i:i + batch]
        xb = x[idx]
        yield (shift_images(xb, shift, generator) if shift else xb), y[idx]


class EpochBatches:
    """A re-iterable of shuffled, augmented training batches (a new order every pass), for
    :func:`qvision_ros.quantization.qat.fine_tune` too."""

    def __init__(self, x, y, batch, shift=0, seed=0):
        self.x, self.y, self.batch, self.shift = x, y, batch, shift
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return math.ceil(len(self.x) / self.batch)

    def __iter__(self):
        return batches(self.x, self.y, self.batch, True, self.generator, self.shift)


@torch.no_grad()
def torch_accuracy(model, x, y, batch=256):
    """Top-1 accuracy of a PyTorch model (eval mode) on arrays ``x``, ``y``."""
    was = model.training
    model.eval()
    correct = 0
    for xb, yb in batches(x, y, batch):
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train(was)
    return correct / len(x)


def engine_accuracy(engine, x, y):
    """Top-1 accuracy of an :class:`qvision_ros.runtime.Engine` (batch-1 model) on ``x``, ``y``."""
    name = engine.inputs[0].name
    correct = 0
    for i in range(len(x)):
        (logits,) = engine.run({name: x[i:i + 1]})
        correct += int(np.argmax(logits[0]) == y[i])
    return correct / len(x)


def train(data, options=None, progress=None):
    """Train a :class:`DigitsVGG` on ``data.x_train``; returns (model in eval mode, list of mean epoch
    losses).  ``progress``: a callable taking one line of text per epoch (None: quiet)."""
    options = options or TrainOptions()
    options.check()
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        torch.manual_seed(options.seed)
        model = DigitsVGG()
        opt = torch.optim.SGD(model.parameters(), lr=options.lr, momentum=0.9, nesterov=True,
                              weight_decay=options.weight_decay)
        loader = EpochBatches(data.x_train, data.y_train, options.batch, options.shift, options.seed)
        total, step, losses = options.epochs * len(loader), 0, []
        start = time.perf_counter()
        for epoch in range(options.epochs):
            model.train()
            running, n = 0.0, 0
            for xb, yb in loader:
                for g in opt.param_groups:
                    g['lr'] = options.lr * 0.5 * (1 + math.cos(math.pi * step / total))
                loss = nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                running += float(loss.detach()) * len(xb)
                n += len(xb)
                step += 1
            losses.append(running / n)
            if progress is not None:
                progress('epoch %d/%d  loss %.4f  %.0f s' % (epoch + 1, options.epochs, losses[-1],
                                                             time.perf_counter() - start))
    finally:
        torch.set_num_threads(threads)
    return model.eval(), losses


def export_onnx(model, path, size=DEFAULT_SIZE, opset=17):
    """Float ONNX of ``model`` (a copy, eval mode; batch norms folded by the exporter's constant folding):
    ``images`` [1, 1, size, size] -> ``logits`` [1, 10].  Returns ``path`` (a file name or file object)."""
    model = copy.deepcopy(model).eval()
    if isinstance(path, (str, os.PathLike)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')     # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, 1, size, size),), path, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                          do_constant_folding=True)
    return path


def save_checkpoint(model, path, extra=None):
    torch.save({'state_dict': model.state_dict(), 'extra': extra or {}}, path)


def load_checkpoint(path):
    """A :class:`DigitsVGG` (eval mode) from :func:`save_checkpoint`'s file (never unpickles code)."""
    blob = torch.load(path, map_location='cpu', weights_only=True)
    model = DigitsVGG()
    model.load_state_dict(blob['state_dict'])
    return model.eval()


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m qvision_ros.training.digits', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', required=True, help='output folder (created): digits_fp32.onnx, digits.pt, '
                                                'metrics.json')
    d = TrainOptions()
    p.add_argument('--epochs', type=int, default=d.epochs)
    p.add_argument('--batch', type=int, default=d.batch)
    p.add_argument('--lr', type=float, default=d.lr)
    p.add_argument('--seed', type=int, default=d.seed)
    p.add_argument('--threads', type=int, default=d.threads, help='PyTorch threads (training and engine)')
    args = p.parse_args(argv)
    options = TrainOptions(epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed, threads=args.threads)
    try:
        options.check()
    except ConfigError as e:
        p.error(str(e))
    from ..runtime import Engine

    data = load_data()
    start = time.perf_counter()
    model, losses = train(data, options, progress=lambda line: print(line, file=sys.stderr, flush=True))
    seconds = time.perf_counter() - start
    os.makedirs(args.out, exist_ok=True)
    onnx_path = export_onnx(model, os.path.join(args.out, 'digits_fp32.onnx'))
    save_checkpoint(model, os.path.join(args.out, 'digits.pt'), asdict(options))
    result = {'train_seconds': round(seconds, 1), 'torch_test_accuracy': torch_accuracy(model, data.x_test, data.y_test),
              'engine_test_accuracy': engine_accuracy(Engine(onnx_path, num_threads=args.threads), data.x_test,
                                                      data.y_test),
              'train_images': len(data.x_train), 'test_images': len(data.x_test), 'losses': losses,
              'options': asdict(options)}
    with open(os.path.join(args.out, 'metrics.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print('trained in %.0f s; test accuracy %.4f (PyTorch), %.4f (Engine, fp32); wrote %s'
          % (seconds, result['torch_test_accuracy'], result['engine_test_accuracy'], onnx_path))
    return 0


if __name__ == '__main__':
    sys.exit(main())
