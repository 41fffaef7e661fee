"""``qvision quantize``: float ONNX model + calibration source -> int8 QDQ ONNX model (and a report).

    qvision quantize MODEL.onnx --calib SOURCE --out MODEL.int8.onnx [--observer percentile]
        [--weight-bits 8|4|2] [--keep-float PATTERN ...] [--keep-float-op TYPE ...]
        [--keep-float-block backbone|neck|head ...] [--report DIR] [--topic T] [--max-images N]

SOURCE is an image folder, a video, a rosbag2 (``--topic`` names its image topic), a ``.npy`` file
(``[N, C, H, W]`` preprocessed inputs) or a folder of them; images go through the run-time
preprocessing (letterbox with grey 114, RGB, pixel / 255).  ``--report DIR`` adds the sensitivity
analysis: ``DIR/sensitivity.json`` (per-layer and per-block error, sizes FP32 / INT8 / partial, the
automatic choice of float blocks) and ``DIR/sensitivity.png``.

The ``qvision`` command wires :func:`add_arguments` and :func:`run` in as its ``quantize`` subcommand;
``python -m qvision_ros.quantization.cli`` runs the same on its own.
"""
import argparse
import os
import sys
import time

from ..errors import ConfigError, QVisionError
from .analysis import BLOCK_NAMES
from .observers import ObserverKind, WeightScaling


def add_arguments(parser):
    """Add the ``quantize`` options to an argparse parser (or sub-parser)."""
    parser.add_argument('model', help='float ONNX model (opset 11 or newer)')
    parser.add_argument('--calib', required=True, metavar='SOURCE',
                        help='calibration data: image folder, video, rosbag2, .npy file or folder of .npy files')
    parser.add_argument('--out', required=True, metavar='MODEL.int8.onnx', help='the QDQ model to write')
    parser.add_argument('--observer', default=ObserverKind.PERCENTILE.value, choices=[k.value for k in ObserverKind],
                        help='activation ranges (default: %(default)s)')
    parser.add_argument('--percentile', type=float, default=99.99,
                        help='percentile of the percentile observer (default: %(default)s)')
    parser.add_argument('--weight-bits', type=int, default=8, choices=(8, 4, 2),
                        help='weight precision: codes in [-127, 127], [-7, 7] or [-1, 1] (default: 8)')
    parser.add_argument('--weight-scaling', default=WeightScaling.AUTO.value, choices=[k.value for k in WeightScaling],
                        help='per-channel weight scales: min-max, MSE-searched, or auto = min-max at 8 bits')
    parser.add_argument('--keep-float', nargs='+', default=[], metavar='PATTERN',
                        help='node names or glob patterns to keep in float')
    parser.add_argument('--keep-float-op', nargs='+', default=[], metavar='TYPE', help='op types to keep in float')
    parser.add_argument('--keep-float-block', nargs='+', default=[], metavar='BLOCK',
                        help='blocks to keep in float: %s (found automatically) or a --block name'
                             % '|'.join(BLOCK_NAMES))
    parser.add_argument('--block', action='append', default=[], metavar='NAME=PREFIX[,PREFIX...]',
                        help='define a block by node-name prefixes (repeatable); replaces the automatic blocks')
    parser.add_argument('--quantize-decode', action='store_true',
                        help='also quantise the decode sub-graph (kept float by default: one scale for box '
                             'coordinates and scores destroys the scores)')
    parser.add_argument('--bias-correction', action='store_true', help='correct biases for the weight error')
    parser.add_argument('--no-bn-fold', action='store_true', help='do not fold batch norms into convolutions')
    parser.add_argument('--topic', help='image topic of a rosbag2 source')
    parser.add_argument('--max-images', type=int, help='calibrate on at most N images')
    parser.add_argument('--input-size', metavar='WxH', help='network input size for image sources (default: '
                                                             "the model's)")
    parser.add_argument('--threads', type=int, help='engine threads for calibration (default: all cores)')
    parser.add_argument('--report', metavar='DIR', help='write the sensitivity report (JSON and PNG) into DIR')
    parser.add_argument('--budget', type=float,
                        help='--report: the smallest model whose output SQNR is at least this many dB (default 30)')
    parser.add_argument('--no-plot', action='store_true', help='--report: JSON only, no PNG')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def _blocks(specs):
    if not specs:
        return None
    blocks = {}
    for spec in specs:
        name, sep, prefixes = spec.partition('=')
        parts = [p for p in prefixes.split(',') if p]
        if not sep or not name or not parts:
            raise ConfigError('--block takes NAME=PREFIX[,PREFIX...], got %r' % spec)
        blocks.setdefault(name, []).extend(parts)
    return blocks


