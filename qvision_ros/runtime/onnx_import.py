"""Reading an ONNX model into the engine's graph, safely.

* The file is parsed by ``onnx`` (protobuf); nothing in it is executed (no pickle, no custom code) and
  external data files are refused (a model could point them anywhere on disk).
* Every tensor's declared size is checked against the bytes it actually carries *before* it is turned
  into an array, and against an upper bound, so that a crafted file cannot make the loader allocate
  gigabytes.  The limits, all checked before allocating: a file of at most :data:`MAX_MODEL_BYTES`
  (2 GiB); a tensor (in the file, or computed) of at most :data:`MAX_TENSOR_ELEMENTS` (2**28) elements;
  a constant made by folding of at most ``passes.MAX_FOLDED_ELEMENTS`` (2**26); and at most
  ``plan.MAX_ARENA_BYTES`` (1 GiB) of activation buffers for one input shape.
* Opset 11 or newer in the default domain, up to the newest the installed ``onnx`` knows; every node
  checked against its ONNX schema (input and output counts, required inputs and attributes, attribute
  types); tensor element types the engine computes with only.  Anything else is a
  :class:`~qvision_ros.errors.ModelError` that names the node and says what is wrong.
"""
import os
import stat

import numpy as np

from ..errors import InputError, ModelError
from .graph import Graph
from .ops import np_dtype

MIN_OPSET = 11
# Upper bound on the elements of one tensor in a model file (weights of detection CNNs are far smaller).
MAX_TENSOR_ELEMENTS = 1 << 28
# Upper bound on the size of a model file we agree to read.
MAX_MODEL_BYTES = 1 << 31
# Most dimensions of a tensor (NumPy 1.x's limit; CNN tensors have 4).
MAX_RANK = 32

# The tensor element types the engine computes with (TensorProto.DataType -> name): no strings, complex,
# bfloat16, float8 or 4-bit types.
ELEMENT_TYPES = {1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64', 9: 'bool',
                 10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64'}

_TYPED_FIELDS = ('float_data', 'int32_data', 'string_data', 'int64_data', 'double_data', 'uint64_data')


def _load_proto(model):
    """ModelProto from a path, bytes or a ModelProto."""
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                # a folder, device or FIFO: reading /dev/zero or a pipe might never end
                raise ModelError('cannot read the model file %r: it is not a regular file; give the path of '
                                 'an .onnx file' % (path,))
            if st.st_size > MAX_MODEL_BYTES:
                raise ModelError('model file %s is %d bytes, more than the %d this loader accepts'
                                 % (path, st.st_size, MAX_MODEL_BYTES))
            with open(path, 'rb') as fh:
                data = fh.read(MAX_MODEL_BYTES + 1)
        except (OSError, ValueError) as e:      # ValueError: a NUL character in the path
            raise ModelError('cannot read the model file %r: %s' % (path, getattr(e, 'strerror', None) or e)) \
                from None
        where = path
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        where = '<bytes>'
    else:
        raise ModelError('a model is a file path, the bytes of an ONNX file or an onnx.ModelProto, got %s'
                         % type(model).__name__)
    if not data:
        raise ModelError('model %s is empty' % where)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError, TypeError) as e:
        raise ModelError('model %s is corrupt or truncated (not a valid ONNX protobuf: %s)' % (where, e)) \
            from None
    if not proto.HasField('graph') or not proto.graph.node:
        raise ModelError('model %s is corrupt or truncated: it has no graph or no nodes' % where)
    return proto


