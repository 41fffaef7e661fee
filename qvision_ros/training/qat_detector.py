"""Quantization-aware fine-tuning of the shipped detector: the QAT row of paper 2's table.

    python -m qvision_ros.training.qat_detector --out runs/detector_qat

1. The float weights are read back from ``qvision_ros/data/detector_320.onnx`` (its initializers carry
   the names of the fused model's state dict: :func:`detector_from_onnx`), checked against ONNX Runtime.
2. :func:`qvision_ros.quantization.qat.prepare_qat` on the network (``--bits`` weights, uint8
   activations); the decode (:class:`.model.DecodedDetector`: DFL softmax, box arithmetic, concatenation of
   boxes and scores, the final sigmoid) wraps the prepared network and stays float, and so does the
   concatenation of box and class logits at the end of the head (nothing int8 reads it).
3. Calibration on ``--calib-images`` training scenes: this alone is the PTQ row (min/max ranges).
4. Fine-tuning with the fake quantisers on: AdamW, cosine learning rate, the detector's own losses, fresh
   synthetic training scenes (seed ``--seed``, epochs 1000 and up: scenes the float training never drew),
   for ``--iterations`` steps of ``--batch`` images or ``--time-limit`` minutes, whichever comes first.
5. Export as QDQ ONNX (``detector_320.qat.onnx`` and ``detector_320.ptq.onnx`` in ``--out``) and evaluation
   of FP32, PTQ and QAT on our Engine (``--threads``, 1 by default): mAP@0.5 on ``--val-images`` held-out
   scenes of ``--val-seed`` (the validation set of the shipped model's card:
   :func:`.data.validation_set`, :mod:`.metrics`, decoded by ``qvision_ros.vision.Decoder``), model
   sizes and the median single-image latency (the three models measured in turns).  ``metrics.json``
   holds every figure; the table is printed.
"""
import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

from .. import synthetic
from ..errors import ModelError

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data',
                             'detector_320.onnx')
IMAGE_SIZE = 320
FINE_TUNE_EPOCH_BASE = 1000      # training-scene epochs drawn for calibration and fine-tuning


def detector_from_onnx(path, widths=(16, 32, 48, 96, 128), reg_max=16, box_width=32, cls_width=48):
    """The fused :class:`.model.Detector` (batch norms folded, eval mode) whose weights are the
    initializers of an ONNX file written by :func:`.export.export_onnx` (names ``detector.<state dict
    key>``).  The architecture arguments default to the shipped model's; the number of classes is read
    from the output shape.  Raises ModelError when a tensor is missing or has another shape."""
    import onnx
    import torch
    from onnx import numpy_helper

    from .model import Detector

    proto = onnx.load(path)
    dims = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    if len(dims) != 3 or dims[1] <= 4:
        raise ModelError('%s: expected an output [1, 4 + classes, anchors], got %s' % (path, dims))
    det = Detector(num_classes=dims[1] - 4, widths=widths, reg_max=reg_max, box_width=box_width,
                   cls_width=cls_width, image_size=IMAGE_SIZE).fuse().eval()
    inits = {t.name: t for t in proto.graph.initializer}
    state = {}
    for key, value in det.state_dict().items():
        t = inits.get('detector.' + key)
        if t is None:
            raise ModelError('%s has no initializer detector.%s (not exported by qvision_ros.training.export '
                             'with these widths?)' % (path, key))
        array = numpy_helper.to_array(t)
        if tuple(array.shape) != tuple(value.shape):
            raise ModelError('%s: detector.%s has shape %s, the model expects %s'
                             % (path, key, array.shape, tuple(value.shape)))
        state[key] = torch.from_numpy(array.copy())
    det.load_state_dict(state)
    return det


class _SceneBatches:
    """Batches (images, (labels, boxes, mask)) of fresh augmented training scenes, a new epoch of scenes
    per pass; a length, so that fine_tune can schedule its learning rate."""

    def __init__(self, images_per_epoch, batch, seed, epoch_base):
        from .data import make_dataset
        self.dataset = make_dataset(images_per_epoch, seed, IMAGE_SIZE, augment=True, fresh=True)
        self.batch, self.seed, self.epoch = batch, seed, epoch_base

    def __len__(self):
        return len(self.dataset) // self.batch

    def __iter__(self):
        import torch

        from .data import collate
        self.dataset.set_epoch(self.epoch)
        gen = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        self.epoch += 1
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.batch, shuffle=True, generator=gen,
                                             collate_fn=collate, drop_last=True)
        for images, labels, boxes, mask in loader:
            yield images, (labels, boxes, mask)


