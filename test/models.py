"""The engine tests' models: the PyTorch builders of :mod:`qvision_ros.runtime.zoo` at small input sizes,
their ONNX exports and QDQ versions (ONNX Runtime's quantizer), cached per process, and the oracle
(ONNX Runtime).  Nothing is downloaded: every weight is random (fixed seeds).

:func:`export` turns a module into ONNX bytes (TorchScript exporter, or the dynamo exporter when
``dynamo=True`` and it is usable here); :func:`quantize_qdq` makes a QDQ model with
``onnxruntime.quantization.quantize_static`` from a small random calibration set.
"""
import functools

import numpy as np

from qvision_ros.runtime.zoo import (DFL, Add, Concat, ConvBNAct, calibration_data, export, mobilenetv2_like,
                                     quantize_qdq, resnet_like, vgg_like, yolov5_like, yolov8_like)

# ------------------------------------------------------------------------------- export and quantize

# name -> (builder, input size) used by the tests
MODELS = {
    'yolov8': (yolov8_like, 64),
    'yolov5': (yolov5_like, 64),
    'vgg': (vgg_like, 32),
    'resnet': (resnet_like, 64),
    'mobilenetv2': (mobilenetv2_like, 64),
}


@functools.lru_cache(maxsize=None)
def model_bytes(name, dynamic_batch=False):
    """The float ONNX bytes of test model ``name`` (see :data:`MODELS`), exported once per process."""
    builder, size = MODELS[name]
    return export(builder(), size, dynamic_batch=dynamic_batch)


@functools.lru_cache(maxsize=None)
def model_bytes_unfolded(name):
    """Like :func:`model_bytes` but exported without constant folding (BatchNormalization kept)."""
    builder, size = MODELS[name]
    return export(builder(), size, fold=False)


def output_scales(qdq_model):
    """The scale of the DequantizeLinear that produces each graph output of a QDQ model (bytes)."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load_from_string(qdq_model)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    scales = []
    for out in m.graph.output:
        n = producers[out.name]
        assert n.op_type == 'DequantizeLinear', n.op_type
        scales.append(float(inits[n.input[1]]))
    return scales


def step_differences(actual, expected, scale):
    """|actual - expected| in quantisation steps of ``scale`` (rounded to integers)."""
    return np.rint(np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64)) / scale).astype(np.int64)


@functools.lru_cache(maxsize=None)
def qdq_bytes(name, activation='uint8'):
    """The QDQ version of test model ``name`` (ONNX Runtime's quantize_static), made once per process."""
    return quantize_qdq(model_bytes(name), activation=activation)


def ort_run(model_bytes, feeds, threads=1, optimize=True):
    """Outputs of ONNX Runtime (CPU) for ``feeds``: the oracle."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    sess = ort.InferenceSession(model_bytes, so, providers=['CPUExecutionProvider'])
    return sess.run(None, feeds)


# ------------------------------------------------------------------------- quantisation-aware training

def fake_quantize(module, calibration, weight_range=(-128, 127), quantize_output=False, seed=0):
    """A QAT-style copy of a :mod:`qvision_ros.runtime.zoo` module: batch norms folded into the convolutions
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``), then ``torch.ao.quantization.FakeQuantize`` modules -
    which call ``torch.fake_quantize_per_tensor_affine`` / ``per_channel_affine`` and export as
    QuantizeLinear/DequantizeLinear pairs - on the input, on every convolution's weight (int8 symmetric per
    output channel in ``weight_range``; PyTorch's default is [-128, 127]) and on the outputs of
    convolutions, activations, pools, upsampling, :class:`Concat` and :class:`Add` (uint8 per tensor; a
    convolution followed by ReLU/ReLU6 is quantised after the activation only, as fused QAT modules do).
    The decoding head after the last convolutions (DFL, box decoding) stays float; ``quantize_output``
    puts a last fake quantiser on the model's output (as ONNX Runtime's quantizer does).

    The observers see ``calibration`` (a list of input arrays) and are then frozen: the result stands for
    a model at the end of QAT (with random weights)."""
    import copy

    import torch
    from torch import nn
    from torch.ao.quantization import (FakeQuantize, MinMaxObserver, PerChannelMinMaxObserver,
                                       disable_observer)
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    module = copy.deepcopy(module).eval()
    torch.manual_seed(seed)

    def act_fq():
        return FakeQuantize(observer=MinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
                            qscheme=torch.per_tensor_affine)

    def weight_fq():
        return FakeQuantize(observer=PerChannelMinMaxObserver, quant_min=weight_range[0],
                            quant_max=weight_range[1], dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                            ch_axis=0)

    class FQConv(nn.Module):
        def __init__(self, conv, quantize_output):
            super().__init__()
            self.conv = conv
            self.weight_fq = weight_fq()
            self.output_fq = act_fq() if quantize_output else None

        def forward(self, x):
            c = self.conv
            y = c._conv_forward(x, self.weight_fq(c.weight), c.bias)
            return self.output_fq(y) if self.output_fq is not None else y

    def output_hook(m, inputs, output):
        return m.output_fq(output)

    skip = {id(m) for d in module.modules() if isinstance(d, DFL) for m in d.modules()}
    for m in list(module.modules()):
        if isinstance(m, ConvBNAct):
            if isinstance(m.bn, nn.BatchNorm2d):
                m.conv = fuse_conv_bn_eval(m.conv, m.bn)
                m.bn = nn.Identity()
            relu = isinstance(m.act, (nn.ReLU, nn.ReLU6))
            m.conv = FQConv(m.conv, quantize_output=not relu)
            if not isinstance(m.act, nn.Identity):
                m.act.output_fq = act_fq()
                m.act.register_forward_hook(output_hook)
        elif id(m) not in skip:
            for name, child in list(m.named_children()):
                if isinstance(child, nn.Conv2d) and id(child) not in skip:
                    setattr(m, name, FQConv(child, quantize_output=True))
            if isinstance(m, (nn.MaxPool2d, nn.Upsample, Concat, Add)):
                m.output_fq = act_fq()
                m.register_forward_hook(output_hook)
    module.input_fq = act_fq()
    module.register_forward_pre_hook(lambda m, args: (m.input_fq(args[0]),) + tuple(args[1:]))
    if quantize_output:
        module.output_fq = act_fq()
        module.register_forward_hook(output_hook)
    with torch.no_grad():
        for x in calibration:
            module(torch.as_tensor(x))
    module.apply(disable_observer)
    return module


@functools.lru_cache(maxsize=None)
def qat_bytes(name, weight_range=(-128, 127), quantize_output=False, size=None):
    """ONNX bytes of the fake-quantised (QAT-style, :func:`fake_quantize`) test model ``name``."""
    builder, default = MODELS[name]
    size = size or default
    module = fake_quantize(builder(), calibration_data((1, 3, size, size), 4), weight_range, quantize_output)
    return export(module, size)