def tensor_to_array(t, what):
    """A checked ``numpy_helper.to_array``: declared dims against the data carried and the limits."""
    from onnx import TensorProto, numpy_helper

    name = t.name or what
    if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
        raise ModelError('tensor %r is stored in an external data file; this engine loads self-contained '
                         'models only (save it with onnx.save(model, path, save_as_external_data=False))'
                         % name)
    dims = [int(d) for d in t.dims]
    if len(dims) > MAX_RANK:
        raise ModelError('tensor %r has %d dimensions, more than the %d allowed' % (name, len(dims), MAX_RANK))
    if any(d < 0 for d in dims):
        raise ModelError('tensor %r has a negative dimension %s' % (name, dims))
    n = 1
    for d in dims:
        n *= d
    if n > MAX_TENSOR_ELEMENTS:
        raise ModelError('tensor %r declares %s = %d elements, more than the %d allowed'
                         % (name, dims, n, MAX_TENSOR_ELEMENTS))
    dtype = _element_type(t.data_type, 'tensor %r' % name)
    if t.HasField('raw_data'):
        expected = n * dtype.itemsize
        if len(t.raw_data) != expected:
            raise ModelError('tensor %r declares %s (%d bytes of %s) but carries %d bytes: the file is '
                             'corrupt or truncated' % (name, dims, expected, dtype.name, len(t.raw_data)))
    else:
        carried = sum(len(getattr(t, f)) for f in _TYPED_FIELDS)
        # float16/bfloat16/int8/bool... are packed into int32_data one value per entry; complex types
        # use two entries per value (not supported anyway)
        if carried != n:
            raise ModelError('tensor %r declares %s (%d values) but carries %d: the file is corrupt or '
                             'truncated' % (name, dims, n, carried))
    try:
        a = numpy_helper.to_array(t)
    except Exception as e:
        raise ModelError('tensor %r cannot be read: %s' % (name, e)) from None
    return np.require(a, requirements="C")


def _attributes(node):
    from onnx import AttributeProto, helper

    attrs = {}
    for a in node.attribute:
        if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            raise ModelError('node %r (%s) has a subgraph attribute %r; control flow (If, Loop, Scan) is '
                             'not supported' % (node.name, node.op_type, a.name))
        if a.type == AttributeProto.TENSOR:
            attrs[a.name] = tensor_to_array(a.t, '%s.%s' % (node.name, a.name))
        elif a.type == AttributeProto.TENSORS:
            attrs[a.name] = [tensor_to_array(t, '%s.%s' % (node.name, a.name)) for t in a.tensors]
        elif a.type == AttributeProto.SPARSE_TENSOR:
            raise ModelError('node %r (%s): sparse tensor attributes are not supported'
                             % (node.name, node.op_type))
        else:
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode('utf-8', 'replace')
            elif isinstance(v, list):
                v = [x.decode('utf-8', 'replace') if isinstance(x, bytes) else x for x in v]
            attrs[a.name] = v
    return attrs


def _check_schema(node, name, opset):
    """ModelError unless a default-domain node matches its ONNX schema at ``opset``: a known operator, a
    number of inputs and outputs it allows, its required inputs given, only attributes it declares and
    of the declared types (the import passes and kernels rely on that)."""
    from onnx import defs

    try:
        schema = defs.get_schema(node.op_type, opset, '')
    except Exception:
        raise ModelError('node %r (%s): operator %s is not supported by this engine (not an ONNX operator '
                         'of opset %d)' % (name, node.op_type, node.op_type, opset)) from None
    n_in, n_out = len(node.input), len(node.output)
    if not schema.min_input <= n_in <= schema.max_input or not schema.min_output <= n_out <= schema.max_output:
        raise ModelError('node %r (%s) has %d inputs and %d outputs; opset %d allows %s inputs and %s outputs: '
                         'the file is corrupt' % (name, node.op_type, n_in, n_out, opset,
                                                  _arity(schema.min_input, schema.max_input),
                                                  _arity(schema.min_output, schema.max_output)))
    given = {a.name for a in node.attribute}
    missing = sorted(k for k, a in schema.attributes.items() if a.required and k not in given)
    if missing:
        raise ModelError('node %r (%s) lacks the required attribute(s) %s' % (name, node.op_type,
                                                                              ', '.join(missing)))
    single = defs.OpSchema.FormalParameterOption.Single
    for k, formal in enumerate(schema.inputs[:n_in]):
        if formal.option == single and not node.input[k]:
            raise ModelError('node %r (%s): required input %d (%s) is empty' % (name, node.op_type, k,
                                                                                 formal.name))
    for a in node.attribute:
        declared = schema.attributes.get(a.name)
        if declared is None:
            raise ModelError('node %r (%s) has an attribute %r that %s does not have in opset %d (allowed: %s)'
                             % (name, node.op_type, a.name, node.op_type, opset,
                                ', '.join(sorted(schema.attributes)) or 'none'))
        if int(declared.type.value) != a.type:
            raise ModelError('node %r (%s): attribute %r has type %s, opset %d declares %s'
                             % (name, node.op_type, a.name, _ATTR_TYPES.get(a.type, a.type), opset,
                                declared.type.name))


