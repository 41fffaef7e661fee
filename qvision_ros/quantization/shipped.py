"""Reproduce the shipped int8 detector and measure it against FP32 and ONNX Runtime's quantizer.

    python -m qvision_ros.quantization.shipped --out qvision_ros/data/detector_320.int8.onnx
    python -m qvision_ros.quantization.shipped --out /tmp/d.int8.onnx --evaluate --compare-ort --json r.json

Quantisation: the default PTQ (:class:`QuantConfig()`: percentile 99.99 activations, min-max on the
input and on the tensors the float decode reads, int8 per-channel weights, decode sub-graph float) of
``qvision_ros/data/detector_320.onnx``, calibrated on ``--images`` training scenes of seed
:data:`~.detector.CALIBRATION_SEED` (:mod:`.detector`).  ``--evaluate``: mAP@0.5 and mAP@0.5:0.95 of
FP32 and int8 on the held-out split (500 images of seed 1; the int8 model on our engine and on ONNX
Runtime) and the SQNR of the int8 outputs against FP32.  ``--compare-ort``: the same for ONNX Runtime's
``quantize_static`` (MinMax, per channel, QDQ, uint8 activations / int8 weights) given the same model
and calibration images, once as is and once with our decode sub-graph excluded (``nodes_to_exclude``)
(ONNX Runtime needs the ``onnxruntime`` package; it is not a run-time dependency).
"""
import argparse
import os
import sys
import tempfile
import time

from .report import emit_json

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data',
                             'detector_320.onnx')
DEFAULT_IMAGES = 1000


def quantize_shipped(out, images=DEFAULT_IMAGES, model=DEFAULT_MODEL, progress=True):
    from . import QuantConfig, quantize
    from .detector import CalibrationScenes
    return quantize(model, CalibrationScenes(images), out, QuantConfig(progress=progress))


def ort_quantize(model, out, images, exclude=()):
    """ONNX Runtime's ``quantize_static`` (MinMax, per channel, QDQ) on the same calibration images;
    ``exclude``: node names it leaves float (``nodes_to_exclude``)."""
    import logging

    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from .detector import CalibrationScenes

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(CalibrationScenes(images))

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {'images': x}

    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(model, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(exclude),
                    extra_options={'CalibMaxIntermediateOutputs': 64})      # bounded memory for a fair run
    return out


def evaluate(int8_path, model=DEFAULT_MODEL, others=None, n=500):
    """mAP and SQNR figures (see the module docstring); ``others``: {name: path} of more int8 models, run
    on both runtimes."""
    from . import detector as det
    data = det.held_out_set(n)
    ref_ort = det.outputs_of(det.runner(model, 'ort'), data)
    ref_engine = det.outputs_of(det.runner(model, 'engine'), data)
    report = {'held_out_images': n, 'fp32': det.detection_map(ref_engine, data),
              'fp32_onnxruntime': det.detection_map(ref_ort, data)}
    runs = {'ours_engine': (int8_path, 'engine', ref_engine), 'ours_onnxruntime': (int8_path, 'ort', ref_ort)}
    for name, path in (others or {}).items():
        runs[name + '_onnxruntime'] = (path, 'ort', ref_ort)
        runs[name + '_engine'] = (path, 'engine', ref_engine)
    for key, (path, runtime, ref) in runs.items():
        outs = det.outputs_of(det.runner(path, runtime), data)
        entry = det.detection_map(outs, data)
        entry['sqnr_db'] = det.sqnr_db(outs, ref)
        entry['score_sqnr_db'] = det.score_sqnr_db(outs, ref)
        entry['file_bytes'] = os.path.getsize(path)
        report[key] = entry
    report['fp32_file_bytes'] = os.path.getsize(model)
    return report


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m qvision_ros.quantization.shipped', description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='where to write the int8 QDQ model')
    p.add_argument('--model', default=DEFAULT_MODEL, help='float model (default: the shipped detector)')
    p.add_argument('--images', type=int, default=DEFAULT_IMAGES, help='calibration images (default %(default)s)')
    p.add_argument('--evaluate', action='store_true', help='mAP and SQNR on the held-out split')
    p.add_argument('--compare-ort', action='store_true', help="also quantise with ONNX Runtime's quantize_static")
    p.add_argument('--json', help='write the figures to this file')
    args = p.parse_args(argv)
    t0 = time.time()
    result = quantize_shipped(args.out, args.images, args.model)
    summary = {'model': args.model, 'out': args.out, 'calibration_images': result.num_images,
               'quantize_seconds': round(time.time() - t0, 1), 'int8_bytes': os.path.getsize(args.out),
               'quantized_nodes': len(result.quantized_nodes), 'float_nodes': len(result.float_nodes)}
    others = {}
    if args.compare_ort:
        folder = tempfile.mkdtemp(prefix='qvision_ort_')
        for name, exclude in (('ort_quantizer', ()), ('ort_quantizer_decode_float', result.decode_nodes)):
            others[name] = os.path.join(folder, name + '.onnx')
            t1 = time.time()
            ort_quantize(args.model, others[name], args.images, exclude)
            summary[name + '_seconds'] = round(time.time() - t1, 1)
    if args.evaluate or args.compare_ort:
        summary.update(evaluate(args.out, args.model, others))
    emit_json(summary, args.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
