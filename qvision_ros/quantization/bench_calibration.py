"""Peak memory of calibration: the shipped detector's network at 640 x 640, 2,000 images, streaming.

    python -m qvision_ros.quantization.bench_calibration [--images 2000] [--size 640] [--observer percentile]

1. A subprocess exports the shipped detector's weights (:func:`qvision_ros.training.qat_detector.
   detector_from_onnx`) as an ONNX model of input ``--size`` (:func:`qvision_ros.training.export.
   export_onnx`; needs PyTorch), so that PyTorch is never loaded in the measured process.
2. This process calibrates it (:func:`qvision_ros.quantization.calibrate`, the default observer unless
   ``--observer``; every tensor any plan may quantise) on ``--images`` training scenes rendered at
   ``--size`` one at a time, then writes the int8 model.  The resident set size is sampled
   (``/proc/self/statm``) after 10, 100, 500, 1000... images; the peak is ``ru_maxrss``
   (:func:`resource.getrusage`), which also covers the model loading, the engine and the writing.

The figures are printed as JSON (``--json FILE`` keeps them).  Memory must stay flat with the number of
images: the observers keep bounded statistics, never activations.
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

from .report import emit_json

CHECKPOINTS = (10, 100, 500, 1000, 1500, 2000, 5000, 10000)


def rss_mb():
    """Current resident set size in MB (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        with open('/proc/self/statm') as fh:
            return int(fh.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20
    except (OSError, ValueError, IndexError):
        return 0.0


def peak_rss_mb():
    """Peak resident set size of this process in MB (``ru_maxrss`` is in kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == 'darwin' else peak / 2 ** 10


def export_detector(path, size):
    """Write the shipped detector at input ``size`` to ``path`` (in a subprocess: keeps PyTorch out)."""
    code = ('import sys; from qvision_ros.training.qat_detector import detector_from_onnx; '
            'from qvision_ros.training.export import export_onnx; from qvision_ros.quantization.shipped import '
            'DEFAULT_MODEL; export_onnx(detector_from_onnx(DEFAULT_MODEL), sys.argv[1], image_size=int(sys.argv[2]))')
    subprocess.run([sys.executable, '-c', code, path, str(size)], check=True)


class _Sampled:
    """A reader that records the RSS at the checkpoints while yielding the images of ``inner``."""

    def __init__(self, inner):
        self.inner = inner
        self.samples = {}

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        for k, x in enumerate(self.inner, 1):
            yield x
            if k in CHECKPOINTS:
                self.samples[k] = round(rss_mb(), 1)


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m qvision_ros.quantization.bench_calibration',
                                description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=2000)
    p.add_argument('--size', type=int, default=640)
    p.add_argument('--observer', default=None, help='activation observer (default: the default of QuantConfig)')
    p.add_argument('--threads', type=int, default=1, help='engine threads (default 1)')
    p.add_argument('--model', help='use this float model instead of exporting the detector at --size')
    p.add_argument('--json', help='write the figures to this file')
    args = p.parse_args(argv)
    from . import QuantConfig, calibrate, prepare, quantize
    from .detector import CalibrationScenes
    folder = tempfile.mkdtemp(prefix='qvision_bench_calib_')
    model = args.model
    if model is None:
        model = os.path.join(folder, 'detector_%d.onnx' % args.size)
        export_detector(model, args.size)
    base = rss_mb()
    options = dict(num_threads=args.threads)
    if args.observer:
        options['observer'] = args.observer
    config = QuantConfig(**options)
    t0 = time.time()
    prep = prepare(model, config)
    after_load = rss_mb()
    reader = _Sampled(CalibrationScenes(args.images, size=args.size))
    cal = calibrate(prep, reader, config)
    out = os.path.join(folder, 'detector_%d.int8.onnx' % args.size)
    quantize(prep, config=config, calibration=cal, out_path=out)
    figures = {'images': cal.num_images, 'size': args.size, 'observer': cal.observer, 'tensors': len(cal.params),
               'threads': args.threads, 'seconds': round(time.time() - t0, 1),
               'rss_mb_before': round(base, 1), 'rss_mb_after_loading': round(after_load, 1),
               'rss_mb_after_images': reader.samples, 'peak_rss_mb': round(peak_rss_mb(), 1),
               'float_model_bytes': os.path.getsize(model), 'int8_model_bytes': os.path.getsize(out),
               'load_average': list(os.getloadavg()), 'cpus': os.cpu_count()}
    emit_json(figures, args.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
