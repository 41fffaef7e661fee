"""The SIMD shim (qvision_kernels/include/qv_simd.h) of every instruction-set variant, against scalar C.

x86 variants are compiled with their flags from qvision_kernels.isa_flags and run natively when this CPU
has the instructions; the Arm variants are cross-compiled and run under qemu-aarch64 (Debian's
gcc-aarch64-linux-gnu and qemu-user, which .ci/run installs).
"""
import os
import platform
import subprocess

import pytest

from kernel_check import aarch64_cross_tools
from qvision_kernels import _registry, isa_flags

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, 'c', 'test_qv_simd.c')
INCLUDE = os.path.join(os.path.dirname(HERE), 'qvision_kernels', 'include')
# Same floating-point rules as the kernels' build (setup.py): no FMA contraction.
CFLAGS = ['-O2', '-std=c99', '-ffp-contract=off', '-fno-math-errno', '-I', INCLUDE]


def _build_and_run(tmp_path, cc, flags, isa, runner=()):
    exe = str(tmp_path / ('shim_' + isa))
    macro = '-DQV_ISA_%s=1' % isa.upper()
    subprocess.run([cc] + CFLAGS + flags + [macro, SOURCE, '-o', exe, '-lm'], check=True,
                   capture_output=True, text=True)
    run = subprocess.run(list(runner) + [exe], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert ' 0 failed' in run.stdout and '%s:' % isa in run.stdout, run.stdout


@pytest.mark.parametrize('isa', list(isa_flags.X86_64))
def test_x86_shim(tmp_path, isa):
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        pytest.skip('x86-64 variants are tested on an x86-64 machine')
    if not _registry.supported(isa):
        pytest.skip('this CPU lacks the %s instructions' % isa)
    _build_and_run(tmp_path, 'gcc', isa_flags.X86_64[isa], isa)


@pytest.mark.parametrize('isa', list(isa_flags.AARCH64))
def test_aarch64_shim_under_qemu(tmp_path, isa):
    cc, runner = aarch64_cross_tools()
    _build_and_run(tmp_path, cc, ['-static'] + isa_flags.AARCH64[isa], isa, runner=runner)
