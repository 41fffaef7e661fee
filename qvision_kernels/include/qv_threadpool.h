/* The kernels' thread pool: one per process, included by qvision_kernels/_threadpool.pyx only (the
 * kernel modules reach it through that module's cimported parallel_for).
 *
 * Why not OpenMP: a parallel region ends in a barrier, so the calling thread waits for every thread of
 * the team, including one that is still waking up (with libgomp's passive wait a 2-thread region cost
 * ~200 us on the 2-core virtual machine this was measured on) or that has no core because another
 * process holds it (a scheduler time slice, ms).  Spinning avoids the wake-up but makes the second case
 * worse.  Here:
 *   - the caller works on its job at once and waits only for tasks that a worker has actually taken:
 *     a worker that is late finds nothing left, and the job costs what one thread would;
 *   - thread t starts on its own contiguous share of the tasks (share t of n), front to back, so that a
 *     thread handles the same part of the image from one layer to the next and finds it in its cache;
 *     a thread that runs out takes tasks from the back of the others' shares;
 *   - a worker spins for a bounded time after its last task (QVISION_SPIN_US), so that the layers of
 *     one model run find it awake, and then sleeps on a condition variable: an idle pool costs no CPU;
 *   - a worker that loses its core while it holds a task does cost latency (the caller must wait for
 *     that task).  When such a wait is long (a stall: QV_POOL_STALL_NS), the caller runs its jobs alone
 *     for a while and then tries again, so that on a machine whose other cores are busy the kernels run
 *     at one-thread speed instead of waiting for time slices.
 *
 * Each share is one 64-bit word - epoch:24 | front:20 | back:20 - on a cache line of its own, taken
 * with a compare-and-swap that fails if the job changed meanwhile.  A job is not replaced while one of
 * its tasks runs (the caller waits for done == ntasks first), so a thread that took a task may read the
 * job's fields.  The header word (epoch:24 | threads:8) tells workers that a job is there and how many
 * threads may join: worker w joins only jobs of more than w threads (its scratch exists only then).
 */
#ifndef QV_THREADPOOL_H
#define QV_THREADPOOL_H

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QV_PAUSE() _mm_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define QV_PAUSE() __asm__ __volatile__("yield" ::: "memory")
#else
#define QV_PAUSE() __asm__ __volatile__("" ::: "memory")
#endif

#define QV_POOL_MAX_THREADS 255
#define QV_POOL_MAX_TASKS 0xfffff          /* 20 bits: more tasks than this run on the calling thread */
#define QV_POOL_DEFAULT_SPIN_US 200
/* A wait for a worker's task longer than this (and than 4 of the caller's own tasks) is a stall: the
 * worker lost its core while holding the task.  The caller then runs jobs alone for a while (25 ms,
 * doubling with each stall that comes within QV_POOL_CALM_NS of the one before, up to 0.8 s) and tries
 * again. */
#ifndef QV_POOL_STALL_NS            /* a test may raise it: test/c/test_qv_threadpool.c */
#define QV_POOL_STALL_NS 300000L
#endif
#define QV_POOL_SOLO_NS 25000000L
#define QV_POOL_SOLO_MAX_SHIFT 5
#define QV_POOL_CALM_NS 5000000000L

typedef void (*qv_task_fn)(void *ctx, Py_ssize_t task, int worker);

typedef struct {
    uint64_t v;                  /* epoch:24 | front:20 | back:20 (atomic) */
    char pad[64 - sizeof(uint64_t)];
} qv_range_t;

typedef struct {
    qv_range_t range[QV_POOL_MAX_THREADS];   /* thread t's share of the current job's tasks */
    uint64_t header;             /* epoch:24 | threads:8 of the current job (atomic) */
    Py_ssize_t done;             /* tasks of the current job finished (atomic) */
    int sleepers;                /* workers waiting on `wake` (atomic) */
    qv_task_fn fn;               /* the current job: written before the header is published */
    void *ctx;
    uint32_t epoch;
    int nworkers;                /* worker threads started (ids 1..nworkers) */
    long spin_ns;
    unsigned long jobs_parallel; /* statistics: jobs shared with workers, tasks run by workers */
    unsigned long tasks_by_workers;
    unsigned long stalls;        /* statistics: waits for a worker's task judged a stall */
    long solo_until;             /* jobs run on their caller alone until this time (ns)... */
    int solo_shift;              /* ...for QV_POOL_SOLO_NS << solo_shift after a stall */
    long last_stall;             /* time of the last stall (ns) */
    pthread_mutex_t submit;      /* held by the caller of the current job; a second caller runs alone */
    pthread_mutex_t sleep_lock;
    pthread_cond_t wake;
} qv_pool_t;

