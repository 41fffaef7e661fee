"""What of a float model can be quantised, and how it is organised: units, the decode sub-graph, blocks.

The model is read by the engine's own importer and shape propagation (:mod:`qvision_ros.runtime`), which
give every value its shape and dtype and fold the constant sub-graphs away; the names are the ONNX
names.  On that graph:

**Units** - the pieces that are quantised as a whole (DESIGN.md section 3).  A quantised unit reads
its activation inputs through DequantizeLinear and its outputs are followed by QuantizeLinear, which
is the pattern the engine turns into one int8 step:

* ``weighted``: Conv / Gemm / MatMul with a constant weight (int8 per channel), with a ReLU / Clip that
  is its output's only reader fused in (quantised after the activation only);
* ``region``: a connected set of element-wise float ops computing one tensor from one tensor (SiLU as
  ``x * sigmoid(x)``, HardSwish, a lone Sigmoid, arithmetic with scalar constants): quantised at its
  input and output only, the inside runs as one 256-entry table;
* ``binary``: Add / Mul of two different tensors (optionally with a fused ReLU / Clip);
* ``concat``; ``pool``: AveragePool / GlobalAveragePool;
* ``movement``: ops that only move or select values (Reshape, Transpose, Split, Slice, MaxPool, nearest
  Resize...): their outputs share their input's parameters, so they add no quantisation error;
* ``float``: anything else (Softmax, arithmetic with tensor constants, ...), never quantised.

**Decode sub-graph** - the nodes between the last feature layers and the outputs: walking back from
the outputs, every node up to (not including) a Conv/Gemm/MatMul with a constant weight, except that a
convolution reading a Softmax (the DFL expectation) belongs to the decode.  For a YOLO detector: the DFL
softmax and its expectation conv, the anchor arithmetic, the score sigmoid and the concatenation of
boxes (0..640) with scores (0..1); for a classifier: a final Softmax, or nothing.

**Blocks** - backbone, neck and head of a YOLO-style graph: the backbone is every node the first
upsampling (Resize / Upsample enlarging H, W) depends on; the head is the per-scale output branches,
walked back from the decode's inputs while the chain has one input and its tensor no other reader,
trimmed to the same number of weighted layers on every branch; the neck is the rest before the decode.
A detector without an upsampling has no neck (its branches leave the backbone); in a classifier the
head is where the spatial dimensions have collapsed (global pooling, flatten, fully-connected layers).
"""
import fnmatch
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ..errors import ConfigError
from ..runtime.ops import ELEMENTWISE_UNARY

FLOAT = np.dtype(np.float32)

WEIGHTED_OPS = ('Conv', 'Gemm', 'MatMul')
MOVEMENT_OPS = {'MaxPool', 'Reshape', 'Transpose', 'Flatten', 'Squeeze', 'Unsqueeze', 'Split', 'Slice',
                'Identity', 'DepthToSpace', 'SpaceToDepth', 'Resize', 'Upsample', 'Gather'}
REGION_UNARY = set(ELEMENTWISE_UNARY) - {'Identity', 'Silu'}
REGION_BINARY = {'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min'}
FUSABLE_ACTIVATIONS = ('Relu', 'Clip')
POOL_OPS = ('AveragePool', 'GlobalAveragePool')
# ops read "through" when looking for the Softmax in front of a DFL convolution
_PASS_THROUGH = {'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze', 'Flatten', 'Identity', 'Slice', 'Split'}

BLOCK_NAMES = ('backbone', 'neck', 'head')
QUANTIZABLE_KINDS = ('weighted', 'region', 'binary', 'concat', 'pool')


@dataclass
class Unit:
    """A quantisable piece of the graph (see the module docstring)."""
    kind: str
    nodes: List[str]                     # ONNX node names, in graph order
    ops: List[str]
    inputs: List[str]                    # activation tensors read
    outputs: List[str]                   # tensors written
    attrs: Dict = field(default_factory=dict)

    @property
    def name(self):
        """The unit's main node: the weighted layer, else the node that writes its output."""
        return self.nodes[0] if self.kind == 'weighted' else self.nodes[-1]

    @property
    def quantizable(self):
        return self.kind in QUANTIZABLE_KINDS


