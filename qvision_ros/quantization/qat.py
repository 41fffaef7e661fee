"""Quantization-aware training (QAT) in PyTorch with the arithmetic of DESIGN.md section 3, and export to a
standard QDQ ONNX model that :class:`qvision_ros.runtime.Engine` runs on its int8 kernels.

Needs PyTorch (the optional ``train`` extra); nothing else in the package imports this module.

    qmodel = prepare_qat(model, weight_bits=4)          # fold Conv+BN, insert fake quantisers
    calibrate(qmodel, batches)                         # observer ranges from a few batches (= PTQ)
    fine_tune(qmodel, loader, loss_fn, FineTuneOptions(epochs=3))
    freeze(qmodel)
    export_qdq(qmodel, 'model.qdq.onnx', example_input)

Fake quantisation (``real = scale * (q - zero_point)``, rounding half to even as ``torch.round`` and ONNX
QuantizeLinear do, every operation in float32 as in ONNX):

* activations: uint8, asymmetric, per tensor.  The observed range ``[lo, hi]`` is widened to include 0,
  ``s = (hi - lo) / 255``, ``zp = clamp(round(-lo / s), 0, 255)`` (``s = 1, zp = 0`` for an all-zero
  range, as ONNX Runtime does); ``fq(x) = (clamp(round(x / s) + zp, 0, 255) - zp) * s``;
* weights: int8, symmetric (zero point 0), per output channel, ``n`` bits in {8, 4, 2}: ``qmax = 2^(n-1) - 1``
  (127, 7, 1), ``s_c = max|w_c| / qmax`` (1 for an all-zero channel), ``fq(w) = clamp(round(w / s_c), -qmax,
  qmax) * s_c``, recomputed from the current weights at every step;
* gradients: straight-through estimator - ``d fq(x) / dx = 1`` where ``round(x / s) + zp`` lies inside the
  integer range, 0 where it is clamped (scales and zero points get no gradient: the observers move them).

Where the quantisers go (the points where the int8 engine quantises, so that each becomes one int8 kernel):
the model input; the weight of every ``Conv2d`` and ``Linear``; the output of every convolution and
fully-connected layer - after its ReLU / ReLU6 / Hardtanh when that is the only reader, as the engine fuses
the clamp; the outputs of additions and multiplications of two tensors, concatenations, average pools and
one-input activations of quantised values (SiLU, Sigmoid, Hardswish, LeakyReLU, Tanh... - lookup tables in
the engine); max pools and nearest upsampling re-use their input's quantiser (they only select values);
reshapes, flattens, splits, slices and dropout pass their input's quantisation through.  Anything else
(softmax, the arithmetic of a decoding head) stays float; a quantised layer that reads a float value gets a
quantiser on that value.  The quantisers of additions, concatenations, pools and activations whose value
no int8 layer reads are left out (the tail of a network: a detection head's concatenation of box and class
logits feeding a float decode - DESIGN.md section 3 keeps decoding heads float).  ``keep_float`` names
modules (or patterns, or graph node names) to leave float.

The model is rewritten with ``torch.fx``: it must be symbolically traceable (static control flow).  Batch
norms directly after a convolution (or a linear layer) are folded into it first (eval-mode statistics:
they no longer change during fine-tuning, and the exported convolution is the one that was trained).

Export (:func:`export_qdq`, TorchScript exporter): activation quantisers become
``torch.fake_quantize_per_tensor_affine(x, s, zp, 0, 255)``, i.e. QuantizeLinear/DequantizeLinear with a
uint8 zero point; each weight is first replaced by its exactly representable value ``s_c * q`` (``|q| <=
qmax``) and wrapped in ``torch.fake_quantize_per_channel_affine(w, s, 0, axis=0, -128, 127)`` - an identity
on it, exported as a per-channel int8 QuantizeLinear/DequantizeLinear pair whose integers stay in the
``n``-bit range.  Biases stay float (the engine quantises them to int32 at ``s_x * s_w``).
"""
import copy
import fnmatch
import io
import math
import operator
import os
import time
import warnings
from dataclasses import dataclass
from enum import Enum
from typing import Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..cli import Progress
from ..errors import ConfigError, DataError, ModelError

WEIGHT_BITS = (8, 4, 2)
ACT_QMIN, ACT_QMAX = 0, 255
DEFAULT_OPSET = 17


def weight_qmax(bits):
    """Largest integer of a symmetric ``bits``-bit weight: 127, 7 or 1."""
    if isinstance(bits, bool) or bits not in WEIGHT_BITS:
        raise ConfigError('weight bits must be one of %s, got %r' % (list(WEIGHT_BITS), bits))
    return 2 ** (int(bits) - 1) - 1


# ------------------------------------------------------------------------------ fake quantisation (STE)

