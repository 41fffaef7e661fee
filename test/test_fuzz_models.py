"""Fuzzing the model loader and engine with corrupted model files: Engine(bytes) and Engine(path).

Mutations (qvision_ros.fuzz.MUTATIONS) of small built-in models and of the shipped detector: truncated,
bit-flipped and spliced bytes, random files, protobuf messages of the wrong kind and pickles, changed op
types, attributes, element types and dims, missing initializers, cycles, dangling inputs, absurd shapes,
external data.  Every case must load and run with outputs as declared, or raise ModelError / InputError /
ConfigError (KernelError from the kernels) with a message; the regression tests below are files that once
escaped as another exception, a wrong result or a late error.
"""
import resource

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fuzz_strategies import model_mutations, run_cases
from models import ort_run
from qvision_ros import fuzz
from qvision_ros.errors import ConfigError, InputError, ModelError
from qvision_ros.runtime import Engine, plan
from test_engine_ops import make_model

SMALL = {'tiny_detector': fuzz.tiny_detector(), 'tiny_qdq': fuzz.tiny_qdq()}
ALLOWED = {'ok', 'ok(not run)', 'ModelError@load', 'InputError@load', 'ConfigError@load', 'KernelError@load'}


def _check_mutation(seeds, tmp_dir=None):
    def check(case):
        name, kinds, rng = case
        _, data = fuzz.mutate_model(seeds[name], rng, kinds)
        return fuzz.check_model(data, rng, tmp_dir)
    return check


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize('name', sorted(SMALL))
def test_seed_models_match_onnxruntime(name):
    """The seeds run and agree with the oracle, so that their mutations exercise the real paths."""
    engine = Engine(SMALL[name], num_threads=1)
    x = np.random.default_rng(0).random((1, 3, 16, 16)).astype(np.float32)
    ours, = engine.run({'images': x})
    ref, = ort_run(SMALL[name], {'images': x})
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=0.06 if name == 'tiny_qdq' else 1e-4)
    ops = {n.op for n in engine.graph.nodes}
    if name == 'tiny_qdq':
        # the activation table either stays a step or goes into its convolution
        assert {'QConv', 'QAdd', 'QConcat', 'QGlobalAveragePool'} <= ops, ops
        assert 'QLut' in ops or any(n.attrs.get('lut') is not None for n in engine.graph.nodes), ops


def test_fuzz_mutated_small_models():
    before = _peak_rss_mb()
    seen = run_cases(model_mutations(SMALL), _check_mutation(SMALL), 350)
    assert set(seen) <= ALLOWED | {'ModelError@run', 'InputError@run', 'KernelError@run'}, seen
    assert seen['ok'] >= 10 and seen['ModelError@load'] >= 150, seen
    # nothing allocated gigabytes on the way (peak resident memory of this process)
    assert _peak_rss_mb() < max(before, 300) + 700, (before, _peak_rss_mb())


def test_fuzz_mutated_shipped_detector(tmp_path):
    seeds = {'detector_320': fuzz.seed_models(shipped=True)['detector_320']}
    seen = run_cases(model_mutations(seeds), _check_mutation(seeds, str(tmp_path)), 40)
    assert seen['ok'] >= 3 and seen['ModelError@load'] >= 10, seen


def test_long_mode_generator_runs():
    """The mutation driver of ``python -m qvision_ros.fuzz`` (a few cases)."""
    seen = {}
    for k in range(40):
        rng = np.random.default_rng([0, 1, k])
        _, data = fuzz.mutate_model(SMALL[sorted(SMALL)[k % 2]], rng)
        o = fuzz.check_model(data, rng)
        seen[o] = seen.get(o, 0) + 1
    assert seen.get('ModelError@load', 0) >= 10, seen


# --------------------------------------------------------------------------------------- regressions