static qv_pool_t qv_pool __attribute__((aligned(64)));

#define QV_EPOCH_MASK 0xffffffu
#define QV_HDR(epoch, threads) (((uint64_t)(epoch) << 8) | (uint64_t)(threads))
#define QV_HDR_EPOCH(h) ((uint32_t)((h) >> 8) & QV_EPOCH_MASK)
#define QV_HDR_THREADS(h) ((int)((h) & 0xffu))
#define QV_RANGE(epoch, front, back) (((uint64_t)(epoch) << 40) | ((uint64_t)(front) << 20) | (uint64_t)(back))
#define QV_R_EPOCH(r) ((uint32_t)((r) >> 40) & QV_EPOCH_MASK)
#define QV_R_FRONT(r) ((Py_ssize_t)(((r) >> 20) & 0xfffffu))
#define QV_R_BACK(r) ((Py_ssize_t)((r) & 0xfffffu))

/* The spin time is changed at run time (set_spin_us) while workers read it. */
static inline long qv_pool_spin_ns(void) { return __atomic_load_n(&qv_pool.spin_ns, __ATOMIC_RELAXED); }
static inline void qv_pool_set_spin_ns(long ns) { __atomic_store_n(&qv_pool.spin_ns, ns, __ATOMIC_RELAXED); }

static inline long qv_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Is there a job for worker `w` that it has not worked on yet?  (seq_cst: pairs with the caller's
 * publish, see the sleep in qv_pool_worker) */
static inline int qv_pool_has_job(int w, uint32_t seen)
{
    uint64_t h = __atomic_load_n(&qv_pool.header, __ATOMIC_SEQ_CST);
    return QV_HDR_THREADS(h) > w && QV_HDR_EPOCH(h) != seen;
}

/* Take one task from range t of job `epoch`: from the front (own range) or the back (stealing).
 * Returns the task, or -1 when the range is empty or belongs to another job. */
