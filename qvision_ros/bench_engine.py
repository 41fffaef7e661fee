"""Whole-model benchmark: the qvision engine against ONNX Runtime on the same ONNX files.

A script, not a test::

    python -m qvision_ros.bench_engine [--models yolov8@320 vgg@224] [--threads 1 2] [--repeat 20]
    qvision-bench-engine ...                          # the same, as installed by setup.py

Models (random weights, built with PyTorch by :mod:`qvision_ros.runtime.zoo`, so ``torch`` must be
installed; ``name@size`` is the square input size): by default the YOLOv8-style detector at 320 and 640,
a MobileNetV2-style and a VGG-style classifier at 224.  Each is exported to ONNX (fp32) and quantised by
ONNX Runtime's ``quantize_static`` (QDQ, int8 per-channel weights, uint8 activations, MinMax on four
random images) - the int8 file.  For every model and thread count the table gives the median latency
of one ``run`` (batch 1) of:

* ``ours``: :class:`qvision_ros.runtime.Engine` (``num_threads`` = the thread count);
* ``ORT``: ONNX Runtime's CPU provider on the same file, ``intra_op_num_threads`` = the thread count,
  ``inter_op_num_threads=1``, ``ORT_SEQUENTIAL``, ``ORT_ENABLE_ALL`` (its default spinning thread pool);

then ``ours/ORT`` (< 1: ours is faster) and, on the int8 rows, ``i8/ORT f32``: ours int8 against ONNX
Runtime fp32 on the float file.  ``agree`` is max|ours - ORT| / max|ORT| over the outputs of one input
(int8 models differ by a few quantisation steps where ORT's own int8 kernels round otherwise).

Each implementation is timed in its own block (``--repeat`` runs after two warm-up runs), blocks follow
each other with a pause (``--pause``: thread pools - ours and ONNX Runtime's - keep spinning after a
call and would steal the next block's cores), for ``--rounds`` rounds; medians over all runs.  On a
shared or busy machine two-thread figures may stall whenever a core is taken: read the medians, and the
load average printed in the header.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

from .bench_kernels import _ENV_SHOWN, _cpu_model, _load_average

DEFAULT_MODELS = ('yolov8@320', 'yolov8@640', 'mobilenetv2@224', 'vgg@224')
WIDTH = 16          # channel width of every model (the base width of the zoo's builders)


def _builder(name, size):
    """(nn.Module, label) of model ``name`` for a square input of ``size``."""
    from .runtime import zoo
    if name == 'yolov8':
        return zoo.yolov8_like(nc=8, width=WIDTH), 'yolov8-w%d' % WIDTH
    if name == 'yolov5':
        return zoo.yolov5_like(nc=6, width=WIDTH), 'yolov5-w%d' % WIDTH
    if name == 'mobilenetv2':
        return zoo.mobilenetv2_like(nc=10, width=WIDTH), 'mobilenetv2-w%d' % WIDTH
    if name == 'resnet':
        return zoo.resnet_like(nc=10, width=WIDTH), 'resnet-w%d' % WIDTH
    if name == 'vgg':
        if size % 8:
            raise SystemExit('vgg needs an input size that is a multiple of 8, got %d' % size)
        return zoo.vgg_like(nc=10, width=WIDTH, size=size), 'vgg-w%d' % WIDTH
    raise SystemExit('unknown model %r; known: yolov8, yolov5, mobilenetv2, resnet, vgg' % name)


def _parse_spec(spec):
    name, _, size = spec.partition('@')
    try:
        size = int(size) if size else 320
    except ValueError:
        raise SystemExit('a model is name@size (e.g. yolov8@320), got %r' % spec) from None
    if size < 8:
        raise SystemExit('input size %d is too small' % size)
    return name, size


def _import_ort():
    try:
        import onnxruntime
        return onnxruntime
    except ImportError:
        return None


def _ort_session(ort, model_bytes, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=['CPUExecutionProvider'])


def time_blocks(fns, repeat, rounds, pause_s, warmup=2):
    """{key: [seconds per run]}: each callable timed in its own block of ``repeat`` runs after
    ``warmup`` runs and a pause, ``rounds`` times over."""
    times = {k: [] for k in fns}
    for _ in range(max(1, rounds)):
        for key, fn in fns.items():
            if pause_s > 0:
                time.sleep(pause_s)
            for _ in range(warmup):
                fn()
            for _ in range(max(1, repeat)):
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
    return times


def _agreement(ours, ref):
    scale = max(float(np.max(np.abs(r))) for r in ref) or 1.0
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - r))) for a, r in zip(ours, ref)) / scale


def bench_model(spec, threads, args, ort, log):
    """Result rows of one model (name@size) for every thread count."""
    from .runtime import Engine
    from .runtime.zoo import export, quantize_qdq

    name, size = _parse_spec(spec)
    module, label = _builder(name, size)
    log('building %s at %d: export, quantize_static' % (label, size))
    fp32 = export(module, size)
    int8 = quantize_qdq(fp32, n_calib=4)
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    feeds = {'images': x}
    rows = []
    for nt in threads:
        engines = {'int8': Engine(int8, num_threads=nt), 'fp32': Engine(fp32, num_threads=nt)}
        sessions = {}
        if ort is not None:
            sessions = {'int8': _ort_session(ort, int8, nt), 'fp32': _ort_session(ort, fp32, nt)}
        fns = {}
        for prec in ('int8', 'fp32'):
            fns['ours_' + prec] = (lambda e=engines[prec]: e.run(feeds))
            if prec in sessions:
                fns['ort_' + prec] = (lambda s=sessions[prec]: s.run(None, feeds))
        agree = {p: (_agreement(fns['ours_' + p](), fns['ort_' + p]()) if 'ort_' + p in fns else None)
                 for p in ('int8', 'fp32')}
        log('timing %s at %d, %d thread(s)' % (label, size, nt))
        times = time_blocks(fns, args.repeat, args.rounds, args.pause)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        low = {k: min(v) * 1e3 for k, v in times.items()}
        for prec in ('int8', 'fp32'):
            ours, ref = med['ours_' + prec], med.get('ort_' + prec)
            rows.append({
                'model': label, 'input': size, 'threads': nt, 'precision': prec,
                'ours_ms': ours, 'ort_ms': ref, 'ours_min_ms': low['ours_' + prec],
                'ort_min_ms': low.get('ort_' + prec),
                'ours_over_ort': None if ref is None else ours / ref,
                'ours_int8_over_ort_fp32': (ours / med['ort_fp32'] if prec == 'int8' and 'ort_fp32' in med
                                            else None),
                'agree': agree[prec], 'runs': len(times['ours_' + prec]),
            })
    return rows


def _fmt(v, spec='%.2f'):
    return 'n/a' if v is None else spec % v


def format_report(meta, rows):
    lines = ['qvision engine vs ONNX Runtime %s: median latency of one run, whole model, batch 1'
             % (meta['onnxruntime'] or '(not installed)'),
             'CPU: %s; %d core(s) available; load average %s; kernels: %s; %s'
             % (meta['cpu'], meta['cores'], _fmt(meta['load_average']), meta['isa'],
                ', '.join('%s=%s' % kv for kv in meta['env'].items()) or 'no thread-pool variables set'),
             'ORT: intra_op_num_threads = threads, inter_op 1, ORT_SEQUENTIAL, ORT_ENABLE_ALL.  Each '
             'implementation in its own block: %d runs after 2 warm-up runs, %.2f s pause, %d round(s); '
             'medians over all runs.' % (meta['repeat'], meta['pause_s'], meta['rounds']),
             'ours/ORT < 1: ours is faster.  On a shared or busy machine 2-thread figures may stall (a thread '
             'pool waits for a core): medians, not means.', '']
    header = ('model', 'input', 'thr', 'prec', 'ours ms', 'ORT ms', 'ours/ORT', 'i8/ORT f32', 'agree')
    table = [header]
    for r in rows:
        table.append((r['model'], str(r['input']), str(r['threads']), r['precision'], _fmt(r['ours_ms']),
                      _fmt(r['ort_ms']), _fmt(r['ours_over_ort'], '%.3f'),
                      _fmt(r['ours_int8_over_ort_fp32'], '%.3f'), _fmt(r['agree'], '%.1e')))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for k, row in enumerate(table):
        lines.append('  '.join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append('  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def _parse(argv):
    p = argparse.ArgumentParser(prog='qvision-bench-engine', description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                   help='name@size, names: yolov8 yolov5 mobilenetv2 resnet vgg (default: %(default)s)')
    p.add_argument('--threads', nargs='+', type=int, default=[1, 2], help='thread counts (default: 1 2)')
    p.add_argument('--repeat', type=int, default=20, help='timed runs per block (default: 20)')
    p.add_argument('--rounds', type=int, default=3, help='blocks per implementation (default: 3)')
    p.add_argument('--pause', type=float, default=0.2, help='seconds before each block (default: 0.2)')
    p.add_argument('--json', help='also write the results to this JSON file')
    args = p.parse_args(argv)
    if any(t < 1 for t in args.threads):
        p.error('thread counts must be >= 1')
    return args


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    from .runtime import Engine  # noqa: F401
    import qvision_kernels
    try:
        import torch  # noqa: F401 - the zoo builds the models with it
    except ImportError:
        print('qvision-bench-engine builds its models with PyTorch: pip install torch', file=sys.stderr)
        return 2

    ort = _import_ort()

    def log(msg):
        print('# ' + msg, file=sys.stderr, flush=True)

    meta = {'cpu': _cpu_model(), 'cores': qvision_kernels.available_cores(), 'load_average': _load_average(),
            'isa': qvision_kernels.isa(), 'onnxruntime': getattr(ort, '__version__', None),
            'env': {k: os.environ[k] for k in _ENV_SHOWN if k in os.environ},
            'repeat': args.repeat, 'rounds': args.rounds, 'pause_s': args.pause, 'python': sys.version.split()[0]}
    rows = []
    for spec in args.models:
        rows.extend(bench_model(spec, args.threads, args, ort, log))
    print(format_report(meta, rows))
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump({'meta': meta, 'results': rows}, fh, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