def _model(nodes, inits, shape=(1, 3, 8, 8), outputs=('y',), in_type=TensorProto.FLOAT, opset=17):
    graph = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('x', in_type, list(shape))],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
    m.ir_version = 8
    return m.SerializeToString()


W = {'w': np.ones((4, 3, 1, 1), np.float32), 'b': np.zeros(4, np.float32)}


def test_node_with_more_inputs_than_its_op_allows():
    # was TypeError from the lowered Conv step at the first run
    nodes = [helper.make_node('Conv', ['x', 'w', 'b', 'x'], ['y'], name='conv4')]
    with pytest.raises(ModelError, match=r"'conv4' \(Conv\) has 4 inputs .* allows 2 to 3 inputs"):
        Engine(_model(nodes, W))


def test_required_input_left_empty():
    nodes = [helper.make_node('Conv', ['x', '', 'b'], ['y'], name='c')]
    with pytest.raises(ModelError, match=r"'c' \(Conv\): required input 1 \(W\) is empty"):
        Engine(_model(nodes, W))


def test_missing_required_attribute():
    # was KeyError('axis') from the Concat shape function
    nodes = [helper.make_node('Concat', ['x', 'x'], ['y'], name='cat')]
    with pytest.raises(ModelError, match=r"'cat' \(Concat\) lacks the required attribute\(s\) axis"):
        Engine(_model(nodes, {}))


def test_unknown_attribute_and_attribute_of_the_wrong_type():
    nodes = [helper.make_node('Conv', ['x', 'w', 'b'], ['y'], name='c', _act_min=0.0)]
    with pytest.raises(ModelError, match=r"'c' \(Conv\) has an attribute '_act_min' that Conv does not have"):
        Engine(_model(nodes, W))
    nodes = [helper.make_node('Conv', ['x', 'w', 'b'], ['y'], name='c', kernel_shape=1)]
    with pytest.raises(ModelError, match=r"'c' \(Conv\): attribute 'kernel_shape' has type INT, .* INTS"):
        Engine(_model(nodes, W))


def test_operator_unknown_to_onnx_and_too_new_opset():
    nodes = [helper.make_node('Frobnicate', ['x'], ['y'], name='f')]
    with pytest.raises(ModelError, match=r"'f' \(Frobnicate\): operator Frobnicate is not supported"):
        Engine(_model(nodes, {}))
    with pytest.raises(ModelError, match='installed onnx package knows opsets up to'):
        Engine(_model([helper.make_node('Relu', ['x'], ['y'])], {}, opset=onnx.defs.onnx_opset_version() + 1))


def test_conv_bias_and_group_that_do_not_fit():
    # the bias was found only by the kernel (KernelError without the node's name); group=0 divided by zero
    nodes = [helper.make_node('Conv', ['x', 'w', 'b'], ['y'], name='c')]
    with pytest.raises(ModelError, match=r"'c' \(Conv\): bias of shape \(2,\) does not match the 4 output"):
        Engine(_model(nodes, dict(W, b=np.zeros(2, np.float32))))
    nodes = [helper.make_node('Conv', ['x', 'w', 'b'], ['y'], name='c', group=0)]
    with pytest.raises(ModelError, match='group=0'):
        Engine(_model(nodes, W))


def test_gemm_bias_that_does_not_broadcast():
    # the engine declared [1, 5] but the run broadcast the bias to [1, 16, 1, 5]
    nodes = [helper.make_node('Gemm', ['x', 'w', 'c'], ['y'], name='fc', transB=1)]
    inits = {'w': np.ones((5, 16), np.float32), 'c': np.zeros((1, 16, 1, 1), np.float32)}
    with pytest.raises(ModelError, match=r"'fc' \(Gemm\): Gemm bias of shape \(1, 16, 1, 1\) does not broadcast"):
        Engine(_model(nodes, inits, shape=(1, 16)))
    inits['c'] = np.zeros((1, 5), np.float32)            # a [1, N] bias is fine
    assert Engine(_model(nodes, inits, shape=(1, 16))).outputs[0].shape == (1, 5)