static inline Py_ssize_t qv_pool_take(int t, uint32_t epoch, int front)
{
    uint64_t r = __atomic_load_n(&qv_pool.range[t].v, __ATOMIC_ACQUIRE);
    for (;;) {
        Py_ssize_t f = QV_R_FRONT(r), b = QV_R_BACK(r);
        if (QV_R_EPOCH(r) != epoch || f >= b)
            return -1;
        uint64_t nr = front ? QV_RANGE(epoch, f + 1, b) : QV_RANGE(epoch, f, b - 1);
        if (__atomic_compare_exchange_n(&qv_pool.range[t].v, &r, nr, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return front ? f : b - 1;
    }
}

/* Thread w's part of job `epoch` with `nthreads` threads: its own range front to back, then what is
 * left of the others' ranges, taken from their backs.  Returns how many tasks it ran.  A job is not
 * replaced while one of its tasks runs (the caller waits for done == ntasks), so once a task is taken
 * the job's fields may be read. */
static Py_ssize_t qv_pool_work(int w, uint32_t epoch, int nthreads)
{
    Py_ssize_t ran = 0, task;
    int k;
    for (k = 0; k < nthreads; k++) {
        int t = (w + k) % nthreads;
        while ((task = qv_pool_take(t, epoch, k == 0)) >= 0) {
            qv_pool.fn(qv_pool.ctx, task, w);
            __atomic_add_fetch(&qv_pool.done, 1, __ATOMIC_RELEASE);
            ran++;
        }
    }
    return ran;
}

static void *qv_pool_worker(void *arg)
{
    int w = (int)(intptr_t)arg;
    uint32_t seen = 0xffffffffu;      /* epoch of the last job this worker took part in */
    for (;;) {
        uint64_t h = __atomic_load_n(&qv_pool.header, __ATOMIC_ACQUIRE);
        if (QV_HDR_THREADS(h) > w && QV_HDR_EPOCH(h) != seen) {
            seen = QV_HDR_EPOCH(h);
            Py_ssize_t ran = qv_pool_work(w, seen, QV_HDR_THREADS(h));
            if (ran)
                __atomic_add_fetch(&qv_pool.tasks_by_workers, (unsigned long)ran, __ATOMIC_RELAXED);
            continue;
        }
        /* spin for a while: the next layer of a model run usually comes within microseconds */
        long deadline = qv_now_ns() + qv_pool_spin_ns();
        unsigned n = 0;
        int found = 0;
        for (;;) {
            if (qv_pool_has_job(w, seen)) {
                found = 1;
                break;
            }
            QV_PAUSE();
            if ((++n & 63u) == 0 && qv_now_ns() >= deadline)
                break;
        }
        if (found)
            continue;
        pthread_mutex_lock(&qv_pool.sleep_lock);
        __atomic_add_fetch(&qv_pool.sleepers, 1, __ATOMIC_SEQ_CST);
        while (!qv_pool_has_job(w, seen))
            pthread_cond_wait(&qv_pool.wake, &qv_pool.sleep_lock);
        __atomic_sub_fetch(&qv_pool.sleepers, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&qv_pool.sleep_lock);
    }
    return NULL;
}

/* Start workers up to ids 1..want-1 (caller holds `submit`).  Returns the number running. */
static int qv_pool_grow(int want)
{
    if (want > QV_POOL_MAX_THREADS)
        want = QV_POOL_MAX_THREADS;
    while (qv_pool.nworkers + 1 < want) {
        pthread_t t;
        pthread_attr_t attr;
        int id = qv_pool.nworkers + 1;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 1 << 20);
        int rc = pthread_create(&t, &attr, qv_pool_worker, (void *)(intptr_t)id);
        pthread_attr_destroy(&attr);
        if (rc != 0)
            break;           /* run with the workers there are */
        qv_pool.nworkers = id;
    }
    return qv_pool.nworkers;
}

/* Run fn(ctx, task, worker) for task in [0, ntasks) on up to `nthreads` threads, the caller included
 * (worker ids 0..nthreads-1, the caller is 0).  Thread t starts on tasks [ntasks*t/n, ntasks*(t+1)/n),
 * so that the same threads handle the same part of the image from one layer to the next (their caches
 * hold it); a thread that runs out takes the others' last tasks.  Returns when every task has finished. */
static void qv_pool_parallel_for(qv_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads)
{
    Py_ssize_t i;
    int t;
    if (ntasks <= 0)
        return;
    if (nthreads > ntasks)
        nthreads = (int)ntasks;
    if (nthreads > QV_POOL_MAX_THREADS)
        nthreads = QV_POOL_MAX_THREADS;
    long t0 = nthreads > 1 ? qv_now_ns() : 0;
    if (nthreads <= 1 || ntasks > QV_POOL_MAX_TASKS || t0 < __atomic_load_n(&qv_pool.solo_until, __ATOMIC_RELAXED)
            || pthread_mutex_trylock(&qv_pool.submit) != 0) {
        /* one thread, a recent stall, or another job in progress (another caller, or a task calling
         * back): alone */
        for (i = 0; i < ntasks; i++)
            fn(ctx, i, 0);
        return;
    }
    if (qv_pool_grow(nthreads) + 1 < nthreads)
        nthreads = qv_pool.nworkers + 1;
    uint32_t epoch = qv_pool.epoch = (qv_pool.epoch + 1) & QV_EPOCH_MASK;
    qv_pool.fn = fn;
    qv_pool.ctx = ctx;
    __atomic_store_n(&qv_pool.done, 0, __ATOMIC_RELAXED);
    for (t = 0; t < nthreads; t++)
        __atomic_store_n(&qv_pool.range[t].v,
                         QV_RANGE(epoch, ntasks * t / nthreads, ntasks * (t + 1) / nthreads), __ATOMIC_RELAXED);
    __atomic_store_n(&qv_pool.header, QV_HDR(epoch, nthreads), __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&qv_pool.sleepers, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&qv_pool.sleep_lock);
        pthread_cond_broadcast(&qv_pool.wake);
        pthread_mutex_unlock(&qv_pool.sleep_lock);
    }
    Py_ssize_t ran = qv_pool_work(0, epoch, nthreads);
    long t1 = qv_now_ns();
    /* every task is taken; wait for those still in a worker's hands */
    unsigned n = 0;
    while (__atomic_load_n(&qv_pool.done, __ATOMIC_ACQUIRE) != ntasks) {
        QV_PAUSE();
        if ((++n & 1023u) == 0)
            sched_yield();   /* the worker may be waiting for this core */
    }
    qv_pool.jobs_parallel++;
    if (n) {
        long t2 = qv_now_ns(), waited = t2 - t1;
        if (waited > QV_POOL_STALL_NS && (ran == 0 || waited > 4 * (t1 - t0) / ran)) {
            qv_pool.stalls++;
            if (t2 - qv_pool.last_stall > QV_POOL_CALM_NS)
                qv_pool.solo_shift = 0;
            qv_pool.last_stall = t2;
            __atomic_store_n(&qv_pool.solo_until, t2 + (QV_POOL_SOLO_NS << qv_pool.solo_shift), __ATOMIC_RELAXED);
            if (qv_pool.solo_shift < QV_POOL_SOLO_MAX_SHIFT)
                qv_pool.solo_shift++;
        }
    }
    pthread_mutex_unlock(&qv_pool.submit);
}

