"""Small CNNs of the families the engine targets, built in PyTorch with random weights, and their ONNX
exports: float, and QDQ (ONNX Runtime's ``quantize_static``).  For benchmarks and tests; nothing is
downloaded, every weight comes from a fixed seed.  Needs ``torch`` (and ``onnxruntime`` for
:func:`quantize_qdq`), which the engine itself does not: import this module only where they are installed.

Each builder returns an ``nn.Module`` in eval mode whose batch-norm statistics are randomised so that
folding them is not a no-op.  Families (small versions of the real networks, same operator patterns):

* :func:`yolov8_like` - Conv-BN-SiLU blocks, C2f (Split, bottlenecks, Concat), SPPF (three max pools),
  an upsample + concat neck, an anchor-free head with DFL (Reshape, Transpose, Softmax over 16 bins,
  1x1 Conv with fixed weights), box decoding and concatenation with sigmoid scores;
* :func:`yolov5_like` - a YOLOv5 head: per-level 1x1 convs, 5-D reshape/permute, sigmoid, grid and
  anchor decoding (Pow, Slice, Concat);
* :func:`vgg_like`, :func:`resnet_like` (basic blocks, stride-2 downsample, global pool, FC),
  :func:`mobilenetv2_like` (depthwise, ReLU6, inverted residuals).

Concatenations and residual additions of the backbones are the modules :class:`Concat` and :class:`Add`
(they export to the same ONNX nodes as ``torch.cat`` and ``+``), so that quantisation-aware training
can give their outputs a fake quantiser like any other layer.
"""
import io
import os
import tempfile
import warnings

import numpy as np
import torch
from torch import nn

# --------------------------------------------------------------------------------------- building blocks


