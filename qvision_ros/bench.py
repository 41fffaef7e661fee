"""qvision bench: latency, FPS, peak memory and model size - NumPy reference, our fp32 and int8, ONNX Runtime.

    qvision bench                                  # shipped models, 1 and 2 threads, both tables
    qvision bench --model fp32.onnx int8.onnx --threads 1 2 4 --repeat 100 --json bench.json

Two tables, shaped like the papers':

1. **One layer** (paper 1, table 2: Conv2D 128 x 128 x 3 -> 16, 3 x 3): median time of the NumPy reference
   (:mod:`qvision_kernels.reference`: float32 im2col and the literal int8 definition), our Cython kernels
   and ONNX Runtime, FP32 and INT8, then more layers of the detector with ``--layers``.  There is no
   whole-model NumPy path (the engine's NumPy operators cover only the light ops; convolutions, pooling
   and the element-wise kernels exist in NumPy only as per-kernel references), so NumPy is measured here,
   layer by layer, and not in table 2.
2. **Whole model** (paper 2, table 1: size, mAP, time, FPS of FP32 against INT8): for every model and
   thread count, our engine and ONNX Runtime (when installed) on the same file: median and p99 latency of
   one inference (batch 1), FPS (1 / mean), peak resident memory of a process that loads the model and
   runs it, the model file size, and mAP@0.5 / mAP@0.5:0.95 on ``--data`` (default: the shipped sample
   clip's ground truth; ``--no-map`` skips it).  Size and time are also given against the first model.

Each whole-model measurement runs in a fresh Python process (so that peak memory is that model's and no
thread pool of a previous run keeps spinning): it imports the runtime, notes its resident memory, loads
the model, runs ``--warmup`` then ``--repeat`` inferences on a letterboxed frame of the sample clip, and
reports every latency and its peak RSS (``ru_maxrss``).  ``memory MB`` is that peak minus the resident
memory before loading: the model, its plan and its buffers.  On a shared machine read the medians and the
load average printed in the header.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError

PAPER_LAYER = 'paper_3x3_128'
DEFAULT_LAYERS = (PAPER_LAYER,)
# Paper 1, table 2 (seconds): the ratio NumPy : Cython int8 is the claim to compare with.
PAPER1_TABLE2 = {'numpy_fp32': 6.7291, 'numpy_int8': 6.4982, 'cython_fp32': 2.6676, 'cython_int8': 1.5091}


# ------------------------------------------------------------------------------------- table 1: layers


def bench_layers(names, threads, repeat, warmup, log):
    """bench_kernels.bench_layer on the named layers: a list of result dicts (one per layer and thread)."""
    from . import bench_kernels as bk

    known = {s.name: s for s in bk.LAYERS + bk.DW_LAYERS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError('unknown layer(s) %s; known: %s' % (', '.join(unknown), ', '.join(known)))

    class Opts:   # the fields bench_layer reads
        seed = 0
        isa = None
        rounds = 1

    Opts.repeat, Opts.warmup = repeat, warmup
    ort_mods = bk._import_ort()
    blas = bk._BlasThreads()
    rows = []
    try:
        for name in names:
            rows.extend(bk.bench_layer(known[name], list(threads), Opts, ort_mods, blas, log))
    finally:
        blas.restore()
    return rows


def _ms(v):
    return '%10.3f' % v if v is not None else '%10s' % 'n/a'


def format_layer_table(rows):
    """Paper 1 table 2 shape: per layer and thread count, FP32 and INT8 for NumPy, ours, ONNX Runtime."""
    out = []
    for r in rows:
        m = r['median_ms']
        out.append('')
        out.append('%s (%s, %.1f MMAC), %d thread%s, median ms:' % (
            r['layer'], r['shape'], r['macs'] / 1e6, r['threads'], '' if r['threads'] == 1 else 's'))
        out.append('  %-22s %10s %10s %12s' % ('implementation', 'FP32', 'INT8', 'INT8 speed-up'))
        for label, f32, i8 in (('NumPy reference', 'numpy_fp32_im2col', 'numpy_int8'),
                               ('Cython (qvision)', 'ours_fp32', 'ours_int8'),
                               ('ONNX Runtime', 'ort_fp32', 'ort_int8')):
            gain = ('%11.2fx' % (m[f32] / m[i8])) if m.get(f32) and m.get(i8) else '%12s' % '-'
            out.append('  %-22s %s %s %s' % (label, _ms(m.get(f32)), _ms(m.get(i8)), gain))
        if m.get('numpy_int8') and m.get('ours_int8'):
            out.append('  NumPy int8 : Cython int8 = %.0f : 1 (paper 1: %.1f : 1, with %.2f s and %.2f s)' % (
                m['numpy_int8'] / m['ours_int8'], PAPER1_TABLE2['numpy_int8'] / PAPER1_TABLE2['cython_int8'],
                PAPER1_TABLE2['numpy_int8'], PAPER1_TABLE2['cython_int8']))
    return out


# ------------------------------------------------------------------------------- table 2: whole models


def _child_main(spec_json):
    """Run in a fresh process: load one model with one runtime, time it, report JSON on stdout."""
    import time

    spec = json.loads(spec_json)
    x = np.load(spec['input'], allow_pickle=False)
    if spec['runtime'] == 'ours':
        from .runtime import Engine
        rss0 = _rss_bytes()
        t0 = time.perf_counter()
        engine = Engine(spec['model'], num_threads=spec['threads'])
        name = engine.inputs[0].name

        def infer():
            engine.run({name: x})
    else:
        import onnxruntime as ort
        rss0 = _rss_bytes()
        t0 = time.perf_counter()
        so = ort.SessionOptions()
        so.intra_op_num_threads = spec['threads']
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(spec['model'], so, providers=['CPUExecutionProvider'])
        name = sess.get_inputs()[0].name

        def infer():
            sess.run(None, {name: x})
    load_s = time.perf_counter() - t0
    for _ in range(spec['warmup']):
        infer()
    times = []
    for _ in range(spec['repeat']):
        t = time.perf_counter()
        infer()
        times.append(time.perf_counter() - t)
    print(json.dumps({'times': times, 'rss_before': rss0, 'peak_rss': _peak_rss_bytes(), 'load_s': load_s}))


def _peak_rss_bytes():
    """Peak resident memory of this process (VmHWM).  Not ru_maxrss: Linux carries that across exec(), so
    a child would report its parent's peak."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)