@pytest.mark.parametrize('op', ['QuantizeLinear', 'DequantizeLinear'])
def test_quantization_scale_of_the_wrong_length(op):
    # was ValueError (broadcast) from the reference op at the first run
    x_type = TensorProto.FLOAT if op == 'QuantizeLinear' else TensorProto.UINT8
    with pytest.raises(ModelError, match=r"'q' \(%s\): scale of shape \(8,\) fits neither" % op):
        Engine(_qmodel(op, x_type, np.ones(8, np.float32), np.zeros(8, np.uint8)))
    with pytest.raises(ModelError, match='zero point of shape'):
        Engine(_qmodel(op, x_type, np.ones(3, np.float32), np.zeros(2, np.uint8)))
    Engine(_qmodel(op, x_type, np.ones(3, np.float32), np.zeros(3, np.uint8)))      # per channel: fine
    if op == 'DequantizeLinear':
        # a zero point of another type than the data reached the int8 kernels: a KernelError at the first
        # run when the DequantizeLinear of a constant fed an int8 Mul (int64 zero point 2**63 - 1)
        with pytest.raises(ModelError, match='zero point is int8 but the data is uint8'):
            Engine(_qmodel(op, x_type, np.ones(3, np.float32), np.zeros(3, np.int8)))
        with pytest.raises(ModelError, match='dequantizes float32 data'):
            Engine(_qmodel(op, TensorProto.FLOAT, np.ones(3, np.float32), np.zeros(3, np.uint8)))
        return
    # a float zero point was a ValueError ('Invalid integer data type') from numpy.iinfo in the lowering,
    # an int64 one (a shape constant) a KernelError at the first run of an int8 Add
    for dtype in (np.float32, np.int64):
        with pytest.raises(ModelError, match='zero point is %s; it must be uint8 or int8' % np.dtype(dtype)):
            Engine(_qmodel(op, x_type, np.ones(3, np.float32), np.zeros(3, dtype)))


def _qmodel(op, x_type, scale, zp):
    out_type = TensorProto.UINT8 if op == 'QuantizeLinear' else TensorProto.FLOAT
    graph = helper.make_graph([helper.make_node(op, ['x', 's', 'z'], ['y'], name='q', axis=1)], 'g',
                              [helper.make_tensor_value_info('x', x_type, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info('y', out_type, None)],
                              initializer=[numpy_helper.from_array(scale, 's'), numpy_helper.from_array(zp, 'z')])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    m.ir_version = 8
    return m.SerializeToString()


# complex64, bfloat16, string, float8e4m3fn (onnx 1.14+), int4 (onnx 1.16+), no type at all
@pytest.mark.parametrize('elem', [TensorProto.COMPLEX64, TensorProto.BFLOAT16, TensorProto.STRING, 17, 22, 99])
def test_unsupported_element_types(elem):
    # a string initializer gave TypeError ('array of references') in the memory plan, complex or 4-bit
    # inputs a KernelError at the first run
    with pytest.raises(ModelError, match='element type %d, which this engine does not support' % elem):
        Engine(_model([helper.make_node('Relu', ['x'], ['y'])], {}, in_type=elem))
    m = onnx.load_from_string(_model([helper.make_node('Add', ['x', 'c'], ['y'])], {'c': np.float32(1)}))
    m.graph.initializer[0].data_type = elem
    with pytest.raises(ModelError, match="tensor 'c' has element type %d" % elem):
        Engine(m.SerializeToString())


@pytest.mark.parametrize('op,dtype', [('Conv', TensorProto.UINT16), ('Conv', TensorProto.DOUBLE),
                                      ('MaxPool', TensorProto.INT16), ('AveragePool', TensorProto.UINT8),
                                      ('GlobalAveragePool', TensorProto.INT32)])
def test_kernel_ops_on_data_of_an_unsupported_type_fail_at_load(op, dtype):
    # was a KernelError ('input must be a float32 NHWC array') at the first run, naming no node
    attrs = {'kernel_shape': [2, 2]} if op in ('MaxPool', 'AveragePool') else {}
    nodes = [helper.make_node(op, ['x', 'w'] if op == 'Conv' else ['x'], ['y'], name='layer', **attrs)]
    w = {'w': W['w'].astype(helper.tensor_dtype_to_np_dtype(dtype))} if op == 'Conv' else {}
    with pytest.raises(ModelError, match=r"'layer' \(%s\): its data input is \w+; this engine runs %s on float32"
                       % (op, op)):
        Engine(_model(nodes, w, in_type=dtype))
    if op == 'Conv':        # float32 weights on other data: the schema's type parameter T disagrees
        with pytest.raises(ModelError, match=r"'layer' \(Conv\): inputs of one type T are \w+ and float32"):
            Engine(_model(nodes, {'w': W['w']}, in_type=dtype))


def test_quantize_of_an_integer_model_input_keeps_the_layout():
    """QuantizeLinear of an int16 input (not float32) was fused with the NCHW -> NHWC conversion although
    its lowering cannot convert: the next convolution got NCHW data (KernelError '16 channels, expects 3').
    Oracle: ONNX Runtime on the same model with the input as float32 (int16 values are exact in float32)."""
    q = onnx.load_from_string(fuzz.tiny_qdq())
    q.graph.input[0].type.tensor_type.elem_type = TensorProto.INT16
    x = np.random.default_rng(1).integers(-3, 4, (1, 3, 16, 16)).astype(np.int16)
    ours, = Engine(q.SerializeToString(), num_threads=1).run({'images': x})
    ref, = ort_run(fuzz.tiny_qdq(), {'images': x.astype(np.float32)})
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=0.06)


