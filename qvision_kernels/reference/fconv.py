"""NumPy references of the float32 convolution family (qvision_kernels.fconv); they exist for testing.

The convolution itself is :func:`qvision_kernels.reference.conv.conv2d_f32_im2col`; these add the fused
activation of the kernels, a clamp to ``[act_min, act_max]`` (None: no bound), applied after the bias.
"""
import numpy as np

from .conv import conv2d_f32_im2col


def _clamp(y, act_min, act_max):
    # np.clip keeps NaN, as the kernels' clamp does; with both bounds None nothing changes.
    if act_min is None and act_max is None:
        return y
    return np.clip(y, act_min, act_max).astype(np.float32)


def conv2d_f32(x, weight, bias, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, act_min=None,
               act_max=None):
    """float32 convolution + bias + clamp.

    x [N, H, W, C], weight [OC, KH, KW, C/groups], bias [OC] or None -> [N, Ho, Wo, OC].
    """
    y = conv2d_f32_im2col(x, weight, bias, stride, pads, dilation, groups)
    return _clamp(y, act_min, act_max)


def linear_f32(x, weight, bias, act_min=None, act_max=None):
    """float32 fully connected layer: x [M, K] @ weight [N, K]^T + bias, clamped -> [M, N]."""
    y = x.astype(np.float32) @ weight.astype(np.float32).T
    if bias is not None:
        y = y + np.asarray(bias, np.float32)
    return _clamp(y.astype(np.float32), act_min, act_max)
