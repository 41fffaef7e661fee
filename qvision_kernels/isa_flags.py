"""Compiler flags of each instruction-set variant of the kernels: read by setup.py (by path, before the
package is built) and by the tests that compile the SIMD shim on its own.  Best variant first."""

X86_64 = {
    'avx512vnni': ['-mavx2', '-mfma', '-mf16c', '-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx512dq',
                   '-mavx512vnni'],
    'avxvnni': ['-mavx2', '-mfma', '-mf16c', '-mavxvnni'],
    'avx2': ['-mavx2', '-mfma', '-mf16c'],
    'generic': [],
}
AARCH64 = {
    'dotprod': ['-march=armv8.2-a+dotprod'],
    'generic': [],
}
OTHER = {'generic': []}


def for_machine(machine):
    """The variant table for a ``platform.machine()`` value."""
    machine = machine.lower()
    if machine in ('x86_64', 'amd64'):
        return X86_64
    if machine in ('aarch64', 'arm64'):
        return AARCH64
    return OTHER
