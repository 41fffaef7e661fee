/* Stress test of the kernels' thread pool (qvision_kernels/include/qv_threadpool.h), in C.
 *
 * Many jobs of random sizes and thread counts, from two submitting threads at once: every task of every
 * job must run exactly once, with a worker id below the job's thread count, and the job must be over
 * (all tasks finished) when parallel_for returns.  Built natively, with ThreadSanitizer and, for aarch64,
 * cross-compiled and run under qemu by test/test_threadpool.py.  Prints "N jobs, 0 failed" on success.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
typedef ptrdiff_t Py_ssize_t;
/* no stall rule here: every job is shared with the workers (test_threadpool.py tests the rule) */
#define QV_POOL_STALL_NS (1L << 62)
#include "qv_threadpool.h"

#define MAX_TASKS 700

typedef struct {
    int counts[MAX_TASKS];
    int bad_worker;
    int nthreads;
    volatile unsigned sink;
} job_t;

static void task(void *ctx, Py_ssize_t t, int worker)
{
    job_t *j = (job_t *)ctx;
    unsigned k, acc = (unsigned)t;
    if (worker < 0 || worker >= j->nthreads)
        __atomic_store_n(&j->bad_worker, 1, __ATOMIC_RELAXED);
    for (k = 0; k < (unsigned)(t % 7) * 50; k++)     /* uneven work */
        acc = acc * 1103515245u + 12345u;
    __atomic_store_n(&j->sink, acc, __ATOMIC_RELAXED);
    __atomic_add_fetch(&j->counts[t], 1, __ATOMIC_RELAXED);
}

typedef struct {
    unsigned seed;
    int jobs;
    int failed;
} submitter_t;

static unsigned next_rand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

static void *submit(void *arg)
{
    submitter_t *sub = (submitter_t *)arg;
    static __thread job_t job;
    int i, t;
    for (i = 0; i < sub->jobs; i++) {
        int ntasks = 1 + (int)(next_rand(&sub->seed) % MAX_TASKS);
        job.nthreads = 1 + (int)(next_rand(&sub->seed) % 6);
        job.bad_worker = 0;
        memset(job.counts, 0, sizeof(job.counts));
        qv_pool_parallel_for(task, &job, ntasks, job.nthreads);
        for (t = 0; t < MAX_TASKS; t++) {
            int want = t < ntasks ? 1 : 0;
            if (__atomic_load_n(&job.counts[t], __ATOMIC_RELAXED) != want) {
                if (sub->failed < 5)
                    printf("job %d: task %d of %d ran %d times\n", i, t, ntasks, job.counts[t]);
                sub->failed++;
                break;
            }
        }
        if (job.bad_worker) {
            printf("job %d: a worker id outside [0, %d)\n", i, job.nthreads);
            sub->failed++;
        }
        if ((i & 255) == 0)          /* sometimes let the workers fall asleep */
            qv_pool_set_spin_ns((i & 512) ? 0 : 200000);
    }
    return NULL;
}

int main(void)
{
    pthread_t other;
    submitter_t a = {12345u, 4000, 0}, b = {777u, 4000, 0};
    if (qv_pool_init(50) != 0) {
        printf("init failed\n");
        return 1;
    }
    pthread_create(&other, NULL, submit, &b);
    submit(&a);
    pthread_join(other, NULL);
    printf("%d jobs, %d failed (workers started: %d, jobs shared: %lu)\n", a.jobs + b.jobs,
           a.failed + b.failed, qv_pool.nworkers, qv_pool.jobs_parallel);
    return a.failed + b.failed ? 1 : 0;
}