def test_activation_memory_is_bounded_before_allocating(monkeypatch):
    """A model whose declared input makes the plan need more than MAX_ARENA_BYTES is refused before any
    buffer exists (each tensor alone is under the per-tensor limit)."""
    nodes = [helper.make_node('Conv', ['x', 'w'], ['c'], strides=[2, 2], name='stem'),
             helper.make_node('Sigmoid', ['c'], ['s']), helper.make_node('Mul', ['c', 's'], ['y'])]
    big = make_model(nodes, [('x', (1, 3, 6144, 6144))], ['y'], {'w': np.ones((16, 3, 1, 1), np.float32)})
    before = _peak_rss_mb()
    with pytest.raises(ModelError, match='MiB of activation memory .* more than the 1024 MiB allowed'):
        Engine(big, num_threads=1)
    assert _peak_rss_mb() < before + 200
    monkeypatch.setattr(plan, 'MAX_ARENA_BYTES', 1 << 20)
    small = make_model(nodes, [('x', (1, 3, 512, 512))], ['y'], {'w': np.ones((16, 3, 1, 1), np.float32)})
    with pytest.raises(ModelError, match='more than the 1 MiB allowed'):
        Engine(small, num_threads=1)


def test_external_data_next_to_the_model_is_not_read(tmp_path):
    """A model loaded from a path whose weights point to a file beside it (or anywhere) is refused; the
    file is never opened (it is a FIFO here: opening it for reading would block the test)."""
    import os

    m = onnx.load_from_string(_model([helper.make_node('Add', ['x', 'c'], ['y'])], {'c': np.ones(4, np.float32)},
                                     shape=(1, 4)))
    t = m.graph.initializer[0]
    t.ClearField('raw_data')
    t.data_location = TensorProto.EXTERNAL
    os.mkfifo(tmp_path / 'weights.bin')
    for location in ('weights.bin', str(tmp_path / 'weights.bin'), '../../etc/passwd'):
        del t.external_data[:]
        t.external_data.add(key='location', value=location)
        (tmp_path / 'model.onnx').write_bytes(m.SerializeToString())
        with pytest.raises(ModelError, match="tensor 'c' is stored in an external data file"):
            Engine(str(tmp_path / 'model.onnx'))


