"""Bad model files and unsupported content give a ModelError that says what is wrong (never another
exception, never a huge allocation); bad arguments give InputError / ConfigError."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import model_bytes
from qvision_ros.errors import ConfigError, ModelError
from qvision_ros.runtime import Engine
from test_engine_ops import make_model


def _tiny(opset=17):
    w = np.ones((2, 3, 1, 1), np.float32)
    return make_model([helper.make_node('Conv', ['x', 'w'], ['y'])], [('x', (1, 3, 4, 4))], ['y'], {'w': w},
                      opset=opset)


def test_tiny_model_loads():
    engine = Engine(_tiny(), num_threads=1)
    y = engine.run({'x': np.ones((1, 3, 4, 4), np.float32)})[0]
    np.testing.assert_array_equal(y, np.full((1, 2, 4, 4), 3, np.float32))


@pytest.mark.parametrize('fraction', [0.05, 0.3, 0.5, 0.77, 0.95, 0.999])
def test_truncated_file(fraction):
    data = model_bytes('resnet')
    with pytest.raises(ModelError, match='corrupt or truncated'):
        Engine(data[:int(len(data) * fraction)])


def test_garbage_and_empty_files(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(5):
        with pytest.raises(ModelError):
            Engine(rng.integers(0, 256, 2000 + k, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match='empty'):
        Engine(b'')
    with pytest.raises(ModelError, match='cannot read'):
        Engine(str(tmp_path / 'missing.onnx'))
    with pytest.raises(ModelError, match='file path'):
        Engine(12345)


def test_model_from_path_and_proto(tmp_path):
    path = tmp_path / 'tiny.onnx'
    path.write_bytes(_tiny())
    x = np.ones((1, 3, 4, 4), np.float32)
    a = Engine(str(path)).run({'x': x})[0]
    b = Engine(path).run({'x': x})[0]
    c = Engine(onnx.load_from_string(_tiny())).run({'x': x})[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def _with_initializer(tensor):
    m = onnx.load_from_string(_tiny())
    m.graph.initializer[0].CopyFrom(tensor)
    return m.SerializeToString()


def test_declared_size_is_checked_before_allocating():
    t = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), 'w')
    del t.dims[:]
    t.dims.extend([200000, 300000, 1, 1])         # 6e10 floats declared, 24 bytes carried
    with pytest.raises(ModelError, match='declares'):
        Engine(_with_initializer(t))
    t.dims[:] = [2, 3, 1, 2]                       # 12 declared, 6 carried
    with pytest.raises(ModelError, match='declares .* carries'):
        Engine(_with_initializer(t))
    t2 = TensorProto(name='w', data_type=TensorProto.FLOAT, dims=[2, 3, 1, 1], float_data=[1.0] * 5)
    with pytest.raises(ModelError, match='carries 5'):
        Engine(_with_initializer(t2))
    t3 = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), 'w')
    t3.data_location = TensorProto.EXTERNAL
    t3.ClearField('raw_data')
    t3.external_data.add(key='location', value='/etc/passwd')
    with pytest.raises(ModelError, match='external data'):
        Engine(_with_initializer(t3))


def test_huge_constant_of_shape_is_refused():
    nodes = [helper.make_node('ConstantOfShape', ['s'], ['c']), helper.make_node('Add', ['x', 'c'], ['y'])]
    mb = make_model(nodes, [('x', (1, 3))], ['y'], {'s': np.array([1 << 20, 1 << 20], np.int64)})
    with pytest.raises(ModelError, match='ConstantOfShape.*more than'):
        Engine(mb)
    nodes = [helper.make_node('Tile', ['x', 'r'], ['y'])]
    mb = make_model(nodes, [('x', (1, 3))], ['y'], {'r': np.array([1 << 16, 1 << 16], np.int64)})
    with pytest.raises(ModelError, match='Tile.*more than'):
        Engine(mb)
    nodes = [helper.make_node('Expand', ['x', 's'], ['y'])]
    mb = make_model(nodes, [('x', (1, 3))], ['y'], {'s': np.array([1 << 30, 3], np.int64)})
    with pytest.raises(ModelError, match='Expand.*more than'):
        Engine(mb)


def test_old_opset_and_unsupported_ops():
    with pytest.raises(ModelError, match='opset 10; opset 11 or newer'):
        Engine(_tiny(opset=10))
    nodes = [helper.make_node('Conv', ['x', 'w'], ['c'], name='stem'),
             helper.make_node('Det', ['c'], ['y'], name='weird_node')]
    mb = make_model(nodes, [('x', (1, 3, 4, 4))], ['y'], {'w': np.ones((2, 3, 1, 1), np.float32)})
    with pytest.raises(ModelError, match=r"'weird_node' \(Det\).*not supported"):
        Engine(mb)
    m = onnx.load_from_string(_tiny())
    m.graph.node[0].domain = 'com.example'
    m.opset_import.add(domain='com.example', version=1)
    with pytest.raises(ModelError, match="domain 'com.example'"):
        Engine(m.SerializeToString())
    body = helper.make_graph([helper.make_node('Identity', ['x'], ['z'])], 'b', [],
                             [helper.make_tensor_value_info('z', TensorProto.FLOAT, None)])
    nodes = [helper.make_node('Greater', ['x', 'x'], ['c0']), helper.make_node('ReduceMin', ['c0'], ['c'], keepdims=0),
             helper.make_node('If', ['c'], ['y'], then_branch=body, else_branch=body, name='branch')]
    mb = make_model(nodes, [('x', (1, 3))], ['y'])
    with pytest.raises(ModelError, match="'branch' \\(If\\).*subgraph"):
        Engine(mb)


def test_runtime_shapes_that_do_not_fold_are_refused():
    nodes = [helper.make_node('Reshape', ['x', 's'], ['y'], name='reshape_dynamic')]
    m = make_model(nodes, [('x', (1, 6)), ('s', (2,))], ['y'])
    with pytest.raises(ModelError, match="'reshape_dynamic'.*computed at run time"):
        Engine(m)


def test_bad_num_threads():
    with pytest.raises(ConfigError, match='num_threads'):
        Engine(_tiny(), num_threads=0)
    with pytest.raises(ConfigError):
        Engine(_tiny(), num_threads=1.5)
