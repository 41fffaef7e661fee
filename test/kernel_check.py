"""Assertions for kernel tests that explain themselves when they fail.

A failing comparison reports the case (shape, parameters, seed), the maximum and median difference, how
many elements differ and a histogram of the differences, so that a failure can be reproduced and read
without a debugger.
"""
import numpy as np
import pytest

from qvision_kernels import _registry


def _describe(actual, expected, context):
    a = np.asarray(actual)
    e = np.asarray(expected)
    lines = ['case: %s' % (context,), 'shapes: actual %s %s, expected %s %s' % (a.shape, a.dtype, e.shape, e.dtype)]
    if a.shape == e.shape:
        d = np.abs(a.astype(np.float64) - e.astype(np.float64))
        bad = d > 0
        lines.append('differing: %d of %d (%.3f %%); max diff %g; median diff %g; median diff of the '
                     'differing %g' % (bad.sum(), d.size, 100.0 * bad.sum() / max(1, d.size), d.max(initial=0),
                                       np.median(d) if d.size else 0, np.median(d[bad]) if bad.any() else 0))
        if bad.any():
            hist_vals, hist_counts = np.unique(np.minimum(d[bad], 1e9).round(6), return_counts=True)
            top = sorted(zip(hist_counts, hist_vals), reverse=True)[:8]
            lines.append('histogram |diff|: ' + ', '.join('%g x%d' % (v, c) for c, v in top))
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            lines.append('first differing index %s: actual %r expected %r' % (first, a[first], e[first]))
    return '\n'.join(lines)


def assert_bitexact(actual, expected, context=''):
    """Same shape, same dtype, every element equal."""
    a = np.asarray(actual)
    e = np.asarray(expected)
    if a.shape != e.shape or a.dtype != e.dtype or not np.array_equal(a, e):
        raise AssertionError('not bit-exact\n' + _describe(a, e, context))


def assert_within(actual, expected, max_abs_diff, context=''):
    """Integer outputs at most ``max_abs_diff`` apart (e.g. 1 LSB against ONNX Runtime)."""
    a = np.asarray(actual).astype(np.int64)
    e = np.asarray(expected).astype(np.int64)
    if a.shape != e.shape or (a.size and np.abs(a - e).max() > max_abs_diff):
        raise AssertionError('more than %d apart\n' % max_abs_diff + _describe(actual, expected, context))


def assert_allclose_rel(actual, expected, rtol, context=''):
    """Float outputs: max |a - e| <= rtol * max(|e|) (relative to the output's range)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    scale = max(np.abs(e).max(initial=0.0), 1e-30)
    if a.shape != e.shape or not np.all(np.isfinite(a)) or (a.size and np.abs(a - e).max() > rtol * scale):
        raise AssertionError('relative error above %g (scale %g)\n' % (rtol, scale) + _describe(a, e, context))


def run_both(fn, expected, context, exact=True):
    """Run ``fn(out, num_threads)`` with out=None and 1 thread, then with a given ``out`` and 2 threads;
    both results must equal ``expected`` (bit for bit, or within 1e-6 relative for float kernels), and
    the second call must return the ``out`` it was given."""
    y1 = fn(None, 1)
    out = np.full(expected.shape, 7, expected.dtype)
    y2 = fn(out, 2)
    assert y2 is out, 'the kernel did not return the given out'
    for y, what in ((y1, '1 thread'), (y2, 'out=, 2 threads')):
        if exact:
            assert_bitexact(y, expected, '%s, %s' % (context, what))
        else:
            assert_allclose_rel(y, expected, 1e-6, '%s, %s' % (context, what))
            assert y.dtype == expected.dtype


def isa_fixture(family):
    """A fixture that runs a test once per instruction-set variant of kernel ``family`` that is built and
    runnable on this CPU (straight from the registry, so a new variant is tested the moment it is built).
    A build with no usable variant fails the tests instead of skipping them."""
    @pytest.fixture(params=_registry.usable(family) or [None], ids=lambda name: name or 'none-built')
    def fixture(request):
        if request.param is None:
            pytest.fail('no variant of the %s kernels is built and usable here; build the package '
                        '(python setup.py build_ext --inplace) first' % family)
        return request.param
    return fixture


# Relative error allowed to the vectorised sigmoid / SiLU (include/qv_fsimd.h) against the exact value: a
# few float32 ulps.  Below SIGMOID_TINY in magnitude the comparison is absolute (inputs under -87.33 give
# exactly 0 where the exact value is a subnormal float, ~1e-37 for SiLU).
SIGMOID_RTOL = 3e-7
SIGMOID_TINY = 1e-35


def assert_sigmoid_close(actual, exact, context='', rtol=SIGMOID_RTOL):
    """float32 ``actual`` within ``rtol`` of the float64 ``exact`` element by element (absolute under
    SIGMOID_TINY); NaN where and only where ``exact`` is NaN, infinities equal."""
    a = np.asarray(actual).astype(np.float64)
    e = np.asarray(exact, dtype=np.float64)
    assert a.shape == e.shape, (a.shape, e.shape, context)
    with np.errstate(invalid='ignore'):
        err = np.abs(a - e)
        ok = (a == e) | (np.isnan(a) & np.isnan(e)) | (err <= rtol * np.abs(e)) | (err <= SIGMOID_TINY)
    if not ok.all():
        i = tuple(int(v) for v in np.argwhere(~ok)[0])
        with np.errstate(invalid='ignore', divide='ignore'):
            rel = np.where(ok, 0.0, err / np.abs(e))
        raise AssertionError('sigmoid above %g relative: %d of %d elements, worst %g; first at %s: actual %r '
                             'exact %r\ncase: %s' % (rtol, (~ok).sum(), ok.size, np.nanmax(rel), i, a[i], e[i],
                                                     context))


def aarch64_cross_tools():
    """(compiler, runner) for aarch64 test programs: Debian's aarch64-linux-gnu-gcc and qemu-aarch64 with
    an emulated CPU that has the dot-product extension.  Skips without them (fails under CI, which
    installs them: .ci/run)."""
    import os
    import shutil
    cc = shutil.which('aarch64-linux-gnu-gcc')
    qemu = shutil.which('qemu-aarch64') or shutil.which('qemu-aarch64-static')
    if not (cc and qemu):
        if os.environ.get('CI'):
            pytest.fail('CI must install gcc-aarch64-linux-gnu and qemu-user (see .ci/run)')
        pytest.skip('no aarch64 cross compiler or qemu-aarch64 on this machine')
    return cc, (qemu, '-cpu', 'max')