@pytest.mark.parametrize('k', [6, 7])
def test_pickles_are_never_loaded(k):
    """A pickle (and a .npy of an object array) whose loading would exit the process: a ModelError."""
    rng = np.random.default_rng(0)
    data = fuzz.BYTE_MUTATIONS['wrong_kind'](SMALL['tiny_detector'], _FixedChoice(rng, k))
    assert b'_exit' in data
    with pytest.raises(ModelError, match='corrupt or truncated'):
        Engine(data)


class _FixedChoice:
    """A generator whose integers() returns ``k`` (to pick one branch of a mutation)."""

    def __init__(self, rng, k):
        self.rng, self.k = rng, k

    def integers(self, *args, **kwargs):
        return self.k

    def __getattr__(self, name):
        return getattr(self.rng, name)


def test_protobuf_messages_of_the_wrong_kind():
    m = onnx.load_from_string(SMALL['tiny_detector'])
    for data in (m.graph.SerializeToString(), m.graph.node[0].SerializeToString(),
                 m.graph.initializer[0].SerializeToString(), helper.make_opsetid('', 17).SerializeToString()):
        with pytest.raises(ModelError, match='corrupt or truncated'):
            Engine(data)


@pytest.mark.parametrize('value,error,match', [
    ([('images', (1, 3, 16, 16))], InputError, 'input_shapes must be a dict'),
    (np.array([1, 3, 16, 16]), InputError, 'input_shapes must be a dict'),
    ({'images': (1, 3, float('inf'), 16)}, InputError, 'sequence of ints'),
    ({1: (1,), 'x': (2,)}, InputError, 'input_shapes names'),
])
def test_engine_input_shapes_of_the_wrong_type(value, error, match):
    # were TypeError / ValueError / OverflowError from dict() and int()
    with pytest.raises(error, match=match):
        Engine(SMALL['tiny_detector'], input_shapes=value)


@pytest.mark.parametrize('value', ['fuse_silu', 3, None, ['propagate'], ['no_such_pass'], np.array(['fuse_silu'])])
def test_engine_disable_passes_of_the_wrong_type(value):
    # were TypeError (not iterable) or ValueError from run_passes
    with pytest.raises(ConfigError, match='disable_passes'):
        Engine(SMALL['tiny_detector'], disable_passes=value)


def test_graph_with_a_cycle():
    nodes = [helper.make_node('Add', ['x', 'b'], ['a'], name='first'),
             helper.make_node('Relu', ['a'], ['b'], name='loop'), helper.make_node('Relu', ['a'], ['y'])]
    with pytest.raises(ModelError, match=r"model is corrupt: its graph has a cycle or reads undefined values: "
                                         r"\['a', 'b'\] \(re-export it\)"):
        Engine(_model(nodes, {}))


def test_model_paths_that_are_not_regular_files(tmp_path):
    """A NUL in the path was a ValueError; a folder, a FIFO or a device is refused before it is opened
    (reading /dev/zero never ended, opening a FIFO blocks)."""
    import os
    import subprocess
    import sys

    with pytest.raises(ModelError, match='embedded null byte'):
        Engine('model\0.onnx')
    os.mkfifo(tmp_path / 'fifo.onnx')
    for path in (str(tmp_path), str(tmp_path / 'fifo.onnx'), '/dev/null'):
        with pytest.raises(ModelError, match='not a regular file'):
            Engine(path)
    # /dev/zero in a child process with 2 GiB of address space, so that a regression fails, not hangs
    code = ('import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n'
            'from qvision_ros.runtime import Engine\n'
            'from qvision_ros.errors import ModelError\n'
            'try:\n    Engine("/dev/zero")\nexcept ModelError as e:\n    print("ModelError", e)\n')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.stdout.startswith('ModelError') and 'not a regular file' in res.stdout, res.stdout + res.stderr


