"""NumPy references of the convolution family (int8 and float32 convolution, int8 GEMM); for testing."""
import numpy as np

from ..requant import requantize


def _pad_nhwc(x, pads, value):
    pt, pl, pb, pr = pads
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), mode='constant', constant_values=value)


def conv_output_size(size, k, stride, pad_begin, pad_end, dilation):
    return (size + pad_begin + pad_end - dilation * (k - 1) - 1) // stride + 1


def conv2d_int8(x, weight, bias, x_zero_point, mult, y_zero_point, stride=(1, 1), pads=(0, 0, 0, 0),
                dilation=(1, 1), groups=1, lo=0, hi=255):
    """int8 convolution: ``acc = bias + sum(w * (x - zp_x))`` with padding by ``zp_x``, requantised.

    x: uint8 [N, H, W, C]; weight: int8 [OC, KH, KW, C/groups]; bias: int32 [OC] or None;
    mult: float32 [OC] (or scalar).  Returns uint8 [N, Ho, Wo, OC].
    """
    n, h, w_, c = x.shape
    oc, kh, kw, cg = weight.shape
    sh, sw = stride
    dh, dw = dilation
    ocg = oc // groups
    xp = _pad_nhwc(x, pads, x_zero_point).astype(np.int64) - x_zero_point
    ho = conv_output_size(h, kh, sh, pads[0], pads[2], dh)
    wo = conv_output_size(w_, kw, sw, pads[1], pads[3], dw)
    acc = np.zeros((n, ho, wo, oc), np.int64)
    if bias is not None:
        acc += np.asarray(bias, np.int64)
    wt = weight.astype(np.int64)
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw,
                           g * cg:(g + 1) * cg]
                acc[..., g * ocg:(g + 1) * ocg] += patch @ wt[g * ocg:(g + 1) * ocg, i, j, :].T
    return requantize(acc, mult, y_zero_point, lo, hi)


def gemm_int8(x, weight, bias, x_zero_point, mult, y_zero_point, lo=0, hi=255):
    """int8 fully connected layer: x uint8 [M, K], weight int8 [N, K] -> uint8 [M, N]."""
    acc = (x.astype(np.int64) - x_zero_point) @ weight.astype(np.int64).T
    if bias is not None:
        acc += np.asarray(bias, np.int64)
    return requantize(acc, mult, y_zero_point, lo, hi)


def conv2d_f32_im2col(x, weight, bias, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """float32 convolution by im2col and one matrix product per group (the papers' NumPy baseline)."""
    n, h, w_, c = x.shape
    oc, kh, kw, cg = weight.shape
    sh, sw = stride
    dh, dw = dilation
    ocg = oc // groups
    xp = _pad_nhwc(x.astype(np.float32), pads, 0.0)
    ho = conv_output_size(h, kh, sh, pads[0], pads[2], dh)
    wo = conv_output_size(w_, kw, sw, pads[1], pads[3], dw)
    out = np.empty((n, ho, wo, oc), np.float32)
    for g in range(groups):
        cols = np.empty((n, ho, wo, kh, kw, cg), np.float32)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, :, i, j, :] = xp[:, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                                            j * dw: j * dw + sw * (wo - 1) + 1: sw, g * cg:(g + 1) * cg]
        wg = weight[g * ocg:(g + 1) * ocg].reshape(ocg, -1).astype(np.float32)
        out[..., g * ocg:(g + 1) * ocg] = cols.reshape(n * ho * wo, -1).dot(wg.T).reshape(n, ho, wo, ocg)
    if bias is not None:
        out += np.asarray(bias, np.float32)
    return out