def _randomise_bn(module, seed):
    """Give every BatchNorm random statistics and affine parameters (eval mode uses them)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) * 1.0 + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)
    return module.eval()


def _finish(module, seed):
    torch.manual_seed(seed)
    fixed = {id(m.conv) for m in module.modules() if isinstance(m, DFL)}
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in fixed:
            nn.init.kaiming_uniform_(m.weight, a=1.0)
            if m.bias is not None:
                nn.init.uniform_(m.bias, -0.1, 0.1)
    return _randomise_bn(module, seed + 1)


class Concat(nn.Module):
    """``torch.cat`` as a module (the same ONNX Concat), so that quantisation-aware training can attach a
    fake quantiser to its output like to any other layer."""

    def __init__(self, dim=1):
        super().__init__()
        self.dim = dim

    def forward(self, xs):
        return torch.cat(xs, self.dim)


class Add(nn.Module):
    """``a + b`` as a module (the same ONNX Add), for the same reason as :class:`Concat`."""

    def forward(self, a, b):
        return a + b


class ConvBNAct(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, g=1, act='silu', p=None):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = {'silu': nn.SiLU(), 'relu': nn.ReLU(), 'relu6': nn.ReLU6(), None: nn.Identity()}[act]

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


# ----------------------------------------------------------------------------------------- YOLOv8-style

class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1 = ConvBNAct(c, c, 3)
        self.cv2 = ConvBNAct(c, c, 3)
        self.add = Add() if shortcut else None

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return self.add(x, y) if self.add is not None else y


class C2f(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=True):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = ConvBNAct(c1, 2 * self.c, 1)
        self.cv2 = ConvBNAct((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))
        self.cat = Concat(1)

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(self.cat(y))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = ConvBNAct(c1, c_, 1)
        self.cv2 = ConvBNAct(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)
        self.cat = Concat(1)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(self.cat((x, y1, y2, self.m(y2))))


class DFL(nn.Module):
    """Distribution focal loss integral: softmax over ``c1`` bins, expectation by a fixed 1x1 conv."""

    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class DetectV8(nn.Module):
    def __init__(self, nc, ch, reg_max=16, strides=(8, 16, 32)):
        super().__init__()
        self.nc, self.reg_max, self.no = nc, reg_max, nc + 4 * reg_max
        self.strides = strides
        c2, c3 = max(16, ch[0] // 4, reg_max * 4), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(ConvBNAct(x, c2, 3), ConvBNAct(c2, c2, 3),
                                               nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(ConvBNAct(x, c3, 3), ConvBNAct(c3, c3, 3),
                                               nn.Conv2d(c3, nc, 1)) for x in ch)
        self.cat = nn.ModuleList(Concat(1) for _ in ch)
        self.dfl = DFL(reg_max)

    def forward(self, xs):
        b = xs[0].shape[0]
        outs, anchors, strides = [], [], []
        for i, x in enumerate(xs):
            outs.append(self.cat[i]((self.cv2[i](x), self.cv3[i](x))))
            h, w = x.shape[2:]
            sy, sx = torch.meshgrid(torch.arange(h, dtype=torch.float) + 0.5,
                                    torch.arange(w, dtype=torch.float) + 0.5, indexing='ij')
            anchors.append(torch.stack((sx, sy), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), float(self.strides[i])))
        anchor_points = torch.cat(anchors).transpose(0, 1).unsqueeze(0)
        stride_t = torch.cat(strides).transpose(0, 1)
        x_cat = torch.cat([xi.view(b, self.no, -1) for xi in outs], 2)
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1 = anchor_points - lt
        x2y2 = anchor_points + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * stride_t
        return torch.cat((dbox, cls.sigmoid()), 1)


class YoloV8Like(nn.Module):
    def __init__(self, nc=8, w=16):
        super().__init__()
        self.stem = ConvBNAct(3, w, 3, 2)
        self.b1 = nn.Sequential(ConvBNAct(w, 2 * w, 3, 2), C2f(2 * w, 2 * w, 1))
        self.b2 = nn.Sequential(ConvBNAct(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w, 1))      # P3 /8
        self.b3 = nn.Sequential(ConvBNAct(4 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w, 1))      # P4 /16
        self.b4 = nn.Sequential(ConvBNAct(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w, 1), SPPF(8 * w, 8 * w))
        self.up = nn.Upsample(scale_factor=2, mode='nearest')
        self.n1 = C2f(12 * w, 4 * w, 1, shortcut=False)
        self.n2 = C2f(8 * w, 4 * w, 1, shortcut=False)
        self.d1 = ConvBNAct(4 * w, 4 * w, 3, 2)
        self.n3 = C2f(8 * w, 4 * w, 1, shortcut=False)
        self.d2 = ConvBNAct(4 * w, 4 * w, 3, 2)
        self.n4 = C2f(12 * w, 8 * w, 1, shortcut=False)
        self.head = DetectV8(nc, (4 * w, 4 * w, 8 * w))
        self.cat = nn.ModuleList(Concat(1) for _ in range(4))

    def forward(self, x):
        p3 = self.b2(self.b1(self.stem(x)))
        p4 = self.b3(p3)
        p5 = self.b4(p4)
        t4 = self.n1(self.cat[0]((self.up(p5), p4)))
        o3 = self.n2(self.cat[1]((self.up(t4), p3)))
        o4 = self.n3(self.cat[2]((self.d1(o3), t4)))
        o5 = self.n4(self.cat[3]((self.d2(o4), p5)))
        return self.head([o3, o4, o5])


def yolov8_like(nc=8, width=16, seed=0):
    return _finish(YoloV8Like(nc, width), seed)


# ----------------------------------------------------------------------------------------- YOLOv5-style

class DetectV5(nn.Module):
    def __init__(self, nc, ch, strides=(8, 16, 32)):
        super().__init__()
        self.nc, self.no, self.na = nc, nc + 5, 3
        self.strides = strides
        anchors = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                                [116, 90, 156, 198, 373, 326]], dtype=torch.float).view(3, 3, 2)
        self.register_buffer('anchors', anchors)
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)

    def forward(self, xs):
        z = []
        for i, x in enumerate(xs):
            x = self.m[i](x)
            bs, _, ny, nx = x.shape
            x = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            yv, xv = torch.meshgrid(torch.arange(ny, dtype=torch.float), torch.arange(nx, dtype=torch.float),
                                    indexing='ij')
            grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2)
            anchor_grid = self.anchors[i].view(1, self.na, 1, 1, 2)
            y = x.sigmoid()
            xy = (y[..., 0:2] * 2 - 0.5 + grid) * self.strides[i]
            wh = (y[..., 2:4] * 2) ** 2 * anchor_grid
            y = torch.cat((xy, wh, y[..., 4:]), -1)
            z.append(y.view(bs, -1, self.no))
        return torch.cat(z, 1)


class YoloV5Like(nn.Module):
    def __init__(self, nc=6, w=16):
        super().__init__()
        self.stem = ConvBNAct(3, w, 6, 2, p=2)
        self.b1 = nn.Sequential(ConvBNAct(w, 2 * w, 3, 2), ConvBNAct(2 * w, 2 * w, 3))
        self.b2 = nn.Sequential(ConvBNAct(2 * w, 4 * w, 3, 2), ConvBNAct(4 * w, 4 * w, 3))
        self.b3 = ConvBNAct(4 * w, 4 * w, 3, 2)
        self.b4 = ConvBNAct(4 * w, 8 * w, 3, 2)
        self.head = DetectV5(nc, (4 * w, 4 * w, 8 * w))

    def forward(self, x):
        p3 = self.b2(self.b1(self.stem(x)))
        p4 = self.b3(p3)
        return self.head([p3, p4, self.b4(p4)])


def yolov5_like(nc=6, width=16, seed=10):
    return _finish(YoloV5Like(nc, width), seed)


# --------------------------------------------------------------------------------------- classifiers

class VGGLike(nn.Module):
    def __init__(self, nc=10, w=8, size=32):
        super().__init__()
        layers, c = [], 3
        for v in (w, 'M', 2 * w, 2 * w, 'M', 4 * w, 4 * w, 'M'):
            if v == 'M':
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * (size // 8) ** 2, 64), nn.ReLU(True),
                                        nn.Dropout(), nn.Linear(64, nc))

    def forward(self, x):
        return self.classifier(self.features(x))


def vgg_like(nc=10, width=8, seed=20, size=32):
    """Input ``size`` x ``size`` (a multiple of 8: three 2x2 max pools, then two fully-connected layers)."""
    return _finish(VGGLike(nc, width, size), seed)


class BasicBlock(nn.Module):
    def __init__(self, c1, c2, s=1):
        super().__init__()
        self.c1 = ConvBNAct(c1, c2, 3, s, act='relu')
        self.c2 = ConvBNAct(c2, c2, 3, 1, act=None)
        self.down = ConvBNAct(c1, c2, 1, s, act=None) if s != 1 or c1 != c2 else None
        self.add = Add()
        self.relu = nn.ReLU()

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        return self.relu(self.add(self.c2(self.c1(x)), idt))


class ResNetLike(nn.Module):
    def __init__(self, nc=10, w=8):
        super().__init__()
        self.stem = ConvBNAct(3, w, 7, 2, act='relu', p=3)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.layers = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w), BasicBlock(w, 2 * w, 2),
                                    BasicBlock(2 * w, 2 * w), BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, nc)

    def forward(self, x):
        x = self.layers(self.pool(self.stem(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


def resnet_like(nc=10, width=8, seed=30):
    return _finish(ResNetLike(nc, width), seed)


class InvertedResidual(nn.Module):
    def __init__(self, c1, c2, s, t):
        super().__init__()
        h = c1 * t
        self.res = s == 1 and c1 == c2
        layers = [ConvBNAct(c1, h, 1, act='relu6')] if t != 1 else []
        layers += [ConvBNAct(h, h, 3, s, g=h, act='relu6'), ConvBNAct(h, c2, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.add = Add() if self.res else None

    def forward(self, x):
        return self.add(x, self.block(x)) if self.res else self.block(x)


class MobileNetV2Like(nn.Module):
    def __init__(self, nc=10, w=8):
        super().__init__()
        cfg = [(1, w, 1, 1), (6, int(1.5 * w), 2, 2), (6, 2 * w, 2, 2), (6, 4 * w, 1, 2)]
        layers, c = [ConvBNAct(3, 2 * w, 3, 2, act='relu6')], 2 * w
        for t, co, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(c, co, s if i == 0 else 1, t))
                c = co
        layers.append(ConvBNAct(c, 8 * w, 1, act='relu6'))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(8 * w, nc))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


def mobilenetv2_like(nc=10, width=8, seed=40):
    return _finish(MobileNetV2Like(nc, width), seed)


# ------------------------------------------------------------------------------- export and quantize

# name -> builder, for the benchmark and the tests
BUILDERS = {
    'yolov8': yolov8_like,
    'yolov5': yolov5_like,
    'vgg': vgg_like,
    'resnet': resnet_like,
    'mobilenetv2': mobilenetv2_like,
}


def export(module, size, dynamic_batch=False, opset=17, dynamo=False, input_name='images', batch=1,
           fold=True):
    """ONNX bytes of ``module`` for an input [batch, 3, size, size] (``size`` an int or (h, w)), exported by
    the TorchScript exporter (``dynamo=True``: the dynamo exporter, where it is usable); ``fold=False``
    keeps BatchNormalization nodes (no constant folding in the exporter)."""
    h, w = (size, size) if np.ndim(size) == 0 else size
    x = torch.zeros(batch, 3, h, w)
    f = io.BytesIO()
    kwargs = {}
    if dynamic_batch:
        kwargs['dynamic_axes'] = {input_name: {0: 'batch'}, 'output': {0: 'batch'}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if dynamo:
            prog = torch.onnx.export(module, (x,), input_names=[input_name], output_names=['output'],
                                     opset_version=opset, dynamo=True)
            return prog.model_proto.SerializeToString()
        torch.onnx.export(module, (x,), f, input_names=[input_name], output_names=['output'],
                          opset_version=opset, dynamo=False, do_constant_folding=fold, **kwargs)
    return f.getvalue()


def calibration_data(shape, n=4, seed=0):
    """``n`` random images in [0, 1] of ``shape`` (float32): a small calibration set."""
    rng = np.random.default_rng(seed)
    return [rng.random(shape, dtype=np.float32) for _ in range(n)]


def quantize_qdq(model_bytes, input_name='images', activation='uint8', per_channel=True, n_calib=4,
                 op_types=None, seed=0):
    """A QDQ model (bytes) from ``onnxruntime.quantization.quantize_static``: QuantFormat.QDQ, int8
    weights (per channel unless ``per_channel=False``), ``activation`` 'uint8' or 'int8', calibrated
    (MinMax) on ``n_calib`` random images."""
    import logging

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model = onnx.load_from_string(model_bytes)
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({input_name: x} for x in calibration_data(tuple(dims), n_calib, seed))

        def get_next(self):
            return next(self.it, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)        # the quantizer's advice to pre-process the model
    try:
        with tempfile.TemporaryDirectory() as d:
            src, dst = os.path.join(d, 'float.onnx'), os.path.join(d, 'qdq.onnx')
            with open(src, 'wb') as fh:
                fh.write(model_bytes)
            quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8 if activation == 'uint8' else QuantType.QInt8,
                            weight_type=QuantType.QInt8, op_types_to_quantize=op_types)
            with open(dst, 'rb') as fh:
                return fh.read()
    finally:
        root.setLevel(level)
