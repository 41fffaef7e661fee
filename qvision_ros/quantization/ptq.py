"""Post-training quantisation: :func:`quantize` (float ONNX + calibration data -> QDQ ONNX).

    from qvision_ros.quantization import QuantConfig, quantize
    result = quantize('detector.onnx', 'frames/', 'detector.int8.onnx',
                      config=QuantConfig(observer='percentile', keep_float_blocks=('head',)))
    result.quantized_nodes, result.float_nodes, result.tensors['images']   # (scale, zero point)

The steps: :mod:`.prepare` (copy, names, BN folding, opset 13) -> :mod:`.analysis` (units, decode
sub-graph, blocks) -> :mod:`.plan` (what is quantised, with the head-aware default: the decode sub-graph
stays float) -> :mod:`.calibration` (streaming statistics on our engine) -> :mod:`.qdq` (the model).
:func:`calibrate` alone gives statistics that several plans can share (``quantize(...,
calibration=...)``), as the sensitivity analysis and the tables do.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..errors import ConfigError, ModelError
from .analysis import BLOCK_NAMES, Analysis
from .calibration import ImagePreprocessing, collect, open_reader
from .observers import (DEFAULT_BINS, MIN_BINS, ObserverKind, WeightScaling, as_enum, weight_qmax)
from .plan import calibration_tensors, make_plan
from .prepare import prepare_model
from .qdq import write_qdq


def _strings(value, what):
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError('%s must be a list of strings, got %r' % (what, value)) from None
    if not all(isinstance(v, str) and v for v in items):
        raise ConfigError('%s must be non-empty strings, got %r' % (what, value))
    return items


@dataclass
class QuantConfig:
    """Options of :func:`quantize`, checked when built (a wrong one raises :class:`ConfigError`).

    * ``observer`` - activation ranges: ``percentile`` (default, 99.99), ``minmax``, ``entropy``, ``mse``
      (:class:`ObserverKind`); ``percentile`` and ``bins`` tune the histogram observers.  Model inputs
      always use min-max, and so do (``minmax_decode_inputs``, on) the tensors a float decode sub-graph
      reads: in detection logits the rare large values are the detections.
    * ``weight_bits`` - 8, 4 or 2 (int8 codes in [-127, 127], [-7, 7], [-1, 1]); ``weight_scaling`` -
      :class:`WeightScaling` (AUTO: min-max at 8 bits, MSE-searched clipping below).
    * ``keep_float`` - node names or glob patterns; ``keep_float_ops`` - op types; ``keep_float_blocks`` -
      ``backbone``, ``neck``, ``head`` (found automatically, ``head`` includes the decode sub-graph) or
      the names of ``blocks`` = {name: [node-name prefixes or globs]} given by the user.  A float layer's
      weights stay float; a float element-wise node *between* quantised layers still reads dequantised
      values and is quantised again for its readers, which is exactly its int8 version: keep whole blocks
      (or the weighted layers) float to change the numbers.
    * ``quantize_decode`` - False (default): the decode sub-graph stays float (DESIGN.md section 3).
    * ``fold_batchnorm``, ``bias_correction`` - conv+BN folding (on) and bias correction (off).
    * ``max_images`` - calibration images at most; ``input_shapes`` - fixes dynamic input dimensions
      (as for the engine); ``preprocessing`` - :class:`ImagePreprocessing` of image sources; ``topic`` -
      the image topic of a rosbag2; ``num_threads`` - engine threads; ``progress`` - the bar on stderr.
    """
    observer: ObserverKind = ObserverKind.PERCENTILE
    percentile: float = 99.99
    bins: int = DEFAULT_BINS
    weight_bits: int = 8
    weight_scaling: WeightScaling = WeightScaling.AUTO
    keep_float: Tuple[str, ...] = ()
    keep_float_ops: Tuple[str, ...] = ()
    keep_float_blocks: Tuple[str, ...] = ()
    blocks: Optional[Dict[str, Tuple[str, ...]]] = None
    quantize_decode: bool = False
    minmax_decode_inputs: bool = True
    fold_batchnorm: bool = True
    bias_correction: bool = False
    max_images: Optional[int] = None
    input_shapes: Optional[Dict[str, Tuple[int, ...]]] = None
    preprocessing: ImagePreprocessing = field(default_factory=ImagePreprocessing)
    topic: Optional[str] = None
    num_threads: Optional[int] = None
    progress: bool = True

    def __post_init__(self):
        self.observer = as_enum(ObserverKind, self.observer, 'observer')
        self.weight_scaling = as_enum(WeightScaling, self.weight_scaling, 'weight_scaling')
        if isinstance(self.weight_bits, bool) or not isinstance(self.weight_bits, int) or \
                self.weight_bits not in (2, 4, 8):
            raise ConfigError('weight_bits must be 8, 4 or 2, got %r' % (self.weight_bits,))
        weight_qmax(self.weight_bits)
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)) or \
                not 50 < self.percentile <= 100:
            raise ConfigError('percentile must be in (50, 100], got %r' % (self.percentile,))
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < MIN_BINS:
            raise ConfigError('bins must be an integer >= %d, got %r' % (MIN_BINS, self.bins))
        self.keep_float = _strings(self.keep_float, 'keep_float')
        self.keep_float_ops = _strings(self.keep_float_ops, 'keep_float_ops')
        self.keep_float_blocks = _strings(self.keep_float_blocks, 'keep_float_blocks')
        if self.blocks is not None:
            if not isinstance(self.blocks, dict) or not self.blocks:
                raise ConfigError('blocks must be a dict {block name: [node-name prefixes]}, got %r' % (self.blocks,))
            self.blocks = {str(k): _strings(v, 'blocks[%r]' % k) for k, v in self.blocks.items()}
        known = set(BLOCK_NAMES) | set(self.blocks or {})
        for b in self.keep_float_blocks:
            if b not in known:
                raise ConfigError('keep_float_blocks names %r; known blocks: %s' % (b, sorted(known)))
        if self.max_images is not None and (isinstance(self.max_images, bool) or
                                            not isinstance(self.max_images, int) or self.max_images < 1):
            raise ConfigError('max_images must be a positive integer or None, got %r' % (self.max_images,))
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ConfigError('num_threads must be a positive integer or None, got %r' % (self.num_threads,))
        if not isinstance(self.preprocessing, ImagePreprocessing):
            raise ConfigError('preprocessing must be an ImagePreprocessing, got %r' % (self.preprocessing,))


@dataclass
class QuantResult:
    """What :func:`quantize` did."""
    path: Optional[str]                              # the file written (None when no out_path)
    model: object                                    # the QDQ onnx.ModelProto
    quantized_nodes: List[str]                       # float-model nodes now in int8
    float_nodes: List[str]                           # nodes left in float
    tensors: Dict[str, Tuple[float, int]]            # quantised tensor -> (scale, zero point)
    decode_nodes: List[str]
    blocks: Dict[str, List[str]]
    num_images: int
    batchnorms_folded: int
    config: QuantConfig

    @property
    def size_bytes(self):
        return self.model.ByteSize()


class Prepared:
    """A float model read, prepared and analysed once (see :func:`prepare`)."""

    def __init__(self, model, config):
        self.proto, self.bn_folded = prepare_model(model, config.fold_batchnorm)
        self.analysis = Analysis(self.proto, config.input_shapes)
        self.config = config

    @property
    def input_names(self):
        return list(self.analysis.inputs)

    def model_size(self):
        """(width, height) of the first input when it is an image [N, C, H, W], else None."""
        shape = self.analysis.input_shapes[self.analysis.inputs[0]]
        return (shape[3], shape[2]) if len(shape) == 4 else None

    def keep_float_nodes(self, config=None):
        c = config or self.config
        a = self.analysis
        keep = set() if c.quantize_decode else set(a.decode)
        keep |= a.select(c.keep_float, c.keep_float_ops, c.keep_float_blocks, c.blocks)
        return keep

    def minmax_tensors(self, config=None):
        """Tensors calibrated with min-max whatever the observer: the model inputs (their pixel grid
        stays exact) and, head-aware, the tensors the float decode sub-graph reads - in detection
        logits the rare large values are the detections themselves, which a percentile would clip."""
        c = config or self.config
        a = self.analysis
        names = set(a.inputs)
        if c.minmax_decode_inputs and not c.quantize_decode:
            names |= {i for name in a.decode for i in a.activation_inputs(a.node[name])}
        return names

    def plan(self, config=None, keep_float=None):
        return make_plan(self.analysis, self.keep_float_nodes(config) if keep_float is None else keep_float)


def prepare(model, config=None):
    """Read and analyse ``model`` once (for several plans on one calibration)."""
    return Prepared(model, config or QuantConfig())


def calibrate(model, calib, config=None, tensors=None, keep_samples=0):
    """Statistics of ``tensors`` (default: every tensor any plan may quantise) over ``calib``, and copies
    of the first ``keep_samples`` inputs; ``model`` is a path / bytes / ModelProto or a :class:`Prepared`."""
    config = config or QuantConfig()
    prep = model if isinstance(model, Prepared) else Prepared(model, config)
    if tensors is None:
        tensors = calibration_tensors(prep.analysis)
    means = []
    if config.bias_correction:
        means = [u.inputs[0] for u in prep.analysis.units if u.kind == 'weighted']
    reader = open_reader(calib, prep.input_names, config.preprocessing, prep.model_size(), config.topic,
                         config.max_images)
    return collect(prep.proto, tensors, means, reader, config.observer, prep.minmax_tensors(config),
                   config.percentile, config.bins, config.num_threads, prep.analysis.input_shapes, config.max_images,
                   config.progress, keep_samples)


def quantize(model, calib=None, out_path=None, config=None, calibration=None):
    """Quantise ``model`` (path, bytes, ModelProto or :class:`Prepared`) with statistics from ``calib``
    (or a ready ``calibration``); write the QDQ model to ``out_path`` when given.  Returns a
    :class:`QuantResult`."""
    config = config or QuantConfig()
    if not isinstance(config, QuantConfig):
        raise ConfigError('config must be a QuantConfig, got %s' % type(config).__name__)
    prep = model if isinstance(model, Prepared) else Prepared(model, config)
    plan = prep.plan(config)
    if not plan.quantized:
        raise ConfigError('nothing left to quantise: every quantisable layer is kept float by the options')
    if calibration is None:
        if calib is None:
            raise ConfigError('quantize() needs calibration data (calib) or a calibration')
        means = [u.inputs[0] for u in plan.weighted()] if config.bias_correction else []
        reader = open_reader(calib, prep.input_names, config.preprocessing, prep.model_size(), config.topic,
                             config.max_images)
        calibration = collect(prep.proto, plan.roots, means, reader, config.observer, prep.minmax_tensors(config),
                              config.percentile, config.bins, config.num_threads, prep.analysis.input_shapes,
                              config.max_images, config.progress)
    qproto, params = write_qdq(prep.proto, prep.analysis, plan, calibration, config.weight_bits,
                               config.weight_scaling, config.bias_correction)
    path = None
    if out_path is not None:
        path = os.fspath(out_path)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ConfigError('the output folder %s does not exist' % folder)
        try:
            with open(path, 'wb') as fh:
                fh.write(qproto.SerializeToString())
        except OSError as e:
            raise ModelError('cannot write the quantised model to %s: %s' % (path, e.strerror or e)) from None
    a = prep.analysis
    return QuantResult(path, qproto, plan.quantized_nodes, plan.float_nodes, params,
                       sorted(a.decode, key=a.order.get), {k: list(v) for k, v in a.blocks.items()},
                       calibration.num_images, prep.bn_folded, config)