def _rss_bytes():
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return 0


def measure_model(model, runtime, threads, input_path, repeat, warmup, timeout=600):
    """Latencies and memory of ``model`` on ``runtime`` ('ours' or 'ort') in a fresh process."""
    spec = json.dumps({'model': str(model), 'runtime': runtime, 'threads': int(threads),
                       'input': str(input_path), 'repeat': int(repeat), 'warmup': int(warmup)})
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env['PYTHONPATH'] = root + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    code = 'import sys; from qvision_ros.bench import _child_main; _child_main(sys.argv[1])'
    try:
        res = subprocess.run([sys.executable, '-c', code, spec], capture_output=True, text=True, env=env,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DataError('benchmarking %s on %s took more than %d s; lower --repeat' % (model, runtime, timeout)) \
            from None
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ['(no message)'])[-1]
        raise DataError('benchmarking %s on %s failed: %s' % (model, runtime, last))
    data = json.loads(res.stdout.strip().splitlines()[-1])
    t = np.asarray(data['times'])
    return {'median_ms': float(np.median(t)) * 1e3, 'p99_ms': float(np.percentile(t, 99)) * 1e3,
            'fps': float(1.0 / t.mean()), 'peak_rss_mb': data['peak_rss'] / 1e6,
            'memory_mb': max(0, data['peak_rss'] - data['rss_before']) / 1e6, 'load_s': data['load_s'],
            'runs': len(t)}


