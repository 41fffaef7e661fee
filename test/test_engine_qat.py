"""QAT imports: QDQ models exported from PyTorch's fake quantisation run on the int8 kernels with their own
scales, and agree with ONNX Runtime running the same file.

Three ways a QAT model reaches ONNX, all with ``torch.onnx.export(..., dynamo=False)``:

* eager-mode QAT (``torch.ao.quantization.prepare_qat`` on fused ``ConvBnReLU2d`` modules, a few SGD steps,
  observers frozen) exported as it is: ``FakeQuantize`` becomes QuantizeLinear/DequantizeLinear pairs, and
  a ConvBn module becomes ``Conv -> Div -> Add -> BatchNormalization`` (folded by ``fold_conv_affine``);
* the same model after ``torch.ao.quantization.convert``: quantised modules export as QDQ with int32 biases
  and Cast nodes;
* the YOLOv8-style test model with ``FakeQuantize`` modules (``torch.fake_quantize_per_*_affine``) put on its
  weights and layer outputs (test/models.py: fake_quantize), so that Split/Slice sit between a
  DequantizeLinear and the next layer (``sink_dequantize``).

PyTorch's weight fake quantisers use the range [-128, 127]: the models carry -128 weights, which the int8
kernels take (passes._weight_int8).

The oracle is ONNX Runtime with graph optimisation off, which executes every node by its ONNX definition.
(Optimised, ONNX Runtime 1.2x refuses the YOLOv8 file: its QLinearAdd fusion rejects the 1-element scale
tensors that PyTorch exports; the small CNNs load and are compared optimised too.)  Compared: the model
outputs in steps of the output quantisation, and every quantised tensor of the file that survives in the
engine's graph (``Engine.intermediates``) in steps of its own scale - all within 2 steps.  The distributions
are printed (``pytest -s``).
"""
import collections
import functools
import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from models import calibration_data, fake_quantize, ort_run, qat_bytes, step_differences
from qvision_ros.runtime import Engine

MAX_STEPS = 2


# ------------------------------------------------------------------------------------------- helpers

