/* How the kernels split their work for the thread pool (qv_threadpool.h): task sizes, and per-thread
 * scratch.
 *
 * Per-thread scratch: each thread's part starts on a cache-line pair of its own.  Two
 * threads writing neighbouring bytes of one line (say, the tile pointers they refresh for every tile)
 * would pass the line back and forth between their cores on every write. */
#ifndef QV_SCRATCH_H
#define QV_SCRATCH_H
#include <stdlib.h>

#define QV_SCRATCH_ALIGN 128

/* Jobs (tiles, rows, chunks) per pool task: about 16 tasks per thread, so that threads that start late or
 * lose their core meanwhile leave little behind, while taking a task stays rare next to running it.  One
 * task of everything on one thread. */
static inline Py_ssize_t qv_task_size(Py_ssize_t jobs, int nthreads)
{
    Py_ssize_t per = nthreads > 1 ? jobs / (16 * (Py_ssize_t)nthreads) : jobs;
    return per > 0 ? per : 1;
}

/* Elements of `size` bytes per thread so that each part is `n` elements rounded up to whole pairs. */
static inline Py_ssize_t qv_scratch_stride(Py_ssize_t n, Py_ssize_t size)
{
    Py_ssize_t bytes = (n * size + QV_SCRATCH_ALIGN - 1) / QV_SCRATCH_ALIGN * QV_SCRATCH_ALIGN;
    return (bytes > 0 ? bytes : QV_SCRATCH_ALIGN) / size;
}

/* `nthreads` parts of `stride` elements of `size` bytes, aligned; release with free().  NULL if short. */
static inline void *qv_scratch_alloc(Py_ssize_t stride, Py_ssize_t size, int nthreads)
{
    void *p = NULL;
    if (posix_memalign(&p, QV_SCRATCH_ALIGN, (size_t)(stride * size * (nthreads > 0 ? nthreads : 1))) != 0)
        return NULL;
    return p;
}
#endif