def sample_input(info, path):
    """A real frame of the sample clip, letterboxed for the model, saved as .npy for the child processes."""
    import cv2

    from .cli_run import SAMPLE_VIDEO
    from .vision.preprocess import Preprocessor

    cap = cv2.VideoCapture(str(SAMPLE_VIDEO))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 60)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        frame = np.full((480, 640, 3), 114, np.uint8)
    pre = Preprocessor(info.input_width, info.input_height, layout=info.layout)
    x, _ = pre(frame)
    np.save(path, x)
    return path


def _ort_available():
    try:
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


def format_model_table(rows):
    """Paper 2 table 1 shape: one row per model, runtime and thread count; size and time against the first
    row of the same runtime and thread count."""
    head = '%-26s %-9s %-5s %3s %17s %8s %13s %17s %9s %8s %10s' % (
        'model', 'precision', 'rt', 'thr', 'size MB', 'mAP@0.5', 'mAP@.5:.95', 'median ms', 'p99 ms', 'FPS',
        'memory MB')
    out = [head, '-' * len(head)]
    firsts = {}
    for r in rows:
        key = (r['runtime'], r['threads'])
        base = firsts.setdefault(key, r)
        size = '%.2f' % (r['size_bytes'] / 1e6)
        med = '%.2f' % r['median_ms']
        if r is not base:
            size += ' (%+.0f%%)' % (100.0 * (r['size_bytes'] / base['size_bytes'] - 1))
            med += ' (%+.0f%%)' % (100.0 * (r['median_ms'] / base['median_ms'] - 1))
        m50 = '%.3f' % r['map50'] if r.get('map50') is not None else '-'
        m = '%.3f' % r['map'] if r.get('map') is not None else '-'
        out.append('%-26s %-9s %-5s %3d %17s %8s %13s %17s %9.2f %8.1f %10.1f' % (
            os.path.basename(r['model'])[:26], r['precision'], r['runtime'], r['threads'], size, m50, m, med,
            r['p99_ms'], r['fps'], r['memory_mb']))
    return out


def model_accuracy(models, data, threads, log):
    """{model path: (map50, map)} with our engine on ``data`` (a COCO JSON or VOC folder)."""
    from .evaluate import EVAL_SCORE_THRESHOLD, evaluate_pipeline, load_dataset
    from .pipeline import Pipeline, PipelineConfig

    dataset = load_dataset(data)
    scores = {}
    for model in models:
        log('mAP of %s on %s' % (os.path.basename(model), data))
        pipe = Pipeline(model, PipelineConfig(score_threshold=EVAL_SCORE_THRESHOLD, num_threads=threads))
        s = evaluate_pipeline(pipe, dataset)
        scores[model] = (s.map50, s.map)
    return scores


# ------------------------------------------------------------------------------------------- command


def add_arguments(p):
    from .cli_run import positive_int
    p.add_argument('--model', '-m', nargs='+', default=None,
                   help='ONNX models (default: the shipped float and int8 detectors)')
    p.add_argument('--threads', type=positive_int, nargs='+', default=[1, 2],
                   help='thread counts (default: 1 2)')
    p.add_argument('--repeat', type=positive_int, default=50, help='timed inferences per measurement (50)')
    p.add_argument('--warmup', type=int, default=3, help='untimed inferences first (3)')
    p.add_argument('--layers', nargs='*', default=list(DEFAULT_LAYERS),
                   help='layers of table 1 (default: %s; see qvision-bench-kernels --list; none to skip)'
                        % PAPER_LAYER)
    p.add_argument('--layer-repeat', type=positive_int, default=5,
                   help='timed runs per layer measurement (5: the NumPy references are slow)')
    p.add_argument('--data', default=None,
                   help='COCO JSON or VOC folder for the mAP columns (default: the sample clip\'s ground truth)')
    p.add_argument('--no-map', action='store_true', help='leave the mAP columns out')
    p.add_argument('--no-ort', action='store_true', help='leave ONNX Runtime out even when installed')
    p.add_argument('--json', default=None, help='also write every figure to this JSON file')
    p.add_argument('--quiet', '-q', action='store_true', help='no progress messages')


