"""Packaging checks: the ROS 2 manifest, the install layout and the compiled kernel modules.

They read the files of the repository this test lives in (package.xml, setup.py, setup.cfg, the Cython
sources) and import qvision_kernels from wherever Python finds it (the source tree after an in-place
build, a venv, or a colcon install), so they tell whether *that* build contains every kernel module.

``QVISION_TEST_FULL_BUILD=1`` (set by .ci/run) additionally requires every instruction-set variant that
setup.py knows for this architecture and that this CPU runs to be built, i.e. a build without a
``QVISION_ISAS`` restriction (a development build made with ``QVISION_ISAS`` passes without it).
"""
import ast
import configparser
import importlib
import importlib.machinery
import os
import platform
import re
import xml.etree.ElementTree as ET
from glob import glob
from pathlib import Path

import numpy as np
import pytest

from kernel_check import assert_bitexact

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = 'qvision_ros'

# rosdep keys (ros/rosdistro rosdep/base.yaml and python.yaml, each with a Debian and an Ubuntu rule)
# and ROS 2 packages released for both Humble and Jazzy (ros/rosdistro <distro>/distribution.yaml).
# A dependency not listed here has not been checked to resolve; look it up before adding it.
ROSDEP_KEYS = {
    'cython3', 'libgomp1', 'python3-dev', 'python3-hypothesis', 'python3-numpy', 'python3-opencv',
    'python3-pytest', 'python3-setuptools', 'python3-yaml',
}
ROS_PACKAGES = {
    'builtin_interfaces', 'cv_bridge', 'diagnostic_msgs', 'geometry_msgs', 'launch', 'launch_ros',
    'lifecycle_msgs', 'rcl_interfaces', 'rclpy', 'ros2launch', 'rviz2', 'sensor_msgs', 'std_msgs', 'vision_msgs',
}
DEPEND_TAGS = ('depend', 'buildtool_depend', 'build_depend', 'build_export_depend', 'exec_depend',
               'test_depend', 'doc_depend')


# ---------------------------------------------------------------------------------------------- helpers

def _manifest():
    return ET.parse(str(ROOT / 'package.xml')).getroot()


def _setup_py():
    """Module-level constants and the keyword arguments of the setup() call of setup.py, as AST nodes."""
    tree = ast.parse((ROOT / 'setup.py').read_text(), 'setup.py')
    constants, kwargs = {}, None
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            constants[node.targets[0].id] = node.value
        elif (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
              and getattr(node.value.func, 'id', None) == 'setup'):
            kwargs = {k.arg: k.value for k in node.value.keywords}
    assert kwargs is not None, 'setup.py has no top-level setup(...) call'
    return constants, kwargs


def _setup_value(name):
    """Evaluate one setup() argument with the module constants it uses (glob runs in the repo root)."""
    constants, kwargs = _setup_py()
    scope = {k: ast.literal_eval(v) for k, v in constants.items() if _is_literal(v)}
    scope['glob'] = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob(str(ROOT / pattern)))
    return eval(compile(ast.Expression(kwargs[name]), 'setup.py', 'eval'), scope)


def _is_literal(node):
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def _kernel_sources():
    """(plain .pyx module names, template family names) in the repository's qvision_kernels."""
    src = ROOT / 'qvision_kernels'
    plain = sorted(p.name[:-len('.pyx')] for p in src.glob('*.pyx') if not p.name.startswith('_gen_'))
    families = sorted(p.name[:-len('.pyx.tp')].lstrip('_') for p in src.glob('*.pyx.tp'))
    return plain, families


def _assert_extension(mod):
    path = getattr(mod, '__file__', '') or ''
    assert path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (
        '%s was imported from %r, not from a compiled extension module; build the package '
        '(pip install ., colcon build or setup.py build_ext --inplace)' % (mod.__name__, path))


# ------------------------------------------------------------------------------------------- manifest