class _FakeQuantizeSTE(torch.autograd.Function):
    """``(clamp(round(x / s) + zp, lo, hi) - zp) * s`` with a straight-through gradient inside the range."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, lo, hi):
        q = torch.round(x / scale) + zero_point
        ctx.save_for_backward((q >= lo) & (q <= hi))
        return (torch.clamp(q, lo, hi) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x, scale, zero_point, lo, hi):
    """Fake quantisation of ``x`` (scale and zero point broadcast against it) with the STE gradient."""
    return _FakeQuantizeSTE.apply(x, scale, zero_point, lo, hi)


def activation_qparams(lo, hi):
    """(scale, zero point) as Python (float32-valued float, int) of a uint8 range for real values in
    ``[lo, hi]`` widened to include 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise DataError('activation range [%r, %r] is not finite: the calibration data produced inf or NaN'
                        % (lo, hi))
    if hi == lo:
        return 1.0, 0
    scale = float(torch.tensor((hi - lo) / (ACT_QMAX - ACT_QMIN), dtype=torch.float32))
    zp = int(torch.clamp(torch.round(torch.tensor(-lo / scale, dtype=torch.float64)), ACT_QMIN, ACT_QMAX))
    return scale, zp


def weight_scales(w, bits):
    """Per-output-channel (axis 0) float32 scales ``max|w_c| / qmax`` of weight ``w`` (1 for zero channels)."""
    qmax = weight_qmax(bits)
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(1).to(torch.float32)
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


class ActivationQuantizer(nn.Module):
    """uint8 per-tensor fake quantiser with a range observer.

    ``observing`` updates ``[min_val, max_val]`` from each input (running min/max, or an exponential moving
    average with ``averaging`` when set, as during fine-tuning); ``enabled`` applies the fake quantisation
    (off during calibration: the observers see float activations)."""

    def __init__(self):
        super().__init__()
        self.register_buffer('min_val', torch.tensor(float('inf')))
        self.register_buffer('max_val', torch.tensor(float('-inf')))
        self.register_buffer('scale', torch.tensor(1.0))
        self.register_buffer('zero_point', torch.tensor(0.0))
        self.observing = False
        self.averaging = None
        self.enabled = False
        self.exporting = False

    @property
    def calibrated(self):
        return bool(self.min_val <= self.max_val)

    @torch.no_grad()
    def observe(self, x):
        lo, hi = x.detach().min().float(), x.detach().max().float()
        if self.averaging is not None and self.calibrated:
            c = self.averaging
            self.min_val += c * (lo - self.min_val)
            self.max_val += c * (hi - self.max_val)
        else:
            self.min_val.copy_(torch.minimum(self.min_val, lo))
            self.max_val.copy_(torch.maximum(self.max_val, hi))
        s, zp = activation_qparams(self.min_val, self.max_val)
        self.scale.fill_(s)
        self.zero_point.fill_(zp)

    def quantize(self, x):
        """The fake quantisation alone (no observation)."""
        if not self.enabled:
            return x
        if self.exporting:
            return torch.fake_quantize_per_tensor_affine(x, float(self.scale), int(self.zero_point),
                                                         ACT_QMIN, ACT_QMAX)
        return fake_quantize(x, self.scale, self.zero_point, ACT_QMIN, ACT_QMAX)

    def forward(self, x):
        if self.observing:
            self.observe(x)
        return self.quantize(x)

    def extra_repr(self):
        if not self.calibrated:
            return 'uncalibrated'
        return 'range=[%.4g, %.4g], scale=%.4g, zero_point=%d' % (
            float(self.min_val), float(self.max_val), float(self.scale), int(self.zero_point))


class SharedQuantizer(nn.Module):
    """Re-applies another :class:`ActivationQuantizer`'s parameters (after a max pool or a nearest upsample,
    which only select values: exact, and it gives the exported graph its Q/DQ pair after the op)."""

    def __init__(self, source):
        super().__init__()
        self.source = source

    def forward(self, x):
        return self.source.quantize(x)


class WeightQuantizer(nn.Module):
    """int8 symmetric per-output-channel fake quantiser of ``bits`` bits (scales from the current weight);
    ``enabled`` like :class:`ActivationQuantizer`'s."""

    def __init__(self, bits):
        super().__init__()
        self.bits = bits
        self.qmax = weight_qmax(bits)
        self.enabled = False
        self.exporting = False

    def integers(self, w):
        """(int8 weight, float32 scales) of ``w``: ``q = clamp(round(w / s_c), -qmax, qmax)``."""
        s = weight_scales(w, self.bits)
        shape = (-1,) + (1,) * (w.dim() - 1)
        q = torch.clamp(torch.round(w.detach().float() / s.reshape(shape)), -self.qmax, self.qmax)
        return q.to(torch.int8), s

    def start_export(self, w):
        """Export form: the weight is replaced by its exactly representable value ``s_c * q`` and its
        scales, held as buffers (until :meth:`end_export`) so that they become initializers of the ONNX file."""
        q, s = self.integers(w)
        shape = (-1,) + (1,) * (w.dim() - 1)
        self.register_buffer('export_weight', q.float() * s.reshape(shape))
        self.register_buffer('export_scale', s)
        self.register_buffer('export_zero_point', torch.zeros(len(s), dtype=torch.int32))
        self.exporting = True

    def end_export(self):
        for name in ('export_weight', 'export_scale', 'export_zero_point'):
            delattr(self, name)
        self.exporting = False

    def forward(self, w):
        if self.exporting:
            return torch.fake_quantize_per_channel_affine(self.export_weight, self.export_scale,
                                                          self.export_zero_point, 0, -128, 127)
        if not self.enabled:
            return w
        s = weight_scales(w, self.bits)
        shape = (-1,) + (1,) * (w.dim() - 1)
        return fake_quantize(w, s.reshape(shape), 0.0, -self.qmax, self.qmax)

    def extra_repr(self):
        return 'bits=%d, range=[%d, %d]' % (self.bits, -self.qmax, self.qmax)


