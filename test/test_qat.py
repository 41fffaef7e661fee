"""Quantization-aware training (qvision_ros.quantization.qat): the fake-quantisation arithmetic against
DESIGN.md section 3 (golden values), and the round trip prepare -> calibrate -> fine-tune -> export QDQ ->
run, for 8-, 4- and 2-bit weights.

Oracles for the exported file: ONNX Runtime running the same file (graph optimisation off: every node by
its ONNX definition; and on), and the PyTorch fake-quantised model itself.  Our Engine must agree with both
within 2 steps of the output quantisation, run every convolution and the linear layer on its int8 kernels
(per-layer profile), and the file's int8 weights must lie in the n-bit range.
"""
import collections

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from models import ort_run, step_differences
from qvision_ros.errors import ConfigError, DataError, ModelError
from qvision_ros.quantization import qat
from qvision_ros.runtime import Engine

MAX_STEPS = 2
SIZE = 32


class TinyNet(nn.Module):
    """The patterns QAT has to place quantisers around: Conv-BN-ReLU, depthwise Conv-BN-ReLU6, a residual
    Add followed by ReLU, max pool, Conv-SiLU, nearest upsample, Concat, global average pool, Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
        self.pool = nn.MaxPool2d(2)
        self.branch = nn.Conv2d(16, 16, 3, 1, 1)
        self.act = nn.SiLU()
        self.up = nn.Upsample(scale_factor=2, mode='nearest')
        self.down = nn.Sequential(nn.Conv2d(32, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        y = torch.relu(self.pw(self.dw(x)) + x)
        u = self.up(self.act(self.branch(self.pool(y))))
        z = self.down(torch.cat([y, u], 1))
        return self.fc(torch.flatten(self.gap(z), 1))


def tiny_net(seed=0):
    torch.manual_seed(seed)
    net = TinyNet()
    g = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():                  # non-trivial batch-norm statistics, so that folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


def _images(n, seed):
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _train_batches(seed=5, n=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(8, 3, SIZE, SIZE, generator=g), torch.randint(0, 10, (8,), generator=g))
            for _ in range(n)]


def _prepared(bits, keep_float=()):
    model = qat.prepare_qat(tiny_net(), weight_bits=bits, keep_float=keep_float)
    qat.calibrate(model, [_images(8, 1), _images(8, 2)])
    return model


def _weights(proto):
    """{conv/gemm node name: (int8 weight, scales, axis)} of every layer whose weight is a
    DequantizeLinear of an initializer."""
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    out = {}
    for n in proto.graph.node:
        if n.op_type not in ('Conv', 'Gemm'):
            continue
        dq = producers.get(n.input[1])
        assert dq is not None and dq.op_type == 'DequantizeLinear', (n.name, dq)
        axis = next((a.i for a in dq.attribute if a.name == 'axis'), 1)
        out[n.name] = (inits[dq.input[0]], inits[dq.input[1]], axis)
    return out


# -------------------------------------------------------------------------------- arithmetic (golden)

def test_activation_qparams_golden():
    # [-1, 3]: s = 4 / 255, zp = round(1 / s) = round(63.75) = 64
    s, zp = qat.activation_qparams(-1.0, 3.0)
    assert s == pytest.approx(4 / 255, rel=1e-7) and zp == 64
    assert s == float(np.float32(s))                       # a float32 value, as stored in the file
    # widened to include 0: [0.5, 2] -> [0, 2], zp 0; [-3, -1] -> [-3, 0], zp 255
    assert qat.activation_qparams(0.5, 2.0) == (pytest.approx(2 / 255, rel=1e-7), 0)
    assert qat.activation_qparams(-3.0, -1.0) == (pytest.approx(3 / 255, rel=1e-7), 255)
    # degenerate: an all-zero range (ONNX Runtime's convention)
    assert qat.activation_qparams(0.0, 0.0) == (1.0, 0)
    with pytest.raises(DataError, match='not finite'):
        qat.activation_qparams(float('nan'), 1.0)


def test_fake_quantize_rounds_half_to_even_and_clamps():
    s = torch.tensor(0.5)
    x = torch.tensor([0.25, 0.75, 1.25, -0.25, -0.75, 200.0, -200.0])    # ties: 0.5, 1.5, 2.5, -0.5, -1.5
    y = qat.fake_quantize(x, s, torch.tensor(10.0), 0, 255)
    # q = round(x / s) + 10 -> 10, 12, 12, 10, 8, 255 (clamped), 0 (clamped); y = (q - 10) * s
    np.testing.assert_array_equal(y.numpy(), np.float32([0.0, 1.0, 1.0, 0.0, -1.0, 122.5, -5.0]))


def test_straight_through_gradient():
    """d fq / dx is 1 inside the representable range, 0 where the value is clamped."""
    x = torch.tensor([-6.0, -1.0, 0.3, 2.0, 300.0], requires_grad=True)     # q = x + 5 in [0, 255]?
    qat.fake_quantize(x, torch.tensor(1.0), torch.tensor(5.0), 0, 255).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 1.0, 1.0, 0.0])


@pytest.mark.parametrize('bits,qmax', [(8, 127), (4, 7), (2, 1)])
def test_weight_quantizer_golden(bits, qmax):
    w = torch.tensor([[0.7, -0.35, 0.1], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.5]])
    s = qat.weight_scales(w, bits)
    np.testing.assert_allclose(s.numpy(), np.float32([0.7 / qmax, 1.0, 2.0 / qmax]), rtol=1e-7)
    q, s2 = qat.WeightQuantizer(bits).integers(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) == qmax and torch.equal(s, s2)
    expected = np.clip(np.rint(w.numpy() / s.numpy()[:, None]), -qmax, qmax)
    np.testing.assert_array_equal(q.numpy(), expected)
    quantizer = qat.WeightQuantizer(bits)
    assert torch.equal(quantizer(w), w)                  # off until calibrated
    quantizer.enabled = True
    fq = quantizer(w)
    np.testing.assert_array_equal(fq.numpy(), (q.float() * s[:, None]).numpy())


# ------------------------------------------------------------------------------------- preparation

def test_prepare_folds_batch_norm_and_places_quantizers():
    net = tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = qat.prepare_qat(net, weight_bits=8)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())    # the input is untouched
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    kinds = collections.Counter(type(m).__name__ for m in model.modules())
    assert kinds['QuantConv2d'] == 5 and kinds['QuantLinear'] == 1, kinds
    # input, stem(+relu), dw(+relu6), pw, add(+relu), silu conv, silu, cat, down(+relu), gap, fc;
    # the max pool and the upsample re-use their input's quantiser
    assert kinds['ActivationQuantizer'] == 11 and kinds['SharedQuantizer'] == 2, kinds
    # the folded float model (quantisers off) computes what the original computes
    x = _images(2, 3)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), net(x).numpy(), rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------------------- round trip

@pytest.mark.parametrize('bits', [8, 4, 2])
def test_round_trip(bits, tmp_path):
    model = _prepared(bits)
    w0 = model.fc.linear.weight.detach().clone()
    losses = qat.fine_tune(model, _train_batches(), nn.functional.cross_entropy,
                           qat.FineTuneOptions(epochs=2, lr=0.02))
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert not torch.equal(w0, model.fc.linear.weight)          # the weights were trained
    path = qat.export_qdq(model, str(tmp_path / 'sub' / 'tiny.qdq.onnx'), _images(1, 0))
    proto = onnx.load(path)
    onnx.checker.check_model(proto)

    # int8 weights, per output channel, inside the n-bit range (and reaching it: s = max|w| / qmax)
    qmax = qat.weight_qmax(bits)
    weights = _weights(proto)
    assert len(weights) == 6
    for name, (q, s, axis) in weights.items():
        assert q.dtype == np.int8 and axis == 0 and s.shape == (q.shape[0],), name
        assert np.abs(q).max() == qmax and q.min() >= -qmax, (name, q.min(), q.max())
    assert not any(t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4 for t in proto.graph.initializer)

    engine = Engine(path, num_threads=1)
    x = _images(4, 9).numpy()
    records = engine.profile({'images': x[:1]}, repeat=1)
    layers = [r for r in records if r.op in ('QConv', 'QGemm', 'Conv', 'Gemm', 'MatMul')]
    assert collections.Counter(r.op for r in layers) == {'QConv': 5, 'QGemm': 1}, layers
    assert all(r.precision == 'int8' for r in layers)

    out_scale = float(model.fc_fq.scale)
    hist = collections.Counter()
    for i in range(len(x)):
        xi = x[i:i + 1]
        (ours,) = engine.run({'images': xi})
        plain = ort_run(path, {'images': xi}, optimize=False)[0]
        optimized = ort_run(path, {'images': xi})[0]
        with torch.no_grad():
            mine = model(torch.from_numpy(xi)).numpy()
        for name, ref in (('ort', plain), ('ort-optimized', optimized), ('torch', mine)):
            d = step_differences(ours, ref, out_scale)
            hist[name] = max(hist[name], int(d.max()))
    print('\n%d-bit weights: largest output difference in steps of %.4g: %s' % (bits, out_scale, dict(hist)))
    assert max(hist.values()) <= MAX_STEPS, hist


def test_fine_tune_freezing_and_limits():
    """freeze_epoch=0: the calibrated ranges never move; without it they follow the data (moving average)
    until the last epoch; max_steps stops the run; AdamW and gradient clipping run."""
    model = _prepared(8)
    ranges = [(float(q.min_val), float(q.max_val)) for q in qat.activation_quantizers(model)]
    losses = qat.fine_tune(model, _train_batches(n=4), nn.functional.cross_entropy,
                           qat.FineTuneOptions(epochs=3, freeze_epoch=0, max_steps=5,
                                               optimizer=qat.OptimizerKind.ADAMW, clip_grad_norm=1.0))
    assert len(losses) == 2                              # 4 steps, then 1 of the second epoch
    assert ranges == [(float(q.min_val), float(q.max_val)) for q in qat.activation_quantizers(model)]
    qat.fine_tune(model, _train_batches(n=2), nn.functional.cross_entropy, qat.FineTuneOptions(epochs=2))
    moved = [(float(q.min_val), float(q.max_val)) for q in qat.activation_quantizers(model)]
    assert moved != ranges and not any(q.observing for q in qat.activation_quantizers(model))


def test_keep_float_layer_runs_float(tmp_path):
    """A layer named in keep_float stays float (no weight quantiser, no output quantiser); the layer that
    reads its value gets a quantiser on it, and the rest still runs int8."""
    model = _prepared(8, keep_float=('branch',))
    assert isinstance(model.branch, nn.Conv2d)
    path = qat.export_qdq(model, str(tmp_path / 'partial.onnx'), _images(1, 0))
    engine = Engine(path, num_threads=1)
    records = engine.profile({'images': _images(1, 4).numpy()}, repeat=1)
    convs = {r.name: r.precision for r in records if r.op in ('QConv', 'Conv')}
    assert convs.pop('/branch/Conv') == 'fp32'
    assert len(convs) == 4 and set(convs.values()) == {'int8'}, convs
    x = _images(1, 6).numpy()
    (ours,) = engine.run({'images': x})
    ref = ort_run(path, {'images': x}, optimize=False)[0]
    assert step_differences(ours, ref, float(model.fc_fq.scale)).max() <= MAX_STEPS


class _TwoHeads(nn.Module):
    """A backbone with two output convolutions concatenated as the model output, then a float decode."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(2))
        self.box = nn.Conv2d(8, 4, 1)
        self.cls = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        f = self.body(x)
        out = torch.cat([self.box(f), self.cls(f)], 1)
        return torch.cat([out[:, :4] * 8.0, torch.sigmoid(out[:, 4:])], 1)


