"""The registry of instruction-set variants (qvision_kernels._registry), CPU feature detection
(qvision_kernels._cpu) and the thread-count helper (qvision_kernels.threads)."""
import os
import platform

import numpy as np
import pytest

import qvision_kernels
from qvision_kernels import KernelError, QConv2d, QLinear, _cpu, _registry, threads

NAMES = [v.name for v in _registry.VARIANTS]
FAMILY = 'qconv'


@pytest.fixture(autouse=True)
def _no_forced_variant(monkeypatch):
    # The tests set QVISION_ISA themselves where they mean to; one left in the environment would change
    # what "the best variant" is.
    monkeypatch.delenv('QVISION_ISA', raising=False)


def _layer(isa=None):
    return QConv2d(np.ones((4, 1, 1, 4), np.int8), None, 0, 0.5, 0, isa=isa)


def test_variant_table():
    # Best first: the x86 variants in decreasing order, the portable one last.
    x86 = [n for n in NAMES if n in ('avx512vnni', 'avxvnni', 'avx2')]
    assert x86 == ['avx512vnni', 'avxvnni', 'avx2']
    assert len(set(NAMES)) == len(NAMES)
    generic = _registry.VARIANTS[-1]
    assert generic.name == 'generic' and generic.arch == '*' and generic.features == ()
    for v in _registry.VARIANTS:
        assert v.arch in ('x86_64', 'aarch64', '*')
        for f in v.features:
            assert isinstance(_cpu.has(f), bool)


def test_every_usable_variant_imports_and_names_itself(monkeypatch):
    monkeypatch.delenv('QVISION_ISA', raising=False)
    usable = _registry.usable(FAMILY)
    assert 'generic' in usable, 'the generic variant is always built and runs everywhere'
    assert usable == [n for n in NAMES if n in usable], 'usable() must keep the best-first order'
    assert qvision_kernels.usable_isas() == usable
    assert qvision_kernels.isa() == _registry.choose(FAMILY) == usable[0]
    for name in NAMES:
        if _registry.supported(name) and _registry.built(FAMILY, name):
            assert name in usable
            mod = _registry.module(FAMILY, name)
            assert mod.ISA == name
            assert mod.__name__ == 'qvision_kernels._gen_qconv_%s' % name
            assert set(mod.TILE_ROWS) == set(mod.TILE_BLOCKS) and mod.TILE_ROWS
            assert _registry.module(FAMILY, name) is mod           # imported once
            assert _layer(name).isa == name
        else:
            assert name not in usable
            with pytest.raises(KernelError, match="instruction set '%s' is not usable" % name):
                _registry.module(FAMILY, name)


def test_supported_follows_the_cpu_features():
    for v in _registry.VARIANTS:
        want = (v.arch in ('*', _cpu.ARCH)) and all(_cpu.has(f) for f in v.features)
        assert _registry.supported(v.name) == want
    assert _registry.supported('generic')


@pytest.mark.parametrize('name', _registry.usable(FAMILY))
def test_environment_forces_a_variant(monkeypatch, name):
    monkeypatch.setenv('QVISION_ISA', name)
    assert _registry.choose(FAMILY) == name
    assert _registry.module(FAMILY).ISA == name
    assert qvision_kernels.isa() == name
    assert _layer().isa == name
    assert QLinear(np.ones((3, 4), np.int8), None, 0, 0.5, 0).isa == name
    # The isa= argument wins over the environment.
    other = 'generic' if name != 'generic' else _registry.usable(FAMILY)[0]
    assert _registry.choose(FAMILY, other) == other
    assert _layer(other).isa == other


def test_isa_argument_forces_a_variant(monkeypatch):
    monkeypatch.delenv('QVISION_ISA', raising=False)
    for name in _registry.usable(FAMILY):
        assert _layer(name).isa == name
        assert QLinear(np.ones((3, 4), np.int8), None, 0, 0.5, 0, isa=name).isa == name
    assert _layer().isa == _registry.usable(FAMILY)[0]


def test_empty_environment_variable_means_the_best(monkeypatch):
    monkeypatch.setenv('QVISION_ISA', '')
    assert _registry.choose(FAMILY) == _registry.usable(FAMILY)[0]


@pytest.mark.parametrize('how', ['env', 'arg'])
@pytest.mark.parametrize('bad', ['sse9', 'AVX2', 'avx512', ' generic'])
def test_unknown_variant(monkeypatch, how, bad):
    if how == 'env':
        monkeypatch.setenv('QVISION_ISA', bad)
        call = lambda: _layer()                                     # noqa: E731
    else:
        monkeypatch.delenv('QVISION_ISA', raising=False)
        call = lambda: _layer(bad)                                  # noqa: E731
    with pytest.raises(KernelError) as err:
        call()
    msg = str(err.value)
    assert 'unknown instruction set %r' % bad in msg
    for name in NAMES:                                              # the message lists the known names
        assert name in msg


def test_unsupported_variant_is_refused_not_imported(monkeypatch):
    # A CPU without any extension: only the generic variant may be used, and asking for another one says
    # which are usable instead of importing a module that would raise an illegal instruction.
    monkeypatch.delenv('QVISION_ISA', raising=False)
    monkeypatch.setattr(_registry._cpu, 'has', lambda feature: False)
    assert _registry.usable(FAMILY) == ['generic']
    assert _registry.choose(FAMILY) == 'generic'
    assert _layer().isa == 'generic'
    for name in NAMES[:-1]:
        assert not _registry.supported(name)
        with pytest.raises(KernelError, match=r"'%s' is not usable for 'qconv' here \(usable: generic\)" % name):
            _layer(name)
        monkeypatch.setenv('QVISION_ISA', name)
        with pytest.raises(KernelError, match='is not usable'):
            _layer()
        monkeypatch.delenv('QVISION_ISA')


