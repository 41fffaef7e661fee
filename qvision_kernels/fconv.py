"""float32 convolution and fully-connected layers: validation, weight packing and dispatch.

For the layers a model keeps in float, and for FP32-versus-INT8 comparisons.  A layer is prepared once
(weights packed in blocks of 16 output channels) and then run on any number of inputs::

    layer = FConv2d(weight, bias, stride=2, padding=1, act_min=0.0)   # fused ReLU
    y = layer(x, num_threads=2)                                       # x: float32 NHWC
    silu = FConv2d(weight, bias, activation='silu')                   # fused x * sigmoid(x)

The kernels may fuse multiply-adds (FMA) and sum in their own order, so they agree with the NumPy
reference :func:`qvision_kernels.reference.conv2d_f32_im2col` to float32 rounding, not bit for bit.
"""
import math

import numpy as np

from . import _registry
from .conv import ConvGeometry, check_out
from .errors import KernelError
from .threads import resolve_num_threads

# How a layer's kernel reads its input (see _fconv.pyx.tp): a 1x1 kernel or many channels per group read
# pixels in place, one pointer per tap (MODE_TAP); with groups == 1, dilation_w == 1 and fewer than
# ROW_MAX_CHANNELS channels the kw taps of a kernel row are read as one run of kw * C floats (MODE_ROW);
# other layers with fewer than PATCH_MAX_CHANNELS channels per group copy whole patches (MODE_PATCH).
MODE_TAP, MODE_ROW, MODE_PATCH = 0, 1, 2
ROW_MAX_CHANNELS = 32
PATCH_MAX_CHANNELS = 8


def pack_weights_f32(weight, groups):
    """Pack float32 weights [OC, KH, KW, Cg] into blocks of 16 output channels: [g][block][kh][kw][c][16].

    Lanes past the group's output channels are zero.
    """
    oc, kh, kw, cg = weight.shape
    ocg = oc // groups
    nb = (ocg + 15) // 16
    k = kh * kw * cg
    full = np.zeros((groups, nb * 16, k), np.float32)
    full[:, :ocg] = weight.reshape(groups, ocg, k)
    # [g, block, lane, k] -> [g, block, k, lane]
    full = full.reshape(groups, nb, 16, k).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(full).reshape(-1)


def choose_mode(kh, kw, cg, groups, dilation_w):
    """The input access of the kernel for a layer (MODE_TAP, MODE_ROW or MODE_PATCH)."""
    if kh * kw == 1:
        return MODE_TAP
    if groups == 1 and dilation_w == 1 and cg < ROW_MAX_CHANNELS:
        return MODE_ROW
    if cg < PATCH_MAX_CHANNELS:
        return MODE_PATCH
    return MODE_TAP


# Fused activations other than the clamp: name -> the kernels' ``act`` code (ACT_* of _fconv.pyx.tp).
ACTIVATIONS = {'sigmoid': 1, 'silu': 2}
ACT_CLAMP = 0


def _activation_code(activation, act_min, act_max):
    if activation is None:
        return ACT_CLAMP
    if activation not in ACTIVATIONS:
        raise KernelError('activation must be None, %s, got %r'
                          % (', '.join(repr(a) for a in ACTIVATIONS), activation))
    if act_min is not None or act_max is not None:
        raise KernelError('activation=%r and a clamp (act_min/act_max) cannot be fused together' % activation)
    return ACTIVATIONS[activation]


def _act_bounds(act_min, act_max):
    lo = -math.inf if act_min is None else float(act_min)
    hi = math.inf if act_max is None else float(act_max)
    if math.isnan(lo) or math.isnan(hi):
        raise KernelError('act_min/act_max must not be NaN, got %r, %r' % (act_min, act_max))
    if lo > hi:
        raise KernelError('act_min %g > act_max %g' % (lo, hi))
    return lo, hi