class QuantConv2d(nn.Module):
    """A ``Conv2d`` whose weight is fake-quantised (the convolution module is kept as ``conv``)."""

    def __init__(self, conv, bits):
        super().__init__()
        self.conv = conv
        self.weight_quantizer = WeightQuantizer(bits)

    def forward(self, x):
        return self.conv._conv_forward(x, self.weight_quantizer(self.conv.weight), self.conv.bias)


class QuantLinear(nn.Module):
    """A ``Linear`` whose weight is fake-quantised (the layer is kept as ``linear``)."""

    def __init__(self, linear, bits):
        super().__init__()
        self.linear = linear
        self.weight_quantizer = WeightQuantizer(bits)

    def forward(self, x):
        return F.linear(x, self.weight_quantizer(self.linear.weight), self.linear.bias)


def _weighted_layers(model):
    return [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]


def activation_quantizers(model):
    """Every :class:`ActivationQuantizer` of a prepared model."""
    return [m for m in model.modules() if isinstance(m, ActivationQuantizer)]


# ------------------------------------------------------------------------------------------ tracing

def _known_length(node):
    """Number of results of a split / chunk / unbind node when the call fixes it, else None."""
    def arg(i, key):
        return node.args[i] if len(node.args) > i else node.kwargs.get(key)

    if node.op == 'call_method' and node.target == 'split' or node.op == 'call_function' \
            and node.target is torch.split:
        sizes = arg(1, 'split_size_or_sections' if node.op == 'call_function' else 'split_size')
        return len(sizes) if isinstance(sizes, (tuple, list)) else None
    if node.op == 'call_method' and node.target == 'chunk' or node.op == 'call_function' \
            and node.target is torch.chunk:
        chunks = arg(1, 'chunks')
        return chunks if isinstance(chunks, int) else None
    return None


class _Proxy(fx.Proxy):
    """An FX proxy that can be iterated (``list(x.split((a, b), 1))``) when the number of parts is fixed."""

    def __len__(self):
        n = _known_length(self.node)
        return super().__len__() if n is None else n

    def __iter__(self):
        n = _known_length(self.node)
        return super().__iter__() if n is None else iter([self[i] for i in range(n)])


class _Tracer(fx.Tracer):
    def proxy(self, node):
        return _Proxy(node, self)


def _trace(model):
    try:
        graph = _Tracer().trace(model)
    except Exception as e:      # FX raises several types (TraceError, RuntimeError, TypeError...)
        raise ModelError('cannot trace %s for quantization-aware training with torch.fx (%s: %s); the '
                         'forward must have static control flow - wrap data-dependent parts in a leaf '
                         'module or keep them outside the prepared model'
                         % (type(model).__name__, type(e).__name__, e)) from None
    return fx.GraphModule(model, graph, class_name=type(model).__name__ + 'QAT')


# ------------------------------------------------------------------------------------ graph rewriting

_CLAMP_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
_CLAMP_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.hardtanh}
_UNARY_MODULES = _CLAMP_MODULES + (nn.SiLU, nn.Sigmoid, nn.Hardswish, nn.Hardsigmoid, nn.LeakyReLU, nn.Tanh)
_UNARY_FUNCTIONS = _CLAMP_FUNCTIONS | {F.silu, torch.sigmoid, F.sigmoid, torch.tanh, F.hardswish,
                                       F.hardsigmoid, F.leaky_relu}
_UNARY_METHODS = {'relu', 'sigmoid', 'tanh'}
_BINARY_FUNCTIONS = {operator.add, torch.add, operator.mul, torch.mul}
_BINARY_METHODS = {'add', 'mul'}
_CAT_FUNCTIONS = {torch.cat, torch.concat}
_AVERAGE_MODULES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)
_AVERAGE_FUNCTIONS = {F.adaptive_avg_pool2d, F.avg_pool2d}
_SELECT_MODULES = (nn.MaxPool2d, nn.UpsamplingNearest2d)
_SELECT_FUNCTIONS = {F.max_pool2d}
_PASS_MODULES = (nn.Flatten, nn.Dropout, nn.Identity, nn.Unflatten)
_PASS_FUNCTIONS = {torch.flatten, torch.reshape, operator.getitem, torch.squeeze, torch.unsqueeze,
                   torch.transpose, torch.permute, torch.split, torch.chunk, F.dropout}
