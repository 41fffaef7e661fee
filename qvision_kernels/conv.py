"""int8 convolution and fully-connected layers: validation, weight packing and dispatch.

A layer is prepared once (weights packed in the layout the dot-product instruction consumes, the input
zero point folded into the bias, multipliers fixed) and then run on any number of inputs::

    layer = QConv2d(weight, bias, x_zero_point=zp_x, multiplier=m, y_zero_point=zp_y,
                    stride=2, padding=1, act_min=zp_y)          # fused ReLU
    y = layer(x, num_threads=2)                                  # x: uint8 NHWC

The NumPy reference of the same arithmetic is :func:`qvision_kernels.reference.conv2d_int8`.
"""
import numpy as np

from . import _registry
from .errors import KernelError
from .reference.conv import conv_output_size
from .requant import fold_input_zero_point
from .threads import resolve_num_threads

# The reduction of one output channel must not overflow int32: K * 255 * 128 < 2**31 (weights may be -128:
# PyTorch's quantisation-aware training exports the full int8 range).
MAX_REDUCTION = (2 ** 31 - 1) // (255 * 128)


def _int_tuple(v, n):
    """``v`` (an int or a sequence of ints) as a tuple; None when it is not made of integers.

    Floats are refused rather than truncated: stride=1.5 is a mistake, not a stride of 1."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if not isinstance(v, (tuple, list)):
        v = (v,) * n
    if not all(isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_)) for a in v):
        return None
    return tuple(int(a) for a in v)


def _pair(v, name):
    t = _int_tuple(v, 2)
    if t is None or len(t) != 2 or min(t) < 1:
        raise KernelError('%s must be a positive int or a pair of them, got %r' % (name, v))
    return t


def _pads(v):
    t = _int_tuple(v, 4)
    if t is not None and len(t) == 2:
        t = (t[0], t[1], t[0], t[1])
    if t is None or len(t) != 4 or min(t) < 0:
        raise KernelError('padding must be an int >= 0, (pad_h, pad_w) or (top, left, bottom, right), '
                          'got %r' % (v,))
    return t


def _check_u8(v, name):
    v = int(v)
    if not 0 <= v <= 255:
        raise KernelError('%s must be in [0, 255], got %d' % (name, v))
    return v


# Packed layouts; the numbers are the MODE_* constants of the compiled modules (_qconv.pyx.tp).
MODE_DIRECT, MODE_ROWS, MODE_PATCH = 0, 1, 2


def choose_mode(cg, groups, dilation_w):
    """Packed layout for a convolution: direct when the channels per group are a multiple of 4 (one
    4-byte read never spans two pixels), rows for other channel counts when a kernel row is contiguous
    in memory (groups == 1, no horizontal dilation: the 3-channel first layer), else patch (gather)."""
    if cg % 4 == 0:
        return MODE_DIRECT
    if groups == 1 and dilation_w == 1:
        return MODE_ROWS
    return MODE_PATCH


def block_chunks(nblocks, pack_blocks):
    """How the kernels walk ``nblocks`` blocks of 16 output channels: greedy chunks of 4, 2 or 1 blocks,
    at most ``pack_blocks`` (the module's PACK_BLOCKS) each."""
    chunks = []
    left = nblocks
    while left:
        size = next(b for b in (4, 2, 1) if b <= pack_blocks and b <= left)
        chunks.append(size)
        left -= size
    return chunks


def pack_weights(weight, groups, mode, pack_blocks=1):
    """Pack int8 weights [OC, KH, KW, Cg] for the kernels.

    Output channels are padded to blocks of 16 and the blocks grouped in chunks (:func:`block_chunks`);
    within a chunk of ``nb`` blocks the layout is [tap][quad][block][16 lanes][4 values], so that the
    weights of one step of a register tile are ``nb * 64`` contiguous bytes.  The reduction of each tap is
    padded to a multiple of 4 with zero weights (padding adds nothing to the accumulators).  Taps: (kh, kw)
    with Cg values each in the direct layout; kh with KW * Cg values each in the rows layout; one tap of
    KH * KW * Cg values in the patch layout.  Groups follow each other.
    """
    oc, kh, kw, cg = weight.shape
    ocg = oc // groups
    nb = (ocg + 15) // 16
    taps = {MODE_DIRECT: kh * kw, MODE_ROWS: kh, MODE_PATCH: 1}[mode]
    w = weight.reshape(groups, ocg, taps, -1)
    k = w.shape[3]
    k4 = (k + 3) // 4 * 4
    full = np.zeros((groups, nb * 16, taps, k4), np.int8)
    full[:, :ocg, :, :k] = w
    # [g, block, lane, tap, quad, 4]
    full = full.reshape(groups, nb, 16, taps, k4 // 4, 4)
    parts = []
    b0 = 0
    for size in block_chunks(nb, pack_blocks):
        # [g, blocks of the chunk, lane, tap, quad, 4] -> [g, tap, quad, block, lane, 4]
        parts.append(full[:, b0:b0 + size].transpose(0, 3, 4, 1, 2, 5).reshape(groups, -1))
        b0 += size
    return np.ascontiguousarray(np.concatenate(parts, axis=1)).reshape(-1)


def _per_channel(v, oc, dtype, name):
    a = np.asarray(v, dtype=dtype)
    if a.ndim == 0:
        a = np.full(oc, a, dtype)
    if a.shape != (oc,):
        raise KernelError('%s must be a scalar or have shape (%d,), got %s' % (name, oc, a.shape))
    return a


class ConvGeometry:
    """Geometry and argument checks shared by the prepared convolutions (:class:`QConv2d`, and
    :class:`qvision_kernels.fconv.FConv2d`): weights [OC, KH, KW, C/groups], NHWC activations."""

    #: dtype of the weights and of the activations (set by each subclass)
    weight_dtype = None
    activation_dtype = None

    def _init_geometry(self, weight, stride, padding, dilation, groups):
        weight = np.asarray(weight)
        wname = np.dtype(self.weight_dtype).name
        if weight.dtype != self.weight_dtype or weight.ndim != 4:
            raise KernelError('weight must be %s [OC, KH, KW, C/groups], got %s %s'
                              % (wname, weight.dtype, weight.shape))
        oc, kh, kw, cg = weight.shape
        if _int_tuple(groups, 1) is None or np.ndim(groups) != 0:
            raise KernelError('groups must be a positive int, got %r' % (groups,))
        groups = int(groups)
        if groups < 1 or oc % groups:
            raise KernelError('groups=%d must divide the %d output channels' % (groups, oc))
        if min(oc, kh, kw, cg) < 1:
            raise KernelError('weight has an empty dimension: %s' % (weight.shape,))
        self.weight_shape = weight.shape
        self.groups = groups
        self.in_channels = cg * groups
        self.out_channels = oc
        self.stride = _pair(stride, 'stride')
        self.dilation = _pair(dilation, 'dilation')
        self.pads = _pads(padding)
        return weight

    def output_shape(self, input_shape):
        n, h, w, c = input_shape
        kh, kw = self.weight_shape[1:3]
        ho = conv_output_size(h, kh, self.stride[0], self.pads[0], self.pads[2], self.dilation[0])
        wo = conv_output_size(w, kw, self.stride[1], self.pads[1], self.pads[3], self.dilation[1])
        return (n, ho, wo, self.out_channels)

    def _check_call(self, x, out):
        """Validated, C-contiguous ``x`` and the output array (``out`` checked, or a new one)."""
        dt = np.dtype(self.activation_dtype)
        if not isinstance(x, np.ndarray) or x.dtype != dt or x.ndim != 4:
            raise KernelError('input must be a %s NHWC array, got %s %s'
                              % (dt.name, getattr(x, 'dtype', type(x).__name__), getattr(x, 'shape', '')))
        if x.shape[3] != self.in_channels:
            raise KernelError('input has %d channels, the layer expects %d' % (x.shape[3], self.in_channels))
        shape = self.output_shape(x.shape)
        if shape[1] < 1 or shape[2] < 1:
            raise KernelError('input %s is smaller than the kernel %s with padding %s and dilation %s'
                              % (x.shape[1:3], self.weight_shape[1:3], self.pads, self.dilation))
        if out is None:
            out = np.empty(shape, dt)
        else:
            check_out(out, shape, dt, x)
        return np.ascontiguousarray(x), out


def check_out(out, shape, dtype, *inputs):
    """``out`` must be a writeable C-contiguous array of ``dtype`` and ``shape`` not overlapping the inputs."""
    dt = np.dtype(dtype)
    if not isinstance(out, np.ndarray) or out.dtype != dt or out.shape != tuple(shape) \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise KernelError('out must be a writeable C-contiguous %s array of shape %s, got %s %s'
                          % (dt.name, tuple(shape), getattr(out, 'dtype', type(out).__name__),
                             getattr(out, 'shape', '')))
    if any(np.may_share_memory(out, a) for a in inputs):
        raise KernelError('out must not overlap the input')


def pack_dw3(weight, cp):
    """Depthwise weights [C, KH, 3, 1] int8 packed by kernel row for the kernels' 3-wide path (qv_dw3_tile4):
    [KH, cp] int32 whose 4 bytes are [w(kx=0), w(kx=1), w(kx=2), 0] of one channel (channels >= C zero)."""
    c, kh = weight.shape[:2]
    w8 = np.zeros((kh, cp, 4), np.int8)
    w8[:, :c, :3] = weight.reshape(c, kh, 3).transpose(1, 0, 2)
    return w8.view(np.int32).reshape(kh, cp)


class QConv2d(ConvGeometry):
    """A prepared int8 2-D convolution (NHWC uint8 in and out).

    Parameters
    ----------
    weight : int8 [OC, KH, KW, C/groups]
    bias : int32 [OC] or None
    x_zero_point, y_zero_point : uint8 zero points of input and output
    multiplier : float32 scalar or [OC], ``s_in * s_w[c] / s_out`` (see requant.multiplier)
    stride, dilation : int or (h, w);  padding : int, (h, w) or (top, left, bottom, right)
    groups : int (groups == C == OC is a depthwise convolution)
    act_min, act_max : uint8 clamp of the output (fused ReLU/ReLU6/Clip; requant.activation_bounds)
    lut : uint8 [256] or None, a table applied to every output byte after the clamp (an activation that
        follows the convolution, eltwise.make_lut): ``out = lut[conv(x)]``, computed while the tile is in
        cache instead of in a pass of its own
    isa : instruction-set variant name, default the best one for this CPU (qvision_kernels.isa())
    """

    weight_dtype = np.int8
    activation_dtype = np.uint8

    def __init__(self, weight, bias, x_zero_point, multiplier, y_zero_point, stride=1, padding=0,
                 dilation=1, groups=1, act_min=0, act_max=255, lut=None, isa=None):
        weight = self._init_geometry(weight, stride, padding, dilation, groups)
        oc, kh, kw, cg = weight.shape
        if kh * kw * cg > MAX_REDUCTION:
            raise KernelError('reduction of %d values per output overflows int32 (max %d)'
                              % (kh * kw * cg, MAX_REDUCTION))
        self.x_zero_point = _check_u8(x_zero_point, 'x_zero_point')
        self.y_zero_point = _check_u8(y_zero_point, 'y_zero_point')
        self.act_min = _check_u8(act_min, 'act_min')
        self.act_max = _check_u8(act_max, 'act_max')
        if self.act_min > self.act_max:
            raise KernelError('act_min %d > act_max %d' % (self.act_min, self.act_max))
        if bias is not None:
            bias = np.asarray(bias)
            if bias.dtype != np.int32 or bias.shape != (oc,):
                raise KernelError('bias must be int32 [%d], got %s %s' % (oc, bias.dtype, bias.shape))
        mult = _per_channel(multiplier, oc, np.float32, 'multiplier')
        if not np.all(np.isfinite(mult)) or np.any(mult < 0):
            raise KernelError('multiplier must be finite and >= 0')
        if lut is not None:
            if not isinstance(lut, np.ndarray) or lut.dtype != np.uint8 or lut.shape != (256,):
                raise KernelError('lut must be a uint8 array of shape (256,), got %s %s'
                                  % (getattr(lut, 'dtype', type(lut).__name__), getattr(lut, 'shape', '')))
            lut = np.ascontiguousarray(lut)
        self.lut = lut
        self._mod = _registry.module('qconv', isa)
        self.isa = self._mod.ISA
        ocg = oc // groups
        self.depthwise = cg == 1 and ocg == 1
        folded = fold_input_zero_point(bias, weight, self.x_zero_point)
        if self.depthwise:
            cp = (oc + 15) // 16 * 16
            # int8 weight in the low 16 bits of an int32 with a zero high half (see qv_dw_mac)
            wdw = np.zeros((kh * kw, cp), np.int32)
            wdw[:, :oc] = weight.reshape(oc, kh * kw).T.astype(np.int32) & 0xFFFF
            self._w = wdw
            self._w3 = pack_dw3(weight, cp) if self._mod.DW3 and kw == 3 and self.dilation[1] == 1 else None
            self._bias = np.zeros(cp, np.int32)
            self._bias[:oc] = folded
            self._mult = np.zeros(cp, np.float32)
            self._mult[:oc] = mult
            self.mode = None
        else:
            self.mode = choose_mode(cg, groups, self.dilation[1])
            self._w = pack_weights(weight, groups, self.mode, self._mod.PACK_BLOCKS)
            ocgp = (ocg + 15) // 16 * 16
            self._bias = np.zeros((groups, ocgp), np.int32)
            if self._mod.ACT_OFFSET:
                # the dot product sees x - ACT_OFFSET (signed-only dot products): give the offset back
                folded = (folded.astype(np.int64) + self._mod.ACT_OFFSET
                          * weight.reshape(oc, -1).astype(np.int64).sum(axis=1)).astype(np.int32)
            self._bias[:, :ocg] = folded.reshape(groups, ocg)
            self._bias = self._bias.reshape(-1)
            self._mult = np.zeros((groups, ocgp), np.float32)
            self._mult[:, :ocg] = mult.reshape(groups, ocg)
            self._mult = self._mult.reshape(-1)

    def __call__(self, x, out=None, num_threads=1):
        """Run on uint8 NHWC ``x``; writes into ``out`` (uint8, C-contiguous) when given."""
        x, out = self._check_call(x, out)
        nt = resolve_num_threads(num_threads)
        kh, kw = self.weight_shape[1:3]
        if self.depthwise:
            self._mod.depthwise(x, self._w, self._bias, self._mult, out, kh, kw, self.stride[0],
                                self.stride[1], self.pads[0], self.pads[1], self.dilation[0],
                                self.dilation[1], self.x_zero_point, self.y_zero_point, self.act_min,
                                self.act_max, nt, self.lut, self._w3)
        else:
            self._mod.conv2d(x, self._w, self._bias, self._mult, out, self.groups,
                             self.weight_shape[3], self.out_channels // self.groups, kh, kw,
                             self.stride[0], self.stride[1], self.pads[0], self.pads[1],
                             self.dilation[0], self.dilation[1], self.x_zero_point, self.y_zero_point,
                             self.act_min, self.act_max, self.mode, nt, self.lut)
        return out


class QLinear:
    """A prepared int8 fully-connected layer / GEMM: uint8 [M, K] x int8 [N, K]^T -> uint8 [M, N].

    Same arithmetic and parameters as :class:`QConv2d` (it is a 1x1 convolution over M pixels).
    """

    def __init__(self, weight, bias, x_zero_point, multiplier, y_zero_point, act_min=0, act_max=255,
                 isa=None):
        weight = np.asarray(weight)
        if weight.dtype != np.int8 or weight.ndim != 2:
            raise KernelError('weight must be int8 [N, K], got %s %s' % (weight.dtype, weight.shape))
        self.out_features, self.in_features = weight.shape
        self._conv = QConv2d(weight.reshape(weight.shape[0], 1, 1, weight.shape[1]), bias, x_zero_point,
                             multiplier, y_zero_point, act_min=act_min, act_max=act_max, isa=isa)
        self.isa = self._conv.isa

    def __call__(self, x, out=None, num_threads=1):
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2:
            raise KernelError('input must be a uint8 [M, K] array, got %s %s'
                              % (getattr(x, 'dtype', type(x).__name__), getattr(x, 'shape', '')))
        m = x.shape[0]
        if x.shape[1] != self.in_features:
            raise KernelError('input has %d features (columns), the layer expects %d'
                              % (x.shape[1], self.in_features))
        if out is None:
            out = np.empty((m, self.out_features), np.uint8)
        else:
            check_out(out, (m, self.out_features), np.uint8, x)
        self._conv(np.ascontiguousarray(x).reshape(1, 1, m, self.in_features),
                   out=out.reshape(1, 1, m, self.out_features), num_threads=num_threads)
        return out
