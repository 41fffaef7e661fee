"""Inputs fed already quantised: a QDQ model's first QuantizeLinear done by the preprocessing instead
(``Engine.quantized_inputs``).  The oracle is the same engine fed the float tensor: the outputs must be
identical, since the quantisation it skips is the same formula (DESIGN.md section 3)."""
import numpy as np
import pytest

from models import qdq_bytes, model_bytes
from qvision_kernels.requant import quantize
from qvision_ros.errors import InputError
from qvision_ros.runtime import Engine
from qvision_ros.vision import Preprocessor


@pytest.mark.parametrize('name', ['yolov8', 'mobilenetv2'])
def test_prequantized_input_gives_the_same_outputs(name):
    engine = Engine(qdq_bytes(name, 'uint8'), num_threads=1)
    q = engine.quantized_inputs['images']
    n, c, h, w = engine.inputs[0].shape
    assert q.layout == 'NHWC' and q.shape == (n, h, w, c) and q.dtype == np.uint8
    x = np.random.default_rng(3).random((n, c, h, w), dtype=np.float32)
    xq = np.ascontiguousarray(quantize(x, q.scale, q.zero_point).transpose(0, 2, 3, 1))
    expected = engine.run({'images': x})
    got = engine.run({'images': xq})
    for a, e in zip(got, expected):
        np.testing.assert_array_equal(a, e)
    # the float path still works after the quantised one (separate plans)
    np.testing.assert_array_equal(engine.run({'images': x})[0], expected[0])
    # the quantised path has one QuantizeLinear step less: the input's
    engine.run({'images': x}, profile=True)
    float_steps = [r.op for r in engine.last_profile]
    engine.run({'images': xq}, profile=True)
    quant_steps = [r.op for r in engine.last_profile]
    assert float_steps[0] == 'QuantizeLinear' and quant_steps == float_steps[1:]


def test_preprocessor_feeds_the_quantised_input():
    engine = Engine(qdq_bytes('yolov8', 'int8'), num_threads=1)    # int8 activations become uint8 + 128
    q = engine.quantized_inputs['images']
    n, c, h, w = engine.inputs[0].shape
    frame = np.random.default_rng(4).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    pf = Preprocessor(w, h, layout='nchw')
    pq = Preprocessor(w, h, layout='nhwc', input_scale=q.scale, input_zero_point=q.zero_point, dtype=q.dtype)
    xf, lb_f = pf(frame)
    xq, lb_q = pq(frame)
    assert lb_f == lb_q and xq.shape == q.shape and xq.dtype == q.dtype
    a = engine.run({'images': xf})
    b = engine.run({'images': xq})
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_float_models_have_no_quantized_inputs_and_bad_shapes_are_refused():
    assert Engine(model_bytes('vgg'), num_threads=1).quantized_inputs == {}
    engine = Engine(qdq_bytes('vgg', 'uint8'), num_threads=1)
    q = engine.quantized_inputs['images']
    with pytest.raises(InputError, match='physical'):
        engine.run({'images': np.zeros(engine.inputs[0].shape, np.uint8)})      # NCHW, not NHWC
    with pytest.raises(InputError, match='already quantised'):
        engine.run({'images': np.zeros(q.shape, np.int16)})


def test_prequantized_batches_where_the_batch_is_dynamic():
    from models import quantize_qdq
    engine = Engine(quantize_qdq(model_bytes('vgg', dynamic_batch=True)), num_threads=1)
    q = engine.quantized_inputs['images']
    n, c, h, w = engine.inputs[0].shape
    x = np.random.default_rng(5).random((3, c, h, w), dtype=np.float32)
    xq = np.ascontiguousarray(quantize(x, q.scale, q.zero_point).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(engine.run({'images': xq})[0], engine.run({'images': x})[0])
    fixed = Engine(qdq_bytes('vgg', 'uint8'), num_threads=1)
    with pytest.raises(InputError, match='physical'):
        fixed.run({'images': np.concatenate([xq[:1]] * 2)})
