"""The quantizer: float ONNX model + calibration data -> standard QDQ ONNX model (DESIGN.md sections 3,
4 and 6).

* :func:`quantize` / :class:`QuantConfig` / :class:`QuantResult` - post-training quantisation with
  head-aware defaults and partial quantisation (:mod:`.ptq`);
* :func:`calibrate`, :func:`prepare` - statistics once, several plans (:mod:`.ptq`);
* observers (:mod:`.observers`), the calibration data-reader protocol (:mod:`.calibration`), the graph
  analysis - units, decode sub-graph, backbone / neck / head blocks (:mod:`.analysis`);
* :func:`~.sensitivity.sensitivity` and the report (:mod:`.sensitivity`, :mod:`.report`);
* the ``qvision quantize`` command (:mod:`.cli`) and paper 2's table (:mod:`.tables`).
"""
from .calibration import Calibration, ImagePreprocessing, open_reader
from .observers import (ChannelMeanObserver, EntropyObserver, MinMaxObserver, MSEObserver, ObserverKind,
                        PercentileObserver, QParams, StreamingHistogram, WeightScaling, activation_qparams,
                        make_observer, weight_scales)
from .ptq import Prepared, QuantConfig, QuantResult, calibrate, prepare, quantize

__all__ = ['quantize', 'calibrate', 'prepare', 'Prepared', 'QuantConfig', 'QuantResult', 'Calibration',
           'ImagePreprocessing', 'open_reader', 'ObserverKind', 'WeightScaling', 'QParams', 'MinMaxObserver',
           'PercentileObserver', 'EntropyObserver', 'MSEObserver', 'ChannelMeanObserver', 'StreamingHistogram',
           'activation_qparams', 'weight_scales', 'make_observer']
