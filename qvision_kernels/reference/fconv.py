"""NumPy references of the float32 convolution family (qvision_kernels.fconv); they exist for testing.

The convolution itself is :func:`qvision_kernels.reference.conv.conv2d_f32_im2col`; these add the fused
activation of the kernels, a clamp to ``[act_min, act_max]`` (None: no bound), applied after the bias, or
``activation`` 'sigmoid' / 'silu': then the result is the float64 sigmoid (SiLU) of the float32
convolution output (:func:`sigmoid_f64`), an oracle to compare with a relative tolerance.
"""
import numpy as np

from .conv import conv2d_f32_im2col


def _clamp(y, act_min, act_max):
    # np.clip keeps NaN, as the kernels' clamp does; with both bounds None nothing changes.
    if act_min is None and act_max is None:
        return y
    return np.clip(y, act_min, act_max).astype(np.float32)


def sigmoid_f64(y, silu=False):
    """``1 / (1 + exp(-y))`` (``silu``: ``y`` times that) of ``y`` in float64: the exact value to well
    below float32 rounding (exp underflows to 0 and overflows to inf, which gives the limits 0 and 1;
    NaN stays NaN, and ``-inf * sigmoid(-inf)`` is NaN as in x * Sigmoid(x))."""
    y = np.asarray(y, np.float64)
    with np.errstate(over='ignore'):
        s = 1.0 / (1.0 + np.exp(-y))
    if silu:
        with np.errstate(invalid='ignore'):
            return y * s
    return s


def _activate(y, act_min, act_max, activation):
    if activation is None:
        return _clamp(y, act_min, act_max)
    if activation not in ('sigmoid', 'silu'):
        raise ValueError('activation must be None, sigmoid or silu, got %r' % (activation,))
    return sigmoid_f64(y, activation == 'silu')


def conv2d_f32(x, weight, bias, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, act_min=None,
               act_max=None, activation=None):
    """float32 convolution + bias + clamp (float32), or + sigmoid / silu (float64, see the module).

    x [N, H, W, C], weight [OC, KH, KW, C/groups], bias [OC] or None -> [N, Ho, Wo, OC].
    """
    y = conv2d_f32_im2col(x, weight, bias, stride, pads, dilation, groups)
    return _activate(y, act_min, act_max, activation)


def linear_f32(x, weight, bias, act_min=None, act_max=None, activation=None):
    """float32 fully connected layer: x [M, K] @ weight [N, K]^T + bias, then the activation -> [M, N]."""
    y = x.astype(np.float32) @ weight.astype(np.float32).T
    if bias is not None:
        y = y + np.asarray(bias, np.float32)
    return _activate(y.astype(np.float32), act_min, act_max, activation)