class FConv2d(ConvGeometry):
    """A prepared float32 2-D convolution (NHWC float32 in and out).

    Parameters
    ----------
    weight : float32 [OC, KH, KW, C/groups] (channels-last, as for QConv2d)
    bias : float32 [OC] or None
    stride, dilation : int or (h, w);  padding : int, (h, w) or (top, left, bottom, right)
    groups : int (groups == C == OC is a depthwise convolution, run channel-vectorised)
    act_min, act_max : fused clamp of the output, None for no bound (ReLU: act_min=0; ReLU6: 0, 6)
    activation : None, 'sigmoid' (``1 / (1 + exp(-y))``) or 'silu' (``y * sigmoid(y)``): computed in
        registers before the store, within a few float32 ulps (formula in include/qv_fsimd.h; the same as
        :func:`qvision_kernels.eltwise.sigmoid_f32`); not together with act_min / act_max
    isa : instruction-set variant name, default the best one for this CPU

    Attributes ``isa`` (the variant in use), ``depthwise`` and ``mode`` (how the kernel reads the input,
    :func:`choose_mode`; None for depthwise).  ``mode`` may be set to any mode valid for the layer (tests
    run every one; MODE_ROW needs groups == 1 and dilation_w == 1): the packed weights serve all of them.
    """

    weight_dtype = np.float32
    activation_dtype = np.float32

    def __init__(self, weight, bias, stride=1, padding=0, dilation=1, groups=1, act_min=None, act_max=None,
                 isa=None, activation=None):
        weight = self._init_geometry(weight, stride, padding, dilation, groups)
        oc, kh, kw, cg = weight.shape
        if bias is not None:
            bias = np.asarray(bias)
            if bias.dtype != np.float32 or bias.shape != (oc,):
                raise KernelError('bias must be float32 [%d] or None, got %s %s'
                                  % (oc, bias.dtype, bias.shape))
        self._act = _activation_code(activation, act_min, act_max)
        self.activation = activation
        self.act_min, self.act_max = _act_bounds(act_min, act_max)
        self._mod = _registry.module('fconv', isa)
        self.isa = self._mod.ISA
        ocg = oc // groups
        b = np.zeros(oc, np.float32) if bias is None else bias
        self.depthwise = cg == 1 and ocg == 1
        if self.depthwise:
            cp = (oc + 15) // 16 * 16
            self._w = np.zeros((kh * kw, cp), np.float32)
            self._w[:, :oc] = weight.reshape(oc, kh * kw).T
            self._bias = np.zeros(cp, np.float32)
            self._bias[:oc] = b
            self.mode = None
        else:
            self.mode = choose_mode(kh, kw, cg, groups, self.dilation[1])
            self._w = pack_weights_f32(weight, groups)
            ocgp = (ocg + 15) // 16 * 16
            bp = np.zeros((groups, ocgp), np.float32)
            bp[:, :ocg] = b.reshape(groups, ocg)
            self._bias = bp.reshape(-1)

    def __call__(self, x, out=None, num_threads=1):
        """Run on float32 NHWC ``x``; writes into ``out`` (float32, C-contiguous) when given."""
        x, out = self._check_call(x, out)
        nt = resolve_num_threads(num_threads)
        kh, kw = self.weight_shape[1:3]
        if self.depthwise:
            self._mod.depthwise(x, self._w, self._bias, out, kh, kw, self.stride[0], self.stride[1],
                                self.pads[0], self.pads[1], self.dilation[0], self.dilation[1],
                                self.act_min, self.act_max, nt, self._act)
        else:
            self._mod.conv2d(x, self._w, self._bias, out, self.groups, self.weight_shape[3],
                             self.out_channels // self.groups, kh, kw, self.stride[0], self.stride[1],
                             self.pads[0], self.pads[1], self.dilation[0], self.dilation[1],
                             self.act_min, self.act_max, self.mode, nt, self._act)
        return out


class FLinear:
    """A prepared float32 fully-connected layer / GEMM: [M, K] x [N, K]^T + bias -> [M, N].

    Same kernels and parameters as :class:`FConv2d` (it is a 1x1 convolution over M pixels).
    """

    def __init__(self, weight, bias, act_min=None, act_max=None, isa=None, activation=None):
        weight = np.asarray(weight)
        if weight.dtype != np.float32 or weight.ndim != 2:
            raise KernelError('weight must be float32 [N, K], got %s %s' % (weight.dtype, weight.shape))
        self.out_features, self.in_features = weight.shape
        self._conv = FConv2d(weight.reshape(weight.shape[0], 1, 1, weight.shape[1]), bias,
                             act_min=act_min, act_max=act_max, isa=isa, activation=activation)
        self.isa = self._conv.isa
        self.activation = activation

    def __call__(self, x, out=None, num_threads=1):
        """Run on float32 ``x`` [M, K]; writes into ``out`` (float32 [M, N], C-contiguous) when given."""
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
            raise KernelError('input must be a float32 [M, K] array, got %s %s'
                              % (getattr(x, 'dtype', type(x).__name__), getattr(x, 'shape', '')))
        if x.shape[1] != self.in_features:
            raise KernelError('input has %d features, the layer expects %d' % (x.shape[1], self.in_features))
        m = x.shape[0]
        shape = (m, self.out_features)
        if out is None:
            out = np.empty(shape, np.float32)
        else:
            check_out(out, shape, np.float32, x)
        if m == 0:
            return out
        self._conv(np.ascontiguousarray(x).reshape(1, 1, m, self.in_features),
                   out=out.reshape(1, 1, m, self.out_features), num_threads=num_threads)
        return out
