"""A small YOLOv8-style detector: backbone, FPN/PAN neck, anchor-free decoupled head with DFL bins.

Layout (``widths`` = w0..w4, input ``S x S``, RGB in [0, 1]):

=========  ===========================================  ============
stage      layers                                       output
=========  ===========================================  ============
stem       Conv 3x3 s2                                  w0 @ S/2
P2         Conv 3x3 s2, C2f                             w1 @ S/4
P3         Conv 3x3 s2, C2f                             w2 @ S/8
P4         Conv 3x3 s2, C2f                             w3 @ S/16
P5         Conv 3x3 s2, C2f, SPPF                       w4 @ S/32
top-down   up(P5) + P4 -> C2f (N4); up(N4) + P3 -> C2f  out3 (w2)
bottom-up  down(out3) + N4 -> C2f; down(out4) + P5 -> C2f  out4 (w3), out5 (w4)
head       per level: box branch (2 x Conv 3x3, 1x1 -> 4 * reg_max) and class branch
           (2 x Conv 3x3, 1x1 -> nc), concatenated: [B, 4 * reg_max + nc, H, W]
=========  ===========================================  ============

"Conv" is Conv-BN-SiLU; C2f splits a 1x1 conv's output in two halves, runs bottlenecks on the second and
concatenates every intermediate result before a final 1x1 conv; SPPF chains three 5x5 max-pools.

Decoding (:class:`DecodedDetector`, the graph that is exported): for each anchor (cell centre ``(j + 0.5,
i + 0.5)`` in grid units of its level) the 4 x ``reg_max`` box logits are a softmax distribution over the
distances 0..reg_max-1 (grid units) to the left, top, right and bottom edges; the expected distances
``d = sum_k k * p_k`` give ``x1 = ax - d_l``, ``x2 = ax + d_r`` (same for y), then ``(cx, cy, w, h) *
stride`` in input pixels; class scores are ``sigmoid(logits)``.  Output ``[B, 4 + nc, A]``, A = sum of
the three grid sizes - the layout of Ultralytics' YOLOv8 exports, read by
``qvision_ros.vision.decode_yolov8``.
"""
import math

import torch
from torch import nn

STRIDES = (8, 16, 32)
DEFAULT_WIDTHS = (16, 32, 48, 96, 128)


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU; :meth:`fuse` folds the batch norm into the convolution."""

    def __init__(self, c_in, c_out, k=1, stride=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self):
        """conv(x) * g + b with g = gamma / sqrt(var + eps), b = beta - mean * g:
        W' = W * g (per output channel), bias' = b."""
        if isinstance(self.bn, nn.Identity):
            return
        bn = self.bn
        g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv = nn.Conv2d(self.conv.in_channels, self.conv.out_channels, self.conv.kernel_size, self.conv.stride,
                         self.conv.padding, bias=True)
        conv.weight.copy_(self.conv.weight * g[:, None, None, None])
        conv.bias.copy_(bn.bias - bn.running_mean * g)
        self.conv = conv
        self.bn = nn.Identity()


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1 = ConvBNAct(c, c, 3)
        self.cv2 = ConvBNAct(c, c, 3)
        self.shortcut = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.shortcut else y


class C2f(nn.Module):
    """1x1 conv to 2c, split in halves (a, b); b -> bottleneck -> ... ; concat(a, b, every bottleneck
    output) -> 1x1 conv."""

    def __init__(self, c_in, c_out, n=1, shortcut=True):
        super().__init__()
        self.c = c_out // 2
        self.cv1 = ConvBNAct(c_in, 2 * self.c)
        self.blocks = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))
        self.cv2 = ConvBNAct((2 + n) * self.c, c_out)

    def forward(self, x):
        parts = list(self.cv1(x).split((self.c, self.c), 1))   # constant sizes: one ONNX Split
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class SPPF(nn.Module):
    """1x1 conv to c/2, three chained 5x5 max-pools (receptive fields 5, 9, 13), concat, 1x1 conv."""

    def __init__(self, c_in, c_out):
        super().__init__()
        c = c_in // 2
        self.cv1 = ConvBNAct(c_in, c)
        self.cv2 = ConvBNAct(4 * c, c_out)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.cv1(x)
        a = self.pool(x)
        b = self.pool(a)
        return self.cv2(torch.cat([x, a, b, self.pool(b)], 1))


class Head(nn.Module):
    """Decoupled anchor-free head: per level, a box branch (4 * reg_max DFL logits) and a class branch."""

    def __init__(self, channels, num_classes, reg_max, box_width, cls_width):
        super().__init__()
        self.num_classes, self.reg_max = num_classes, reg_max
        self.box = nn.ModuleList(nn.Sequential(ConvBNAct(c, box_width, 3), ConvBNAct(box_width, box_width, 3),
                                               nn.Conv2d(box_width, 4 * reg_max, 1)) for c in channels)
        self.cls = nn.ModuleList(nn.Sequential(ConvBNAct(c, cls_width, 3), ConvBNAct(cls_width, cls_width, 3),
                                               nn.Conv2d(cls_width, num_classes, 1)) for c in channels)

    def init_biases(self, image_size):
        """Box logits start flat; class logits start at the prior of ~5 objects per image spread over the
        cells of a level (so the first losses are not dominated by easy negatives)."""
        for box, cls, s in zip(self.box, self.cls, STRIDES):
            nn.init.constant_(box[-1].bias, 1.0)
            prior = 5.0 / self.num_classes / (image_size / s) ** 2
            nn.init.constant_(cls[-1].bias, math.log(prior / (1 - prior)))

    def forward(self, feats):
        return [torch.cat([b(f), c(f)], 1) for f, b, c in zip(feats, self.box, self.cls)]


class Detector(nn.Module):
    """The network; ``forward`` returns the raw maps of the three levels, each [B, 4 * reg_max + nc, H, W]."""

    def __init__(self, num_classes=5, widths=DEFAULT_WIDTHS, reg_max=16, box_width=32, cls_width=None,
                 image_size=320):
        super().__init__()
        if len(widths) != 5:
            raise ValueError('widths needs 5 entries (stem, P2, P3, P4, P5), got %r' % (widths,))
        w0, w1, w2, w3, w4 = widths
        self.num_classes, self.reg_max, self.widths = num_classes, reg_max, tuple(widths)
        self.p2 = nn.Sequential(ConvBNAct(3, w0, 3, 2), ConvBNAct(w0, w1, 3, 2), C2f(w1, w1))
        self.p3 = nn.Sequential(ConvBNAct(w1, w2, 3, 2), C2f(w2, w2))
        self.p4 = nn.Sequential(ConvBNAct(w2, w3, 3, 2), C2f(w3, w3))
        self.p5 = nn.Sequential(ConvBNAct(w3, w4, 3, 2), C2f(w4, w4), SPPF(w4, w4))
        self.up = nn.Upsample(scale_factor=2.0, mode='nearest')
        self.td4 = C2f(w4 + w3, w3, shortcut=False)
        self.td3 = C2f(w3 + w2, w2, shortcut=False)
        self.down3 = ConvBNAct(w2, w2, 3, 2)
        self.bu4 = C2f(w2 + w3, w3, shortcut=False)
        self.down4 = ConvBNAct(w3, w3, 3, 2)
        self.bu5 = C2f(w3 + w4, w4, shortcut=False)
        self.head = Head((w2, w3, w4), num_classes, reg_max, box_width, cls_width or max(w2, num_classes))
        self.head.init_biases(image_size)

    def forward(self, x):
        p3 = self.p3(self.p2(x))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        n4 = self.td4(torch.cat([self.up(p5), p4], 1))
        out3 = self.td3(torch.cat([self.up(n4), p3], 1))
        out4 = self.bu4(torch.cat([self.down3(out3), n4], 1))
        out5 = self.bu5(torch.cat([self.down4(out4), p5], 1))
        return self.head([out3, out4, out5])

    def fuse(self):
        """Fold every batch norm into its convolution (inference only); returns self."""
        for m in self.modules():
            if isinstance(m, ConvBNAct):
                m.fuse()
        return self

    def config(self):
        return {'num_classes': self.num_classes, 'widths': list(self.widths), 'reg_max': self.reg_max,
                'box_width': self.head.box[0][0].conv.out_channels,
                'cls_width': self.head.cls[0][0].conv.out_channels}


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def grid_sizes(image_size):
    """(height, width) of the three levels for an input of ``image_size`` = (height, width) or an int."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    return [(math.ceil(h / s), math.ceil(w / s)) for s in STRIDES]


