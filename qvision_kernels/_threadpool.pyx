"""The kernels' thread pool: one per process (see include/qv_threadpool.h for how it works and why).

Kernel modules call :c:func:`parallel_for` (cimported from this module); from Python only the statistics
and the spin time are visible.  ``QVISION_SPIN_US`` (microseconds, default 200) is how long an idle worker
spins before it sleeps: long enough to bridge the gaps between the layers of one model run, short enough
that a pool between frames costs no CPU.  0 makes workers sleep at once (a wake-up per kernel call).
"""
import os

cdef extern from "qv_threadpool.h" nogil:
    ctypedef struct qv_pool_t:
        int nworkers
        unsigned long jobs_parallel
        unsigned long tasks_by_workers
        unsigned long stalls
    qv_pool_t qv_pool
    void qv_pool_parallel_for(qv_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads)
    int qv_pool_init(long spin_us)
    long qv_pool_spin_ns()
    void qv_pool_set_spin_ns(long ns)
    int QV_POOL_DEFAULT_SPIN_US
    int qv_pool_selftest(long timeout_ms, int *ids)
    int qv_pool_stalltest(long hold_ms, long timeout_ms)
    void qv_pool_clear_stall()


cdef void parallel_for(qv_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads) nogil:
    qv_pool_parallel_for(fn, ctx, ntasks, nthreads)


def _spin_us_from_env():
    raw = os.environ.get('QVISION_SPIN_US', '').strip()
    if not raw:
        return QV_POOL_DEFAULT_SPIN_US
    try:
        value = int(raw)
    except ValueError:
        raise ValueError('QVISION_SPIN_US must be a whole number of microseconds >= 0, got %r' % raw)
    if value < 0 or value > 10000000:
        raise ValueError('QVISION_SPIN_US must be between 0 and 10000000 microseconds, got %r' % raw)
    return value


if qv_pool_init(_spin_us_from_env()) != 0:
    raise OSError('qvision_kernels: could not register the thread pool fork handlers')


def set_spin_us(long us):
    """How long (microseconds) an idle worker spins before it sleeps; returns the previous value."""
    if us < 0:
        raise ValueError('spin time must be >= 0 microseconds, got %d' % us)
    cdef long old = qv_pool_spin_ns() // 1000
    qv_pool_set_spin_ns(us * 1000)
    return old


def stats():
    """Workers started, jobs shared with workers, tasks the workers ran, stalls (waits for a worker that
    had lost its core, after which jobs run alone for a while) and the spin time (us)."""
    return {'workers': qv_pool.nworkers, 'jobs_parallel': qv_pool.jobs_parallel,
            'tasks_by_workers': qv_pool.tasks_by_workers, 'stalls': qv_pool.stalls,
            'spin_us': qv_pool_spin_ns() // 1000}


def _selftest(long timeout_ms=10000):
    """(met, ids): two tasks that finish only if they run at the same time on two threads (a caller and
    a worker); ``met`` is False if they did not meet within ``timeout_ms``; ``ids`` the threads that ran
    them.  For tests."""
    cdef int ids[2]
    cdef int met
    with nogil:
        met = qv_pool_selftest(timeout_ms, ids)
    return bool(met), (ids[0], ids[1])


def _stalltest(long hold_ms=30, long timeout_ms=10000):
    """True if a job whose worker holds its task ``hold_ms`` longer than the caller counts as a stall and
    the next job then runs on the caller alone.  For tests."""
    cdef int ok
    with nogil:
        ok = qv_pool_stalltest(hold_ms, timeout_ms)
    return bool(ok)


def _clear_stall():
    """Forget a recent stall (jobs are shared with workers again at once).  For tests."""
    qv_pool_clear_stall()
