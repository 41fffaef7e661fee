"""The qvision inference engine: ONNX models (float or QDQ int8) compiled to the qvision kernels.

:class:`Engine` is the entry point (see :mod:`qvision_ros.runtime.engine`).  Internals: our IR
(:mod:`.graph`), the ONNX reader (:mod:`.onnx_import`), NumPy references of ONNX operators
(:mod:`.ops`), graph passes (:mod:`.passes`), channels-last layout (:mod:`.layout`), lowering to kernels
(:mod:`.lowering`) and the execution plan (:mod:`.plan`).  :mod:`.zoo` builds small PyTorch models of the
supported families for benchmarks and tests (it needs torch; nothing else here imports it).
"""
import os

# The kernels' OpenMP worker threads sleep while they wait for work unless the user chose a policy.
# With libgomp's default (spin ~300k iterations, then sleep) every one of the ~200 parallel regions of a
# frame stalls for a scheduler time slice whenever the other cores are busy - a robot runs drivers and
# other nodes beside inference - and two-thread runs were measured 100x slower than one thread on a
# shared machine; with PASSIVE they are not.  libgomp reads this once, when the first kernel module
# loads (at the first Engine), so it only takes effect if no OpenMP code has run before in the process -
# PyTorch loads a libgomp.so.1 of its own, which the kernels then share: import this before torch, or
# set OMP_WAIT_POLICY=PASSIVE in the environment.
if 'OMP_WAIT_POLICY' not in os.environ and 'GOMP_SPINCOUNT' not in os.environ:
    os.environ['OMP_WAIT_POLICY'] = 'PASSIVE'

from .engine import Engine, TensorInfo, summarize_profile  # noqa: E402
from .plan import LayerRecord

__all__ = ['Engine', 'TensorInfo', 'LayerRecord', 'summarize_profile']