def make_anchors(image_size, dtype=torch.float32, device=None):
    """Anchor points ``[A, 2]`` (x, y, grid units of their level, cell centres) and strides ``[A, 1]``,
    level by level, row-major inside a level (the order in which the raw maps are flattened)."""
    points, strides = [], []
    for (h, w), s in zip(grid_sizes(image_size), STRIDES):
        y, x = torch.meshgrid(torch.arange(h, dtype=dtype, device=device) + 0.5,
                              torch.arange(w, dtype=dtype, device=device) + 0.5, indexing='ij')
        points.append(torch.stack([x.reshape(-1), y.reshape(-1)], 1))
        strides.append(torch.full((h * w, 1), float(s), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(strides)


def flatten_raw(raw):
    """The three raw maps -> ``[B, 4 * reg_max + nc, A]``."""
    return torch.cat([r.flatten(2) for r in raw], 2)


class DecodedDetector(nn.Module):
    """A :class:`Detector` with the decode in the graph, for a fixed input size: images
    ``[B, 3, H, W]`` (RGB, pixel / 255) -> ``[B, 4 + nc, A]`` = (cx, cy, w, h) in input pixels and sigmoid
    class scores.  Anchor points and strides are constants; the expectation over the DFL bins is a 1x1
    convolution with weights 0..reg_max-1, so the graph is made of Reshape, Transpose, Softmax, Conv and
    element-wise ops."""

    def __init__(self, detector, image_size=320):
        super().__init__()
        self.detector = detector
        self.image_size = image_size
        self.grids = grid_sizes(image_size)
        points, strides = make_anchors(image_size)
        self.register_buffer('anchors', points.t().contiguous()[None])     # [1, 2, A]
        self.register_buffer('strides', strides.t().contiguous()[None])    # [1, 1, A]
        reg_max = detector.reg_max
        self.dfl = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.dfl.weight.data[:] = torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1)

    def forward(self, images):
        raw = self.detector(images)
        reg_max, nc = self.detector.reg_max, self.detector.num_classes
        n_anchors = sum(h * w for h, w in self.grids)
        x = torch.cat([r.reshape(-1, 4 * reg_max + nc, h * w) for r, (h, w) in zip(raw, self.grids)], 2)
        box, cls = x.split((4 * reg_max, nc), 1)
        prob = box.reshape(-1, 4, reg_max, n_anchors).transpose(2, 1).softmax(1)       # [B, reg_max, 4, A]
        dist = self.dfl(prob).reshape(-1, 4, n_anchors)                                 # expected distances
        lt, rb = dist.split((2, 2), 1)
        x1y1 = self.anchors - lt
        x2y2 = self.anchors + rb
        xywh = torch.cat([(x1y1 + x2y2) * 0.5, x2y2 - x1y1], 1) * self.strides
        return torch.cat([xywh, cls.sigmoid()], 1)