def test_memory_bound_counts_the_arrays_numpy_only_steps_allocate(monkeypatch):
    """Pad runs in NumPy and allocates its output at each run (no planned buffer): a chain of such ops
    passed the bound on planned buffers whatever their size (a mutated model took 830 MB to load and run
    one 400 MB Pad).  Their outputs count now, and so do the copies of the graph outputs that run()
    returns: here (1, 3, 18, 16), twice (1, 3, 20, 16) and the copy of the last, float32."""
    nodes = [helper.make_node('Pad', ['x', 'p'], ['a']), helper.make_node('Pad', ['a', 'p'], ['b']),
             helper.make_node('Pad', ['b', 'p0'], ['y'])]
    inits = {'p': np.array([0, 0, 2, 0, 0, 0, 0, 0], np.int64), 'p0': np.zeros(8, np.int64)}
    mb = make_model(nodes, [('x', (1, 3, 16, 16))], ['y'], inits)
    need = 4 * 3 * 16 * (18 + 20 + 20 + 20)
    assert Engine(mb).memory_bytes == 0                     # nothing planned: the old bound saw 0 bytes
    monkeypatch.setattr(plan, 'MAX_ARENA_BYTES', need)
    Engine(mb)
    monkeypatch.setattr(plan, 'MAX_ARENA_BYTES', need - 1)
    with pytest.raises(ModelError, match='activation memory'):
        Engine(mb)


def test_tensors_of_absurd_rank():
    # an input of rank 65 was a ValueError from NumPy (rank 33 with NumPy 1.x); an Expand to 40
    # dimensions a RuntimeError from numpy.broadcast_shapes
    with pytest.raises(ModelError, match="graph input/output 'x' has 65 dimensions, more than the 32 allowed"):
        Engine(make_model([helper.make_node('Relu', ['x'], ['y'])], [('x', (1,) * 65)], ['y']))
    nodes = [helper.make_node('Expand', ['x', 's'], ['y'], name='expand')]
    with pytest.raises(ModelError, match=r"'expand' \(Expand\): has invalid constant shape arguments"):
        Engine(make_model(nodes, [('x', (1, 3))], ['y'], {'s': np.ones(40, np.int64)}))
    m = onnx.load_from_string(make_model([helper.make_node('Add', ['x', 'c'], ['y'])], [('x', (1, 3))], ['y'],
                                         {'c': np.ones(3, np.float32)}))
    del m.graph.initializer[0].dims[:]
    m.graph.initializer[0].dims.extend([3] + [1] * 39)
    with pytest.raises(ModelError, match="tensor 'c' has 40 dimensions"):
        Engine(m.SerializeToString())


def test_clip_bounds_and_range_limits_that_are_not_scalars():
    # a Clip whose min was a 128-value tensor was a ValueError (reshape) in the lowering; a Range with an
    # empty start an IndexError in the size guard
    nodes = [helper.make_node('Clip', ['x', 'lo', 'hi'], ['y'], name='clip')]
    with pytest.raises(ModelError, match=r"'clip' \(Clip\): min must be a scalar, got shape \(128,\)"):
        Engine(make_model(nodes, [('x', (1, 3))], ['y'], {'lo': np.zeros(128, np.float32), 'hi': np.float32(6)}))
    nodes = [helper.make_node('Range', ['a', 'b', 'c'], ['r'], name='range'),
             helper.make_node('Add', ['x', 'r'], ['y'])]
    inits = {'a': np.zeros(0, np.float32), 'b': np.float32(3), 'c': np.float32(1)}
    with pytest.raises(ModelError, match=r"'range' \(Range\)"):
        Engine(make_model(nodes, [('x', (1, 3))], ['y'], inits))


