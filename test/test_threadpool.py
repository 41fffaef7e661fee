"""The kernels' thread pool (qvision_kernels/_threadpool.pyx, include/qv_threadpool.h).

Results never depend on the thread count (every kernel test runs 1 and 2 threads, the conv tests also 3
and 7 on this 2-core machine, where workers take over each other's tasks).  Here: a stress test of the
pool in C (natively, and for aarch64 under qemu), that a worker really runs beside the caller, that several Python threads may call kernels at once, that a forked child gets a
working pool, and the QVISION_SPIN_US setting.
"""
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import qvision_kernels as K
from kernel_check import aarch64_cross_tools
from qvision_kernels import _threadpool
from qvision_kernels.reference import conv2d_int8

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRESS = os.path.join(ROOT, 'test', 'c', 'test_qv_threadpool.c')
INCLUDE = os.path.join(ROOT, 'qvision_kernels', 'include')


def _stress(tmp_path, cc, flags=(), runner=(), env=None):
    exe = str(tmp_path / 'pool_stress')
    subprocess.run([cc, '-O2', '-std=gnu99', '-pthread', '-I', INCLUDE] + list(flags) + [STRESS, '-o', exe],
                   check=True, capture_output=True, text=True)
    run = subprocess.run(list(runner) + [exe], capture_output=True, text=True, timeout=600,
                         env=None if env is None else dict(os.environ, **env))
    assert run.returncode == 0 and ' 0 failed' in run.stdout, run.stdout + run.stderr
    return run


def test_pool_stress_in_c(tmp_path):
    """8000 jobs of random sizes and thread counts from two submitting threads: every task exactly once,
    worker ids inside the job's thread count, nothing left running when a job returns."""
    _stress(tmp_path, 'gcc' if shutil.which('gcc') else 'cc')


def test_pool_stress_under_thread_sanitizer(tmp_path):
    """The same stress test built with ThreadSanitizer: no data race in the pool (its memory ordering is
    all __atomic builtins; a plain access shared between threads is reported)."""
    cc = shutil.which('gcc')
    probe = tmp_path / 'probe.c'
    probe.write_text('int main(void) { return 0; }\n')
    if cc is None or subprocess.run([cc, '-fsanitize=thread', str(probe), '-o', str(tmp_path / 'probe')],
                                    capture_output=True).returncode != 0:
        if os.environ.get('CI'):
            pytest.fail('CI must have gcc with ThreadSanitizer (libtsan, from build-essential)')
        pytest.skip('no gcc with ThreadSanitizer on this machine')
    run = _stress(tmp_path, cc, ['-O1', '-g', '-fsanitize=thread'], env={'TSAN_OPTIONS': 'halt_on_error=1 exitcode=66'})
    assert 'ThreadSanitizer' not in run.stderr, run.stderr


def test_pool_stress_on_aarch64(tmp_path):
    if platform.machine().lower() in ('aarch64', 'arm64'):
        _stress(tmp_path, shutil.which('gcc') or 'cc')
        return
    cc, runner = aarch64_cross_tools()
    _stress(tmp_path, cc, ['-static'], runner)


def _conv_case(seed, size=24, c=16, oc=32):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (1, size, size, c), dtype=np.uint8)
    w = rng.integers(-127, 128, (oc, 3, 3, c), dtype=np.int8)
    bias = rng.integers(-5000, 5000, oc, dtype=np.int32)
    mult = rng.uniform(1e-4, 3e-4, oc).astype(np.float32)
    layer = K.QConv2d(w, bias, 7, mult, 120, padding=1)
    expected = conv2d_int8(x, w, bias, 7, mult, 120, pads=(1, 1, 1, 1))
    return layer, x, expected


def test_a_worker_runs_beside_the_caller():
    """Two tasks that can only finish together: the job completes only if a second thread runs one."""
    met, ids = _threadpool._selftest(10000)
    assert met, 'the two tasks did not run at the same time within 10 s'
    assert sorted(ids) == [0, 1] or ids[0] != ids[1], ids
    assert _threadpool.stats()['workers'] >= 1


def test_workers_take_tasks():
    layer, x, expected = _conv_case(1, size=64)
    _threadpool._clear_stall()
    before = _threadpool.stats()
    for _ in range(20):
        assert np.array_equal(layer(x, num_threads=2), expected)
    after = _threadpool.stats()
    # every call is shared with the worker, but for calls run alone after a stall (a loaded machine)
    assert after['jobs_parallel'] - before['jobs_parallel'] >= (1 if after['stalls'] > before['stalls'] else 20)


def test_a_stall_makes_the_caller_run_alone_for_a_while():
    """A worker that holds its task 30 ms after the caller's part is done (as when it loses its core)
    is a stall; the next job runs on the calling thread alone."""
    assert _threadpool._stalltest(30, 10000)


def test_concurrent_callers_get_their_own_results():
    """Four Python threads call 2-thread kernels at the same time: one job owns the pool at a time and
    the others run on their calling thread; every result is exact."""
    cases = [_conv_case(seed) for seed in range(4)]
    errors = []

    def work(k):
        layer, x, expected = cases[k]
        for _ in range(30):
            if not np.array_equal(layer(x, num_threads=2), expected):
                errors.append(k)
                return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), 'a kernel call did not return'
    assert errors == []


def _child(queue):
    layer, x, expected = _conv_case(5)
    ok = all(np.array_equal(layer(x, num_threads=2), expected) for _ in range(5))
    queue.put((ok, _threadpool._selftest(10000)[0]))


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='fork() is POSIX only')
def test_forked_child_has_a_working_pool():
    _threadpool._selftest(10000)          # the parent's pool has a worker
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,))
    proc.start()
    proc.join(120)
    if proc.is_alive():
        proc.kill()
        pytest.fail('the forked child hung in a kernel call')
    assert proc.exitcode == 0
    assert queue.get(timeout=10) == (True, True)


def _spin_env(value):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in sys.path if p]))
    env.pop('QVISION_SPIN_US', None)
    if value is not None:
        env['QVISION_SPIN_US'] = value
    code = 'from qvision_kernels import _threadpool as t; print(t.stats()["spin_us"])'
    return subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('value, expected', [(None, '200'), ('0', '0'), (' 50 ', '50')])
def test_spin_setting(value, expected):
    run = _spin_env(value)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == expected


@pytest.mark.parametrize('value', ['fast', '-1', '1.5', '99999999999'])
def test_bad_spin_setting_is_refused(value):
    run = _spin_env(value)
    assert run.returncode != 0
    assert 'QVISION_SPIN_US' in run.stderr


def test_set_spin_us():
    old = _threadpool.set_spin_us(10)
    try:
        assert _threadpool.stats()['spin_us'] == 10
        with pytest.raises(ValueError):
            _threadpool.set_spin_us(-1)
    finally:
        _threadpool.set_spin_us(old)
