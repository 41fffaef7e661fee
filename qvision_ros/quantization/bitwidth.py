"""Paper 3's bit-width table for the VGG-style digits classifier (:mod:`qvision_ros.training.digits`):
FP32, then 8-, 4- and 2-bit weights (uint8 activations), each by post-training quantisation and by
quantization-aware training, all run on our Engine.

    python -m qvision_ros.quantization.bitwidth [--json table.json] [--out DIR] [--checkpoint digits.pt]

Rows: FP32 (the float ONNX on the engine's fp32 kernels); ``PTQ n-bit`` - fake-quantisation ranges from
calibration batches of training images, no fine-tuning (:func:`qat.prepare_qat` + :func:`qat.calibrate`);
``QAT n-bit`` - the same start, then ``--qat-epochs`` of fine-tuning with the fake quantisers on
(:func:`qat.fine_tune`).  Every quantised model is exported the same way (:func:`qat.export_qdq`: a QDQ
ONNX file with int8 initializers holding n-bit values) and run by :class:`qvision_ros.runtime.Engine` on
its int8 kernels.

Columns: ``weights`` - storage of the layers' parameters with the weights packed at n bits:
``ceil(count * n / 8)`` bytes of weights + 4 bytes per per-channel float32 scale + 4 bytes per bias
(int32 at run time); FP32: 4 bytes per weight and bias.  ``ONNX file`` - the size of the exported file
(ONNX has no packed 4- or 2-bit type: the n-bit values sit in int8 tensors there).  ``accuracy`` - top-1
on the fixed test split run through the Engine (and through PyTorch's fake-quantised model, the
cross-check).  ``latency`` - median of single-image Engine runs on ``--threads`` threads (1 by default),
the models measured in turns (:func:`interleaved_latency_ms`) so that they share the machine's load.
"""
import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import List, Optional

import numpy as np

from ..errors import ConfigError

# DequantizeLinear-fed layers whose parameters count as weights
_LAYER_OPS = ('Conv', 'Gemm', 'MatMul')


@dataclass
class Row:
    """One line of the table."""
    method: str                     # 'FP32', 'PTQ' or 'QAT'
    weight_bits: int                # 32 for FP32
    weight_bytes: int
    onnx_bytes: int
    engine_accuracy: float
    torch_accuracy: float
    latency_ms: float
    int8_layers: int                # convolution / fully-connected steps the engine runs on int8 kernels
    layers: int
    seconds: float                  # time to produce the model (calibration / fine-tuning / export)


