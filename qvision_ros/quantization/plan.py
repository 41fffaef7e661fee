"""Which units are quantised and which tensors get QuantizeLinear/DequantizeLinear pairs.

Given the units of :mod:`.analysis` and the set of nodes kept in float:

1. every quantisable unit with none of its nodes kept float is quantised: its activation inputs and its
   outputs are quantised tensors;
2. a movement unit (Reshape, Split, MaxPool, nearest Resize...) is quantised when one of its outputs is
   read by a quantised unit: its input becomes a quantised tensor too, and its outputs *share* the
   input's parameters (it only moves values, so it adds no error and the engine runs it on uint8 data);
   this is decided from the outputs backwards, so chains of movement ops resolve;
3. the *roots* - quantised tensors that share no one's parameters - are the tensors to calibrate.

Readers of a quantised tensor read its DequantizeLinear output when the tensor's producer is quantised
(the int8 layer writes only the quantised form); when the producer is float (or the tensor is a model
input) only the quantised readers do, and float readers keep the float value.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Set


@dataclass
class QuantPlan:
    quantized: List                  # quantised units (analysis.Unit), graph order
    floating: List                   # the other units
    tensors: List[str]               # quantised tensors, graph order
    share: Dict[str, str]            # quantised tensor -> root whose parameters it uses
    produced: Set[str] = field(default_factory=set)     # quantised tensors written by quantised units

    @property
    def roots(self):
        return [t for t in self.tensors if self.share[t] == t]

    @property
    def quantized_nodes(self):
        return [n for u in self.quantized for n in u.nodes]

    @property
    def float_nodes(self):
        return [n for u in self.floating for n in u.nodes]

    def weighted(self):
        return [u for u in self.quantized if u.kind == 'weighted']


def make_plan(analysis, keep_float=()):
    """The :class:`QuantPlan` of ``analysis`` with the node names ``keep_float`` left in float."""
    keep = set(keep_float)
    quantized, read_q, produced = [], set(), set()
    for u in analysis.units:
        if u.quantizable and not keep.intersection(u.nodes):
            quantized.append(u)
            read_q.update(u.inputs)
            produced.update(u.outputs)
    share = {}
    for u in reversed(analysis.units):
        if u.kind != 'movement' or keep.intersection(u.nodes):
            continue
        if any(o in read_q for o in u.outputs):
            quantized.append(u)
            read_q.add(u.inputs[0])
            for o in u.outputs:
                share[o] = u.inputs[0]
                produced.add(o)
    order = {id(u): k for k, u in enumerate(analysis.units)}
    quantized.sort(key=lambda u: order[id(u)])
    chosen = {id(u) for u in quantized}
    floating = [u for u in analysis.units if id(u) not in chosen]
    position = _positions(analysis)
    tensors = sorted(read_q | produced, key=lambda t: position.get(t, (-1, 0, t)))

    def root(t):
        while t in share:
            t = share[t]
        return t
    return QuantPlan(quantized, floating, tensors, {t: root(t) for t in tensors}, produced)


def calibration_tensors(analysis):
    """Every tensor some plan of ``analysis`` may calibrate: inputs and outputs of all quantisable and
    movement units (a superset of any plan's roots, for calibrating once and writing several plans)."""
    names = set()
    for u in analysis.units:
        if u.quantizable or u.kind == 'movement':
            names.update(u.inputs)
            names.update(u.outputs)
    position = _positions(analysis)
    return sorted((t for t in names if analysis.is_float_activation(t)), key=lambda t: position.get(t, (-1, 0, t)))


def _positions(analysis):
    """value -> a sort key in graph order (model inputs first; outputs of one node in their order)."""
    position = {n: (-1, k, n) for k, n in enumerate(analysis.inputs)}
    for k, n in enumerate(analysis.nodes):
        for j, o in enumerate(n.outputs):
            position[o] = (k, j, o)
    return position
