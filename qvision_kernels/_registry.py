"""One registry of instruction-set variants; it drives dispatch, and the tests iterate over it.

Every kernel family that has per-ISA builds (``_qconv.pyx.tp`` -> ``_gen_qconv_<isa>``) is looked up
here.  A variant module is imported only when the running CPU supports all of its instructions, so a
wheel built on a new CPU cannot raise an illegal instruction on an older one.

``QVISION_ISA=<name>`` in the environment forces a variant (it must be built and supported).
"""
import functools
import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Tuple

from . import _cpu
from .errors import KernelError


@dataclass(frozen=True)
class Variant:
    name: str
    arch: str                 # 'x86_64', 'aarch64' or '*'
    features: Tuple[str, ...]  # every one must be reported by qvision_kernels._cpu.has


# Best first.
VARIANTS = (
    Variant('avx512vnni', 'x86_64', ('avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl',
                                     'avx512dq', 'avx512vnni')),
    Variant('avxvnni', 'x86_64', ('avx2', 'fma', 'f16c', 'avxvnni')),
    Variant('avx2', 'x86_64', ('avx2', 'fma', 'f16c')),
    Variant('dotprod', 'aarch64', ('asimd', 'dotprod')),
    Variant('generic', '*', ()),
)
_BY_NAME = {v.name: v for v in VARIANTS}
_modules = {}


def supported(name):
    """True when the CPU can run variant ``name``."""
    v = _BY_NAME[name]
    if v.arch != '*' and v.arch != _cpu.ARCH:
        return False
    return all(_cpu.has(f) for f in v.features)


@functools.lru_cache(maxsize=None)
def _module_exists(modname):
    # find_spec walks the file system (tens of microseconds); a build does not change under a running
    # program, so ask once per module.
    return importlib.util.find_spec(modname) is not None


def built(family, name):
    return _module_exists('%s._gen_%s_%s' % (__package__, family, name))


def usable(family):
    """Names of the variants of ``family`` that are built and runnable here, best first."""
    return [v.name for v in VARIANTS if supported(v.name) and built(family, v.name)]


def choose(family, isa=None):
    """The variant name to use: ``isa`` if given, else $QVISION_ISA, else the best usable one."""
    name = isa or os.environ.get('QVISION_ISA') or None
    ok = usable(family)
    if name is None:
        if not ok:
            raise KernelError('no build of the %r kernels is importable; rebuild the package '
                              '(pip install . or colcon build)' % family)
        return ok[0]
    if name not in _BY_NAME:
        raise KernelError('unknown instruction set %r; known: %s' % (name, ', '.join(_BY_NAME)))
    if name not in ok:
        raise KernelError('instruction set %r is not usable for %r here (usable: %s)'
                          % (name, family, ', '.join(ok) or 'none'))
    return name


def module(family, isa=None):
    """The imported kernel module of ``family`` for the chosen variant."""
    name = choose(family, isa)
    key = (family, name)
    mod = _modules.get(key)
    if mod is None:
        mod = importlib.import_module('%s._gen_%s_%s' % (__package__, family, name))
        _modules[key] = mod
    return mod