def evaluate(engine, val):
    """(mAP@0.5 result dict, per-layer precision counts) of an :class:`qvision_ros.runtime.Engine` on the
    validation images."""
    from .data import to_tensor_batch
    from .train import map_of_outputs

    name = engine.inputs[0].name
    outs = [engine.run({name: to_tensor_batch([img]).numpy()})[0] for img, _, _ in val]
    result = map_of_outputs(np.concatenate(outs), [(b, lab) for _, b, lab in val], len(synthetic.CLASSES))
    x0 = to_tensor_batch([val[0][0]]).numpy()
    records = engine.profile({name: x0}, repeat=1)
    layers = [r for r in records if r.op in ('QConv', 'Conv')]
    precision = {'int8_convs': sum(r.precision == 'int8' for r in layers), 'convs': len(layers)}
    return result, precision


def markdown(rows):
    lines = ['| model | ONNX file (bytes) | weights (bytes) | val mAP@0.5 | latency, ms (median) | int8 convs |',
             '|---|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append('| %s | %d | %d | %.4f | %.2f | %d / %d |' % (
            r['model'], r['onnx_bytes'], r['weight_bytes'], r['map50'], r['latency_ms'], r['int8_convs'],
            r['convs']))
    return '\n'.join(lines)


def _parse(argv):
    p = argparse.ArgumentParser(prog='python -m qvision_ros.training.qat_detector',
                                description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', required=True, help='output folder (created)')
    p.add_argument('--model', default=DEFAULT_MODEL, help='float detector ONNX (qvision_ros.training.export)')
    p.add_argument('--bits', type=int, default=8, choices=(8, 4, 2), help='weight bits')
    p.add_argument('--iterations', type=int, default=400, help='fine-tuning steps')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--epochs', type=int, default=2,
                   help='passes the steps are split into (fresh scenes each; ranges frozen in the last)')
    p.add_argument('--lr', type=float, default=1e-4, help='peak AdamW learning rate (cosine to 0)')
    p.add_argument('--weight-decay', type=float, default=5e-4)
    p.add_argument('--time-limit', type=float, default=10.0, help='fine-tuning minutes at most (0: none)')
    p.add_argument('--calib-images', type=int, default=64)
    p.add_argument('--val-images', type=int, default=500)
    p.add_argument('--val-seed', type=int, default=1)
    p.add_argument('--seed', type=int, default=0, help='seed of the training scenes')
    p.add_argument('--threads', type=int, default=1, help='PyTorch, OpenCV and Engine threads')
    p.add_argument('--latency-runs', type=int, default=100)
    args = p.parse_args(argv)
    for name in ('iterations', 'batch', 'epochs', 'calib_images', 'val_images', 'threads', 'latency_runs'):
        if getattr(args, name) < 1:
            p.error('--%s must be >= 1' % name.replace('_', '-'))
    if args.iterations < args.epochs:
        p.error('--iterations must be at least --epochs')
    return args