def _size(text):
    if text is None:
        return None, None
    w, sep, h = text.lower().partition('x')
    try:
        return int(w), int(h)
    except ValueError:
        raise ConfigError('--input-size takes WIDTHxHEIGHT (e.g. 640x480), got %r' % text) from None


def config_from_args(args):
    """The :class:`~.ptq.QuantConfig` of parsed arguments."""
    from .calibration import ImagePreprocessing
    from .ptq import QuantConfig
    width, height = _size(args.input_size)
    return QuantConfig(observer=args.observer, percentile=args.percentile, weight_bits=args.weight_bits,
                       weight_scaling=args.weight_scaling, keep_float=tuple(args.keep_float),
                       keep_float_ops=tuple(args.keep_float_op), keep_float_blocks=tuple(args.keep_float_block),
                       blocks=_blocks(args.block), quantize_decode=args.quantize_decode,
                       fold_batchnorm=not args.no_bn_fold, bias_correction=args.bias_correction,
                       max_images=args.max_images, topic=args.topic, num_threads=args.threads,
                       preprocessing=ImagePreprocessing(width, height), progress=not args.quiet)


def run(args, stdout=None, stderr=None):
    """Run ``qvision quantize`` with parsed ``args``; returns the exit code (0 done, 2 a classified
    error, reported on stderr; with ``args.debug`` - the ``qvision --debug`` switch - it propagates)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        return _run(args, stdout)
    except QVisionError as e:
        if getattr(args, 'debug', False):
            raise
        stderr.write('qvision quantize: error: %s\n' % e)
        return 2


def _run(args, out):
    from .ptq import Prepared, calibrate, quantize
    config = config_from_args(args)
    if not os.path.isfile(args.model):
        raise ConfigError('model file %s does not exist' % args.model)
    t0 = time.monotonic()
    prep = Prepared(args.model, config)
    tensors = None if args.report else prep.plan(config).roots
    calibration = calibrate(prep, args.calib, config, tensors=tensors, keep_samples=8 if args.report else 0)
    result = quantize(prep, out_path=args.out, config=config, calibration=calibration)
    fp32 = os.path.getsize(args.model)
    int8 = os.path.getsize(args.out)
    out.write('wrote %s: %d bytes (FP32 %d bytes, %.1f %%), %d nodes int8, %d float, %d calibration images, '
              '%.1f s\n' % (args.out, int8, fp32, 100.0 * int8 / fp32, len(result.quantized_nodes),
                            len(result.float_nodes), result.num_images, time.monotonic() - t0))
    if result.decode_nodes and not config.quantize_decode:
        out.write('kept float (decode sub-graph): %s\n' % ', '.join(result.decode_nodes))
    if args.report:
        from .report import write_report
        from .sensitivity import sensitivity
        report = sensitivity(prep, config=config, calibration=calibration, min_sqnr_db=args.budget)
        paths = write_report(report, args.report, plot=not args.no_plot,
                             extra={'model': args.model, 'out': args.out, 'observer': config.observer.value,
                                    'weight_bits': config.weight_bits})
        worst = sorted(report.layers, key=lambda l: l.sqnr_db)[:3]
        out.write('report: %s; most sensitive layers: %s\n'
                  % (', '.join(paths.values()), ', '.join('%s (%.1f dB)' % (l.name, l.sqnr_db) for l in worst)))
        out.write(_choice_line(report))
    return 0


def _choice_line(report):
    """The automatic choice of float blocks, said plainly when no quantised variant meets the budget."""
    choice, full = report.choice, report.int8
    if report.min_sqnr_db is not None and choice.size_bytes >= report.fp32.size_bytes:
        return ('no quantised variant reaches the %.1f dB budget (all int8: %.1f dB), so the suggestion is to keep '
                'every block float.  The SQNR averages the output channels alike, so a detector\'s near-zero '
                'background scores weigh as much as its boxes: judge by the task metric (qvision eval on the '
                'written model) or set a lower --budget\n' % (report.min_sqnr_db, full.sqnr_db))
    return ('suggested float blocks: %s (output SQNR %.1f dB, %d bytes; all int8: %.1f dB, %d bytes)\n'
            % (', '.join(choice.keep_float_blocks) or 'none', choice.sqnr_db, choice.size_bytes, full.sqnr_db,
               full.size_bytes))


def main(argv=None):
    parser = argparse.ArgumentParser(prog='qvision quantize', description=__doc__.split('\n')[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