def test_other_architecture(monkeypatch):
    # x86 variants are never chosen on another architecture, whatever its feature names.
    monkeypatch.setattr(_registry._cpu, 'ARCH', 'aarch64')
    monkeypatch.setattr(_registry._cpu, 'has', lambda feature: True)
    assert _registry.usable(FAMILY) == ['generic']


def test_variant_not_built(monkeypatch):
    real = _registry.built
    monkeypatch.setattr(_registry, 'built', lambda family, name: name == 'generic' and real(family, name))
    assert _registry.usable(FAMILY) == ['generic']
    best_supported = next(n for n in NAMES if _registry.supported(n))
    if best_supported != 'generic':
        with pytest.raises(KernelError, match='usable: generic'):
            _layer(best_supported)
    monkeypatch.setattr(_registry, 'built', lambda family, name: False)
    with pytest.raises(KernelError, match="no build of the 'qconv' kernels is importable; rebuild"):
        _registry.module(FAMILY)
    with pytest.raises(KernelError, match=r'usable: none'):
        _registry.module(FAMILY, 'generic')


def test_unknown_family():
    assert _registry.usable('no_such_family') == []
    assert not _registry.built('no_such_family', 'generic')
    with pytest.raises(KernelError, match="no build of the 'no_such_family' kernels"):
        _registry.module('no_such_family')


# --------------------------------------------------------------------------------------------------------
# CPU feature detection against the kernel's own view of the CPU (/proc/cpuinfo on Linux).

# _cpu.has name -> the flag Linux prints in /proc/cpuinfo.
X86_FLAGS = {'avx2': 'avx2', 'fma': 'fma', 'f16c': 'f16c', 'avx512f': 'avx512f', 'avx512bw': 'avx512bw',
             'avx512vl': 'avx512vl', 'avx512dq': 'avx512dq', 'avx512vnni': 'avx512_vnni', 'avxvnni': 'avx_vnni'}
ARM_FLAGS = {'asimd': 'asimd', 'dotprod': 'asimddp'}


def _cpuinfo_flags(key):
    with open('/proc/cpuinfo') as f:
        for line in f:
            name, _, value = line.partition(':')
            if name.strip() == key:
                return set(value.split())
    return set()


def test_cpu_features_match_proc_cpuinfo():
    every = set(X86_FLAGS) | set(ARM_FLAGS) | {'no_such_feature', ''}
    answers = {f: _cpu.has(f) for f in every}
    assert all(isinstance(a, bool) for a in answers.values())
    assert not answers['no_such_feature'] and not answers['']
    machine = platform.machine().lower()
    if machine in ('x86_64', 'amd64'):
        assert _cpu.ARCH == 'x86_64'
        assert not any(answers[f] for f in ARM_FLAGS)
        table, key = X86_FLAGS, 'flags'
    elif machine in ('aarch64', 'arm64'):
        assert _cpu.ARCH == 'aarch64'
        assert not any(answers[f] for f in X86_FLAGS)
        table, key = ARM_FLAGS, 'Features'
    else:
        assert _cpu.ARCH == 'other' and not any(answers.values())
        return
    if not os.path.exists('/proc/cpuinfo'):          # not Linux: nothing to compare with
        return
    flags = _cpuinfo_flags(key)
    assert flags, 'no %r line in /proc/cpuinfo' % key
    wrong = {f: (answers[f], table[f] in flags) for f in table if answers[f] != (table[f] in flags)}
    assert not wrong, '_cpu.has disagrees with /proc/cpuinfo (has, cpuinfo): %r' % wrong


def test_cpu_feature_implications():
    # A CPU that reports a VNNI extension has the instructions its variant builds on.
    if _cpu.has('avx512vnni'):
        assert all(_cpu.has(f) for f in ('avx512f', 'avx512bw', 'avx512vl'))
    if _cpu.has('avxvnni') or _cpu.has('avx512f'):
        assert _cpu.has('avx2')


# --------------------------------------------------------------------------------------------------------
# threads

def test_resolve_num_threads():
    assert threads.resolve_num_threads(None) == threads.available_cores() >= 1
    for n in (1, 2, 3, 7, 64):
        assert threads.resolve_num_threads(n) == n          # exactly what was asked, even above the cores
    assert qvision_kernels.resolve_num_threads is threads.resolve_num_threads


@pytest.mark.parametrize('bad', [0, -1, -8, 1.0, 2.5, '2', True, False, [2], float('nan')])
def test_resolve_num_threads_errors(bad):
    with pytest.raises(KernelError, match='num_threads must be a positive int or None, got'):
        threads.resolve_num_threads(bad)


def test_available_cores_follows_affinity(monkeypatch):
    if hasattr(os, 'sched_getaffinity'):
        assert threads.available_cores() == len(os.sched_getaffinity(0))
        monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 5, 9})
        assert threads.available_cores() == 3
        assert threads.resolve_num_threads(None) == 3
        monkeypatch.delattr(os, 'sched_getaffinity')
    monkeypatch.setattr(os, 'cpu_count', lambda: None)
    assert threads.available_cores() == 1
    monkeypatch.setattr(os, 'cpu_count', lambda: 6)
    assert threads.available_cores() == 6
