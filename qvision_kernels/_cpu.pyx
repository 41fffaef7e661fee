"""Run-time CPU feature detection (compiled with the baseline flags, safe on every CPU)."""

cdef extern from "qv_cpu.h":
    const char *QV_ARCH
    int qv_cpu_has(const char *name)

ARCH = QV_ARCH.decode('ascii')


def has(str feature):
    """True when the CPU and the OS support ``feature`` (e.g. 'avx2', 'avx512vnni', 'avxvnni', 'dotprod')."""
    cdef bytes b = feature.encode('ascii')
    return bool(qv_cpu_has(b))
