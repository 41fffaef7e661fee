"""Train the embedded default detector on synthetic road scenes, on CPU.

    python -m qvision_ros.training.train --out runs/detector

(the defaults are the recipe of the shipped ``qvision_ros/data/detector_320.onnx``; its MODEL_CARD.md gives
the full command).  What it does: renders ``--images`` training scenes per epoch (fresh every epoch, or
one set rendered once with ``--fixed-scenes``), at ``--low-res`` for the first part of the schedule,
trains :class:`.model.Detector` with AdamW, a linear warm-up and a cosine learning rate, an exponential
moving average of the weights, and the task-aligned losses of :mod:`.loss`; every ``--val-every`` epochs
it measures mAP@0.5 (VOC-style, :mod:`.metrics`) of the averaged weights (after the last epoch, of the raw
weights too) on ``--val-images`` held-out scenes of ``--val-seed`` (the images
``qvision_ros.synthetic.generate_dataset(dir, n, seed=val_seed)`` writes) and keeps the best.  At the end it exports the best weights to ``<out>/detector_<size>.onnx`` with
``labels.txt``, checks the ONNX file against PyTorch with ONNX Runtime (when installed) and measures its
mAP through ``qvision_ros.vision.Decoder`` - the figure to quote.  ``<out>/metrics.json`` holds every
figure and ``<out>/train.log`` the progress.

``--time-limit`` (minutes, counted from the start, data rendering included) stops training after the
iteration that passes it and still validates and exports the best epoch; the learning-rate schedule then
follows whichever runs out first, the planned epochs or the time, so that it always ends annealed.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

from .. import synthetic

DEFAULT_SCORE_THRESHOLD = 0.001   # for mAP: keep nearly every candidate
DEFAULT_NMS_IOU = 0.6


def _parse(argv):
    p = argparse.ArgumentParser(prog='qvision-train-detector', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', required=True, help='output folder (created)')
    p.add_argument('--epochs', type=int, default=12)
    p.add_argument('--images', type=int, default=2000, help='training scenes per epoch')
    p.add_argument('--fresh-scenes', dest='fresh_scenes', action='store_true', default=True,
                   help='new scenes every epoch (the default)')
    p.add_argument('--fixed-scenes', dest='fresh_scenes', action='store_false',
                   help='one set of scenes, rendered once before training and reused every epoch')
    p.add_argument('--val-images', type=int, default=500)
    p.add_argument('--seed', type=int, default=0, help='seed of the training scenes, augmentation and init')
    p.add_argument('--val-seed', type=int, default=1, help='seed of the validation scenes')
    p.add_argument('--imgsz', type=int, default=320, help='network input size (square)')
    p.add_argument('--low-res', type=int, default=-1,
                   help='train at this smaller size first (multiple of 32; 0: off; -1: 4/5 of --imgsz rounded '
                        'down to a multiple of 32, off under 64) - cheaper early epochs')
    p.add_argument('--low-res-fraction', type=float, default=0.45,
                   help='part of the schedule trained at --low-res (epochs starting before it)')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--lr', type=float, default=2e-3, help='peak AdamW learning rate')
    p.add_argument('--final-lr', type=float, default=0.05, help='final learning rate as a fraction of --lr')
    p.add_argument('--weight-decay', type=float, default=5e-4)
    p.add_argument('--warmup', type=int, default=200, help='warm-up iterations')
    p.add_argument('--widths', default='16,32,48,96,128', help='channels of stem, P2, P3, P4, P5')
    p.add_argument('--reg-max', type=int, default=16, help='DFL bins per box side')
    p.add_argument('--no-ema', action='store_true', help='evaluate and export the raw weights')
    p.add_argument('--threads', type=int, default=1, help='PyTorch (and OpenCV) threads')
    p.add_argument('--workers', type=int, default=0,
                   help='extra processes rendering scenes (0: render in the training process)')
    p.add_argument('--time-limit', type=float, default=0.0, help='stop training after this many minutes (0: none)')
    p.add_argument('--val-every', type=int, default=2, help='validate every N epochs (and after the last)')
    args = p.parse_args(argv)
    for name in ('epochs', 'images', 'batch', 'threads', 'imgsz', 'val_images', 'val_every'):
        if getattr(args, name) < 1:
            p.error('--%s must be >= 1' % name.replace('_', '-'))
    if args.imgsz % 32:
        p.error('--imgsz must be a multiple of 32')
    if args.low_res < 0:
        args.low_res = args.imgsz * 4 // 5 // 32 * 32
        args.low_res = args.low_res if args.low_res >= 64 else 0
    if args.low_res and (args.low_res % 32 or not 64 <= args.low_res <= args.imgsz):
        p.error('--low-res must be a multiple of 32 between 64 and --imgsz')
    try:
        args.widths = tuple(int(v) for v in args.widths.split(','))
    except ValueError:
        p.error('--widths must be 5 integers separated by commas')
    if len(args.widths) != 5 or min(args.widths) < 2 or any(v % 2 for v in args.widths):
        p.error('--widths must be 5 even integers >= 2')
    return args


class _Log:
    """Prints progress lines (flushed) and appends them to a file."""

    def __init__(self, path):
        self.f = open(path, 'a')

    def __call__(self, msg):
        print(msg, flush=True)
        self.f.write(msg + '\n')
        self.f.flush()

    def close(self):
        self.f.close()


class ModelEMA:
    """Exponential moving average of a model's weights and buffers, ``decay * (1 - exp(-updates / tau))``
    (a short memory at the start, when the weights move fast)."""

    def __init__(self, model, decay=0.999, tau=200):
        import copy
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    def update(self, model):
        import torch
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        with torch.no_grad():
            current = model.state_dict()
            for k, v in self.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(current[k].detach(), alpha=1 - d)
                else:
                    v.copy_(current[k])


def _render_range(task):
    seed, start, stop, size = task
    from .data import render_training_scene
    return [render_training_scene(seed, i, size) for i in range(start, stop)]


def prerender(n_images, seed, size, workers):
    """The fixed training scenes, rendered by ``workers`` processes (0: here)."""
    from .data import render_training_scene
    if workers <= 0:
        return [render_training_scene(seed, i, size) for i in range(n_images)]
    import multiprocessing as mp
    chunk = max(1, math.ceil(n_images / (workers * 4)))
    tasks = [(seed, s, min(n_images, s + chunk), size) for s in range(0, n_images, chunk)]
    with mp.get_context('spawn').Pool(workers, initializer=_worker_init) as pool:
        parts = pool.map(_render_range, tasks)
    return [scene for part in parts for scene in part]


def _worker_init(*_):
    import cv2
    cv2.setNumThreads(1)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


def predict(detector, images, image_size, batch=16):
    """Decoded network outputs ``[N, 4 + nc, A]`` (float32 NumPy) of RGB uint8 images, in eval mode."""
    import torch
    from .data import to_tensor_batch
    from .model import DecodedDetector
    was_training = detector.training
    model = DecodedDetector(detector.eval(), image_size).eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            outs.append(model(to_tensor_batch(images[i:i + batch])).numpy())
    detector.train(was_training)
    return np.concatenate(outs)


def map_of_outputs(outputs, ground_truth, num_classes):
    """mAP@0.5 of decoded network outputs through ``qvision_ros.vision.Decoder`` (boxes in network
    pixels: validation images are network-sized)."""
    from ..vision import Decoder
    from .metrics import evaluate_map
    dec = Decoder(kind='yolov8', num_classes=num_classes, score_threshold=DEFAULT_SCORE_THRESHOLD,
                  nms_iou_threshold=DEFAULT_NMS_IOU, max_detections=100)
    dets = []
    for i in range(0, len(outputs), 64):
        dets.extend(dec(outputs[i:i + 64]))
    return evaluate_map(dets, ground_truth, num_classes, 0.5)


def _param_groups(model, weight_decay):
    import torch
    decay, no_decay = [], []
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if name == 'weight' and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                decay.append(p)
            else:
                no_decay.append(p)
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


def train(args):
    import cv2
    import torch

    from .data import collate, make_dataset, validation_set
    from .export import (export_onnx, onnxruntime_outputs, save_checkpoint, torch_outputs, write_labels,
                         load_checkpoint)
    from .loss import DetectionLoss
    from .model import Detector, count_parameters

    os.makedirs(args.out, exist_ok=True)
    log = _Log(os.path.join(args.out, 'train.log'))
    t_start = time.time()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    torch.manual_seed(args.seed)
    nc = len(synthetic.CLASSES)
    command = 'python -m qvision_ros.training.train ' + ' '.join(sys.argv[1:] if args.argv is None else args.argv)
    log('command: %s' % command)
    log('torch %s, %d thread(s), %d worker process(es)' % (torch.__version__, args.threads, args.workers))

    model = Detector(num_classes=nc, widths=args.widths, reg_max=args.reg_max, image_size=args.imgsz)
    log('model: widths %s, reg_max %d, %d parameters' % (args.widths, args.reg_max, count_parameters(model)))
    ema = None if args.no_ema else ModelEMA(model)

    t0 = time.time()
    val = validation_set(args.val_images, args.val_seed, args.imgsz)
    val_gt = [(b, lab) for _, b, lab in val]
    scenes = None
    if not args.fresh_scenes:
        scenes = prerender(args.images, args.seed, args.imgsz, args.workers)
    log('data: %d validation images (seed %d), %d training scenes (%s), rendered in %.1f s'
        % (len(val), args.val_seed, args.images, 'fresh every epoch' if args.fresh_scenes else 'fixed',
           time.time() - t0))
    dataset = make_dataset(args.images, args.seed, args.imgsz, augment=True, fresh=args.fresh_scenes,
                           scenes=scenes)
    loader_workers = args.workers if args.fresh_scenes else 0

    optimizer = torch.optim.AdamW(_param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.999))
    criterion = DetectionLoss(nc, args.reg_max)
    iters_per_epoch = math.ceil(args.images / args.batch)
    total_iters = iters_per_epoch * args.epochs
    warmup = min(args.warmup, max(1, total_iters // 3))

    def lr_at(it, now=None):
        """Linear warm-up, then a cosine from --lr to --final-lr x --lr over whichever runs out first:
        the planned iterations or the time limit."""
        if it < warmup:
            return args.lr * (0.1 + 0.9 * it / warmup)
        t = (it - warmup) / max(1, total_iters - warmup)
        if deadline is not None and now is not None:
            t = max(t, (now - t_train) / max(1.0, deadline - t_train))
        t = min(1.0, t)
        return args.lr * (args.final_lr + (1 - args.final_lr) * 0.5 * (1 + math.cos(math.pi * t)))

    history, best_map, best_epoch, it, stopped = [], -1.0, -1, 0, False
    best_path = os.path.join(args.out, 'best.pt')
    deadline = t_start + args.time_limit * 60 if args.time_limit > 0 else None
    t_train = time.time()
    for epoch in range(args.epochs):
        progress = it / total_iters
        if deadline is not None:
            progress = max(progress, (time.time() - t_train) / max(1.0, deadline - t_train))
        size = args.low_res if args.low_res and progress < args.low_res_fraction else args.imgsz
        dataset.set_epoch(epoch, size)
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, generator=gen,
                                             collate_fn=collate, num_workers=loader_workers,
                                             worker_init_fn=_worker_init if loader_workers else None,
                                             drop_last=len(dataset) >= args.batch)
        model.train()
        t_epoch = time.time()
        sums, n_batches = torch.zeros(3), 0
        for images, labels, boxes, mask in loader:
            if deadline is not None and time.time() > deadline:
                stopped = True
                break
            lr = lr_at(it, time.time())
            for group in optimizer.param_groups:
                group['lr'] = lr
            loss, parts = criterion(model(images), labels, boxes, mask)
            if not torch.isfinite(loss):
                raise RuntimeError('loss is not finite at iteration %d (parts %s)' % (it, parts.tolist()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            sums += parts
            n_batches += 1
            it += 1
            if n_batches % 50 == 0:
                m = sums / n_batches
                log('  epoch %d iter %d/%d  box %.4f cls %.4f dfl %.4f  %.2f img/s'
                    % (epoch + 1, n_batches, iters_per_epoch, m[0], m[1], m[2],
                       n_batches * args.batch / (time.time() - t_epoch)))
        if n_batches == 0:
            break
        m = (sums / n_batches).tolist()
        total = criterion.gains[0] * m[0] + criterion.gains[1] * m[1] + criterion.gains[2] * m[2]
        record = {'epoch': epoch + 1, 'size': size, 'iterations': it, 'loss': total, 'box': m[0], 'cls': m[1],
                  'dfl': m[2], 'lr': lr, 'epoch_seconds': time.time() - t_epoch,
                  'elapsed_seconds': time.time() - t_start}
        last = epoch == args.epochs - 1 or stopped
        if (epoch + 1) % args.val_every == 0 or last:
            t_val = time.time()
            evaluated = ema.ema if ema is not None else model
            result = map_of_outputs(predict(evaluated, [v[0] for v in val], args.imgsz), val_gt, nc)
            record.update({'val_map50': result['map'], 'val_ap50': result['ap'], 'val_seconds': time.time() - t_val})
            if result['map'] > best_map:
                best_map, best_epoch = result['map'], epoch + 1
                save_checkpoint(best_path, evaluated, {'epoch': epoch + 1, 'val_map50': result['map'],
                                                       'weights': 'ema' if ema is not None else 'raw'})
            if last and ema is not None:
                # The average lags the weights; at the end of the schedule either may be better.
                raw = map_of_outputs(predict(model, [v[0] for v in val], args.imgsz), val_gt, nc)
                record['val_map50_raw'] = raw['map']
                if raw['map'] > best_map:
                    best_map, best_epoch = raw['map'], epoch + 1
                    save_checkpoint(best_path, model, {'epoch': epoch + 1, 'val_map50': raw['map'], 'weights': 'raw'})
        history.append(record)
        log('epoch %d/%d  size %d  loss %.4f (box %.4f cls %.4f dfl %.4f)  lr %.2e  %.0f s (total %.0f s)%s'
            % (epoch + 1, args.epochs, size, total, m[0], m[1], m[2], record['lr'], record['epoch_seconds'],
               record['elapsed_seconds'],
               '  val mAP@0.5 %.4f (%s)%s' % (record['val_map50'], ' '.join('%.3f' % a for a in record['val_ap50']),
                                              '; raw weights %.4f' % record['val_map50_raw']
                                              if 'val_map50_raw' in record else '')
               if 'val_map50' in record else ''))
        save_checkpoint(os.path.join(args.out, 'last.pt'), ema.ema if ema is not None else model, {'epoch': epoch + 1})
        if stopped:
            log('time limit of %.1f min reached during epoch %d' % (args.time_limit, epoch + 1))
            break
    train_seconds = time.time() - t_start

    best, extra = load_checkpoint(best_path)
    onnx_path = export_onnx(best, os.path.join(args.out, 'detector_%d.onnx' % args.imgsz), args.imgsz,
                            names=synthetic.CLASSES)
    write_labels(os.path.join(args.out, 'labels.txt'), synthetic.CLASSES)
    summary = {'command': command, 'seed': args.seed, 'val_seed': args.val_seed, 'val_images': len(val),
               'train_images_per_epoch': args.images, 'fresh_scenes': args.fresh_scenes, 'low_res': args.low_res,
               'epochs_run': len(history), 'iterations': it, 'threads': args.threads, 'workers': args.workers,
               'train_seconds': train_seconds, 'parameters': count_parameters(best), 'widths': list(args.widths),
               'reg_max': args.reg_max, 'best_epoch': best_epoch, 'best_weights': extra.get('weights'),
               'val_map50_torch': best_map,
               'final_loss': history[-1]['loss'] if history else None, 'onnx': os.path.basename(onnx_path),
               'onnx_bytes': os.path.getsize(onnx_path), 'torch_version': torch.__version__,
               'classes': list(synthetic.CLASSES), 'history': history}
    x = np.stack([v[0] for v in val[:8]]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    try:
        import onnxruntime  # noqa: F401  (optional: the test extra)
    except ImportError:
        log('onnxruntime not installed: ONNX file not checked')
    else:
        diff = float(np.abs(onnxruntime_outputs(onnx_path, x) - torch_outputs(best, x, args.imgsz)).max())
        images = np.stack([v[0] for v in val]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        result = map_of_outputs(onnxruntime_outputs(onnx_path, images, args.threads), val_gt, nc)
        summary.update({'onnx_max_abs_diff': diff, 'val_map50_onnx': result['map'], 'val_ap50_onnx': result['ap'],
                        'val_recall_onnx': result['recall'], 'val_num_gt': result['num_gt']})
        log('ONNX Runtime: max |onnx - torch| = %.2e; val mAP@0.5 %.4f (%s)'
            % (diff, result['map'], ' '.join('%s %.3f' % (n, a) for n, a in zip(synthetic.CLASSES, result['ap']))))
    with open(os.path.join(args.out, 'metrics.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    log('best: epoch %d (%s weights), val mAP@0.5 %.4f; training %.0f s; wrote %s (%d bytes) and labels.txt'
        % (best_epoch, extra.get('weights'), best_map, train_seconds, onnx_path, summary['onnx_bytes']))
    log.close()
    return summary


def run(argv=None):
    """Parse the command line ``argv`` and train; returns the summary dict (also written to
    ``<out>/metrics.json``)."""
    args = _parse(argv)
    args.argv = argv
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit('training needs PyTorch: pip install qvision_ros[train] (torch)')
    return train(args)


def main(argv=None):
    """Console entry point (``sys.exit(main())``): 0 on success."""
    run(argv)
    return 0


if __name__ == '__main__':
    sys.exit(main())