_ATTR_TYPES = {0: 'UNDEFINED', 1: 'FLOAT', 2: 'INT', 3: 'STRING', 4: 'TENSOR', 5: 'GRAPH', 6: 'FLOATS', 7: 'INTS',
               8: 'STRINGS', 9: 'TENSORS', 10: 'GRAPHS', 11: 'SPARSE_TENSOR', 12: 'SPARSE_TENSORS',
               13: 'TYPE_PROTO', 14: 'TYPE_PROTOS'}


def _arity(lo, hi):
    return str(lo) if lo == hi else '%d or more' % lo if hi >= 1 << 30 else '%d to %d' % (lo, hi)


def _element_type(onnx_type, what):
    """The NumPy dtype of a supported ONNX element type, else ModelError naming ``what``."""
    if onnx_type not in ELEMENT_TYPES:
        raise ModelError('%s has element type %d, which this engine does not support (supported: %s)'
                         % (what, onnx_type, ', '.join(ELEMENT_TYPES.values())))
    return np_dtype(onnx_type)


def _value_type(vi):
    """(dims with None for symbolic/unknown, names of symbolic dims, dtype) of a ValueInfoProto."""
    tt = vi.type.tensor_type
    if not vi.type.HasField('tensor_type'):
        raise ModelError('graph input/output %r is not a tensor' % vi.name)
    dtype = _element_type(tt.elem_type, 'graph input/output %r' % vi.name) if tt.elem_type else None
    if not tt.HasField('shape'):
        return None, None, dtype
    if len(tt.shape.dim) > MAX_RANK:
        raise ModelError('graph input/output %r has %d dimensions, more than the %d allowed'
                         % (vi.name, len(tt.shape.dim), MAX_RANK))
    dims, names = [], []
    for d in tt.shape.dim:
        if d.HasField('dim_value') and d.dim_value > 0:
            dims.append(int(d.dim_value))
            names.append(None)
        else:
            dims.append(None)
            names.append(d.dim_param or '?')
    return dims, names, dtype