def weight_storage_bytes(model, bits):
    """Bytes of the layers' parameters of an ONNX model (bytes or a path) with the quantised weights
    packed at ``bits``:
    for each Conv / Gemm / MatMul, an int8 weight (DequantizeLinear of an initializer) counts
    ``ceil(count * bits / 8)`` plus 4 per scale, a float weight 4 per value, a bias 4 per value.  Raises
    ConfigError when a quantised weight does not fit in ``bits`` (symmetric range)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    inits = {t.name: t for t in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    qmax = 2 ** (bits - 1) - 1
    total = 0
    for node in proto.graph.node:
        if node.op_type not in _LAYER_OPS:
            continue
        for k, name in enumerate(node.input[1:3], start=1):
            if not name:
                continue
            dq = producers.get(name)
            if k == 1 and dq is not None and dq.op_type == 'DequantizeLinear' and dq.input[0] in inits:
                q = numpy_helper.to_array(inits[dq.input[0]])
                if q.dtype == np.int8 and np.abs(q.astype(np.int16)).max(initial=0) > qmax:
                    raise ConfigError('weight of %s has values outside the %d-bit range [-%d, %d]'
                                      % (node.name, bits, qmax, qmax))
                scales = numpy_helper.to_array(inits[dq.input[1]]).size
                total += math.ceil(q.size * bits / 8) + 4 * scales
            elif name in inits:
                total += 4 * int(np.prod(inits[name].dims, dtype=np.int64))
    return total


def interleaved_latency_ms(engines, x, runs=200, blocks=10, warmup=3):
    """Median wall time in milliseconds of single runs of each engine on ``x``: ``runs`` per engine, taken
    in ``blocks`` turns (engine 1, engine 2, ..., engine 1, ...) after ``warmup`` runs each, so that the
    load of a shared machine, which changes over seconds, weighs on every model alike."""
    per_block = max(1, runs // blocks)
    times = [[] for _ in engines]
    for _ in range(blocks):
        for engine, t in zip(engines, times):
            feeds = {engine.inputs[0].name: x}
            for _ in range(warmup):
                engine.run(feeds)
            for _ in range(per_block):
                t0 = time.perf_counter()
                engine.run(feeds)
                t.append(time.perf_counter() - t0)
    return [1e3 * statistics.median(t) for t in times]


def measure(method, bits, engine, model_bytes, data, torch_model, seconds):
    """A :class:`Row` (latency left at 0) for an exported model (bytes), its engine and the PyTorch model it
    came from."""
    from ..training.digits import engine_accuracy, torch_accuracy

    records = engine.profile({engine.inputs[0].name: data.x_test[:1]}, repeat=1)
    layers = [r for r in records if r.op in ('QConv', 'QGemm', 'Conv', 'Gemm', 'MatMul')]
    return Row(method=method, weight_bits=bits, weight_bytes=weight_storage_bytes(model_bytes, bits),
               onnx_bytes=len(model_bytes), engine_accuracy=engine_accuracy(engine, data.x_test, data.y_test),
               torch_accuracy=torch_accuracy(torch_model, data.x_test, data.y_test), latency_ms=0.0,
               int8_layers=sum(r.precision == 'int8' for r in layers), layers=len(layers), seconds=seconds)


def markdown(rows):
    """The table as Markdown."""
    fp32 = next((r for r in rows if r.method == 'FP32'), None)
    lines = ['| model | weights (bytes) | ONNX file (bytes) | test accuracy, Engine (PyTorch) | '
             'latency, ms (1 thread, median) | int8 layers |',
             '|---|---:|---:|---:|---:|---:|']
    for r in rows:
        name = 'FP32' if r.method == 'FP32' else '%s %d-bit weights' % (r.method, r.weight_bits)
        ratio = ' (%.1f %%)' % (100.0 * r.weight_bytes / fp32.weight_bytes) if fp32 and r is not fp32 else ''
        lines.append('| %s | %d%s | %d | %.2f %% (%.2f %%) | %.3f | %d / %d |' % (
            name, r.weight_bytes, ratio, r.onnx_bytes, 100 * r.engine_accuracy, 100 * r.torch_accuracy,
            r.latency_ms, r.int8_layers, r.layers))
    return '\n'.join(lines)


@dataclass
class BitwidthOptions:
    """train_epochs: float training (when no checkpoint is given); qat_epochs, qat_lr: fine-tuning;
    calib_images: training images for calibration; bits: weight bit widths; threads: PyTorch and Engine
    threads; latency_runs: timed runs per model."""
    train_epochs: int = 12
    qat_epochs: int = 6
    qat_lr: float = 0.001
    calib_images: int = 256
    bits: tuple = (8, 4, 2)
    threads: int = 1
    latency_runs: int = 300
    seed: int = 0
    checkpoint: Optional[str] = None


def run(options, out_dir, log=None):
    """Build every model of the table (written to ``out_dir``) and measure it; returns the rows."""
    import torch
    from torch import nn

    from ..runtime import Engine
    from ..training import digits
    from . import qat

    log = log or (lambda line: None)
    for b in options.bits:
        qat.weight_qmax(b)
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    data = digits.load_data()
    t0 = time.perf_counter()
    if options.checkpoint:
        model = digits.load_checkpoint(options.checkpoint)
        log('float model from %s' % options.checkpoint)
    else:
        model, _ = digits.train(data, digits.TrainOptions(epochs=options.train_epochs, seed=options.seed,
                                                          threads=options.threads), progress=log)
        digits.save_checkpoint(model, os.path.join(out_dir, 'digits.pt'))
    rows: List[Row] = []
    engines = []

    def save(name, blob):
        with open(os.path.join(out_dir, name), 'wb') as f:
            f.write(blob)
        return blob

    def add_row(method, bits, blob, torch_model, seconds):
        engines.append(Engine(blob, num_threads=options.threads))
        rows.append(measure(method, bits, engines[-1], blob, data, torch_model, seconds))
        log('%s: accuracy %.4f (PyTorch %.4f), %d bytes of weights' % (
            method if method == 'FP32' else '%s %d-bit' % (method, bits), rows[-1].engine_accuracy,
            rows[-1].torch_accuracy, rows[-1].weight_bytes))

    f = io.BytesIO()
    digits.export_onnx(model, f)
    add_row('FP32', 32, save('digits_fp32.onnx', f.getvalue()), model, time.perf_counter() - t0)
    g = torch.Generator().manual_seed(options.seed)
    pick = torch.randperm(len(data.x_train), generator=g)[:options.calib_images].numpy()
    calib = [torch.from_numpy(data.x_train[pick[i:i + 32]]) for i in range(0, len(pick), 32)]
    example = torch.from_numpy(data.x_test[:1])
    for bits in options.bits:
        for method in ('PTQ', 'QAT'):
            t0 = time.perf_counter()
            qmodel = qat.prepare_qat(model, weight_bits=bits, calibration=calib)
            if method == 'QAT':
                loader = digits.EpochBatches(data.x_train, data.y_train, 64, shift=2, seed=options.seed + bits)
                qat.fine_tune(qmodel, loader, nn.functional.cross_entropy,
                              qat.FineTuneOptions(epochs=options.qat_epochs, lr=options.qat_lr),
                              progress=sys.stderr.isatty())
            blob = qat.export_qdq_bytes(qmodel, example, output_names=(digits.OUTPUT_NAME,))
            seconds = time.perf_counter() - t0
            add_row(method, bits, save('digits_%s_w%d.onnx' % (method.lower(), bits), blob), qmodel, seconds)
    latencies = interleaved_latency_ms(engines, data.x_test[:1], options.latency_runs)
    for row, ms in zip(rows, latencies):
        row.latency_ms = ms
    return rows


def main(argv=None):
    d = BitwidthOptions()
    p = argparse.ArgumentParser(prog='python -m qvision_ros.quantization.bitwidth',
                                description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--json', help='also write the rows and the settings to this JSON file')
    p.add_argument('--out', help='folder for the ONNX files and the float checkpoint (default: a temporary '
                                 'folder, removed)')
    p.add_argument('--checkpoint', help='float model from qvision_ros.training.digits (digits.pt) instead of '
                                        'training one')
    p.add_argument('--train-epochs', type=int, default=d.train_epochs)
    p.add_argument('--qat-epochs', type=int, default=d.qat_epochs)
    p.add_argument('--qat-lr', type=float, default=d.qat_lr)
    p.add_argument('--calib-images', type=int, default=d.calib_images)
    p.add_argument('--bits', default='8,4,2', help='weight bit widths (from 8, 4, 2)')
    p.add_argument('--threads', type=int, default=d.threads)
    p.add_argument('--latency-runs', type=int, default=d.latency_runs)
    p.add_argument('--seed', type=int, default=d.seed)
    args = p.parse_args(argv)
    try:
        bits = tuple(int(b) for b in args.bits.split(','))
    except ValueError:
        p.error('--bits takes a comma-separated list such as 8,4,2, got %r' % args.bits)
    for name in ('train_epochs', 'qat_epochs', 'calib_images', 'threads', 'latency_runs'):
        if getattr(args, name) < 1:
            p.error('--%s must be >= 1' % name.replace('_', '-'))
    options = BitwidthOptions(train_epochs=args.train_epochs, qat_epochs=args.qat_epochs, qat_lr=args.qat_lr,
                              calib_images=args.calib_images, bits=bits, threads=args.threads,
                              latency_runs=args.latency_runs, seed=args.seed, checkpoint=args.checkpoint)

    def log(line):
        print(line, file=sys.stderr, flush=True)

    start = time.perf_counter()
    try:
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            rows = run(options, args.out, log)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                rows = run(options, tmp, log)
    except ConfigError as e:
        p.error(str(e))
    table = markdown(rows)
    print(table)
    if args.json:
        import torch
        info = {'options': asdict(options), 'rows': [asdict(r) for r in rows], 'markdown': table,
                'seconds': round(time.perf_counter() - start, 1), 'python': platform.python_version(),
                'torch': torch.__version__, 'machine': platform.machine(), 'cpu_count': os.cpu_count(),
                'load_average': os.getloadavg() if hasattr(os, 'getloadavg') else None}
        with open(args.json, 'w') as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
