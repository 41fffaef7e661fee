"""The one place that decides how many threads a kernel may use."""
import numbers
import os

from .errors import KernelError


def available_cores():
    """Cores this process may run on (honours CPU affinity, e.g. taskset or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_num_threads(num_threads):
    """Threads to use for ``num_threads``: None means every available core; otherwise exactly that many
    at most (a kernel may use fewer when it has less work than threads, never more)."""
    if num_threads is None:
        return available_cores()
    if isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral) or num_threads < 1:
        raise KernelError('num_threads must be a positive int or None, got %r' % (num_threads,))
    return int(num_threads)
