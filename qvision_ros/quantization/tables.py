"""Paper 2's table for the shipped detector: FP32, PTQ, partial quantisation by block, and QAT.

    python -m qvision_ros.quantization.tables [--qat detector.qat.onnx] [--json table.json] [--out table.md]

Rows (precision of backbone / neck / head; the decode sub-graph is float in every int8 row): FP32
(``detector_320.onnx``); partial quantisation 8/32/32 (backbone only), 32/8/32 (neck only), 32/32/8 (head
only), 8/8/32 (backbone and neck); PTQ 8/8/8 (all, the default - with the default ``--calib-images`` this
is exactly ``detector_320.int8.onnx``); QAT (``--qat``: a QDQ model from quantisation-aware training, e.g.
``qvision-qat-detector``), when given.  All PTQ variants share one calibration (:func:`.ptq.calibrate`).

Columns: model file size (and its change against FP32); mAP@0.5 and mAP@0.5:0.95 on the held-out split
(:mod:`.detector`; the models run on our engine); latency on our engine with 1 and 2 threads - the median
of single-image runs, the models measured in turns so that a shared machine's load weighs on all alike
(:func:`.bitwidth.interleaved_latency_ms`) - and the frames per second of the 1-thread latency.
"""
import argparse
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass


from .report import emit_json
from .shipped import DEFAULT_IMAGES, DEFAULT_MODEL

# (label, blocks kept float) of the PTQ rows, in table order
PTQ_ROWS = [('partial 8/32/32 (backbone)', ('neck', 'head')),
            ('partial 32/8/32 (neck)', ('backbone', 'head')),
            ('partial 32/32/8 (head)', ('backbone', 'neck')),
            ('partial 8/8/32 (backbone + neck)', ('head',)),
            ('PTQ 8/8/8 (all)', ())]


@dataclass
class Row:
    name: str
    size_bytes: int
    size_change_percent: float
    map50: float
    map50_95: float
    latency_ms_1_thread: float = 0.0
    latency_ms_2_threads: float = 0.0
    fps_1_thread: float = 0.0


def build_models(model, calib_images, folder, progress=True):
    """{row name: path} of the FP32 model and the PTQ variants."""
    from .detector import CalibrationScenes
    from .ptq import QuantConfig, calibrate, prepare, quantize
    config = QuantConfig(progress=progress)
    prep = prepare(model, config)
    cal = calibrate(prep, CalibrationScenes(calib_images), config)
    paths = {'FP32': model}
    for k, (name, keep) in enumerate(PTQ_ROWS):
        path = os.path.join(folder, 'ptq_%d.onnx' % k)
        quantize(prep, config=QuantConfig(progress=False, keep_float_blocks=keep), calibration=cal, out_path=path)
        paths[name] = path
    return paths


def measure(paths, eval_images=500, runs=100):
    """A :class:`Row` per model (see the module docstring)."""
    from ..runtime import Engine
    from . import detector as det
    from .bitwidth import interleaved_latency_ms
    data = det.held_out_set(eval_images)
    fp32_size = os.path.getsize(paths['FP32'])
    rows = []
    for name, path in paths.items():
        m = det.detection_map(det.outputs_of(det.runner(path, 'engine'), data), data)
        size = os.path.getsize(path)
        rows.append(Row(name, size, 100.0 * (size - fp32_size) / fp32_size, m['map50'], m['map50_95']))
    x = data[0][0]
    for threads, field in ((1, 'latency_ms_1_thread'), (2, 'latency_ms_2_threads')):
        engines = [Engine(p, num_threads=threads) for p in paths.values()]
        for row, ms in zip(rows, interleaved_latency_ms(engines, x, runs=runs, blocks=10)):
            setattr(row, field, ms)
    for row in rows:
        row.fps_1_thread = 1e3 / row.latency_ms_1_thread if row.latency_ms_1_thread else 0.0
    return rows


def markdown(rows):
    lines = ['| model (backbone/neck/head) | size | change | mAP@0.5 | mAP@0.5:0.95 | latency 1 thread | '
             'latency 2 threads | FPS (1 thread) |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append('| %s | %.2f MB | %+.1f %% | %.4f | %.4f | %.1f ms | %.1f ms | %.1f |'
                     % (r.name, r.size_bytes / 1e6, r.size_change_percent, r.map50, r.map50_95,
                        r.latency_ms_1_thread, r.latency_ms_2_threads, r.fps_1_thread))
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m qvision_ros.quantization.tables', description=__doc__.split('\n')[0])
    p.add_argument('--model', default=DEFAULT_MODEL, help='float detector (default: the shipped one)')
    p.add_argument('--qat', help='a QDQ model from quantisation-aware training, for the QAT row')
    p.add_argument('--calib-images', type=int, default=DEFAULT_IMAGES, help='calibration images (default %(default)s)')
    p.add_argument('--eval-images', type=int, default=500, help='held-out images (default %(default)s)')
    p.add_argument('--runs', type=int, default=100, help='timed runs per model and thread count')
    p.add_argument('--workdir', help='keep the partial models here (default: a temporary folder)')
    p.add_argument('--json', help='write the rows to this file')
    p.add_argument('--out', help='write the markdown table to this file')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    args = p.parse_args(argv)
    import tempfile
    folder = args.workdir or tempfile.mkdtemp(prefix='qvision_tables_')
    os.makedirs(folder, exist_ok=True)
    t0 = time.time()
    paths = build_models(args.model, args.calib_images, folder, progress=not args.quiet)
    if args.qat:
        if not os.path.isfile(args.qat):
            sys.stderr.write('error: QAT model %s does not exist\n' % args.qat)
            return 2
        paths['QAT 8/8/8'] = args.qat
    rows = measure(paths, args.eval_images, args.runs)
    table = markdown(rows)
    print(table)
    meta = {'model': args.model, 'calibration_images': args.calib_images, 'eval_images': args.eval_images,
            'runs': args.runs, 'seconds': round(time.time() - t0, 1), 'machine': platform.processor() or
            platform.machine(), 'cpus': os.cpu_count(), 'load_average': list(os.getloadavg())}
    if args.json:
        emit_json({'rows': [asdict(r) for r in rows], 'meta': meta}, args.json, stream=False)
    if args.out:
        with open(args.out, 'w') as fh:
            fh.write(table + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