def run(argv=None):
    """Fine-tune, export and evaluate (module docstring); returns the summary written to metrics.json."""
    args = _parse(argv)
    import cv2
    import torch

    from ..quantization import qat
    from ..quantization.bitwidth import interleaved_latency_ms, weight_storage_bytes
    from ..runtime import Engine
    from .data import to_tensor_batch, training_sample, validation_set
    from .loss import DetectionLoss
    from .model import DecodedDetector

    def log(line):
        print(line, file=sys.stderr, flush=True)

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()
    det = detector_from_onnx(args.model)
    val = validation_set(args.val_images, args.val_seed, IMAGE_SIZE)
    x_check = to_tensor_batch([v[0] for v in val[:2]])
    with torch.no_grad():
        reference = DecodedDetector(det, IMAGE_SIZE).eval()(x_check).numpy()
    import onnxruntime as ort
    sess = ort.InferenceSession(args.model, providers=['CPUExecutionProvider'])
    diff = max(float(np.abs(sess.run(None, {'images': x_check[i:i + 1].numpy()})[0] - reference[i:i + 1]).max())
               for i in range(len(x_check)))
    if diff > 1e-2:
        raise ModelError('weights read back from %s do not reproduce it (max difference %.3g)' % (args.model, diff))
    log('float weights from %s (max |torch - onnxruntime| %.2e); %d validation images'
        % (args.model, diff, len(val)))

    calib_images = [training_sample(args.seed, FINE_TUNE_EPOCH_BASE - 1, i, IMAGE_SIZE)[0]
                    for i in range(args.calib_images)]
    calib = [to_tensor_batch(calib_images[i:i + 8]) for i in range(0, len(calib_images), 8)]
    example = x_check[:1]

    def prepared():
        q = qat.prepare_qat(det, weight_bits=args.bits, calibration=calib)
        q.num_classes, q.reg_max = det.num_classes, det.reg_max       # read by DecodedDetector and the loss
        return q

    def export(qnet, name):
        path = os.path.join(args.out, name)
        qat.export_qdq(DecodedDetector(qnet, IMAGE_SIZE).eval(), path, example, output_names=('output0',))
        return path

    t0 = time.perf_counter()
    ptq_path = export(prepared(), 'detector_%d.ptq_w%d.onnx' % (IMAGE_SIZE, args.bits))
    ptq_seconds = time.perf_counter() - t0
    qnet = prepared()
    criterion = DetectionLoss(det.num_classes, det.reg_max)
    per_epoch = args.iterations // args.epochs
    loader = _SceneBatches(per_epoch * args.batch, args.batch, args.seed, FINE_TUNE_EPOCH_BASE)
    options = qat.FineTuneOptions(epochs=args.epochs, lr=args.lr, optimizer=qat.OptimizerKind.ADAMW,
                                  weight_decay=args.weight_decay, clip_grad_norm=10.0,
                                  time_limit_s=args.time_limit * 60 if args.time_limit > 0 else None)
    t0 = time.perf_counter()
    log('fine-tuning: %d steps of %d images at most, %s' % (per_epoch * args.epochs, args.batch,
                                                          'no time limit' if not args.time_limit
                                                          else '%.1f min at most' % args.time_limit))
    steps = []

    def loss_fn(raw, targets):
        steps.append(1)
        return criterion(raw, *targets)[0]

    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        losses = qat.fine_tune(qnet, loader, loss_fn, options, progress=True)
    qat_seconds = time.perf_counter() - t0
    qat_path = export(qnet, 'detector_%d.qat_w%d.onnx' % (IMAGE_SIZE, args.bits))
    log('fine-tuned %d steps in %.0f s, epoch losses %s' % (len(steps), qat_seconds,
                                                            ['%.4f' % v for v in losses]))

    rows, engines = [], []
    for label, path, seconds in (('FP32', args.model, 0.0), ('PTQ (min/max, %d-bit weights)' % args.bits, ptq_path,
                                                               ptq_seconds),
                                 ('QAT (%d-bit weights)' % args.bits, qat_path, qat_seconds)):
        engines.append(Engine(path, num_threads=args.threads))
        result, precision = evaluate(engines[-1], val)
        with open(path, 'rb') as f:
            blob = f.read()
        rows.append(dict(model=label, onnx_bytes=len(blob),
                         weight_bytes=weight_storage_bytes(blob, 32 if label == 'FP32' else args.bits),
                         map50=result['map'], ap50=result['ap'], seconds=seconds, **precision))
        log('%s: mAP@0.5 %.4f' % (label, result['map']))
    for row, ms in zip(rows, interleaved_latency_ms(engines, x_check[:1].numpy(), args.latency_runs, blocks=5)):
        row['latency_ms'] = ms
    table = markdown(rows)
    print(table)
    summary = {'rows': rows, 'markdown': table, 'fine_tune_losses': losses, 'steps_planned': per_epoch * args.epochs,
               'steps_run': len(steps), 'fine_tune_seconds': qat_seconds,
               'onnxruntime_check': diff, 'args': vars(args), 'total_seconds': time.perf_counter() - t_start,
               'torch': torch.__version__, 'load_average': os.getloadavg() if hasattr(os, 'getloadavg') else None}
    with open(os.path.join(args.out, 'metrics.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv=None):
    run(argv)
    return 0


if __name__ == '__main__':
    sys.exit(main())
