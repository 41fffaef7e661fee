"""qvision_kernels: channels-last int8 and float32 CNN kernels in Cython, each beside a NumPy reference.

No ROS and no ONNX here; usable on its own.  Arithmetic: DESIGN.md section 3, written once in
:mod:`qvision_kernels.requant`.  References (for testing): :mod:`qvision_kernels.reference`.

Families (each compiled per instruction set, chosen at run time by :mod:`qvision_kernels._registry`):

* ``conv``: :class:`QConv2d`, :class:`QLinear` - int8 convolution (any kernel, stride, padding,
  dilation, groups, depthwise) and fully-connected layers with fused requantisation and clamp;
* ``fconv``: :class:`FConv2d`, :class:`FLinear` - the same in float32;
* ``pool``: max / average / global average pooling (uint8 with requantisation, and float32);
* ``eltwise``: add, mul, concat (with requantisation), nearest upsampling, 256-entry lookup tables.
"""
import os as _os

# Idle OpenMP threads sleep instead of spinning, unless the user chose otherwise.  With libgomp's default
# (spin, then sleep), a calling thread that finishes first spins on its core at the end of each parallel
# region while the other thread waits for a core: when another process holds the second core, a 2-thread
# call then takes a scheduler time slice (measured here: 8 ms medians for 0.1-0.3 ms layers).  Sleeping
# frees the core at once and the stall disappears; the price is a thread wake-up per call.  libgomp reads
# this when it is first loaded, i.e. when the first compiled module below is imported.
if 'OMP_WAIT_POLICY' not in _os.environ and 'GOMP_SPINCOUNT' not in _os.environ:
    _os.environ['OMP_WAIT_POLICY'] = 'PASSIVE'

from . import _registry  # noqa: E402  (after the OpenMP setting)
from .conv import QConv2d, QLinear, pack_weights
from .eltwise import (add_f32, add_int8, concat_f32, concat_int8, lut_apply, make_lut, mul_f32, mul_int8,
                      upsample_nearest)
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
           'upsample_nearest', 'make_lut', 'lut_apply', 'KernelError', 'available_cores',
           'resolve_num_threads', 'isa', 'usable_isas']