_PASS_METHODS = {'view', 'reshape', 'flatten', 'split', 'chunk', 'transpose', 'permute', 'contiguous',
                 'squeeze', 'unsqueeze', '__getitem__'}


def _is(node, modules, functions=(), methods=(), gm=None):
    if node.op == 'call_module':
        return isinstance(gm.get_submodule(node.target), modules)
    if node.op == 'call_function':
        return node.target in functions
    if node.op == 'call_method':
        return node.target in methods
    return False


def _is_nearest_upsample(node, gm):
    if node.op == 'call_module':
        m = gm.get_submodule(node.target)
        return isinstance(m, nn.Upsample) and m.mode == 'nearest'
    if node.op == 'call_function' and node.target is F.interpolate:
        return node.kwargs.get('mode', 'nearest') == 'nearest'
    return False


def _fold_batch_norms(gm):
    """Conv2d -> BatchNorm2d and Linear -> BatchNorm1d pairs (the batch norm the only reader) become one
    layer: ``W' = W * g``, ``b' = (b - mean) * g + beta`` with ``g = gamma / sqrt(var + eps)`` per output
    channel (``torch.nn.utils.fusion``, eval-mode statistics)."""
    for node in list(gm.graph.nodes):
        if node.op != 'call_module' or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        bn = gm.get_submodule(node.target)
        prev = node.args[0]
        if prev.op != 'call_module' or len(prev.users) != 1:
            continue
        layer = gm.get_submodule(prev.target)
        if isinstance(bn, nn.BatchNorm2d) and type(layer) is nn.Conv2d:
            fused = fuse_conv_bn_eval(layer.eval(), bn.eval())
        elif isinstance(bn, nn.BatchNorm1d) and type(layer) is nn.Linear:
            fused = fuse_linear_bn_eval(layer.eval(), bn.eval())
        else:
            continue
        _set_submodule(gm, prev.target, fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()


def _set_submodule(gm, target, module):
    parent, _, name = target.rpartition('.')
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _module_path(node):
    if node.op == 'call_module':
        return node.target
    stack = node.meta.get('nn_module_stack') or {}
    return next(reversed(stack), '') if stack else ''


def _matches(node, patterns):
    path = _module_path(node)
    for p in patterns:
        if fnmatch.fnmatchcase(node.name, p):
            return True
        if path and (path == p or path.startswith(p + '.') or fnmatch.fnmatchcase(path, p)):
            return True
    return False


class _Rewriter:
    """Inserts the quantisers into a traced, BN-folded graph module (see the module docstring)."""

    def __init__(self, gm, bits, keep_float):
        self.gm, self.bits, self.keep_float = gm, bits, tuple(keep_float)
        self.quantizer = {}        # node -> the ActivationQuantizer its value is on (None: float)
        self.fused_act = set()     # clamp activations whose output quantiser also stands for the layer's
        self.optional = set()      # quantiser nodes that only serve int8 consumers (removed without one)
        self.optional_act = set()  # fused activations of layers whose output quantiser is optional
        self.count = 0

    def _add_module(self, base, module):
        name = base.replace('.', '_')
        while hasattr(self.gm, name):
            self.count += 1
            name = '%s_%d' % (base.replace('.', '_'), self.count)
        self.gm.add_submodule(name, module)
        return name

    def _insert_after(self, node, module, base):
        name = self._add_module(base, module)
        with self.gm.graph.inserting_after(node):
            new = self.gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
        return new

    def quantize_output(self, node, source=None, optional=False):
        """Put a new quantiser (or a :class:`SharedQuantizer` of ``source``) on ``node``'s value;
        ``optional``: only kept when an int8 layer reads the value (:meth:`prune`)."""
        if source is None:
            q = ActivationQuantizer()
            new = self._insert_after(node, q, node.name + '_fq')
        else:
            q = source
            new = self._insert_after(node, SharedQuantizer(source), node.name + '_fq')
        self.quantizer[new] = q
        self.quantizer[node] = None
        if optional:
            self.optional.add(new)
        return new

    def ensure_quantized(self, value):
        if isinstance(value, fx.Node) and self.quantizer.get(value) is None:
            self.quantize_output(value)

    def _fusable_clamp(self, node):
        """The ReLU / ReLU6 / Hardtanh that is the only reader of ``node``, or None."""
        users = list(node.users)
        if len(users) != 1:
            return None
        act = users[0]
        if act.args and act.args[0] is node and not _matches(act, self.keep_float) \
                and _is(act, _CLAMP_MODULES, _CLAMP_FUNCTIONS, {'relu'}, self.gm):
            return act
        return None

    def _layer_output(self, node, optional=False):
        act = self._fusable_clamp(node)
        if act is not None:
            self.fused_act.add(act)
            if optional:
                self.optional_act.add(act)
            self.quantizer[node] = None
        else:
            self.quantize_output(node, optional=optional)

    def _tensor_args(self, node):
        return [a for a in node.args if isinstance(a, fx.Node)]

    def run(self):
        gm = self.gm
        for node in list(gm.graph.nodes):
            self.quantizer.setdefault(node, None)
            if node.op in ('placeholder', 'output', 'get_attr'):
                continue
            x = node.args[0] if node.args else None
            xq = self.quantizer.get(x) if isinstance(x, fx.Node) else None
            pass_through = _is(node, _PASS_MODULES, _PASS_FUNCTIONS, _PASS_METHODS, gm)
            if pass_through:
                self.quantizer[node] = xq
                continue
            if _matches(node, self.keep_float):
                continue
            if node.op == 'call_module' and type(gm.get_submodule(node.target)) in (nn.Conv2d, nn.Linear):
                layer = gm.get_submodule(node.target)
                wrapped = QuantConv2d(layer, self.bits) if isinstance(layer, nn.Conv2d) \
                    else QuantLinear(layer, self.bits)
                _set_submodule(gm, node.target, wrapped)
                self.ensure_quantized(x)
                self._layer_output(node)
            elif node in self.fused_act:
                self.quantize_output(node, optional=node in self.optional_act)
            elif _is(node, (), _BINARY_FUNCTIONS, _BINARY_METHODS, gm) and len(self._tensor_args(node)) == 2:
                for a in self._tensor_args(node):
                    self.ensure_quantized(a)
                self._layer_output(node, optional=True)
            elif _is(node, (), _CAT_FUNCTIONS, (), gm) and isinstance(x, (list, tuple)) \
                    and all(isinstance(a, fx.Node) for a in x):
                for a in x:
                    self.ensure_quantized(a)
                self.quantize_output(node, optional=True)
            elif _is(node, _AVERAGE_MODULES, _AVERAGE_FUNCTIONS, (), gm):
                self.ensure_quantized(x)
                self.quantize_output(node, optional=True)
            elif _is(node, _SELECT_MODULES, _SELECT_FUNCTIONS, (), gm) or _is_nearest_upsample(node, gm):
                if xq is not None:
                    self.quantize_output(node, source=xq, optional=True)
            elif _is(node, _UNARY_MODULES, _UNARY_FUNCTIONS, _UNARY_METHODS, gm) or (
                    _is(node, (), _BINARY_FUNCTIONS, _BINARY_METHODS, gm) and len(self._tensor_args(node)) == 1):
                if xq is not None:      # a lookup table of a quantised value in the engine
                    self.quantize_output(node, optional=True)
        self.prune()
        gm.graph.lint()
        gm.recompile()
        return gm

    # -------------------------------------------------------------- quantisers nothing int8 reads
    def _call_of(self, node, types):
        return node.op == 'call_module' and isinstance(self.gm.get_submodule(node.target), types)

    def _transparent(self, node):
        """Nodes a quantised value flows through unchanged for this purpose: reshapes and the like, max
        pools / upsamples and their shared quantisers, fused clamps."""
        gm = self.gm
        return (_is(node, _PASS_MODULES, _PASS_FUNCTIONS, _PASS_METHODS, gm)
                or _is(node, _SELECT_MODULES, _SELECT_FUNCTIONS, (), gm) or _is_nearest_upsample(node, gm)
                or self._call_of(node, SharedQuantizer) or node in self.fused_act)

    def _read_by_int8(self, value):
        """True when an int8 layer of the engine would read ``value``: a quantised convolution / linear
        layer, or an op whose output is quantised (an Add, Concat, pool or lookup table)."""
        for user in value.users:
            if self._call_of(user, (QuantConv2d, QuantLinear, ActivationQuantizer)):
                return True
            if self._transparent(user):
                if self._read_by_int8(user):
                    return True
                continue
            for out in user.users:
                if self._call_of(out, ActivationQuantizer) or (
                        out in self.fused_act and any(self._call_of(o, ActivationQuantizer) for o in out.users)):
                    return True
        return False

    def prune(self):
        """Remove the optional quantisers (outputs of Add, Mul, Concat, pools and lookup-table
        activations) whose value no int8 layer reads - the tail of a network, e.g. a detection head's
        concatenation of box and class logits feeding a float decode: quantising it would only add
        error.  Last node first, so that removals propagate upwards."""
        gm = self.gm
        for node in reversed(list(gm.graph.nodes)):
            if node not in self.optional or self._read_by_int8(node):
                continue
            source = node.args[0]
            node.replace_all_uses_with(source)
            gm.graph.erase_node(node)
            delattr(gm, node.target)
            self.quantizer.pop(node, None)


def prepare_qat(model, weight_bits=8, keep_float=(), calibration=None):
    """A copy of ``model`` (an ``nn.Module``; left unchanged) ready for quantization-aware training: traced
    with ``torch.fx``, batch norms folded into the preceding convolutions / linear layers, fake quantisers
    inserted (module docstring).  ``weight_bits``: 8, 4 or 2 (ranges [-127, 127], [-7, 7], [-1, 1]);
    ``keep_float``: module paths (a prefix covers the submodules), ``fnmatch`` patterns of them, or FX node
    names left in float; ``calibration``: optional batches passed to :func:`calibrate`.

    The quantisers start uncalibrated and disabled (the model computes the BN-folded float function): call
    :func:`calibrate` before training or export.
    Returns an ``fx.GraphModule`` in eval mode."""
    weight_qmax(weight_bits)
    if not isinstance(model, nn.Module):
        raise ConfigError('prepare_qat needs a torch.nn.Module, got %s' % type(model).__name__)
    if isinstance(keep_float, str):
        keep_float = (keep_float,)
    model = copy.deepcopy(model).eval()
    gm = _trace(model)
    _fold_batch_norms(gm)
    gm = _Rewriter(gm, weight_bits, keep_float).run()
    if not _weighted_layers(gm):
        raise ModelError('%s has no Conv2d or Linear layer to quantize (outside keep_float=%r)'
                         % (type(model).__name__, list(keep_float)))
    gm.qat_weight_bits = weight_bits
    gm.eval()
    if calibration is not None:
        calibrate(gm, calibration)
    return gm


# ------------------------------------------------------------------------------------- calibration

def _check_prepared(model):
    if not activation_quantizers(model) or not _weighted_layers(model):
        raise ConfigError('expected a model returned by prepare_qat(), got %s with no quantizers'
                          % type(model).__name__)


def _inputs(batch):
    """The model input of a batch: the batch itself, or its first element for (inputs, targets) pairs."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return torch.as_tensor(x)


@torch.no_grad()
def calibrate(model, batches, progress=False):
    """Initialise every activation range from ``batches`` (iterable of input tensors/arrays, or of
    (inputs, targets) pairs): running min/max per quantiser of the activations of the model with its
    weights already quantised (at 4 or 2 bits the weights' rounding changes the activation ranges) and
    float activations.  Then the activation fake quantisation is switched on and the observers off.  The result is the post-training quantised model
    (PTQ with min/max ranges); fine-tuning (:func:`fine_tune`) makes it QAT.  Returns the model."""
    _check_prepared(model)
    qs = activation_quantizers(model)
    for q in qs:
        q.min_val.fill_(float('inf'))
        q.max_val.fill_(float('-inf'))
        q.observing, q.averaging, q.enabled = True, None, False
    for layer in _weighted_layers(model):
        layer.weight_quantizer.enabled = True
    was_training = model.training
    model.eval()
    n = 0
    bar = Progress('calibrate', len(batches) if hasattr(batches, '__len__') else None, enabled=progress)
    try:
        for batch in batches:
            model(_inputs(batch))
            n += 1
            bar.update(n)
    finally:
        bar.close()
        for q in qs:
            q.observing, q.enabled = False, True
        model.train(was_training)
    if n == 0:
        raise DataError('calibration got no batches; pass at least one input batch')
    missed = [name for name, m in model.named_modules() if isinstance(m, ActivationQuantizer) and not m.calibrated]
    if missed:
        raise ModelError('quantizers %s saw no data during calibration (not on the path the model runs?)'
                         % missed)
    return model


def freeze(model):
    """Stop every range observer: the scales and zero points stay as they are (call before the last
    epochs of fine-tuning and before export).  Returns the model."""
    _check_prepared(model)
    for q in activation_quantizers(model):
        q.observing = False
    return model


# ------------------------------------------------------------------------------------- fine-tuning

class OptimizerKind(Enum):
    SGD = 'sgd'          # momentum SGD
    ADAMW = 'adamw'


@dataclass
class FineTuneOptions:
    """Options of :func:`fine_tune`.

    epochs: passes over the data; lr: initial learning rate (cosine-annealed to 0 over the run);
    optimizer: SGD with ``momentum`` or AdamW, with ``weight_decay``; clip_grad_norm: clip the gradient
    norm (None: no clipping); freeze_epoch: epoch (0-based) from which the activation ranges are frozen
    (None: the last epoch; the ranges follow the data before, as an exponential moving average with
    ``averaging``); max_steps: stop after this many steps in all; time_limit_s: stop after the step that
    passes this many seconds (the learning-rate schedule then follows whichever runs out first)."""
    epochs: int = 3
    lr: float = 1e-3
    optimizer: OptimizerKind = OptimizerKind.SGD
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip_grad_norm: Optional[float] = None
    freeze_epoch: Optional[int] = None
    averaging: float = 0.01
    max_steps: Optional[int] = None
    time_limit_s: Optional[float] = None

    def check(self):
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError('FineTuneOptions.epochs must be an int >= 1, got %r' % (self.epochs,))
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError('FineTuneOptions.lr must be a positive number, got %r' % (self.lr,))
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError('FineTuneOptions needs 0 <= momentum < 1 and weight_decay >= 0, got %r, %r'
                              % (self.momentum, self.weight_decay))
        if self.freeze_epoch is not None and not 0 <= self.freeze_epoch <= self.epochs:
            raise ConfigError('FineTuneOptions.freeze_epoch must be in [0, epochs=%d], got %r'
                              % (self.epochs, self.freeze_epoch))
        if not 0 < self.averaging <= 1:
            raise ConfigError('FineTuneOptions.averaging must be in (0, 1], got %r' % (self.averaging,))
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError('FineTuneOptions.max_steps must be >= 1 or None, got %r' % (self.max_steps,))
        if not isinstance(self.optimizer, OptimizerKind):
            raise ConfigError('FineTuneOptions.optimizer must be an OptimizerKind (%s), got %r'
                              % (', '.join(k.name for k in OptimizerKind), self.optimizer))
        for name in ('clip_grad_norm', 'time_limit_s'):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError('FineTuneOptions.%s must be > 0 or None, got %r' % (name, v))


def fine_tune(model, batches, loss_fn, options=None, progress=False):
    """Quantization-aware fine-tuning of a calibrated model: minimise ``loss_fn(model(inputs), targets)``
    over ``batches`` (a re-iterable of (inputs, targets) pairs such as a DataLoader or a list, or a callable
    returning a fresh iterable per epoch) with the fake quantisers on; the activation ranges follow the data
    (moving average) until ``options.freeze_epoch``'s share of the run, then stay frozen.  The learning
    rate follows a cosine from ``options.lr`` to 0 over the steps (or the time limit, whichever runs out
    first; known when ``batches`` has a length or ``max_steps`` is set).  Returns the mean loss of each
    epoch run."""
    options = options or FineTuneOptions()
    options.check()
    _check_prepared(model)
    qs = activation_quantizers(model)
    if not all(q.calibrated for q in qs):
        raise ConfigError('calibrate(model, batches) before fine_tune: the activation ranges are not set')
    freeze_at = (options.epochs - 1 if options.freeze_epoch is None else options.freeze_epoch) / options.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    if options.optimizer is OptimizerKind.SGD:
        opt = torch.optim.SGD(params, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    per_epoch = len(batches) if hasattr(batches, '__len__') else None
    total = options.epochs * per_epoch if per_epoch else None
    if options.max_steps is not None:
        total = min(total, options.max_steps) if total else options.max_steps
    bar = Progress('fine-tune', total or options.epochs, enabled=progress)
    losses, step, stop = [], 0, False
    start = time.perf_counter()

    def fraction_done():
        done = step / total if total else 0.0
        if options.time_limit_s is not None:
            done = max(done, (time.perf_counter() - start) / options.time_limit_s)
        return min(1.0, done)

    model.train()
    for q in qs:
        q.enabled, q.averaging = True, options.averaging
    try:
        for epoch in range(options.epochs):
            epoch_loss, n = 0.0, 0
            for batch in (batches() if callable(batches) else batches):
                if options.max_steps is not None and step >= options.max_steps:
                    stop = True
                    break
                done = fraction_done()
                for q in qs:
                    q.observing = done < freeze_at
                if total or options.time_limit_s is not None:
                    for g in opt.param_groups:
                        g['lr'] = options.lr * 0.5 * (1 + math.cos(math.pi * done))
                inputs, targets = batch
                loss = loss_fn(model(torch.as_tensor(inputs)), targets)
                if not torch.isfinite(loss):
                    raise DataError('fine-tuning loss became %s at step %d; lower FineTuneOptions.lr'
                                    % (float(loss), step))
                opt.zero_grad()
                loss.backward()
                if options.clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, options.clip_grad_norm)
                opt.step()
                epoch_loss += float(loss.detach())
                n += 1
                step += 1
                if total:
                    bar.update(step, extra='loss %.4f' % float(loss.detach()))
                if options.time_limit_s is not None and time.perf_counter() - start > options.time_limit_s:
                    stop = True
                    break
            if n == 0 and step == 0:
                raise DataError('fine-tuning got no batches')
            if n:
                losses.append(epoch_loss / n)
            if not total and n:
                bar.update(epoch + 1, extra='loss %.4f' % losses[-1])
            if stop or n == 0:
                break
    finally:
        bar.close()
        freeze(model)
        model.eval()
    return losses


# ------------------------------------------------------------------------------------------- export

class _Exporting:
    """Context: quantisers in export form (QDQ-exportable PyTorch ops, weights as exact constants)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        for layer in _weighted_layers(self.model):
            w = layer.conv.weight if isinstance(layer, QuantConv2d) else layer.linear.weight
            layer.weight_quantizer.start_export(w)
        for q in activation_quantizers(self.model):
            q.exporting = True
        return self.model

    def __exit__(self, *exc):
        for layer in _weighted_layers(self.model):
            layer.weight_quantizer.end_export()
        for q in activation_quantizers(self.model):
            q.exporting = False


def _fold_weight_quantize(proto):
    """Replace each QuantizeLinear of a constant (the exported weights) by its int8 result, as an
    initializer read by the DequantizeLinear: ``q = saturate(round_half_to_even(w / s) + zp)`` in float32
    (ONNX semantics; exact here since ``w = s * q``).  The file then holds int8 weights (a quarter of the
    float size) like the QDQ models of ONNX Runtime's quantizer."""
    import numpy as np
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    consts = {}
    for node in proto.graph.node:       # the exporter shares equal initializers through Identity nodes
        if node.op_type == 'Identity' and node.input[0] in inits:
            consts[node.output[0]] = inits[node.input[0]]
    consts.update(inits)
    readers = {}
    for node in proto.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    kept = []
    for node in proto.graph.node:
        ins = list(node.input)
        if node.op_type != 'QuantizeLinear' or len(ins) < 3 or not all(i in consts for i in ins[:3]):
            kept.append(node)
            continue
        w = numpy_helper.to_array(consts[ins[0]]).astype(np.float32)
        s = numpy_helper.to_array(consts[ins[1]]).astype(np.float32)
        zp = numpy_helper.to_array(consts[ins[2]])
        axis = next((a.i for a in node.attribute if a.name == 'axis'), 1)
        shape = [1] * w.ndim
        if s.size > 1:
            shape[axis] = -1
        info = np.iinfo(zp.dtype)
        q = np.rint(w / s.reshape(shape)).astype(np.float64) + zp.astype(np.float64).reshape(shape)
        q = np.clip(q, info.min, info.max).astype(zp.dtype)
        proto.graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        readers[ins[0]] -= 1
    if len(kept) != len(proto.graph.node):
        unused = {n for n, t in inits.items() if readers.get(n, 0) <= 0 and n not in
                  {o.name for o in proto.graph.output}}
        del proto.graph.node[:]
        proto.graph.node.extend(kept)
        survivors = [t for t in proto.graph.initializer if t.name not in unused]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(survivors)
    return proto


def export_qdq(model, path, example_input, input_names=('images',), output_names=('output',),
               opset=DEFAULT_OPSET, dynamic_batch=False, int8_weights=True):
    """Write the prepared, calibrated ``model`` as a QDQ ONNX model to ``path`` (a file name or a binary
    file object; folders are created) for ``example_input`` (a tensor or array of the input shape, or a
    tuple of them).  Returns ``path``.  Uses ``torch.onnx.export(..., dynamo=False)``: see the module
    docstring for the graph written.  ``int8_weights``: store the weights as int8 initializers (the
    exporter's QuantizeLinear of each float weight folded, :func:`_fold_weight_quantize`); False keeps the
    file exactly as PyTorch wrote it."""
    _check_prepared(model)
    missing = [n for n, m in model.named_modules() if isinstance(m, ActivationQuantizer) and not m.calibrated]
    if missing:
        raise ConfigError('calibrate(model, batches) before export_qdq: quantizers %s have no range'
                          % missing[:5])
    if not isinstance(opset, int) or opset < 13:
        raise ConfigError('opset must be an int >= 13 (per-channel QuantizeLinear), got %r' % (opset,))
    args = tuple(torch.as_tensor(x) for x in example_input) if isinstance(example_input, (tuple, list)) \
        else (torch.as_tensor(example_input),)
    if isinstance(path, (str, os.PathLike)):
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
    kwargs = {}
    if dynamic_batch:
        kwargs['dynamic_axes'] = {n: {0: 'batch'} for n in list(input_names) + list(output_names)}
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with _Exporting(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')     # the TorchScript exporter's deprecation notice
            torch.onnx.export(model, args, buffer, input_names=list(input_names),
                              output_names=list(output_names), opset_version=opset, dynamo=False,
                              do_constant_folding=True, **kwargs)
    finally:
        model.train(was_training)
    data = buffer.getvalue()
    if int8_weights:
        import onnx
        proto = _fold_weight_quantize(onnx.load_from_string(data))
        proto.producer_name = 'qvision_ros.quantization.qat'
        onnx.checker.check_model(proto)
        data = proto.SerializeToString()
    if isinstance(path, (str, os.PathLike)):
        with open(path, 'wb') as f:
            f.write(data)
    else:
        path.write(data)
    return path


def export_qdq_bytes(model, example_input, **kwargs):
    """:func:`export_qdq` into memory: the ONNX file as bytes."""
    f = io.BytesIO()
    export_qdq(model, f, example_input, **kwargs)
    return f.getvalue()
