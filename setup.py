"""Build of qvision_ros: the ROS 2 Python package and the qvision_kernels Cython extensions.

Works three ways: ``pip install .``, ``pip install -e .`` and ``colcon build`` (ament_python).

Kernel modules come in two kinds:

* ``qvision_kernels/*.pyx`` - portable kernels compiled once with the architecture's baseline flags.
* ``qvision_kernels/*.pyx.tp`` - Tempita templates rendered once per instruction-set variant
  (``_gen_<name>_<isa>.pyx``) and compiled with that variant's ``-m`` flags.  Nothing imports a variant
  module unless the running CPU has its instructions (``qvision_kernels/_registry.py``), so a build made on
  a new CPU never raises an illegal instruction on an older one of the same architecture.

Environment switches:

* ``QVISION_CYTHON_DEBUG=1`` - bounds checks and wrap-around on, ``-O0 -g``: for hunting a kernel bug.
* ``QVISION_ISAS=avx2,generic`` - build only these variants (faster development builds).
"""
import os
import platform
import sys
from glob import glob

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext as _build_ext

PACKAGE = 'qvision_ros'
HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = 'qvision_kernels'


def _load_isa_flags():
    import importlib.util
    spec = importlib.util.spec_from_file_location('isa_flags', os.path.join(HERE, KERNELS, 'isa_flags.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _isas():
    # The flags are the only difference between the builds of one template; the C header
    # qvision_kernels/include/qv_simd.h maps the QV_ISA_* macro to intrinsics.
    table = _load_isa_flags().for_machine(platform.machine())
    wanted = os.environ.get('QVISION_ISAS')
    if wanted:
        names = [n.strip() for n in wanted.split(',') if n.strip()]
        unknown = [n for n in names if n not in table]
        if unknown:
            sys.exit('QVISION_ISAS names unknown variants %s; known here: %s' % (unknown, list(table)))
        if 'generic' not in names:
            names.append('generic')
        return {n: table[n] for n in names}
    return table


def _render_templates(isas, noexcept):
    """Render every ``*.pyx.tp`` once per ISA; returns [(module name, pyx path, isa)]."""
    from Cython import Tempita

    out = []
    for tp in sorted(glob(os.path.join(HERE, KERNELS, '*.pyx.tp'))):
        stem = os.path.basename(tp)[:-len('.pyx.tp')].lstrip('_')
        with open(tp) as f:
            template = Tempita.Template(f.read(), name=tp)
        for isa in isas:
            modname = '_gen_%s_%s' % (stem, isa)
            path = os.path.join(HERE, KERNELS, modname + '.pyx')
            text = ('# Generated from %s for ISA %r by setup.py; edit the template, not this file.\n'
                    % (os.path.basename(tp), isa)) + template.substitute(isa=isa, noexcept=noexcept)
            # Rewrite only on change so that Cython's timestamps skip unchanged modules.
            old = None
            if os.path.exists(path):
                with open(path) as f:
                    old = f.read()
            if old != text:
                with open(path, 'w') as f:
                    f.write(text)
            out.append((modname, path, isa))
    return out


def _extensions():
    # Skip the (slow) Cython step for commands that only need metadata: colcon reads the metadata with
    # `setup.py --dry-run` (stopped after configuration) and lists commands with `--help-commands`.
    metadata_only = {'egg_info', 'dist_info', '--name', '--version', '--help', '--help-commands',
                     '--dry-run', 'clean'}
    if len(sys.argv) > 1 and set(sys.argv[1:]) <= metadata_only | {'-q', '--quiet'}:
        return []
    from Cython import __version__ as cython_version
    from Cython.Build import cythonize

    debug = os.environ.get('QVISION_CYTHON_DEBUG') == '1'
    directives = {
        'language_level': 3,
        'boundscheck': debug,
        'wraparound': debug,
        'initializedcheck': debug,
        'nonecheck': False,
        'cdivision': True,
        'embedsignature': True,
    }
    if int(cython_version.split('.')[0]) >= 3:
        # cdef functions without an except clause never raise (the Cython 0.29 meaning), so nogil inner
        # functions carry no error checks.  Templates also spell `noexcept` out when Cython knows it.
        directives['legacy_implicit_noexcept'] = True

    is_msvc = sys.platform == 'win32'
    opt = ['/O2'] if is_msvc else (['-O0', '-g'] if debug else ['-O3'])
    # threads: POSIX threads (the kernels' own pool, qvision_kernels/include/qv_threadpool.h), no OpenMP
    common = opt + ([] if is_msvc else ['-pthread', '-fno-math-errno', '-Wno-unused-function',
                                        '-Wno-unreachable-code', '-Wno-maybe-uninitialized'])
    link = [] if is_msvc else ['-pthread']
    include_dirs = [os.path.join(HERE, KERNELS, 'include')]
    # Integer kernels must not fuse a*b+c into an FMA: their float32 arithmetic is specified step by step
    # (DESIGN.md section 3) and must match the NumPy reference bit for bit.
    exact_fp = [] if is_msvc else ['-ffp-contract=off']

    isas = _isas()
    exts = []
    for path in sorted(glob(os.path.join(HERE, KERNELS, '*.pyx'))):
        name = os.path.basename(path)[:-4]
        if name.startswith('_gen_'):
            continue
        exts.append(Extension('%s.%s' % (KERNELS, name), [os.path.relpath(path, HERE)],
                              include_dirs=include_dirs, define_macros=[('QV_ISA_GENERIC', '1')],
                              extra_compile_args=common + exact_fp, extra_link_args=link))
    cython3 = int(cython_version.split('.')[0]) >= 3
    for modname, path, isa in _render_templates(isas, 'noexcept' if cython3 else ''):
        flags = common + isas[isa]
        if not modname.startswith('_gen_fconv'):
            flags = flags + exact_fp
        exts.append(Extension('%s.%s' % (KERNELS, modname), [os.path.relpath(path, HERE)],
                              include_dirs=include_dirs, define_macros=[('QV_ISA_' + isa.upper(), '1')],
                              extra_compile_args=flags, extra_link_args=link))
    # quiet=True: colcon parses what setup.py prints, and Cython's progress lines break that.
    return cythonize(exts, compiler_directives=directives, quiet=True,
                     nthreads=0 if is_msvc else min(4, os.cpu_count() or 1))


class build_ext(_build_ext):
    """``build_ext`` that compiles the extension modules in parallel, one per available core.

    Every template is compiled once per instruction set, so a full build has many independent modules.
    ``-j N`` / ``--parallel N`` on the command line (or ``[build_ext] parallel`` in setup.cfg) still wins.
    """

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            try:
                cores = len(os.sched_getaffinity(0))
            except AttributeError:  # not Linux
                cores = os.cpu_count() or 1
            if cores > 1:
                self.parallel = cores


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*', KERNELS, KERNELS + '.*']),
    package_data={KERNELS: ['*.pxd', '*.pxi', 'include/*.h'],
                  PACKAGE: ['data/*.onnx', 'data/*.txt', 'data/*.mp4', 'data/*.json', 'data/*.md']},
    ext_modules=_extensions(),
    cmdclass={'build_ext': build_ext},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml') + glob('config/*.rviz')),
    ],
    python_requires='>=3.10',
    install_requires=['numpy>=1.21', 'opencv-python-headless>=4.5', 'onnx>=1.12'],
    # onnx and onnxruntime: the independent oracle of the tests (DESIGN.md section 8) and the comparison
    # columns of qvision-bench-kernels; neither is needed at run time.
    extras_require={
        'test': ['pytest', 'onnx', 'onnxruntime', 'onnxscript', 'hypothesis', 'torch==2.13.0', 'scikit-learn',
                 'rosbags', 'pycocotools', 'matplotlib'],      # onnxscript: PyTorch's dynamo exporter
        'bench': ['onnxruntime'],
        'train': ['torch==2.13.0', 'scikit-learn'],
        'bag': ['rosbags'],             # rosbag2 input and output of the qvision command
        'eval': ['pycocotools'],        # qvision eval (COCO mAP)
        'report': ['matplotlib'],       # the quantizer's per-layer error plot
    },
    zip_safe=False,
    maintainer='qvision_ros developers',
    maintainer_email='qvision-ros@example.org',
    description='CPU-only real-time object detection for ROS 2 with int8 Cython kernels',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'qvision = qvision_ros.cli:main',
            'qvision-bench-kernels = qvision_ros.bench_kernels:main',
            'qvision-bench-engine = qvision_ros.bench_engine:main',
            'qvision-train-detector = qvision_ros.training.train:main',
            'qvision-synthetic = qvision_ros.synthetic:main',
            'qvision-bitwidth = qvision_ros.quantization.bitwidth:main',
            'qvision-train-digits = qvision_ros.training.digits:main',
            'qvision-qat-detector = qvision_ros.training.qat_detector:main',
            'qvision-fuzz = qvision_ros.fuzz:main',
            # ROS 2 node executables (`ros2 run qvision_ros <name>`, launch/pipeline.launch.py)
            'preprocess_node = qvision_ros.nodes.preprocess:main',
            'inference_node = qvision_ros.nodes.inference:main',
            'visualization_node = qvision_ros.nodes.visualization:main',
            'composed_node = qvision_ros.nodes.composed:main',
        ],
    },
)
