"""Models from PyTorch's second exporter (``torch.onnx.export(..., dynamo=True)``, via onnxscript) run by the
engine, against ONNX Runtime running the same file.

The dynamo exporter writes other graphs than the TorchScript one: opset 18 (``Split`` with
``num_outputs``, ``ReduceMean`` with its axes as an input, ``Resize`` with ``antialias``...), initializers
named after the module parameters, SiLU decomposed into ``Sigmoid`` and ``Mul`` and constants as
``Constant`` nodes or initializers.  Each family of the zoo goes through it:

* float: every output within 1e-4 of the output's largest magnitude of ONNX Runtime's float32 result;
* QDQ (ONNX Runtime's ``quantize_static`` of the same export, uint8 activations, per-channel int8
  weights): every output within 2 quantisation steps of ONNX Runtime with graph optimisation off (the
  QDQ definition executed node by node), and every convolution on the int8 kernels.

Opset 18 is asked for: PyTorch 2.13's dynamo exporter has no opset-17 implementations and converts down
with the ONNX C API, which leaves ``num_outputs`` on ``Split`` - a file that ONNX Runtime rejects.
"""
import collections
import functools

import numpy as np
import onnx
import pytest

from kernel_check import assert_allclose_rel
from models import MODELS, ort_run, output_scales, step_differences
from qvision_ros.runtime import Engine
from qvision_ros.runtime.zoo import export, quantize_qdq

OPSET = 18


@functools.lru_cache(maxsize=None)
def dynamo_bytes(name):
    builder, size = MODELS[name]
    return export(builder(), size, dynamo=True, opset=OPSET)


def _x(engine, seed):
    return np.random.default_rng(200 + seed).random(engine.inputs[0].shape, dtype=np.float32)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_dynamo_float_model_matches_onnxruntime(name):
    mb = dynamo_bytes(name)
    proto = onnx.load_from_string(mb)
    assert max(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')) >= OPSET
    engine = Engine(mb, num_threads=1)
    for seed in (0, 1):
        x = _x(engine, seed)
        ours = engine.run({'images': x})
        ref = ort_run(mb, {'images': x})
        assert len(ours) == len(ref)
        for k, (a, e) in enumerate(zip(ours, ref)):
            assert_allclose_rel(a, e, 1e-4, 'dynamo %s output %d seed %d' % (name, k, seed))


@pytest.mark.parametrize('name', sorted(MODELS))
def test_dynamo_qdq_model_matches_onnxruntime(name):
    qb = quantize_qdq(dynamo_bytes(name))
    engine = Engine(qb, num_threads=1)
    ops = collections.Counter(n.op for n in engine.graph.nodes)
    assert ops['QConv'] >= 5 and 'Conv' not in ops, ops
    scales = output_scales(qb)
    hist = np.zeros(6, np.int64)
    for seed in range(2):
        x = _x(engine, seed)
        for a, e, s in zip(engine.run({'images': x}), ort_run(qb, {'images': x}, optimize=False), scales):
            assert a.shape == e.shape
            hist += np.bincount(np.minimum(step_differences(a, e, s).reshape(-1), 5), minlength=6)
    print('\ndynamo %s QDQ vs ONNX Runtime (per-node): values 0/1/2/3/4/>4 steps apart: %s'
          % (name, hist.tolist()))
    assert hist[3:].sum() == 0, hist
