"""Float ONNX models from PyTorch run by the engine, against ONNX Runtime (the oracle).

Every output must match ONNX Runtime's float32 result within 1e-4 of the output's largest magnitude.
Also: the public API (inputs, outputs, profile), dynamic batch and input_shapes, repeated runs, and
thread counts.
"""
import numpy as np
import pytest

from kernel_check import assert_allclose_rel
from models import MODELS, model_bytes, ort_run, export, yolov8_like
from qvision_ros.errors import InputError
from qvision_ros.runtime import Engine, LayerRecord, TensorInfo

RTOL = 1e-4


def _input(engine, seed=0):
    info = engine.inputs[0]
    return np.random.default_rng(seed).random(info.shape, dtype=np.float32)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_float_model_matches_onnxruntime(name):
    mb = model_bytes(name)
    engine = Engine(mb, num_threads=1)
    for seed in (0, 1):
        x = _input(engine, seed)
        ours = engine.run({'images': x})
        ref = ort_run(mb, {'images': x})
        assert len(ours) == len(ref)
        for k, (a, e) in enumerate(zip(ours, ref)):
            assert a.dtype == np.float32
            assert_allclose_rel(a, e, RTOL, '%s output %d seed %d' % (name, k, seed))


def test_api_inputs_outputs_and_profile():
    engine = Engine(model_bytes('resnet'), num_threads=1)
    assert engine.inputs == [TensorInfo('images', (1, 3, 64, 64), np.dtype(np.float32))]
    assert engine.outputs == [TensorInfo('output', (1, 10), np.dtype(np.float32))]
    x = _input(engine)
    out = engine.run({'images': x}, profile=True)
    recs = engine.last_profile
    assert recs and all(isinstance(r, LayerRecord) for r in recs)
    assert all(r.time_s >= 0 for r in recs)
    convs = [r for r in recs if r.op == 'Conv']
    assert len(convs) == 15 and all(r.precision == 'fp32' for r in convs)
    assert convs[0].output_shapes == ((1, 32, 32, 8),)          # physical NHWC
    assert any('Relu' in n for r in convs for n in r.nodes)     # activation fused into the conv step
    recs2 = engine.profile({'images': x}, repeat=2)
    assert [r.name for r in recs2] == [r.name for r in recs]
    np.testing.assert_array_equal(engine.run({'images': x})[0], out[0])


def test_silu_fused_into_the_conv_steps():
    # YOLOv8 blocks are Conv + BN + SiLU: after the passes every SiLU is in its convolution's step, whose
    # profile record names the Sigmoid and Mul ONNX nodes it stands for.
    engine = Engine(model_bytes('yolov8'), num_threads=1)
    assert 'Silu' not in [n.op for n in engine.graph.nodes]
    recs = engine.profile({'images': _input(engine)}, repeat=1)
    silu_convs = [r for r in recs if r.op == 'Conv' and any('Sigmoid' in n for n in r.nodes)]
    assert len(silu_convs) >= 10 and all(any('Mul' in n for n in r.nodes) for r in silu_convs)
    assert not [r for r in recs if r.op == 'Silu']


def test_repeated_runs_and_buffer_reuse():
    """Buffers are planned once and reused: outputs of one run are not overwritten by the next, and
    the planned memory is smaller than the sum of every intermediate tensor."""
    engine = Engine(model_bytes('yolov8'), num_threads=1)
    x0, x1 = _input(engine, 0), _input(engine, 1)
    a = engine.run({'images': x0})[0]
    b = engine.run({'images': x1})[0]
    a2 = engine.run({'images': x0})[0]
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, b)
    g = engine.graph
    total = sum(int(np.prod(v.shape)) * v.dtype.itemsize for v in g.values.values()
                if not v.is_const and v.shape is not None)
    assert engine.memory_bytes < 0.6 * total, (engine.memory_bytes, total)


def test_threads_give_the_same_result():
    mb = model_bytes('mobilenetv2')
    e1 = Engine(mb, num_threads=1)
    e2 = Engine(mb, num_threads=2)
    x = _input(e1)
    assert_allclose_rel(e2.run({'images': x})[0], e1.run({'images': x})[0], 1e-5, 'threads 1 vs 2')


def test_dynamic_batch_defaults_to_one_and_accepts_other_batches():
    mb = model_bytes('resnet', dynamic_batch=True)
    engine = Engine(mb, num_threads=1)
    assert engine.inputs[0].shape == (1, 3, 64, 64)
    x = np.random.default_rng(3).random((3, 3, 64, 64), dtype=np.float32)
    ours = engine.run({'images': x})[0]
    assert ours.shape == (3, 10)
    assert_allclose_rel(ours, ort_run(mb, {'images': x})[0], RTOL, 'batch 3')
    # each image of the batch alone gives the same rows
    for i in range(3):
        assert_allclose_rel(engine.run({'images': x[i:i + 1]})[0], ours[i:i + 1], 1e-5, 'image %d' % i)
    e4 = Engine(mb, num_threads=1, input_shapes={'images': (4, 3, 64, 64)})
    assert e4.inputs[0].shape == (4, 3, 64, 64)
    with pytest.raises(InputError, match='does not fit'):
        Engine(mb, input_shapes={'images': (1, 3, 32)})
    with pytest.raises(InputError, match='model inputs'):
        Engine(mb, input_shapes={'image': (1, 3, 64, 64)})


def test_input_shape_override_of_a_dynamic_size_model():
    """A YOLO exported with dynamic height/width runs at the size input_shapes gives."""
    import onnx
    mb = export(yolov8_like(), 64)
    m = onnx.load_from_string(mb)
    for d, p in zip(m.graph.input[0].type.tensor_type.shape.dim, ('batch', 3, 'height', 'width')):
        if isinstance(p, str):
            d.dim_param = p
    from qvision_ros.errors import ModelError
    with pytest.raises(ModelError, match='dynamic dimension 2'):
        Engine(m.SerializeToString())
    engine = Engine(m.SerializeToString(), num_threads=1, input_shapes={'images': (1, 3, 64, 64)})
    x = _input(engine)
    assert_allclose_rel(engine.run({'images': x})[0], ort_run(mb, {'images': x})[0], RTOL, 'override')


def test_wrong_inputs_raise_input_error():
    engine = Engine(model_bytes('vgg'), num_threads=1)
    x = _input(engine)
    with pytest.raises(InputError, match=r"inputs are \['images'\]"):
        engine.run({'image': x})
    with pytest.raises(InputError, match='must be float32, got float64'):
        engine.run({'images': x.astype(np.float64)})
    with pytest.raises(InputError, match=r'must have shape \(1, 3, 32, 32\), got \(1, 3, 32, 31\)'):
        engine.run({'images': x[..., :31]})
    with pytest.raises(InputError, match='fixed'):
        engine.run({'images': np.concatenate([x, x])})
    with pytest.raises(InputError, match='numpy array'):
        engine.run({'images': x.tolist()})
    with pytest.raises(InputError, match='dict'):
        engine.run([x])
    # non-contiguous input is accepted
    xt = np.asfortranarray(x)
    np.testing.assert_array_equal(engine.run({'images': xt})[0], engine.run({'images': x})[0])