class Analysis:
    """Units, decode sub-graph and blocks of a prepared float ModelProto (see the module docstring).

    ``input_shapes`` fixes dynamic input dimensions as for :class:`~qvision_ros.runtime.Engine`.
    """

    def __init__(self, proto, input_shapes=None):
        from ..runtime.onnx_import import ImportedModel
        from ..runtime.passes import propagate

        imported = ImportedModel(proto)
        self.input_shapes = imported.input_shapes(input_shapes)
        graph = imported.to_graph(self.input_shapes)
        propagate(graph)
        self.graph = graph
        self.nodes = list(graph.nodes)                   # run-time nodes (constants folded away)
        self.node = {n.name: n for n in self.nodes}
        self.order = {n.name: k for k, n in enumerate(self.nodes)}
        self.producer = {o: n for n in self.nodes for o in n.outputs if o}
        self.readers = {}
        for n in self.nodes:
            for i in dict.fromkeys(n.inputs):
                if i and not self.is_const(i):
                    self.readers.setdefault(i, []).append(n)
        self.outputs = list(graph.outputs)
        self.inputs = list(graph.inputs)
        self.units = self._find_units()
        self.unit_of = {name: u for u in self.units for name in u.nodes}
        self.unit_producing = {o: u for u in self.units for o in u.outputs}
        self.decode = self._find_decode()
        self.blocks = self._find_blocks()

    # ---------------------------------------------------------------------------------------- values
    def is_const(self, name):
        return bool(name) and self.graph.values[name].is_const

    def const(self, name):
        return self.graph.values[name].const if name else None

    def value(self, name):
        return self.graph.values[name]

    def is_float_activation(self, name):
        v = self.graph.values.get(name)
        return v is not None and not v.is_const and v.dtype == FLOAT

    def activation_inputs(self, node):
        return [i for i in node.inputs if i and not self.is_const(i)]

    def _scalar_const(self, name):
        c = self.const(name)
        return c is not None and c.size == 1 and c.dtype.kind == 'f'

    # ---------------------------------------------------------------------------------------- units
    def _find_units(self):
        regions = self._find_regions()
        in_region = {name for r in regions for name in r.nodes}
        units = list(regions)
        for n in self.nodes:
            if n.name in in_region:
                continue
            units.append(self._classify(n))
        units = self._fuse_activations(units)
        units.sort(key=lambda u: self.order[u.nodes[0]])
        return units

    def _region_candidate(self, n):
        """Activation inputs of an element-wise node that may join a region, or None."""
        if n.op not in REGION_UNARY and n.op not in REGION_BINARY:
            return None
        if len([o for o in n.outputs if o]) != 1 or self.value(n.outputs[0]).dtype != FLOAT:
            return None
        acts = self.activation_inputs(n)
        if not acts or any(self.value(i).dtype != FLOAT for i in acts):
            return None
        consts = [i for i in n.inputs if i and self.is_const(i)]
        if n.op in REGION_BINARY:
            if len(n.inputs) != 2 or any(not self._scalar_const(c) for c in consts):
                return None
        elif n.op == 'Clip':
            if any(not self._scalar_const(c) for c in consts):
                return None
        elif len(n.inputs) != 1:
            return None
        return acts

    def _find_regions(self):
        """Element-wise regions of one source tensor with one escaping output (module docstring)."""
        region_of = {}              # value -> region index
        regions = []                # [source, [nodes]]
        for n in self.nodes:
            acts = self._region_candidate(n)
            if acts is None:
                continue
            srcs, regs = set(), set()
            for i in acts:
                if i in region_of:
                    regs.add(region_of[i])
                    srcs.add(regions[region_of[i]][0])
                else:
                    srcs.add(i)
            if len(srcs) != 1 or self.value(n.outputs[0]).shape != self.value(next(iter(srcs))).shape:
                continue
            if regs:
                k = min(regs)
                for other in sorted(regs - {k}):
                    regions[k][1].extend(regions[other][1])
                    for o in [o for o, r in region_of.items() if r == other]:
                        region_of[o] = k
                    regions[other][1] = []
            else:
                k = len(regions)
                regions.append([next(iter(srcs)), []])
            regions[k][1].append(n)
            region_of[n.outputs[0]] = k
        units = []
        for source, nodes in regions:
            if not nodes:
                continue
            nodes.sort(key=lambda n: self.order[n.name])
            names = {n.name for n in nodes}
            escaping = [n.outputs[0] for n in nodes if n.outputs[0] in self.outputs or
                        any(r.name not in names for r in self.readers.get(n.outputs[0], []))]
            if len(escaping) == 1 and escaping[0] == nodes[-1].outputs[0]:
                units.append(Unit('region', [n.name for n in nodes], [n.op for n in nodes], [source],
                                  [escaping[0]]))
            else:
                # not one function of one tensor: each node on its own
                for n in nodes:
                    units.append(self._classify(n, allow_region=True))
        return units

    def _classify(self, n, allow_region=False):
        acts = self.activation_inputs(n)
        outs = [o for o in n.outputs if o]
        float_acts = acts and all(self.value(i).dtype == FLOAT for i in acts) and \
            all(self.value(o).dtype == FLOAT for o in outs)

        def unit(kind, inputs=None, **attrs):
            return Unit(kind, [n.name], [n.op], list(dict.fromkeys(acts if inputs is None else inputs)), outs,
                        attrs)

        if not float_acts:
            return unit('float')
        if n.op in WEIGHTED_OPS and self._weighted_ok(n):
            return unit('weighted', [n.inputs[0]])
        if allow_region and len(set(acts)) == 1 and self._region_candidate(n) is not None:
            return unit('region')
        if n.op in ('Add', 'Mul') and len(acts) == 2 and len(n.inputs) == 2 and acts[0] != acts[1]:
            y = self.value(outs[0]).shape
            if self.value(acts[0]).shape == y or self.value(acts[1]).shape == y:
                return unit('binary')
        if n.op == 'Concat' and len(acts) == len([i for i in n.inputs if i]):
            return unit('concat')
        if n.op in POOL_OPS and len(self.value(acts[0]).shape) == 4:
            return unit('pool')
        if n.op in MOVEMENT_OPS and len(acts) == 1 and acts[0] == n.inputs[0]:
            if n.op in ('Resize', 'Upsample') and n.attrs.get('mode', 'nearest') != 'nearest':
                return unit('float')
            return unit('movement')
        return unit('float')

    def _weighted_ok(self, n):
        if len(n.inputs) < 2 or not self.is_const(n.inputs[1]) or self.is_const(n.inputs[0]):
            return False
        w = self.const(n.inputs[1])
        if w.dtype != FLOAT:
            return False
        b = n.input(2)
        if b and not self.is_const(b):
            return False
        if n.op == 'Conv':
            return w.ndim == 4 and len(self.value(n.inputs[0]).shape) == 4
        if n.op == 'Gemm':
            a = n.attrs
            channels = w.shape[0 if a.get('transB', 0) else 1] if w.ndim == 2 else None
            return (w.ndim == 2 and not a.get('transA', 0) and a.get('alpha', 1.0) == 1.0 and
                    a.get('beta', 1.0) == 1.0 and (not b or self.const(b).size == channels))
        return w.ndim == 2 and len(self.value(n.inputs[0]).shape) >= 2        # MatMul

    def _fuse_activations(self, units):
        """A weighted or binary unit whose output's only reader is a one-node ReLU / Clip region takes it."""
        producing = {o: u for u in units for o in u.outputs}
        dropped = set()
        for u in units:
            if u.kind not in ('weighted', 'binary') or len(u.outputs) != 1:
                continue
            out = u.outputs[0]
            readers = self.readers.get(out, [])
            if out in self.outputs or len(readers) != 1:
                continue
            act = producing.get(readers[0].outputs[0])
            if act is None or act.kind != 'region' or len(act.nodes) != 1 or act.ops[0] not in FUSABLE_ACTIVATIONS:
                continue
            u.nodes.append(act.nodes[0])
            u.ops.append(act.ops[0])
            u.outputs = list(act.outputs)
            u.attrs['activation'] = act.ops[0]
            dropped.add(id(act))
        return [u for u in units if id(u) not in dropped]

    # ------------------------------------------------------------------------------------- decode
    def _softmax_fed(self, node):
        name = node.inputs[0]
        while True:
            p = self.producer.get(name)
            if p is None:
                return False
            if p.op == 'Softmax':
                return True
            if p.op not in _PASS_THROUGH:
                return False
            name = p.inputs[0]

    def is_feature_layer(self, node):
        """A Conv/Gemm/MatMul with a constant weight that does not read a Softmax."""
        return node.op in WEIGHTED_OPS and len(node.inputs) > 1 and self.is_const(node.inputs[1]) and \
            not self._softmax_fed(node)

    def _find_decode(self):
        decode, stack = set(), [self.producer[o] for o in self.outputs if o in self.producer]
        while stack:
            n = stack.pop()
            if n.name in decode or self.is_feature_layer(n):
                continue
            decode.add(n.name)
            stack.extend(self.producer[i] for i in self.activation_inputs(n) if i in self.producer)
        return decode

    # ------------------------------------------------------------------------------------- blocks
    def ancestors(self, tensor):
        """Names of the nodes ``tensor`` depends on (its producer included)."""
        seen, stack = set(), [tensor]
        while stack:
            p = self.producer.get(stack.pop())
            if p is None or p.name in seen:
                continue
            seen.add(p.name)
            stack.extend(self.activation_inputs(p))
        return seen

    def _upsamples(self):
        ups = []
        for n in self.nodes:
            if n.op in ('Resize', 'Upsample') and n.name not in self.decode:
                x, y = self.value(n.inputs[0]).shape, self.value(n.outputs[0]).shape
                if len(x) == 4 and len(y) == 4 and y[2] > x[2]:
                    ups.append(n)
        return ups

    def _find_blocks(self):
        ups = self._upsamples()
        body = [n.name for n in self.nodes if n.name not in self.decode]
        if ups:
            backbone = self.ancestors(ups[0].inputs[0]) - self.decode
            rest = {name for name in body if name not in backbone}
            head = self._head_branches(rest)
        elif self.decode:
            # a detector without a neck: the output branches straight off the backbone
            backbone = set(body)
            head = self._head_branches(backbone)
            backbone -= head
        else:
            # a classifier: the head is where the spatial dimensions have collapsed (global pooling, FC)
            head = {name for name in body if all(self._collapsed(o) for o in self.node[name].outputs if o)}
            backbone = set(body) - head
        return {'backbone': [n for n in body if n in backbone],
                'neck': [n for n in body if n not in backbone and n not in head],
                'head': [n for n in body if n in head]}

    def _collapsed(self, name):
        shape = self.value(name).shape
        return len(shape) != 4 or shape[2] * shape[3] == 1

    def _head_branches(self, rest):
        """Nodes of the per-scale output branches (module docstring)."""
        rest_units = {id(self.unit_of[name]) for name in rest}
        entries = []
        for name in rest:
            for o in self.node[name].outputs:
                readers = self.readers.get(o, [])
                if o in self.outputs or any(r.name in self.decode for r in readers):
                    entries.append(o)
        branches = []
        for t in sorted(set(entries)):
            u = self.unit_producing.get(t)
            branch = []
            while u is not None and id(u) in rest_units and u not in branch:
                branch.append(u)
                if len(u.inputs) != 1 or u.kind == 'concat':
                    break
                s = u.inputs[0]
                readers = {id(self.unit_of[r.name]) for r in self.readers.get(s, [])}
                if s in self.outputs or readers != {id(u)}:
                    break
                u = self.unit_producing.get(s)
            if branch:
                branches.append(branch)
        if not branches:
            return set()
        depth = min(sum(u.kind == 'weighted' for u in b) for b in branches)
        head = set()
        for b in branches:
            seen = 0
            for u in b:
                if depth and seen >= depth:
                    break
                head.update(u.nodes)
                seen += u.kind == 'weighted'
                if not depth:
                    break
        return head

    # ------------------------------------------------------------------------------------ selection
    def block_nodes(self, name, prefixes=None):
        """Node names of block ``name`` (backbone, neck, head; or a user block given by ``prefixes``:
        node names that start with one of them or match one as a glob pattern).  ``head`` includes the
        decode sub-graph."""
        if prefixes is not None:
            return [n.name for n in self.nodes if any(n.name.startswith(p) or fnmatch.fnmatchcase(n.name, p)
                                                      for p in prefixes)]
        if name not in BLOCK_NAMES:
            raise ConfigError('unknown block %r: the blocks found automatically are %s (name others with '
                              'prefixes)' % (name, list(BLOCK_NAMES)))
        nodes = list(self.blocks[name])
        if name == 'head':
            nodes += [n for n in self.decode if n not in nodes]
        return nodes

    def select(self, patterns=(), op_types=(), blocks=(), block_prefixes: Optional[Dict] = None):
        """Node names matched by name / glob ``patterns``, ``op_types`` and ``blocks``."""
        chosen = set()
        for p in patterns:
            hit = [n.name for n in self.nodes if n.name == p or fnmatch.fnmatchcase(n.name, p)]
            if not hit:
                raise ConfigError('keep-float pattern %r matches no node of the model (node names look like '
                                  '%r; globs such as "/model/head/*" work)' % (p, self.nodes[0].name))
            chosen.update(hit)
        known_ops = {n.op for n in self.nodes}
        for op in op_types:
            if op not in known_ops:
                raise ConfigError('keep-float op type %r is not in the model (its op types: %s)'
                                  % (op, sorted(known_ops)))
            chosen.update(n.name for n in self.nodes if n.op == op)
        user = dict(block_prefixes or {})
        for b in blocks:
            if b in user:
                chosen.update(self.block_nodes(b, user[b]))
            else:
                chosen.update(self.block_nodes(b))
        return chosen

    def summary(self):
        """Counts per unit kind and per block (for reports)."""
        kinds = {}
        for u in self.units:
            kinds[u.kind] = kinds.get(u.kind, 0) + 1
        return {'units': kinds, 'decode_nodes': len(self.decode),
                'blocks': {k: len(v) for k, v in self.blocks.items()}}