def test_kernel_refusing_a_node_names_it(monkeypatch):
    """A kernel that refuses a node's constants: a ModelError naming the node (was a KernelError naming
    none; a file with NaN weight scales did that until the scales were checked, see below)."""
    from qvision_kernels import KernelError
    from qvision_ros.runtime import lowering

    def refuse(node, ctx):
        raise KernelError('multiplier must be finite and >= 0')
    monkeypatch.setitem(lowering.LOWERINGS, 'QConv', refuse)
    with pytest.raises(ModelError, match=r"'conv0' \(QConv\): multiplier must be finite .* quantisation parameters"):
        Engine(fuzz.tiny_qdq())


@pytest.mark.parametrize('name,value', [('conv1_ws', np.nan), ('conv1_ws', -1.0), ('xq_s', 0.0), ('xq_s', np.inf)])
def test_scales_that_are_not_finite_and_positive(name, value):
    m = onnx.load_from_string(fuzz.tiny_qdq())
    t = next(t for t in m.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(t).shape, value, np.float32), name))
    with pytest.raises(ModelError, match=r'\(%s\): scale .* must be finite and' % (
            'DequantizeLinear' if name == 'conv1_ws' else 'QuantizeLinear')):
        Engine(m.SerializeToString())


def test_dequantize_of_a_constant_with_a_zero_point_of_another_type():
    nodes = [helper.make_node('DequantizeLinear', ['c', 's', 'z'], ['d'], name='dq'),
             helper.make_node('Add', ['x', 'd'], ['y'])]
    inits = {'c': np.arange(3, dtype=np.uint8), 's': np.float32(0.1), 'z': np.int64(2 ** 63 - 1)}
    with pytest.raises(ModelError, match=r"'dq' \(DequantizeLinear\): zero point is int64 but the data is uint8"):
        Engine(make_model(nodes, [('x', (1, 3))], ['y'], inits))


def test_where_declares_the_type_of_its_values():
    """Where's output was declared with the condition's type (bool) while the run gave float32; found by
    the check that inputs bound to one type parameter agree (Add of Where's output and a float)."""
    nodes = [helper.make_node('Greater', ['x', 'zero'], ['m']), helper.make_node('Where', ['m', 'x', 'half'], ['w']),
             helper.make_node('Add', ['w', 'x'], ['y'])]
    mb = make_model(nodes, [('x', (1, 3))], ['y', 'w'], dict(zero=np.float32(0), half=np.float32(0.5)))
    engine = Engine(mb)
    x = np.array([[-1, 0.5, 2]], np.float32)
    outs = engine.run({'x': x})
    assert [o.dtype for o in engine.outputs] == [o.dtype for o in outs] == [np.float32] * 2
    for a, b in zip(outs, ort_run(mb, {'x': x})):
        np.testing.assert_array_equal(a, b)


def test_inputs_bound_to_one_type_must_agree():
    # a Concat of float32 and int64 (a rewired model) was a KernelError at the first run
    nodes = [helper.make_node('Concat', ['x', 'i'], ['y'], axis=1, name='cat')]
    with pytest.raises(ModelError, match=r"'cat' \(Concat\): inputs of one type T are float32 and int64"):
        Engine(make_model(nodes, [('x', (1, 3))], ['y'], {'i': np.ones((1, 2), np.int64)}))


@pytest.mark.parametrize('attrs', [dict(dilations=[1, 2 ** 62]), dict(strides=[2 ** 40, 1]),
                                   dict(pads=[0, 0, 2 ** 31, 0])])
def test_conv_geometry_beyond_what_the_kernels_take(attrs):
    # a 1 x 1 convolution with a dilation of 2**62 has a valid output shape but was an OverflowError
    # (C int) in the kernel at the first run
    nodes = [helper.make_node('Conv', ['x', 'w', 'b'], ['y'], name='c', **attrs)]
    with pytest.raises(ModelError, match=r"'c' \(Conv\): .* in \[\d, 65536\]"):
        Engine(_model(nodes, W))