class ImportedModel:
    """A parsed model, not yet specialised to input shapes.

    Attributes: ``opset``, ``nodes`` (list of graph.Node), ``initializers`` (name -> array),
    ``inputs`` (list of (name, dims with None for dynamic, symbolic names, dtype)), ``outputs`` (list of
    (name, dims or None, dtype or None)), ``producer`` (producer name and version).
    """

    def __init__(self, model):
        import onnx

        from .graph import Node

        proto = _load_proto(model)
        opset = None
        for imp in proto.opset_import:
            if imp.domain in ('', 'ai.onnx'):
                opset = int(imp.version)
        if opset is None:
            raise ModelError('the model imports no default-domain (ai.onnx) opset')
        if opset < MIN_OPSET:
            raise ModelError('the model uses opset %d; opset %d or newer is required (re-export it, e.g. '
                             'torch.onnx.export(..., opset_version=17))' % (opset, MIN_OPSET))
        newest = onnx.defs.onnx_opset_version()
        if opset > newest:
            raise ModelError('the model uses opset %d; the installed onnx package knows opsets up to %d '
                             '(re-export with an older opset or update onnx)' % (opset, newest))
        self.opset = opset
        self.producer = '%s %s' % (proto.producer_name, proto.producer_version)
        g = proto.graph
        if len(g.sparse_initializer):
            raise ModelError('sparse initializers are not supported')
        self.initializers = {}
        for t in g.initializer:
            if not t.name:
                raise ModelError('an initializer has no name')
            self.initializers[t.name] = tensor_to_array(t, 'initializer')
        self.inputs = []
        for vi in g.input:
            if vi.name in self.initializers:
                continue            # old exporters list initializers as inputs too
            dims, names, dtype = _value_type(vi)
            if dtype is None:
                raise ModelError('graph input %r has no element type' % vi.name)
            if dims is None:
                raise ModelError('graph input %r has no shape; give one in the model' % vi.name)
            self.inputs.append((vi.name, dims, names, dtype))
        if not self.inputs:
            raise ModelError('the model has no inputs')
        self.outputs = []
        for vi in g.output:
            dims, _, dtype = _value_type(vi) if vi.type.HasField('tensor_type') else (None, None, None)
            self.outputs.append((vi.name, dims, dtype))
        if not self.outputs:
            raise ModelError('the model has no outputs')
        self.nodes = []
        seen = set()
        for i, n in enumerate(g.node):
            name = n.name or '%s_%d' % (n.op_type, i)
            if name in seen:
                name = '%s_%d' % (name, i)
            seen.add(name)
            domain = '' if n.domain in ('', 'ai.onnx') else n.domain
            if not domain:
                _check_schema(n, name, opset)
            self.nodes.append(Node(n.op_type, list(n.input), list(n.output), _attributes(n), name, domain,
                                   [name]))

    def input_shapes(self, overrides=None):
        """name -> concrete input shape: the model's own, dynamic batch -> 1, ``overrides`` applied."""
        if overrides is None:
            overrides = {}
        if not hasattr(overrides, 'items'):
            raise InputError('input_shapes must be a dict {input name: shape}, got %s' % type(overrides).__name__)
        overrides = dict(overrides.items())
        names = [name for name, _, _, _ in self.inputs]
        unknown = [k for k in overrides if k not in names]
        if unknown:
            raise InputError('input_shapes names %s, but the model inputs are %s' % (unknown, names))
        shapes = {}
        for name, dims, sym, _ in self.inputs:
            if name in overrides:
                try:
                    shape = tuple(int(d) for d in overrides[name])
                except (TypeError, ValueError, OverflowError):
                    raise InputError('input_shapes[%r] must be a sequence of ints, got %r'
                                     % (name, overrides[name])) from None
                if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims, shape)) \
                        or min(shape, default=1) < 1:
                    raise InputError('input_shapes[%r] = %s does not fit the model input %s (symbolic '
                                     'dimensions may take any positive size)'
                                     % (name, shape, _describe_dims(dims, sym)))
            else:
                shape = []
                for axis, (d, s) in enumerate(zip(dims, sym)):
                    if d is None and axis == 0:
                        d = 1
                    elif d is None:
                        raise ModelError('input %r has a dynamic dimension %d (%s); pass input_shapes={%r: '
                                         '(...)} to fix it' % (name, axis, s, name))
                    shape.append(d)
                shape = tuple(shape)
            n = 1
            for d in shape:
                n *= d
            if n > MAX_TENSOR_ELEMENTS:
                raise ModelError('input %r of shape %s has more than %d elements' % (name, shape,
                                                                                     MAX_TENSOR_ELEMENTS))
            shapes[name] = shape
        return shapes

    def to_graph(self, input_shapes):
        """A fresh :class:`Graph` with the given concrete input shapes (constants shared, not copied)."""
        import copy

        g = Graph(self.opset)
        for name, arr in self.initializers.items():
            g.add_value(name, const=arr)
        for name, _, _, dtype in self.inputs:
            g.add_value(name, input_shapes[name], dtype)
            g.inputs.append(name)
        for n in self.nodes:
            for o in n.outputs:
                if o and o not in g.values:
                    g.add_value(o)
            g.nodes.append(copy.copy(n))
            g.nodes[-1].inputs = list(n.inputs)
            g.nodes[-1].outputs = list(n.outputs)
            g.nodes[-1].attrs = dict(n.attrs)
            g.nodes[-1].origin = list(n.origin)
        g.outputs = [name for name, _, _ in self.outputs]
        for name in g.outputs:
            if name not in g.values:
                raise ModelError('graph output %r is produced by no node' % name)
        for n in g.nodes:
            for i in n.inputs:
                if i and i not in g.values:
                    raise ModelError('node %r (%s) reads %r, which no node, input or initializer provides'
                                     % (n.name, n.op, i))
        try:
            g.toposort()
        except ValueError as e:
            raise ModelError('the model is corrupt: its %s (re-export it)' % e) from None
        return g


def _describe_dims(dims, sym):
    return '[%s]' % ', '.join(str(d) if d is not None else (s or '?') for d, s in zip(dims, sym))
