"""The execution plan: bound steps call the compiled kernels directly and compute what the checked
wrappers compute; element-wise steps overwrite their input when nothing reads it later; the OpenMP wait
policy default."""
import functools

import numpy as np
import pytest

from models import model_bytes, qdq_bytes
from qvision_ros.runtime import Engine

CASES = [('yolov8', 'int8'), ('yolov8', 'fp32'), ('mobilenetv2', 'int8'), ('mobilenetv2', 'fp32'),
         ('resnet', 'int8'), ('yolov5', 'int8')]


def _engine(name, precision, threads=1, disable_passes=()):
    return Engine(qdq_bytes(name) if precision == 'int8' else model_bytes(name), num_threads=threads,
                  disable_passes=disable_passes)


def _plan(engine):
    return engine._plans[(engine._default_key, ())]


@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('name,precision', CASES)
def test_bound_steps_equal_the_wrappers(name, precision, threads):
    """``run`` (steps bound to the kernels) against ``intermediates`` (every step through the checked
    qvision_kernels wrappers): the same bytes."""
    engine = _engine(name, precision, threads)
    x = np.random.default_rng(3).random(engine.inputs[0].shape, dtype=np.float32)
    fast = engine.run({'images': x})
    slow = engine.intermediates({'images': x})
    for info, a in zip(engine.outputs, fast):
        np.testing.assert_array_equal(a, slow[info.name])
    np.testing.assert_array_equal(engine.run({'images': x})[0], fast[0])     # and again, after the slow path


def _kernel_of(step):
    f = step.func if isinstance(step, functools.partial) else None
    return getattr(f, '__module__', None) or ''


@pytest.mark.parametrize('name,precision', [('yolov8', 'int8'), ('mobilenetv2', 'int8'), ('yolov8', 'fp32')])
def test_heavy_steps_call_compiled_kernels(name, precision):
    """Convolutions, tables, element-wise and pooling steps are partials of the compiled kernels, not the
    Python wrappers (a silent fallback would cost ~5 us per step)."""
    engine = _engine(name, precision)
    plan = _plan(engine)
    direct = {'QConv', 'Conv', 'QLut', 'QAdd', 'QMul', 'MaxPool'}
    checked = 0
    for k, step in zip(plan._where, plan.program):
        op = plan.info[k][1]
        if op in direct:
            assert _kernel_of(step).startswith('qvision_kernels._gen_'), (plan.info[k], step)
            checked += 1
    assert checked >= 20


def test_element_wise_steps_overwrite_their_input():
    # tables stay steps of their own here (by default most go into the convolution before them)
    engine = _engine('yolov8', 'int8', disable_passes=('fuse_conv_lut',))
    plan = _plan(engine)
    shared = 0
    for k, step in zip(plan._where, plan.program):
        if plan.info[k][1] == 'QLut' and isinstance(step, functools.partial):
            x, _, out = step.args[:3]
            shared += np.shares_memory(x, out)
    assert shared >= 40, shared


def test_tables_go_into_the_convolutions():
    """YOLOv8's SiLU tables run inside the convolutions that produce their input, with the same outputs
    as separate steps."""
    fused = _engine('yolov8', 'int8')
    apart = _engine('yolov8', 'int8', disable_passes=('fuse_conv_lut',))
    n_fused = sum(1 for n in fused.graph.nodes if n.op == 'QConv' and n.attrs.get('lut') is not None)
    luts = [sum(1 for n in e.graph.nodes if n.op == 'QLut') for e in (fused, apart)]
    assert n_fused >= 40 and luts[0] <= luts[1] - n_fused, (n_fused, luts)
    x = np.random.default_rng(3).random(fused.inputs[0].shape, dtype=np.float32)
    for a, b in zip(fused.run({'images': x}), apart.run({'images': x})):
        assert np.array_equal(a, b)
    for threads in (2, 3):
        again = _engine('yolov8', 'int8', threads=threads)
        for a, b in zip(again.run({'images': x}), apart.run({'images': x})):
            assert np.array_equal(a, b)


SHIPPED = 'qvision_ros/data/detector_320.int8.onnx'


def _calls(step):
    """The calls a bound step makes: itself, or those of a sequence (lowering._sequence)."""
    if isinstance(step, functools.partial):
        return [step]
    lists = [c.cell_contents for c in step.__closure__ or () if isinstance(c.cell_contents, list)]
    return lists[0] if lists else [step]


@pytest.mark.parametrize('threads', [1, 2])
def test_shipped_detector_tail_steps(threads):
    """The shipped int8 detector fed pre-quantised input: Softmax and DequantizeLinear are partials of the
    compiled kernels, Split and Concat copy their bands by the compiled row copy (no NumPy strided copy;
    a QConcat input with a rescale table goes through it on the way),
    and the bound run gives the bytes of the checked wrappers."""
    import os
    engine = Engine(os.path.join(os.path.dirname(__file__), '..', SHIPPED), num_threads=threads)
    plan = _plan(engine)
    ops = {'Softmax': 0, 'DequantizeLinear': 0, 'Split': 0, 'Concat': 0, 'QConcat': 0}
    for k, step in zip(plan._where, plan.program):
        op = plan.info[k][1]
        if op in ops:
            for call in _calls(step):
                assert _kernel_of(call).startswith('qvision_kernels._gen_eltwise'), (plan.info[k], call)
                if op in ('Split', 'Concat', 'QConcat'):
                    assert call.func.__name__ in ('copy_rows', 'lut_rows'), (plan.info[k], call)
            ops[op] += 1
    assert ops['Softmax'] >= 1 and ops['DequantizeLinear'] >= 6 and ops['Split'] >= 8 and ops['Concat'] >= 5 \
        and ops['QConcat'] >= 10, ops
    qi = next(iter(engine.quantized_inputs.values()))
    x = np.random.default_rng(5).integers(0, 256, qi.shape, dtype=np.uint8)
    fast = engine.run({qi.name: x})
    slow = engine.intermediates({qi.name: x})
    for info, a in zip(engine.outputs, fast):
        np.testing.assert_array_equal(a, slow[info.name])
