# The kernels' thread pool (qvision_kernels/include/qv_threadpool.h), shared by every kernel module:
#     from qvision_kernels._threadpool cimport qv_task_fn, parallel_for

cdef extern from "qv_threadpool.h" nogil:
    ctypedef void (*qv_task_fn)(void *ctx, Py_ssize_t task, int worker)

cdef void parallel_for(qv_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads) nogil