/* Self-test (tests only): two tasks that can only finish together - each waits until both have
 * started - so the job completes only if a worker really runs beside the caller.  Returns 1 when both
 * met within timeout_ms; ids[0..1] get the worker ids that ran tasks 0 and 1. */
typedef struct {
    int arrived;
    int ids[2];
    long deadline;
} qv_selftest_t;

static void qv_selftest_task(void *ctx, Py_ssize_t task, int worker)
{
    qv_selftest_t *st = (qv_selftest_t *)ctx;
    st->ids[task] = worker;
    __atomic_add_fetch(&st->arrived, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&st->arrived, __ATOMIC_SEQ_CST) < 2 && qv_now_ns() < st->deadline)
        sched_yield();
}

static void qv_pool_clear_stall(void)
{
    __atomic_store_n(&qv_pool.solo_until, 0, __ATOMIC_RELAXED);
    qv_pool.solo_shift = 0;
    qv_pool.last_stall = 0;
}

static int qv_pool_selftest(long timeout_ms, int *ids)
{
    qv_selftest_t st = {0, {-1, -1}, qv_now_ns() + timeout_ms * 1000000L};
    qv_pool_clear_stall();
    qv_pool_parallel_for(qv_selftest_task, &st, 2, 2);
    ids[0] = st.ids[0];
    ids[1] = st.ids[1];
    return __atomic_load_n(&st.arrived, __ATOMIC_SEQ_CST) == 2 && qv_now_ns() < st.deadline;
}

/* Self-test of the stall rule (tests only): a job whose worker task holds on for hold_ms after the
 * caller's is done must count as a stall, and the next job must then run on the caller alone.
 * Returns 1 if both happened (0 if the two tasks did not even meet within timeout_ms). */
typedef struct {
    qv_selftest_t meet;
    long hold_ns;
} qv_stalltest_t;

static void qv_stalltest_task(void *ctx, Py_ssize_t task, int worker)
{
    qv_stalltest_t *st = (qv_stalltest_t *)ctx;
    qv_selftest_task(&st->meet, task, worker);
    if (worker != 0) {
        long until = qv_now_ns() + st->hold_ns;
        while (qv_now_ns() < until)
            QV_PAUSE();
    }
}

static void qv_ids_task(void *ctx, Py_ssize_t task, int worker)
{
    if (worker != 0)
        __atomic_store_n((int *)ctx, 1, __ATOMIC_RELAXED);
}

static int qv_pool_stalltest(long hold_ms, long timeout_ms)
{
    qv_stalltest_t st = {{0, {-1, -1}, qv_now_ns() + timeout_ms * 1000000L}, hold_ms * 1000000L};
    unsigned long stalls = qv_pool.stalls;
    int on_worker = 0;
    qv_pool_clear_stall();
    qv_pool_parallel_for(qv_stalltest_task, &st, 2, 2);
    if (st.meet.arrived != 2 || qv_pool.stalls != stalls + 1)
        return 0;
    qv_pool_parallel_for(qv_ids_task, &on_worker, 64, 2);
    qv_pool_clear_stall();
    return !on_worker;
}

/* After fork() only the forking thread exists in the child: forget the workers and start afresh. */
static void qv_pool_atfork_child(void)
{
    pthread_mutex_init(&qv_pool.submit, NULL);
    pthread_mutex_init(&qv_pool.sleep_lock, NULL);
    pthread_cond_init(&qv_pool.wake, NULL);
    qv_pool.header = 0;
    qv_pool.done = 0;
    qv_pool.sleepers = 0;
    qv_pool.nworkers = 0;
    qv_pool.solo_until = 0;
}

static void qv_pool_atfork_prepare(void) { pthread_mutex_lock(&qv_pool.submit); }
static void qv_pool_atfork_parent(void) { pthread_mutex_unlock(&qv_pool.submit); }

static int qv_pool_init(long spin_us)
{
    pthread_mutex_init(&qv_pool.submit, NULL);
    pthread_mutex_init(&qv_pool.sleep_lock, NULL);
    pthread_cond_init(&qv_pool.wake, NULL);
    qv_pool_set_spin_ns(QV_POOL_DEFAULT_SPIN_US * 1000L);
    if (spin_us >= 0)
        qv_pool_set_spin_ns(spin_us * 1000L);
    return pthread_atfork(qv_pool_atfork_prepare, qv_pool_atfork_parent, qv_pool_atfork_child);
}

#endif