def _constants(model):
    """name -> array of the initializers, Constant nodes and Identity nodes of those in an ONNX model."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == 'Constant':
            for a in n.attribute:
                if a.name == 'value':
                    values[n.output[0]] = numpy_helper.to_array(a.t)
        elif n.op_type == 'Identity' and n.input[0] in values:
            values[n.output[0]] = values[n.input[0]]
    return values


def quantized_tensors(model_bytes):
    """[(name, scale, dtype)] of the output of every QuantizeLinear of run-time data in the model."""
    m = onnx.load_from_string(model_bytes)
    consts = _constants(m)
    out = []
    for n in m.graph.node:
        if n.op_type != 'QuantizeLinear' or n.input[0] in consts or n.input[1] not in consts:
            continue
        zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        out.append((n.output[0], float(consts[n.input[1]].reshape(-1)[0]),
                    np.dtype(np.uint8) if zp is None else zp.dtype))
    return out


def with_outputs(model_bytes, names_dtypes):
    """The model with extra graph outputs (to read intermediate tensors from ONNX Runtime)."""
    m = onnx.load_from_string(model_bytes)
    for name, dtype in names_dtypes:
        m.graph.output.append(helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None))
    return m.SerializeToString()


def output_scale(model_bytes):
    """Scale of the DequantizeLinear producing the (single) graph output."""
    m = onnx.load_from_string(model_bytes)
    consts = _constants(m)
    producer = {o: n for n in m.graph.node for o in n.output}[m.graph.output[0].name]
    assert producer.op_type == 'DequantizeLinear', producer.op_type
    return float(consts[producer.input[1]].reshape(-1)[0])


def compare(model_bytes, engine, x, name='images', optimized=True):
    """Histograms (0/1/2/3/4/>4 steps) of the output and of every quantised tensor found in ours; returns
    (output histogram against the plain run, the same against the optimised one or None, tensor histogram,
    number of quantised tensors compared, number in the file)."""
    feeds = {name: x}
    qts = quantized_tensors(model_bytes)
    ours = engine.intermediates(feeds)
    shared = [(n, s, d) for n, s, d in qts if n in ours]
    ref = ort_run(with_outputs(model_bytes, [(n, d) for n, _, d in shared]), feeds, optimize=False)
    out_scale = output_scale(model_bytes)
    (ours_out,) = engine.run(feeds)
    hist_out = np.bincount(np.minimum(step_differences(ours_out, ref[0], out_scale).reshape(-1), 5),
                           minlength=6)
    hist_opt = None
    if optimized:
        opt = ort_run(model_bytes, feeds)[0]
        hist_opt = np.bincount(np.minimum(step_differences(ours_out, opt, out_scale).reshape(-1), 5),
                               minlength=6)
    hist_q = np.zeros(6, np.int64)
    for (n, s, d), r in zip(shared, ref[1:]):
        a = ours[n].astype(np.int64)
        r = r.astype(np.int64) + (128 if d == np.int8 else 0)     # int8 tensors run as uint8 (q + 128)
        assert a.shape == r.shape, (n, a.shape, r.shape)
        hist_q += np.bincount(np.minimum(np.abs(a - r).reshape(-1), 5), minlength=6)
    return hist_out, hist_opt, hist_q, len(shared), len(qts)


def _report(what, hist_out, hist_opt, hist_q, found, total):
    print('\n%s: output 0/1/2/3/4/>4 steps from ONNX Runtime: %s%s; %d of %d quantised tensors compared: %s'
          % (what, hist_out.tolist(), '' if hist_opt is None else ' (optimised: %s)' % hist_opt.tolist(),
             found, total, hist_q.tolist()))


def _ops(engine):
    return collections.Counter(n.op for n in engine.graph.nodes)


def _has_minus_128_weights(model_bytes):
    """True when some quantised weight of the model (a constant int8 tensor, or the int8 result of a
    QuantizeLinear of a constant) holds -128."""
    m = onnx.load_from_string(model_bytes)
    consts = _constants(m)
    for n in m.graph.node:
        if n.input and n.input[0] in consts and n.op_type in ('QuantizeLinear', 'DequantizeLinear'):
            v = consts[n.input[0]]
            zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if n.op_type == 'QuantizeLinear':
                if zp is None or zp.dtype != np.int8:
                    continue
                s = consts[n.input[1]].astype(np.float32)
                if s.size > 1:
                    shape = [1] * v.ndim
                    shape[dict((a.name, a.i) for a in n.attribute).get('axis', 1)] = -1
                    s = s.reshape(shape)
                v = np.clip(np.rint(v / s), -128, 127).astype(np.int8)
            if v.dtype == np.int8 and v.size and v.min() == -128:
                return True
    return False


# --------------------------------------------------------------------------------- a small CNN (eager)

class SmallCNN(nn.Module):
    """conv-bn-relu, conv-bn-relu, depthwise conv-bn-relu6 (relu for the converted model: PyTorch cannot
    export a quantised ReLU6), 1x1 conv-bn, global pool, linear; QuantStub / DeQuantStub at the ends."""

    def __init__(self, relu6=True):
        super().__init__()
        from torch.ao.quantization import DeQuantStub, QuantStub
        self.q, self.dq = QuantStub(), DeQuantStub()
        self.c1, self.b1, self.r1 = nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU()
        self.c2, self.b2, self.r2 = nn.Conv2d(16, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU()
        self.c3, self.b3 = nn.Conv2d(32, 32, 3, 2, 1, groups=32), nn.BatchNorm2d(32)
        self.r3 = nn.ReLU6() if relu6 else nn.ReLU()
        self.c4, self.b4 = nn.Conv2d(32, 24, 1), nn.BatchNorm2d(24)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(24, 10)

    def forward(self, x):
        x = self.q(x)
        x = self.r1(self.b1(self.c1(x)))
        x = self.r2(self.b2(self.c2(x)))
        x = self.r3(self.b3(self.c3(x)))
        x = self.b4(self.c4(x))
        return self.dq(self.fc(torch.flatten(self.pool(x), 1)))


@functools.lru_cache(maxsize=None)
def small_cnn_qat(activation='uint8', convert=False, size=32):
    """ONNX bytes of :class:`SmallCNN` after eager-mode QAT (fused ConvBn(ReLU) modules, FakeQuantize with
    moving-average observers, 8 SGD steps on random data, observers frozen), exported as it is or after
    ``torch.ao.quantization.convert``."""
    import torch.ao.quantization as tq
    from torch.ao.quantization import (FakeQuantize, MovingAverageMinMaxObserver,
                                       MovingAveragePerChannelMinMaxObserver)

    act = (dict(quant_min=0, quant_max=255, dtype=torch.quint8) if activation == 'uint8'
           else dict(quant_min=-128, quant_max=127, dtype=torch.qint8))
    qconfig = tq.QConfig(
        activation=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver,
                                          qscheme=torch.per_tensor_affine, **act),
        weight=FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128,
                                      quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                      ch_axis=0))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = SmallCNN(relu6=not convert).train()
        model.qconfig = qconfig
        tq.fuse_modules_qat(model, [['c1', 'b1', 'r1'], ['c2', 'b2', 'r2'], ['c3', 'b3'], ['c4', 'b4']],
                            inplace=True)
        tq.prepare_qat(model, inplace=True)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(0)
        for _ in range(8):
            x = torch.rand(4, 3, size, size, generator=g)
            y = torch.randint(0, 10, (4,), generator=g)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        model.apply(tq.disable_observer)
        if convert:
            model = tq.convert(model)
        f = io.BytesIO()
        torch.onnx.export(model, (torch.rand(1, 3, size, size),), f, opset_version=17, dynamo=False,
                          input_names=['images'], output_names=['output'])
    return f.getvalue()


def _x(shape, seed):
    return np.random.default_rng(300 + seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize('activation', ['uint8', 'int8'])
def test_small_cnn_fake_quantized(activation):
    mb = small_cnn_qat(activation)
    assert _has_minus_128_weights(mb)
    onnx_ops = collections.Counter(n.op_type for n in onnx.load_from_string(mb).graph.node)
    assert onnx_ops['BatchNormalization'] == 4 and onnx_ops['Div'] == 4, onnx_ops   # QAT ConvBn graphs
    # every intermediate value stays visible: no table goes into the convolution before it (that
    # fusion is exact; test_engine_plan checks it)
    engine = Engine(mb, num_threads=1, disable_passes=['fuse_conv_lut'])
    ops = _ops(engine)
    assert ops['QConv'] == 4 and not {'Conv', 'Div', 'BatchNormalization', 'Mul'} & set(ops), ops
    totals = [np.zeros(6, np.int64) for _ in range(3)]
    for seed in range(3):
        hist_out, hist_opt, hist_q, found, total = compare(mb, engine, _x((1, 3, 32, 32), seed))
        for t, h in zip(totals, (hist_out, hist_opt, hist_q)):
            t += h
    _report('small CNN, eager QAT (%s)' % activation, *totals, found, total)
    assert found >= total - 1, (found, total)   # the model input's, quantised straight to NHWC, is renamed
    for h in totals:
        assert h[MAX_STEPS + 1:].sum() == 0, h


def test_small_cnn_converted():
    """After ``convert``: quantised modules exported with int32 biases and Cast nodes between Q and DQ;
    the linear layer runs on the int8 kernels too (the pool's input and output are quantised there)."""
    mb = small_cnn_qat('uint8', convert=True)
    assert _has_minus_128_weights(mb)
    engine = Engine(mb, num_threads=1, disable_passes=['fuse_conv_lut'])
    ops = _ops(engine)
    assert ops['QConv'] == 4 and ops['QGemm'] == 1 and not {'Conv', 'Gemm', 'Cast'} & set(ops), ops
    totals = [np.zeros(6, np.int64) for _ in range(3)]
    for seed in range(3):
        hist_out, hist_opt, hist_q, found, total = compare(mb, engine, _x((1, 3, 32, 32), seed))
        for t, h in zip(totals, (hist_out, hist_opt, hist_q)):
            t += h
    _report('small CNN, converted', *totals, found, total)
    assert found >= total - 1, (found, total)   # the model input's, quantised straight to NHWC, is renamed
    for h in totals:
        assert h[MAX_STEPS + 1:].sum() == 0, h


def test_qat_conv_bn_fold_matches_unfolded():
    """fold_conv_affine against the same model run with the ConvBn tail in float (pass disabled): the
    same integers except next to rounding ties."""
    mb = small_cnn_qat('uint8')
    folded = Engine(mb, num_threads=1)
    plain = Engine(mb, num_threads=1, disable_passes=['fold_conv_affine'])
    assert _ops(plain)['Conv'] == 4 and _ops(folded)['QConv'] == 4
    x = _x((1, 3, 32, 32), 7)
    a, b = folded.intermediates({'images': x}), plain.intermediates({'images': x})
    names = [n for n, _, _ in quantized_tensors(mb) if n in a and n in b]
    assert len(names) >= 4
    for n in names:
        assert np.abs(a[n].astype(int) - b[n].astype(int)).max() <= 1, n


# -------------------------------------------------------------------------------- YOLOv8-style model

def test_yolov8_fake_quantized():
    """The YOLOv8-style test model with fake quantisers on every weight and layer output: every
    convolution but the DFL's fixed one runs int8, Split/Slice move uint8 data, and every quantised
    tensor of the file that the engine keeps is within 2 steps of ONNX Runtime's."""
    mb = qat_bytes('yolov8', quantize_output=True)
    assert _has_minus_128_weights(mb)
    engine = Engine(mb, num_threads=1, disable_passes=['fuse_conv_lut'])    # keep the SiLU inputs visible
    ops = _ops(engine)
    n_conv = sum(n.op_type == 'Conv' for n in onnx.load_from_string(mb).graph.node)
    assert ops['QConv'] == n_conv - 1 and ops['Conv'] == 1, ops       # the DFL's bin expectation is float
    assert ops['QConcat'] >= 16 and ops['QAdd'] == 4 and ops['QLut'] >= 50, ops
    values = engine.graph.values
    slices = [values[n.outputs[0]].dtype for n in engine.graph.nodes if n.op == 'Slice']
    # the second half of each of the 8 C2f splits, the bottleneck's input (the first half is read by the
    # concatenation straight from the unsplit tensor: merge_concat_slices); the head's two are float
    assert slices.count(np.uint8) == 8, slices
    totals = [np.zeros(6, np.int64) for _ in range(3)]
    for seed in range(2):
        hist_out, _, hist_q, found, total = compare(mb, engine, _x(engine.inputs[0].shape, seed),
                                                    optimized=False)
        totals[0] += hist_out
        totals[2] += hist_q
    _report('YOLOv8-style, fake-quantised', totals[0], None, totals[2], found, total)
    # missing: the values that took a concatenation's rescale (renamed .rescaled) and the model input's
    assert found >= 0.9 * total, (found, total)
    assert totals[0][MAX_STEPS + 1:].sum() == 0, totals[0]
    _assert_intermediates(totals[2])


def _assert_intermediates(hist):
    """Inside the network a few values may be 3 steps apart: a value next to a rounding tie (the float
    bias of the QAT convolution is rounded to int32 at scale s_x * s_w: ~0.0005 steps of error) may round
    the other way, and a 1-step difference at a convolution's output becomes up to s_conv / s_silu ~ 2
    steps at its SiLU's output (a narrower range), then adds up through concatenations.  Measured: 0.02 %
    of the values 3 steps apart, none more."""
    assert hist[MAX_STEPS + 1:].sum() <= 1e-3 * hist.sum() and hist[5] == 0 and hist[4] == 0, hist


def test_yolov8_fake_quantized_threads():
    """Two threads give the same bytes as one."""
    mb = qat_bytes('yolov8', quantize_output=True)
    e1 = Engine(mb, num_threads=1)
    e2 = Engine(mb, num_threads=2)
    x = _x(e1.inputs[0].shape, 5)
    np.testing.assert_array_equal(e1.run({'images': x})[0], e2.run({'images': x})[0])


def test_fake_quantize_helper_calibrates():
    """The QAT helper's quantisers saw the calibration data (scales are not the initial 1.0)."""
    from models import yolov8_like
    module = fake_quantize(yolov8_like(), calibration_data((1, 3, 32, 32), 2))
    scales = [float(m.scale) for m in module.modules()
              if type(m).__name__ == 'FakeQuantize' and m.qscheme == torch.per_tensor_affine]
    assert len(scales) > 50 and all(0 < s < 1 for s in scales)
