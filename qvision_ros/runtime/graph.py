"""The engine's own small graph representation (IR).

A :class:`Graph` holds :class:`Value` objects (tensors: name, logical shape, dtype, an optional constant
payload and optional quantisation parameters) and :class:`Node` objects (op type, input and output value
names, attributes) in topological order.  Shapes are always concrete: a graph is specialised for one set
of input shapes before the passes run.

Shapes and axis attributes are *logical*, i.e. in the ONNX (NCHW) convention, whatever the physical
layout; a 4-D value whose ``layout`` is ``'NHWC'`` is stored channels-last at run time (its physical
shape is ``(N, H, W, C)``), see :mod:`qvision_ros.runtime.layout`.
"""
import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

NCHW_TO_NHWC = (0, 2, 3, 1)     # physical dim j of an NHWC tensor is logical dim NCHW_TO_NHWC[j]
NHWC_TO_NCHW = (0, 3, 1, 2)     # logical dim a of an NHWC tensor is stored at physical position [a]


@dataclass
class QParams:
    """Per-tensor (or per-axis, for constants) quantisation parameters: ``real = scale * (q - zp)``."""
    scale: np.ndarray            # float32, scalar or 1-D
    zero_point: np.ndarray       # integer, same shape as scale
    axis: Optional[int] = None   # the axis of a per-axis (per-channel) scale, None for per tensor

    @property
    def per_tensor(self):
        return self.scale.size == 1 and self.zero_point.size == 1

    def scalar(self):
        """(float scale, int zero point) of a per-tensor quantisation."""
        return float(self.scale.reshape(-1)[0]), int(self.zero_point.reshape(-1)[0])


@dataclass
class Value:
    name: str
    shape: Optional[Tuple[int, ...]] = None      # logical (ONNX) shape
    dtype: Optional[np.dtype] = None
    const: Optional[np.ndarray] = None           # payload of a constant (initializer or folded)
    # For a constant produced by folding DequantizeLinear: the quantised tensor and its parameters
    # (int8 weights, int32 biases), so that int8 layers can use them without re-quantising.
    qconst: Optional[Tuple[np.ndarray, QParams]] = None
    layout: Optional[str] = None                 # 'NHWC' for channels-last 4-D activations, else None

    @property
    def is_const(self):
        return self.const is not None

    def physical_shape(self):
        if self.layout == 'NHWC':
            return tuple(self.shape[i] for i in NCHW_TO_NHWC)
        return self.shape


@dataclass
class Node:
    op: str
    inputs: List[str]
    outputs: List[str]
    attrs: Dict[str, Any] = field(default_factory=dict)
    name: str = ''
    domain: str = ''
    # names of the original ONNX nodes this node stands for (after fusion), for the profile
    origin: List[str] = field(default_factory=list)

    def input(self, i):
        """Name of input ``i`` or '' when absent (optional inputs)."""
        return self.inputs[i] if i < len(self.inputs) else ''


class Graph:
    """Values, nodes in topological order, graph inputs and outputs, and the opset."""

    def __init__(self, opset=17):
        self.values: Dict[str, Value] = {}
        self.nodes: List[Node] = []
        self.inputs: List[str] = []
        self.outputs: List[str] = []
        self.opset = opset
        self._counter = itertools.count()

    # ------------------------------------------------------------------------------- values
    def value(self, name):
        return self.values[name]

    def add_value(self, name, shape=None, dtype=None, const=None, qconst=None, layout=None):
        v = Value(name, None if shape is None else tuple(int(d) for d in shape),
                  None if dtype is None else np.dtype(dtype), const, qconst, layout)
        if const is not None:
            v.shape = tuple(const.shape)
            v.dtype = const.dtype
        self.values[name] = v
        return v

    def add_const(self, array, hint='const'):
        """A new constant value holding ``array``; returns its name."""
        name = self.unique_name(hint)
        self.add_value(name, const=np.asarray(array))
        return name

    def unique_name(self, hint):
        while True:
            name = '%s__%d' % (hint, next(self._counter))
            if name not in self.values:
                return name

    def const(self, name):
        """The constant payload of value ``name`` ('' gives None), or None when it is not constant."""
        if not name:
            return None
        return self.values[name].const

    # -------------------------------------------------------------------------------- nodes
    def producers(self):
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self):
        """value name -> list of nodes that read it (once per node)."""
        users: Dict[str, List[Node]] = {}
        for n in self.nodes:
            for i in dict.fromkeys(n.inputs):
                if i:
                    users.setdefault(i, []).append(n)
        return users

    def remove_dead(self):
        """Drop nodes whose outputs nobody reads (graph outputs are read), and unused values."""
        live = set(self.outputs)
        kept = []
        for n in reversed(self.nodes):
            if any(o in live for o in n.outputs):
                kept.append(n)
                live.update(i for i in n.inputs if i)
        self.nodes = kept[::-1]
        used = live | set(self.inputs)
        for n in self.nodes:
            used.update(n.outputs)
        self.values = {k: v for k, v in self.values.items() if k in used}

    def rename_input_uses(self, old, new, nodes=None):
        """Make ``nodes`` (default: every node) read ``new`` where they read ``old``."""
        for n in (self.nodes if nodes is None else nodes):
            n.inputs = [new if i == old else i for i in n.inputs]
        if nodes is None:
            self.outputs = [new if o == old else o for o in self.outputs]

    def toposort(self):
        """Order the nodes so that every input is produced before it is read (stable)."""
        produced = set(self.inputs) | {k for k, v in self.values.items() if v.is_const}
        pending = list(self.nodes)
        order = []
        while pending:
            rest = []
            for n in pending:
                if all((not i) or i in produced for i in n.inputs):
                    order.append(n)
                    produced.update(n.outputs)
                else:
                    rest.append(n)
            if len(rest) == len(pending):
                missing = sorted({i for n in rest for i in n.inputs if i and i not in produced})
                raise ValueError('graph has a cycle or reads undefined values: %s' % missing[:5])
            pending = rest
        self.nodes = order

    def __repr__(self):
        lines = ['Graph(inputs=%s, outputs=%s)' % (self.inputs, self.outputs)]
        for n in self.nodes:
            shapes = [self.values[o].shape if o in self.values else None for o in n.outputs]
            lines.append('  %s %s %s -> %s %s' % (n.op, n.name, n.inputs, n.outputs, shapes))
        return '\n'.join(lines)
