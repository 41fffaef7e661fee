"""The qvision inference engine: ONNX models (float or QDQ int8) compiled to the qvision kernels.

:class:`Engine` is the entry point (see :mod:`qvision_ros.runtime.engine`).  Internals: our IR
(:mod:`.graph`), the ONNX reader (:mod:`.onnx_import`), NumPy references of ONNX operators
(:mod:`.ops`), graph passes (:mod:`.passes`), channels-last layout (:mod:`.layout`), lowering to kernels
(:mod:`.lowering`) and the execution plan (:mod:`.plan`).  :mod:`.zoo` builds small PyTorch models of the
supported families for benchmarks and tests (it needs torch; nothing else here imports it).
"""
from .engine import Engine, QuantizedInput, TensorInfo, summarize_profile
from .plan import LayerRecord

__all__ = ['Engine', 'QuantizedInput', 'TensorInfo', 'LayerRecord', 'summarize_profile']