def test_manifest_is_format_3_with_build_type_ament_python():
    root = _manifest()
    assert root.tag == 'package'
    assert root.get('format') == '3'
    build_types = [e.text for e in root.findall('export/build_type')]
    assert build_types == ['ament_python']
    assert root.findtext('license') == 'Apache-2.0'
    assert root.find('maintainer') is not None and root.find('maintainer').get('email')
    assert (root.findtext('description') or '').strip()


def test_manifest_name_and_version_match_setup_py_and_module():
    root = _manifest()
    assert root.findtext('name') == PACKAGE
    assert _setup_value('name') == PACKAGE
    version = root.findtext('version')
    assert re.fullmatch(r'\d+\.\d+\.\d+', version), version
    assert _setup_value('version') == version
    init = ast.parse((ROOT / PACKAGE / '__init__.py').read_text())
    module_version = [ast.literal_eval(n.value) for n in init.body if isinstance(n, ast.Assign)
                      and getattr(n.targets[0], 'id', None) == '__version__']
    assert module_version == [version]


def test_every_dependency_is_a_checked_rosdep_key_or_ros_package():
    root = _manifest()
    unknown, duplicated = [], []
    for tag in DEPEND_TAGS:
        names = [e.text.strip() for e in root.findall(tag)]
        unknown += ['<%s>%s' % (tag, n) for n in names if n not in ROSDEP_KEYS | ROS_PACKAGES]
        duplicated += ['<%s>%s' % (tag, n) for n in set(names) if names.count(n) > 1]
    assert not unknown, 'dependencies not checked against rosdistro: %s' % unknown
    assert not duplicated, 'dependencies listed twice: %s' % duplicated


def test_manifest_declares_what_build_run_and_test_need():
    root = _manifest()
    build = {e.text for tag in ('depend', 'buildtool_depend', 'build_depend') for e in root.findall(tag)}
    run = {e.text for tag in ('depend', 'exec_depend') for e in root.findall(tag)}
    test = {e.text for tag in ('depend', 'test_depend') for e in root.findall(tag)}
    assert {'cython3', 'python3-setuptools', 'python3-dev'} <= build
    assert {'python3-numpy', 'python3-opencv', 'rclpy', 'sensor_msgs', 'vision_msgs',
            'diagnostic_msgs', 'lifecycle_msgs', 'launch', 'launch_ros'} <= run
    assert 'python3-pytest' in test


# ------------------------------------------------------------------------------------- install layout

def test_setup_cfg_installs_scripts_where_ros2_run_finds_them():
    cfg = configparser.RawConfigParser()
    assert cfg.read(str(ROOT / 'setup.cfg'))
    assert cfg.get('develop', 'script_dir') == '$base/lib/' + PACKAGE
    assert cfg.get('install', 'install_scripts') == '$base/lib/' + PACKAGE


def test_package_marker_and_manifest_are_installed():
    marker = ROOT / 'resource' / PACKAGE
    assert marker.is_file(), 'the ament index marker resource/%s is missing' % PACKAGE
    data_files = _setup_value('data_files')
    assert ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]) in data_files
    assert ('share/' + PACKAGE, ['package.xml']) in data_files
    destinations = [d for d, _ in data_files]
    assert 'share/%s/launch' % PACKAGE in destinations and 'share/%s/config' % PACKAGE in destinations
    for d in ('launch', 'config'):
        assert (ROOT / d).is_dir(), '%s/ is missing' % d


def test_pyproject_has_only_a_build_system_table():
    text = (ROOT / 'pyproject.toml').read_text()
    tables = re.findall(r'^\s*\[([^\]]+)\]', text, re.M)
    assert tables == ['build-system'], tables
    assert 'Cython' in text and 'setuptools' in text


def test_test_extra_names_pytest_for_colcon():
    extras = _setup_value('extras_require')
    assert 'pytest' in extras['test']


def test_ci_ends_with_the_readme_test_command():
    lines = [ln.strip() for ln in (ROOT / '.ci' / 'run').read_text().splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith('#')]
    last = commands[-1]
    assert last in (ROOT / 'README.md').read_text(), (
        'the last command of .ci/run is not the README test command: %r' % last)


