"""qvision_kernels: channels-last int8 and float32 CNN kernels in Cython, each beside a NumPy reference.

No ROS and no ONNX here; usable on its own.  Arithmetic: DESIGN.md section 3, written once in
:mod:`qvision_kernels.requant`.  References (for testing): :mod:`qvision_kernels.reference`.

Families (each compiled per instruction set, chosen at run time by :mod:`qvision_kernels._registry`):

* ``conv``: :class:`QConv2d`, :class:`QLinear` - int8 convolution (any kernel, stride, padding,
  dilation, groups, depthwise) and fully-connected layers with fused requantisation and clamp;
* ``fconv``: :class:`FConv2d`, :class:`FLinear` - the same in float32;
* ``pool``: max / average / global average pooling (uint8 with requantisation, and float32);
* ``eltwise``: add, mul, concat (with requantisation), nearest upsampling, 256-entry lookup tables,
  QuantizeLinear of float32 (optionally NCHW -> NHWC in the same pass), DequantizeLinear, float32
  softmax.

Threads: every kernel takes ``num_threads`` and shares one process-wide pool of worker threads
(:mod:`qvision_kernels._threadpool`, include/qv_threadpool.h): the caller works too and never waits for
a worker that has not started, and idle workers spin ``QVISION_SPIN_US`` microseconds (default 200)
before they sleep.
"""
from . import _registry
from .conv import QConv2d, QLinear, pack_weights
from .eltwise import (add_f32, add_int8, concat_f32, concat_int8, dequantize_f32, lut_apply, make_lut, mul_f32,
                      mul_int8, quantize_f32, softmax_f32, upsample_nearest)
from .errors import KernelError
from .fconv import FConv2d, FLinear
from .pool import avg_pool2d, global_avg_pool2d, max_pool2d
from .threads import available_cores, resolve_num_threads


def isa(family='qconv'):
    """Name of the instruction-set variant the kernels of ``family`` use on this CPU."""
    return _registry.choose(family)


def usable_isas(family='qconv'):
    """Every variant of ``family`` that is built and runs on this CPU, best first."""
    return _registry.usable(family)


__all__ = ['QConv2d', 'QLinear', 'FConv2d', 'FLinear', 'pack_weights', 'max_pool2d', 'avg_pool2d',
           'global_avg_pool2d', 'add_int8', 'mul_int8', 'add_f32', 'mul_f32', 'concat_int8', 'concat_f32',
           'upsample_nearest', 'make_lut', 'lut_apply', 'quantize_f32', 'dequantize_f32', 'softmax_f32', 'KernelError', 'available_cores',
           'resolve_num_threads', 'isa', 'usable_isas']