def test_tail_stays_float(tmp_path):
    """The concatenations and the sigmoid after the last convolutions feed no int8 layer: no quantiser
    there (the decode stays float), while both convolutions still run int8."""
    model = qat.prepare_qat(_TwoHeads(), calibration=[_images(2, 0)])
    kinds = collections.Counter(type(m).__name__ for m in model.modules())
    # input, body conv(+relu), box, cls; the max pool's shared quantiser feeds the two convolutions
    assert kinds['ActivationQuantizer'] == 4 and kinds['SharedQuantizer'] == 1, kinds
    path = qat.export_qdq(model, str(tmp_path / 'heads.onnx'), _images(1, 0))
    engine = Engine(path, num_threads=1)
    ops = collections.Counter((r.op, r.precision) for r in engine.profile({'images': _images(1, 1).numpy()},
                                                                          repeat=1))
    assert ops[('QConv', 'int8')] == 3 and ops[('Concat', 'fp32')] == 2 and ops[('Sigmoid', 'fp32')] == 1, ops
    x = _images(1, 2).numpy()
    (ours,) = engine.run({'images': x})
    with torch.no_grad():
        np.testing.assert_allclose(ours, model(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_export_int8_weights_equal_the_exporter_file(tmp_path):
    """The int8 initializers of the default export are exactly the QuantizeLinear results of PyTorch's own
    file (int8_weights=False): same outputs from ONNX Runtime, a smaller file."""
    model = _prepared(4)
    x = _images(1, 0)
    folded = qat.export_qdq_bytes(model, x)
    raw = qat.export_qdq_bytes(model, x, int8_weights=False)
    assert len(folded) < len(raw)
    ops = collections.Counter(n.op_type for n in onnx.load_from_string(raw).graph.node)
    ops_folded = collections.Counter(n.op_type for n in onnx.load_from_string(folded).graph.node)
    assert ops['QuantizeLinear'] - ops_folded['QuantizeLinear'] == 6
    xi = _images(1, 8).numpy()
    np.testing.assert_array_equal(ort_run(folded, {'images': xi}, optimize=False)[0],
                                  ort_run(raw, {'images': xi}, optimize=False)[0])


# ------------------------------------------------------------------------------------------ errors

class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.sum() > 0:                         # data-dependent control flow: not traceable
            return self.conv(x)
        return x


class _NoLayers(nn.Module):
    def forward(self, x):
        return torch.relu(x)


@pytest.mark.parametrize('bits', [3, 16, 0, True, '8', None])
def test_bad_bits(bits):
    with pytest.raises(ConfigError, match='weight bits must be one of'):
        qat.prepare_qat(tiny_net(), weight_bits=bits)


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match='torch.nn.Module'):
        qat.prepare_qat(lambda x: x)
    with pytest.raises(ModelError, match='cannot trace'):
        qat.prepare_qat(_Branchy())
    with pytest.raises(ModelError, match='no Conv2d or Linear'):
        qat.prepare_qat(_NoLayers())
    with pytest.raises(ConfigError, match='prepare_qat'):
        qat.calibrate(tiny_net(), [_images(1, 0)])
    model = qat.prepare_qat(tiny_net())
    with pytest.raises(ConfigError, match='calibrate'):
        qat.export_qdq(model, str(tmp_path / 'x.onnx'), _images(1, 0))
    with pytest.raises(ConfigError, match='calibrate'):
        qat.fine_tune(model, _train_batches(), nn.functional.cross_entropy)
    with pytest.raises(DataError, match='no batches'):
        qat.calibrate(model, [])
    qat.calibrate(model, [_images(2, 0)])
    for bad in (dict(epochs=0), dict(lr=-1.0), dict(freeze_epoch=9), dict(averaging=0.0),
                dict(max_steps=0), dict(momentum=1.5), dict(optimizer='adam'), dict(time_limit_s=0),
                dict(clip_grad_norm=-1.0)):
        with pytest.raises(ConfigError, match='FineTuneOptions'):
            qat.fine_tune(model, _train_batches(), nn.functional.cross_entropy, qat.FineTuneOptions(**bad))
    with pytest.raises(ConfigError, match='opset'):
        qat.export_qdq(model, str(tmp_path / 'x.onnx'), _images(1, 0), opset=11)
    assert not (tmp_path / 'x.onnx').exists()


# ------------------------------------------------------------------ digits classifier and bit-width table

def test_digits_data_split():
    from qvision_ros.training import digits
    data = digits.load_data(size=16)
    assert data.x_train.shape == (1437, 1, 16, 16) and data.x_test.shape == (360, 1, 16, 16)
    assert data.x_train.dtype == np.float32 and 0 <= data.x_test.min() and data.x_test.max() <= 1
    counts = np.bincount(data.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37, counts          # stratified: ~36 per class
    again = digits.load_data(size=16)
    np.testing.assert_array_equal(again.y_test, data.y_test)          # a fixed split
    with pytest.raises(ConfigError, match='multiple of 8'):
        digits.load_data(size=12)


def test_digits_qat_weight_storage(tmp_path):
    """A briefly trained digits model: its float ONNX runs on the engine like PyTorch; at 4 bits the
    table's weight storage equals the count made from the PyTorch layers (n-bit weights, float32 scales,
    32-bit biases), and the PTQ export runs every layer int8."""
    from qvision_ros.quantization import bitwidth
    from qvision_ros.training import digits
    full = digits.load_data()
    data = digits.DigitsData(full.x_train[:256], full.y_train[:256], full.x_test[:64], full.y_test[:64])
    model, losses = digits.train(data, digits.TrainOptions(epochs=2, batch=32))
    assert losses[-1] < losses[0]
    fp32 = digits.export_onnx(model, str(tmp_path / 'fp32.onnx'))
    engine = Engine(fp32, num_threads=1)
    with torch.no_grad():
        expected = model(torch.from_numpy(data.x_test[:2])).numpy()
    for i in range(2):
        np.testing.assert_allclose(engine.run({'images': data.x_test[i:i + 1]})[0][0], expected[i],
                                   rtol=1e-4, atol=1e-4)
    qmodel = qat.prepare_qat(model, weight_bits=4, calibration=[torch.from_numpy(data.x_train[:64])])
    blob = qat.export_qdq_bytes(qmodel, data.x_test[:1], output_names=('logits',))
    layers = [m.conv if isinstance(m, qat.QuantConv2d) else m.linear for m in qmodel.modules()
              if isinstance(m, (qat.QuantConv2d, qat.QuantLinear))]
    assert len(layers) == 7
    expected_bytes = sum(-(-l.weight.numel() * 4 // 8) + 4 * l.weight.shape[0] + 4 * l.bias.numel()
                         for l in layers)
    assert bitwidth.weight_storage_bytes(blob, 4) == expected_bytes
    assert bitwidth.weight_storage_bytes(fp32, 32) == 4 * sum(l.weight.numel() + l.bias.numel() for l in layers)
    with pytest.raises(ConfigError, match='outside the 2-bit range'):
        bitwidth.weight_storage_bytes(blob, 2)
    row = bitwidth.measure('PTQ', 4, Engine(blob, num_threads=1), blob, data, qmodel, 0.0)
    assert row.int8_layers == row.layers == 7 and abs(row.engine_accuracy - row.torch_accuracy) <= 2 / 64
    fast, slow = bitwidth.interleaved_latency_ms([Engine(blob, num_threads=1), engine], data.x_test[:1],
                                                 runs=20, blocks=4)
    assert 0 < fast < slow                                  # the int8 model is faster than the float one


def test_bitwidth_command(tmp_path):
    """The table command end to end, shortened (1 training epoch, 1 QAT epoch, 4 bits only)."""
    import json

    from qvision_ros.quantization import bitwidth
    out = tmp_path / 'table.json'
    assert bitwidth.main(['--train-epochs', '1', '--qat-epochs', '1', '--bits', '4', '--latency-runs', '3',
                          '--calib-images', '64', '--json', str(out)]) == 0
    info = json.loads(out.read_text())
    rows = info['rows']
    assert [(r['method'], r['weight_bits']) for r in rows] == [('FP32', 32), ('PTQ', 4), ('QAT', 4)]
    assert rows[0]['int8_layers'] == 0 and all(r['int8_layers'] == r['layers'] == 7 for r in rows[1:])
    assert rows[1]['weight_bytes'] < rows[0]['weight_bytes'] / 7
    assert all(r['latency_ms'] > 0 and 0 <= r['engine_accuracy'] <= 1 for r in rows)
    assert 'QAT 4-bit weights' in info['markdown']
    assert list(tmp_path.iterdir()) == [out]              # the ONNX files went to a removed temporary folder


# ------------------------------------------------------------------------------------ shipped detector

def test_detector_qat_export_keeps_decode_float(tmp_path):
    """The shipped detector's weights read back from its ONNX reproduce it (ONNX Runtime); prepared for
    QAT and exported with the decode, every convolution but the DFL expectation runs int8 on the engine,
    the decode (softmax over the bins, box arithmetic, score sigmoid, concatenations) float, and the
    engine agrees with ONNX Runtime on the file."""
    from qvision_ros.training import qat_detector
    from qvision_ros.training.data import to_tensor_batch, validation_set
    from qvision_ros.training.model import DecodedDetector

    det = qat_detector.detector_from_onnx(qat_detector.DEFAULT_MODEL)
    x = to_tensor_batch([img for img, _, _ in validation_set(2, seed=1)])
    with torch.no_grad():
        mine = DecodedDetector(det, 320).eval()(x[:1]).numpy()
    shipped = ort_run(qat_detector.DEFAULT_MODEL, {'images': x[:1].numpy()})[0]
    assert np.abs(mine - shipped).max() < 1e-2                      # boxes up to 320 px, scores 0..1
    with pytest.raises(ModelError, match='shape'):
        qat_detector.detector_from_onnx(qat_detector.DEFAULT_MODEL, widths=(8, 16, 32, 64, 128))

    q = qat.prepare_qat(det, calibration=[x])
    q.num_classes, q.reg_max = det.num_classes, det.reg_max
    path = qat.export_qdq(DecodedDetector(q, 320).eval(), str(tmp_path / 'det.onnx'), x[:1],
                          output_names=('output0',))
    engine = Engine(path, num_threads=1)
    records = engine.profile({'images': x[1:].numpy()}, repeat=1)
    convs = collections.Counter(r.precision for r in records if r.op in ('QConv', 'Conv'))
    assert convs == {'int8': 59, 'fp32': 1}, convs
    float_ops = {r.op for r in records if r.precision == 'fp32'}
    assert {'Softmax', 'Sigmoid', 'Concat'} <= float_ops, float_ops
    (ours,) = engine.run({'images': x[1:].numpy()})
    ref = ort_run(path, {'images': x[1:].numpy()}, optimize=False)[0]
    # Boxes compared where something is detected: on background anchors the bin distributions are flat
    # or split between far bins, and one quantisation step of a logit moves their expectation by pixels.
    found = ref[0, 4:].max(0) > 0.05
    box_px = np.abs(ours[0, :4, found] - ref[0, :4, found]).max()
    score = np.abs(ours[0, 4:] - ref[0, 4:]).max()
    print('\ndetector QAT export vs ONNX Runtime: boxes of %d anchors %.3f px, scores %.4f'
          % (found.sum(), box_px, score))
    assert found.sum() >= 5 and box_px < 2.0 and score < 0.05