# ------------------------------------------------------------------------------------ compiled kernels

def test_setup_py_and_registry_know_the_same_instruction_sets():
    from qvision_kernels import _registry

    from qvision_kernels import isa_flags

    x86 = set(isa_flags.X86_64)
    arm64 = set(isa_flags.AARCH64)
    assert isa_flags.for_machine('x86_64') is isa_flags.X86_64
    assert isa_flags.for_machine('aarch64') is isa_flags.AARCH64
    assert "_load_isa_flags().for_machine(platform.machine())" in (ROOT / 'setup.py').read_text()
    registry_x86 = {v.name for v in _registry.VARIANTS if v.arch in ('x86_64', '*')}
    registry_arm64 = {v.name for v in _registry.VARIANTS if v.arch in ('aarch64', '*')}
    assert x86 == registry_x86
    assert arm64 == registry_arm64
    assert 'generic' in x86 and 'generic' in arm64


def test_every_plain_pyx_is_built_as_an_extension():
    plain, _ = _kernel_sources()
    assert '_cpu' in plain
    for name in plain:
        _assert_extension(importlib.import_module('qvision_kernels.' + name))


def test_every_template_is_built_for_each_usable_isa():
    from qvision_kernels import _registry

    _, families = _kernel_sources()
    assert 'qconv' in families
    full = os.environ.get('QVISION_TEST_FULL_BUILD') == '1'
    if full:
        from qvision_kernels import isa_flags

        expected = [n for n in isa_flags.for_machine(platform.machine()) if _registry.supported(n)]
    for family in families:
        usable = _registry.usable(family)
        assert 'generic' in usable, '%s: the generic variant (always built) is missing' % family
        if full:
            assert usable == expected, '%s: QVISION_TEST_FULL_BUILD=1 but only %s are built' % (family, usable)
        for isa in usable:
            mod = _registry.module(family, isa)
            _assert_extension(mod)
            assert mod.__name__ == 'qvision_kernels._gen_%s_%s' % (family, isa)
            # ISA comes from the C preprocessor: it proves the module was compiled with -DQV_ISA_<isa>.
            assert getattr(mod, 'ISA', None) == isa, '%s reports ISA %r' % (mod.__name__,
                                                                            getattr(mod, 'ISA', None))


def test_isa_choice_is_a_usable_variant_and_honours_qvision_isa(monkeypatch):
    import qvision_kernels
    from qvision_kernels.errors import KernelError

    monkeypatch.delenv('QVISION_ISA', raising=False)
    best = qvision_kernels.isa()
    assert best == qvision_kernels.usable_isas()[0]
    monkeypatch.setenv('QVISION_ISA', 'generic')
    assert qvision_kernels.isa() == 'generic'
    monkeypatch.setenv('QVISION_ISA', 'no-such-isa')
    with pytest.raises(KernelError, match='no-such-isa'):
        qvision_kernels.isa()


def test_each_usable_qconv_build_computes_the_papers_layer_exactly():
    """The papers' layer (3 -> 16 channels, 3x3) on a small image, every built variant vs the reference."""
    from qvision_kernels import QConv2d, usable_isas
    from qvision_kernels.reference import conv2d_int8

    rng = np.random.default_rng(20240601)
    x = rng.integers(0, 256, (1, 19, 23, 3), dtype=np.uint8)
    w = rng.integers(-127, 128, (16, 3, 3, 3), dtype=np.int8)
    b = rng.integers(-2000, 2000, 16, dtype=np.int32)
    mult = np.full(16, 0.004, np.float32)
    expected = conv2d_int8(x, w, b, 7, mult, 120, pads=(1, 1, 1, 1))
    for isa in usable_isas('qconv'):
        layer = QConv2d(w, b, x_zero_point=7, multiplier=mult, y_zero_point=120, padding=1, isa=isa)
        for threads in (1, 2):
            assert_bitexact(layer(x, num_threads=threads), expected, 'isa=%s threads=%d' % (isa, threads))