def run(args):
    import platform
    import tempfile

    from .bench_kernels import _cpu_model, _load_average
    from .cli_run import SAMPLE_GROUND_TRUTH, SHIPPED_MODELS
    from .pipeline import describe_model

    def log(msg):
        if not args.quiet:
            print('# ' + msg, file=sys.stderr, flush=True)

    models = args.model or [str(p) for p in reversed(SHIPPED_MODELS) if p.is_file()]
    infos = [describe_model(m) for m in models]   # fails early on a bad file
    runtimes = ['ours'] + (['ort'] if _ort_available() and not args.no_ort else [])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    meta = {'cpu': _cpu_model(), 'cores': cores, 'machine': platform.machine(),
            'load_average_before': _load_average(), 'python': platform.python_version(),
            'numpy': np.__version__, 'repeat': args.repeat, 'threads': args.threads,
            'runtimes': runtimes}
    print('qvision bench on %s (%d cores available, load average %s); runtimes: %s' % (
        meta['cpu'], cores, '%.2f' % meta['load_average_before'] if meta['load_average_before'] is not None
        else 'n/a', ', '.join({'ours': 'qvision engine', 'ort': 'ONNX Runtime'}[r] for r in runtimes)))
    layer_rows = []
    if args.layers:
        log('table 1: layers %s' % ', '.join(args.layers))
        layer_rows = bench_layers(args.layers, args.threads, args.layer_repeat, 1, log)
        print('\nTable 1 - one layer at a time (paper 1, table 2); NumPy = the reference implementations')
        print('\n'.join(format_layer_table(layer_rows)))
    accuracy = {}
    if not args.no_map:
        accuracy = model_accuracy(models, args.data or str(SAMPLE_GROUND_TRUTH), max(args.threads), log)
    rows = []
    with tempfile.TemporaryDirectory(prefix='qvision_bench_') as tmp:
        for model, info in zip(models, infos):
            x_path = sample_input(info, os.path.join(tmp, 'x_%d.npy' % len(rows)))
            for runtime in runtimes:
                for t in args.threads:
                    log('%s on %s, %d thread(s)' % (os.path.basename(model), runtime, t))
                    r = measure_model(model, runtime, t, x_path, args.repeat, args.warmup)
                    m50, m = accuracy.get(model, (None, None))
                    r.update(model=str(model), precision=info.precision, runtime=runtime, threads=t,
                             size_bytes=info.size_bytes, map50=m50, map=m)
                    rows.append(r)
    rows.sort(key=lambda r: (runtimes.index(r['runtime']), r['threads']))
    meta['load_average_after'] = _load_average()
    print('\nTable 2 - whole model, batch 1 (paper 2, table 1); rt: ours = qvision engine, ort = ONNX Runtime; '
          'memory = peak RSS of the process minus its RSS before loading the model')
    print('There is no whole-model NumPy reference path: NumPy is benchmarked per layer in table 1.')
    if not args.no_map:
        print('mAP: %s with our engine' % (args.data or 'the sample clip (%s)' % SAMPLE_GROUND_TRUTH.name))
    print('\n'.join(format_model_table(rows)))
    print('load average %s -> %s' % (meta['load_average_before'], meta['load_average_after']))
    if args.json:
        try:
            with open(args.json, 'w', encoding='utf-8') as f:
                json.dump({'meta': meta, 'layers': layer_rows, 'models': rows}, f, indent=1)
        except OSError as exc:
            raise DataError('cannot write %s: %s' % (args.json, exc.strerror or exc)) from None
    return 0
