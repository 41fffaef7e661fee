"""qvision_kernels: channels-last int8 and float32 CNN kernels in Cython, each beside a NumPy reference.

No ROS and no ONNX here; usable on its own.  Arithmetic: DESIGN.md section 3, written once in
:mod:`qvision_kernels.requant`.  References (for testing): :mod:`qvision_kernels.reference`.
"""
from . import _registry
from .conv import QConv2d, QLinear, pack_weights
from .errors import KernelError
from .threads import available_cores, resolve_num_threads


def isa(family='qconv'):
    """Name of the instruction-set variant the kernels of ``family`` use on this CPU."""
    return _registry.choose(family)


def usable_isas(family='qconv'):
    """Every variant of ``family`` that is built and runs on this CPU, best first."""
    return _registry.usable(family)


__all__ = ['QConv2d', 'QLinear', 'pack_weights', 'KernelError', 'available_cores',
           'resolve_num_threads', 'isa', 'usable_isas']
