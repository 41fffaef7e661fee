"""Kernel benchmark of qvision_kernels: one layer or kernel call at a time, ours against the alternatives.

A script, not a test::

    python -m qvision_ros.bench_kernels --threads 1 2 --repeat 20 [--layers c2f] [--json out.json]
    qvision-bench-kernels ...                       # the same, as installed by setup.py

For every layer (the papers' layer and the convolutions of a YOLOv8n-style detector at 320x320) and every
thread count it prints the median time of:

* ``ours i8``     - :class:`qvision_kernels.conv.QConv2d`, prepared once, ``out=`` preallocated (uint8 NHWC);
* ``ORT i8``      - ONNX Runtime, one ``QLinearConv`` node, uint8 NCHW in and out (the standard ONNX graph);
* ``ORT i8 nhwc`` - ONNX Runtime's own channels-last kernel (``com.microsoft.QLinearConv``,
  ``channels_last=1``).  With ``ORT_ENABLE_ALL`` ORT rewrites the NCHW graph into exactly this node between
  two Transposes; inside a whole model those Transposes cancel, so this column is ORT's per-layer cost there;
* ``ORT f32``     - ONNX Runtime, the same layer as a float ``Conv`` node (float32 NCHW);
* ``NumPy f32``   - :func:`qvision_kernels.reference.conv2d_f32_im2col`, the papers' NumPy baseline;
* ``NumPy i8``    - :func:`qvision_kernels.reference.conv2d_int8` (the papers' layer only: it is slow);
* ``ours f32``    - ``qvision_kernels.fconv.FConv2d``;

then the achieved GOPS (2 * MACs / time) and the speed of ours int8 relative to each other column
(> 1 means ours is faster).  ONNX Runtime runs with ``intra_op_num_threads`` = the thread count,
``inter_op_num_threads=1``, ``ORT_SEQUENTIAL`` and ``ORT_ENABLE_ALL``; its inputs and outputs are bound
once with IOBinding, so that neither side pays for allocating its output in the timed loop.  Without
onnxruntime (or onnx) the ORT columns show n/a.

Before timing, each layer checks once that ours and ORT agree (max abs difference in LSB, reported in the
``max|d|`` column; a benchmark reports it and does not raise).

Depthwise convolutions (``DW_LAYERS``, MobileNetV2-style 3x3, ``QConv2d`` with groups == C) get a table of
their own with the same columns (ORT: ``QLinearConv`` / ``Conv`` with group=C).

Every other kernel (``OPS``: ``QLinear`` / ``FLinear``, max / average / global average pooling, add, mul,
concat, nearest upsampling, lookup tables; :data:`OP_FAMILIES` says what each one runs) gets a third
table, with the columns ``ours i8``, ``ORT i8`` (the standard ONNX graph: NCHW where the op has a layout,
our NHWC tensors for element-wise ops), ``ORT #2`` (ORT's channels-last variant, or QGemm for the fully
connected layer), ``NumPy i8`` (our NumPy reference; ``np.take`` for tables), ``ours f32``, ``ORT f32``
and ``NumPy f32``, the bytes moved (and MACs), three checks (``max|d| ORT`` and ``max|d| ref`` in LSB,
``f32 max|d|``) and the speed of ours relative to each column.  Quantisation parameters come from the
ranges of float data (SiLU outputs, sigmoid gates).  Inputs in another layout are transposed once, outside
the timed loop.  A column the family has not shows '-'; a column that could not run shows n/a (an ORT op
refusing a graph logs why and the reason is printed under the table, never a crash).
"""
import argparse
import ctypes
import functools
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

import qvision_kernels
from qvision_kernels import (add_f32, add_int8, avg_pool2d, concat_f32, concat_int8, global_avg_pool2d, lut_apply,
                             make_lut, max_pool2d, mul_f32, mul_int8, requant, upsample_nearest)
from qvision_kernels.conv import QConv2d, QLinear
from qvision_kernels.fconv import FConv2d, FLinear
from qvision_kernels.reference import conv2d_f32_im2col, conv2d_int8, conv_output_size, gemm_int8, linear_f32
from qvision_kernels.reference import eltwise as ref_eltwise
from qvision_kernels.reference import pool as ref_pool
from qvision_kernels.reference.pool import pool_output_size

# Column keys, in table order, with their headers.
COLUMNS = (
    ('ours_int8', 'ours i8'),
    ('ort_int8', 'ORT i8'),
    ('ort_int8_nhwc', 'ORT i8 nhwc'),
    ('ort_fp32', 'ORT f32'),
    ('numpy_fp32_im2col', 'NumPy f32'),
    ('numpy_int8', 'NumPy i8'),
    ('ours_fp32', 'ours f32'),
)
# Speed-up columns: ours int8 against these.
SPEEDUPS = (
    ('ort_int8', 'vs ORT i8'),
    ('ort_int8_nhwc', 'vs ORT nhwc'),
    ('ort_fp32', 'vs ORT f32'),
    ('numpy_fp32_im2col', 'vs NumPy f32'),
    ('ours_fp32', 'vs ours f32'),
)


@dataclass(frozen=True)
class LayerSpec:
    """One convolution layer (batch 1, square kernel, symmetric padding ``kernel // 2``)."""
    name: str
    height: int
    width: int
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    numpy_int8: bool = False   # also time the (slow) NumPy int8 reference
    depthwise: bool = False    # groups == in_channels == out_channels

    @property
    def padding(self):
        return self.kernel // 2

    @property
    def groups(self):
        return self.in_channels if self.depthwise else 1

    @property
    def family(self):
        return 'depthwise' if self.depthwise else 'conv'

    def output_hw(self):
        p = self.padding
        return (conv_output_size(self.height, self.kernel, self.stride, p, p, 1),
                conv_output_size(self.width, self.kernel, self.stride, p, p, 1))

    @property
    def macs(self):
        ho, wo = self.output_hw()
        return ho * wo * self.out_channels * self.kernel * self.kernel * self.in_channels // self.groups

    def describe(self):
        ho, wo = self.output_hw()
        return '%dx%dx%d->%dx%dx%d/k%ds%d%s' % (self.height, self.width, self.in_channels, ho, wo,
                                               self.out_channels, self.kernel, self.stride,
                                               'dw' if self.depthwise else '')


# The papers' layer (paper 1, table 2) and the convolutions of a YOLOv8n-style detector at 320x320.
LAYERS = (
    LayerSpec('paper_3x3_128', 128, 128, 3, 16, 3, 1, numpy_int8=True),
    LayerSpec('stem_3x3s2_320', 320, 320, 3, 16, 3, 2),
    LayerSpec('down1_3x3s2_160', 160, 160, 16, 32, 3, 2),
    LayerSpec('c2f1_1x1_80', 80, 80, 32, 32, 1),
    LayerSpec('c2f1_3x3_80', 80, 80, 32, 32, 3),
    LayerSpec('down2_3x3s2_80', 80, 80, 32, 64, 3, 2),
    LayerSpec('c2f2_1x1_40', 40, 40, 64, 64, 1),
    LayerSpec('c2f2_3x3_40', 40, 40, 64, 64, 3),
    LayerSpec('down3_3x3s2_40', 40, 40, 64, 128, 3, 2),
    LayerSpec('c2f3_1x1_20', 20, 20, 128, 128, 1),
    LayerSpec('c2f3_3x3_20', 20, 20, 128, 128, 3),
    LayerSpec('down4_3x3s2_20', 20, 20, 128, 256, 3, 2),
    LayerSpec('c2f4_1x1_10', 10, 10, 256, 256, 1),
    LayerSpec('c2f4_3x3_10', 10, 10, 256, 256, 3),
    LayerSpec('neck_1x1_20', 20, 20, 384, 128, 1),
    LayerSpec('head_3x3_40', 40, 40, 64, 80, 3),
)

# Depthwise 3x3 convolutions of MobileNetV2-style blocks (QConv2d with groups == C), in a table of their own.
DW_LAYERS = (
    LayerSpec('dw3x3_80x80x96', 80, 80, 96, 96, 3, 1, numpy_int8=True, depthwise=True),
    LayerSpec('dw3x3s2_40x40x144', 40, 40, 144, 144, 3, 2, numpy_int8=True, depthwise=True),
    LayerSpec('dw3x3_20x20x384', 20, 20, 384, 384, 3, 1, numpy_int8=True, depthwise=True),
)


class QuantLayer:
    """Random but realistic quantised data of one layer, and its float (dequantised) twin.

    Weights come from a float convolution (He-normal) quantised per output channel, symmetric, to
    [-127, 127]; the input is uint8 around a zero point near 128 over 0..255; the output scale and zero
    point come from the range of the float output, so that the outputs use the whole uint8 range.
    """

    def __init__(self, spec, rng):
        self.spec = spec
        k, c, oc = spec.kernel, spec.in_channels, spec.out_channels
        cg = c // spec.groups
        self.stride = (spec.stride, spec.stride)
        self.pads = (spec.padding,) * 4
        w_real = rng.standard_normal((oc, k, k, cg)).astype(np.float32) * np.float32(np.sqrt(2.0 / (k * k * cg)))
        self.w_scale = (np.abs(w_real).reshape(oc, -1).max(axis=1) / 127).astype(np.float32)
        self.w_q = requant.quantize(w_real, self.w_scale[:, None, None, None], 0, np.int8)
        self.x_scale = np.float32(0.02)
        self.x_zp = int(rng.integers(118, 139))
        x = np.rint(rng.normal(self.x_zp, 45.0, (1, spec.height, spec.width, c)))
        self.x_q = np.clip(x, 0, 255).astype(np.uint8)
        bias_scale = np.float64(self.x_scale) * self.w_scale.astype(np.float64)
        self.bias_q = np.rint(rng.normal(0.0, 0.2, oc) / bias_scale).astype(np.int32)
        # The float twin: exactly the values the int8 layer represents.
        self.x_f = requant.dequantize(self.x_q, self.x_scale, self.x_zp)
        self.w_f = requant.dequantize(self.w_q, self.w_scale[:, None, None, None], 0)
        self.bias_f = (self.bias_q * bias_scale).astype(np.float32)
        y = conv2d_f32_im2col(self.x_f, self.w_f, self.bias_f, self.stride, self.pads, groups=spec.groups)
        lo, hi = min(float(y.min()), 0.0), max(float(y.max()), 0.0)
        self.y_scale = np.float32((hi - lo) / 255.0 if hi > lo else 1.0)
        self.y_zp = int(np.clip(np.rint(-lo / float(self.y_scale)), 0, 255))
        self.mult = requant.multiplier(self.x_scale, self.w_scale, self.y_scale)
        self.out_shape = (1,) + spec.output_hw() + (oc,)


# ---------------------------------------------------------------------------------------------------------
# Optional dependencies
# ---------------------------------------------------------------------------------------------------------

def _import_ort():
    """(onnxruntime, onnx) or None when either is not importable."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime, onnx


# Environment variables that change how the thread pools wait (shown in the report when set).
_ENV_SHOWN = ('QVISION_SPIN_US', 'QVISION_ISA', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS')


def _load_average():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(('model name', 'Model name')) or line.startswith('Hardware'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class _BlasThreads:
    """Sets the thread count of the OpenBLAS under NumPy (as threadpoolctl would), when it can."""

    _PREFIXES = ('openblas_', 'scipy_openblas_')
    _SUFFIXES = ('', '64_')

    def __init__(self):
        self._setters = []
        self._original = []
        try:
            with open('/proc/self/maps') as f:
                paths = {line.split()[-1] for line in f if 'openblas' in line.lower() and '.so' in line}
        except OSError:
            paths = set()
        for path in sorted(paths):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for prefix in self._PREFIXES:
                for suffix in self._SUFFIXES:
                    setter = getattr(lib, prefix + 'set_num_threads' + suffix, None)
                    getter = getattr(lib, prefix + 'get_num_threads' + suffix, None)
                    if setter is not None and getter is not None:
                        setter.argtypes = [ctypes.c_int]
                        setter.restype = None
                        getter.restype = ctypes.c_int
                        self._setters.append(setter)
                        self._original.append(getter())
                        break
                else:
                    continue
                break

    @property
    def controlled(self):
        return bool(self._setters)

    def set(self, n):
        for fn in self._setters:
            fn(int(n))

    def restore(self):
        for fn, n in zip(self._setters, self._original):
            fn(n)


# ---------------------------------------------------------------------------------------------------------
# ONNX Runtime models
# ---------------------------------------------------------------------------------------------------------

def _qlinearconv_model(layer, channels_last):
    """A one-node QLinearConv model: uint8 in/out, int8 OIHW weights per channel, int32 bias."""
    from onnx import TensorProto, helper, numpy_helper

    spec = layer.spec
    oc = spec.out_channels
    inits = [
        numpy_helper.from_array(np.array(layer.x_scale, np.float32), 'x_scale'),
        numpy_helper.from_array(np.array(layer.x_zp, np.uint8), 'x_zero_point'),
        numpy_helper.from_array(np.ascontiguousarray(layer.w_q.transpose(0, 3, 1, 2)), 'w'),
        numpy_helper.from_array(layer.w_scale.astype(np.float32), 'w_scale'),
        numpy_helper.from_array(np.zeros(oc, np.int8), 'w_zero_point'),
        numpy_helper.from_array(np.array(layer.y_scale, np.float32), 'y_scale'),
        numpy_helper.from_array(np.array(layer.y_zp, np.uint8), 'y_zero_point'),
        numpy_helper.from_array(layer.bias_q, 'bias'),
    ]
    attrs = dict(kernel_shape=[spec.kernel] * 2, strides=list(layer.stride), pads=list(layer.pads),
                 dilations=[1, 1], group=spec.groups)
    inputs = ['x', 'x_scale', 'x_zero_point', 'w', 'w_scale', 'w_zero_point', 'y_scale', 'y_zero_point',
              'bias']
    ho, wo = spec.output_hw()
    opsets = [helper.make_opsetid('', 13)]
    if channels_last:
        node = helper.make_node('QLinearConv', inputs, ['y'], domain='com.microsoft', channels_last=1, **attrs)
        opsets.append(helper.make_opsetid('com.microsoft', 1))
        x_shape, y_shape = [1, spec.height, spec.width, spec.in_channels], [1, ho, wo, oc]
    else:
        node = helper.make_node('QLinearConv', inputs, ['y'], **attrs)
        x_shape, y_shape = [1, spec.in_channels, spec.height, spec.width], [1, oc, ho, wo]
    graph = helper.make_graph([node], spec.name, [helper.make_tensor_value_info('x', TensorProto.UINT8, x_shape)],
                              [helper.make_tensor_value_info('y', TensorProto.UINT8, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 7
    return model.SerializeToString()


def _conv_f32_model(layer):
    """The same layer as a one-node float32 Conv model (NCHW)."""
    from onnx import TensorProto, helper, numpy_helper

    spec = layer.spec
    inits = [numpy_helper.from_array(np.ascontiguousarray(layer.w_f.transpose(0, 3, 1, 2)), 'w'),
             numpy_helper.from_array(layer.bias_f, 'bias')]
    node = helper.make_node('Conv', ['x', 'w', 'bias'], ['y'], kernel_shape=[spec.kernel] * 2,
                            strides=list(layer.stride), pads=list(layer.pads), dilations=[1, 1],
                            group=spec.groups)
    ho, wo = spec.output_hw()
    graph = helper.make_graph(
        [node], spec.name,
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, spec.in_channels, spec.height, spec.width])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, spec.out_channels, ho, wo])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 7
    return model.SerializeToString()


class _OrtRunner:
    """A session whose inputs and (preallocated) output are bound once; ``run()`` is the timed call.

    ``x`` is the array of the graph input 'x', or a dict {input name: array}; the output is 'y'."""

    def __init__(self, ort, model_bytes, x, out, threads):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(model_bytes, so, providers=['CPUExecutionProvider'])
        feeds = x if isinstance(x, dict) else {'x': x}
        self.feeds = {name: np.ascontiguousarray(a) for name, a in feeds.items()}
        self.out = out
        self.binding = self.sess.io_binding()
        for name, a in self.feeds.items():
            self.binding.bind_cpu_input(name, a)
        self.binding.bind_output('y', 'cpu', 0, out.dtype, list(out.shape), out.ctypes.data)

    def run(self):
        self.sess.run_with_iobinding(self.binding)


# ---------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------

def time_columns(fns, repeat, warmup, rounds, pause_s=0.05):
    """Median and minimum wall time in ms of each callable of ``fns`` (a dict), over ``repeat`` calls.

    The calls of one column are taken in ``rounds`` blocks, the columns alternating block by block, so
    that a burst of load from other processes on a shared machine hits every column alike.  Each block
    starts with a pause (the worker threads of the previous library - ours, ONNX Runtime's, OpenBLAS's -
    stop spinning and give the cores back) and ``warmup`` untimed calls.
    """
    samples = {key: [] for key in fns}
    rounds = max(1, min(rounds, repeat))
    for r in range(rounds):
        n = repeat // rounds + (1 if r < repeat % rounds else 0)
        for key, fn in fns.items():
            time.sleep(pause_s)
            for _ in range(warmup):
                fn()
            times = samples[key]
            for _ in range(n):
                t0 = time.perf_counter_ns()
                fn()
                times.append(time.perf_counter_ns() - t0)
    return {key: (statistics.median(v) / 1e6, min(v) / 1e6) for key, v in samples.items()}


def _max_abs_diff(a, b):
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def bench_layer(spec, threads, args, ort_mods, blas, log):
    """Time every column of one layer at each thread count; returns one result dict per thread count."""
    layer = QuantLayer(spec, np.random.default_rng(args.seed))
    groups = spec.groups
    ours = QConv2d(layer.w_q, layer.bias_q, layer.x_zp, layer.mult, layer.y_zp, stride=layer.stride,
                   padding=layer.pads, groups=groups, isa=args.isa)
    out_q = np.empty(layer.out_shape, np.uint8)
    ho, wo = spec.output_hw()
    oc = spec.out_channels
    x_nchw_q = np.ascontiguousarray(layer.x_q.transpose(0, 3, 1, 2))
    x_nchw_f = np.ascontiguousarray(layer.x_f.transpose(0, 3, 1, 2))

    # Correctness, once per layer (reported, never raised).
    ours(layer.x_q, out=out_q, num_threads=1)
    checks = {}
    if ort_mods is not None:
        ort = ort_mods[0]
        y = np.empty((1, oc, ho, wo), np.uint8)
        _OrtRunner(ort, _qlinearconv_model(layer, False), x_nchw_q, y, 1).run()
        checks['max_abs_diff_vs_ort_int8'] = _max_abs_diff(out_q, y.transpose(0, 2, 3, 1))
        y = np.empty(layer.out_shape, np.uint8)
        _OrtRunner(ort, _qlinearconv_model(layer, True), layer.x_q, y, 1).run()
        checks['max_abs_diff_vs_ort_int8_nhwc'] = _max_abs_diff(out_q, y)
    if spec.numpy_int8:
        ref = conv2d_int8(layer.x_q, layer.w_q, layer.bias_q, layer.x_zp, layer.mult, layer.y_zp,
                          layer.stride, layer.pads, groups=groups)
        checks['max_abs_diff_vs_numpy_int8'] = _max_abs_diff(out_q, ref)
    saturated = float(np.mean((out_q == 0) | (out_q == 255)))
    fconv = FConv2d(layer.w_f, layer.bias_f, stride=layer.stride, padding=layer.pads, groups=groups)
    out_f = np.empty(layer.out_shape, np.float32)

    results = []
    for t in threads:
        blas.set(t)
        fast = {'ours_int8': lambda: ours(layer.x_q, out=out_q, num_threads=t)}
        if ort_mods is not None:
            fast['ort_int8'] = _OrtRunner(ort, _qlinearconv_model(layer, False), x_nchw_q,
                                          np.empty((1, oc, ho, wo), np.uint8), t).run
            fast['ort_int8_nhwc'] = _OrtRunner(ort, _qlinearconv_model(layer, True), layer.x_q,
                                               np.empty(layer.out_shape, np.uint8), t).run
            fast['ort_fp32'] = _OrtRunner(ort, _conv_f32_model(layer), x_nchw_f,
                                          np.empty((1, oc, ho, wo), np.float32), t).run
        fast['ours_fp32'] = lambda: fconv(layer.x_f, out=out_f, num_threads=t)
        # The NumPy references are slow: fewer warm-up calls.
        slow = {'numpy_fp32_im2col': lambda: conv2d_f32_im2col(layer.x_f, layer.w_f, layer.bias_f,
                                                               layer.stride, layer.pads, groups=groups)}
        if spec.numpy_int8:
            slow['numpy_int8'] = lambda: conv2d_int8(layer.x_q, layer.w_q, layer.bias_q, layer.x_zp, layer.mult,
                                                     layer.y_zp, layer.stride, layer.pads, groups=groups)
        cols = time_columns(fast, args.repeat, args.warmup, args.rounds)
        cols.update(time_columns(slow, args.repeat, min(args.warmup, 1), args.rounds))
        del fast, slow
        median = {key: (cols[key][0] if key in cols else None) for key, _ in COLUMNS}
        minimum = {key: (cols[key][1] if key in cols else None) for key, _ in COLUMNS}
        results.append(_result(spec, t, ours.isa, median, minimum, checks, saturated))
        log('%-16s t=%d  ours i8 %.3f ms%s' % (
            spec.name, t, median['ours_int8'],
            '  ORT i8 %.3f ms' % median['ort_int8'] if median['ort_int8'] is not None else ''))
    return results


def _result(spec, threads, isa, median, minimum, checks, saturated):
    def gops(ms):
        return None if ms is None else 2.0 * spec.macs / (ms * 1e6)

    ours = median['ours_int8']
    speedup = {key: (None if median[key] is None else median[key] / ours) for key, _ in SPEEDUPS}
    return dict(layer=spec.name, family=spec.family, shape=spec.describe(),
                height=spec.height, width=spec.width, groups=spec.groups,
                in_channels=spec.in_channels, out_channels=spec.out_channels, kernel=spec.kernel,
                stride=spec.stride, padding=spec.padding, macs=spec.macs, threads=threads, isa=isa,
                median_ms=median, min_ms=minimum,
                gops={'ours_int8': gops(ours), 'ort_int8': gops(median['ort_int8']),
                      'ort_int8_nhwc': gops(median['ort_int8_nhwc'])},
                speedup_ours_int8=speedup, saturated_fraction=saturated, **checks)


# ---------------------------------------------------------------------------------------------------------
# The other kernels: fully connected, pooling, element-wise
# ---------------------------------------------------------------------------------------------------------

# Column keys of the table of the other kernels, in order, with their headers.  A family without such a
# column shows '-'; 'n/a' is a column that could not run (no onnxruntime, or an ORT op that refused the
# graph: the reason is printed under the table and kept in the JSON).
OP_COLUMNS = (
    ('ours_int8', 'ours i8'),
    ('ort_int8', 'ORT i8'),
    ('ort_int8_2', 'ORT #2'),
    ('numpy_int8', 'NumPy i8'),
    ('ours_fp32', 'ours f32'),
    ('ort_fp32', 'ORT f32'),
    ('numpy_fp32', 'NumPy f32'),
)
# Speed of ours int8 relative to these columns, then of ours fp32 relative to the fp32 alternatives.
OP_SPEEDUPS_INT8 = (
    ('ort_int8', 'vs ORT i8'),
    ('ort_int8_2', 'vs ORT #2'),
    ('numpy_int8', 'vs NumPy i8'),
    ('ours_fp32', 'vs ours f32'),
)
OP_SPEEDUPS_FP32 = (
    ('ort_fp32', 'f32 vs ORT f32'),
    ('numpy_fp32', 'f32 vs NumPy f32'),
)
_ORT_COLUMNS = ('ort_int8', 'ort_int8_2', 'ort_fp32')

# Per family: what ours is, and which ONNX Runtime graphs (one node unless said) the ORT columns run.
OP_FAMILIES = {
    'linear': ('QLinear (i8) / FLinear (f32): x [M, K], weight [N, K] per output channel, no bias '
               '(QLinearMatMul takes none)',
               'ORT i8: QLinearMatMul, b [K, N] int8 with per-column scales; #2: com.microsoft.QGemm '
               'transB=1; f32: Gemm transB=1; NumPy: reference gemm_int8 / linear_f32'),
    'maxpool': ('max_pool2d, uint8 (no requantisation) and float32',
                'ORT i8: MaxPool uint8 NCHW; #2: com.microsoft.NhwcMaxPool uint8 NHWC; f32: MaxPool NCHW'),
    'avgpool': ('avg_pool2d, uint8 requantised to its own output scale, count_include_pad=0',
                'ORT i8: com.microsoft.QLinearAveragePool NCHW; #2: the same with channels_last=1 (NHWC); '
                'f32: AveragePool NCHW'),
    'gap': ('global_avg_pool2d, uint8 requantised',
            'ORT i8: com.microsoft.QLinearGlobalAveragePool NCHW; #2: the same with channels_last=1 (NHWC); '
            'f32: GlobalAveragePool NCHW'),
    'add': ('add_int8, two inputs with their own scales, requantised to the output scale',
            'ORT i8: com.microsoft.QLinearAdd on our NHWC tensors (element-wise: layout-free); f32: Add'),
    'mul': ('mul_int8 (b as shown, broadcast when smaller)',
            'ORT i8: com.microsoft.QLinearMul on our NHWC tensors, same broadcast; f32: Mul'),
    'concat': ('concat_int8 along C of two inputs with their own scales (both requantised)',
               'ORT i8: com.microsoft.QLinearConcat NCHW, axis=1; #2: the same on NHWC, axis=3; '
               'f32: Concat NCHW axis=1'),
    'upsample': ('upsample_nearest x2, uint8 and float32',
                 'ORT i8: Resize nearest (asymmetric, floor) uint8 NCHW; #2: the same on NHWC (scales 1,2,2,1); '
                 'f32: Resize NCHW'),
    'lut': ('lut_apply of a make_lut table (DQ -> f -> Q); no float32 kernel of ours',
            'ORT i8: com.microsoft.QLinearSigmoid (silu: QLinearSigmoid at scale 1/255 then QLinearMul by x, '
            '2 nodes); NumPy i8: np.take(table, x); f32: Sigmoid (silu: x * Sigmoid(x)), NumPy f32 the same '
            'expression'),
}


@dataclass(frozen=True)
class OpSpec:
    """One call of a kernel other than the convolution (batch 1, NHWC; [M, K] for 'linear').

    ``other`` is N for 'linear', the channels of the second input for 'concat' and the shape of ``b`` for
    'mul' (None: ``a``'s shape); ``kernel``, ``stride``, ``padding`` are those of the pools; ``fn`` is the
    function of 'lut'.
    """
    name: str
    family: str
    shape: tuple
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    other: object = None
    fn: str = ''

    def output_shape(self):
        if self.family == 'linear':
            return (self.shape[0], self.other)
        n, h, w, c = self.shape
        if self.family in ('maxpool', 'avgpool'):
            p = self.padding
            return (n, pool_output_size(h, self.kernel, self.stride, p, p),
                    pool_output_size(w, self.kernel, self.stride, p, p), c)
        if self.family == 'gap':
            return (n, 1, 1, c)
        if self.family == 'concat':
            return (n, h, w, c + self.other)
        if self.family == 'upsample':
            return (n, 2 * h, 2 * w, c)
        return self.shape

    @property
    def macs(self):
        return self.shape[0] * self.shape[1] * self.other if self.family == 'linear' else 0

    @property
    def nbytes(self):
        """Bytes the uint8 kernel reads and writes (weights included for 'linear')."""
        size = int(np.prod(self.shape))
        out = int(np.prod(self.output_shape()))
        if self.family == 'linear':
            return size + self.shape[1] * self.other + out
        if self.family in ('add', 'mul'):
            return size + int(np.prod(self.other or self.shape)) + out
        if self.family == 'concat':
            return 2 * out
        return size + out

    def describe(self):
        def hwc(shape):
            return 'x'.join(str(v) for v in shape[1:])
        if self.family == 'linear':
            return 'M%d K%d N%d' % (self.shape[0], self.shape[1], self.other)
        if self.family in ('maxpool', 'avgpool'):
            return '%s->%s/k%ds%dp%d' % (hwc(self.shape), hwc(self.output_shape()), self.kernel, self.stride,
                                         self.padding)
        if self.family == 'concat':
            n, h, w, c = self.shape
            return '%dx%dx(%d+%d)' % (h, w, c, self.other)
        if self.family in ('add', 'mul'):
            return '%s %s %s' % (hwc(self.shape), '+' if self.family == 'add' else '*',
                                 hwc(self.other or self.shape))
        if self.family == 'lut':
            return '%s %s' % (self.fn, hwc(self.shape))
        return '%s->%s' % (hwc(self.shape), hwc(self.output_shape()))


OPS = (
    OpSpec('fc_head_1x1280x1000', 'linear', (1, 1280), other=1000),
    OpSpec('fc_400x256x256', 'linear', (400, 256), other=256),
    OpSpec('sppf_max5_10x10x128', 'maxpool', (1, 10, 10, 128), 5, 1, 2),
    OpSpec('sppf_max5_20x20x128', 'maxpool', (1, 20, 20, 128), 5, 1, 2),
    OpSpec('max2s2_80x80x32', 'maxpool', (1, 80, 80, 32), 2, 2, 0),
    OpSpec('avg3s1_40x40x64', 'avgpool', (1, 40, 40, 64), 3, 1, 1),
    OpSpec('avg2s2_80x80x32', 'avgpool', (1, 80, 80, 32), 2, 2, 0),
    OpSpec('gap_10x10x256', 'gap', (1, 10, 10, 256)),
    OpSpec('gap_7x7x1280', 'gap', (1, 7, 7, 1280)),
    OpSpec('add_80x80x32', 'add', (1, 80, 80, 32)),
    OpSpec('add_40x40x64', 'add', (1, 40, 40, 64)),
    OpSpec('mul_80x80x32', 'mul', (1, 80, 80, 32)),
    OpSpec('mul_40x40x64', 'mul', (1, 40, 40, 64)),
    OpSpec('mul_se_20x20x128', 'mul', (1, 20, 20, 128), other=(1, 1, 1, 128)),
    OpSpec('concat_40_64+128', 'concat', (1, 40, 40, 64), other=128),
    OpSpec('concat_20_256+128', 'concat', (1, 20, 20, 256), other=128),
    OpSpec('up2_20x20x128', 'upsample', (1, 20, 20, 128)),
    OpSpec('up2_10x10x256', 'upsample', (1, 10, 10, 256)),
    OpSpec('silu_80x80x32', 'lut', (1, 80, 80, 32), fn='silu'),
    OpSpec('sigmoid_80x80x32', 'lut', (1, 80, 80, 32), fn='sigmoid'),
    OpSpec('silu_40x40x64', 'lut', (1, 40, 40, 64), fn='silu'),
    OpSpec('sigmoid_40x40x64', 'lut', (1, 40, 40, 64), fn='sigmoid'),
)


def _qparams(real):
    """(scale, zero point) of uint8 data over the range of ``real``, widened to include 0."""
    lo, hi = min(float(np.min(real)), 0.0), max(float(np.max(real)), 0.0)
    scale = np.float32((hi - lo) / 255.0 if hi > lo else 1.0)
    return scale, int(np.clip(np.rint(-lo / float(scale)), 0, 255))


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


class _QTensor:
    """uint8 data quantised with parameters from the range of ``real``, and its float twin (``f``)."""

    def __init__(self, real):
        real = np.asarray(real, np.float32)
        self.scale, self.zp = _qparams(real)
        self.q = requant.quantize(real, self.scale, self.zp)
        self.f = requant.dequantize(self.q, self.scale, self.zp)


def _activation(rng, shape, spread):
    """A quantised SiLU output (the activation of YOLOv8) of normal data with standard deviation ``spread``."""
    v = rng.normal(0.0, spread, shape)
    return _QTensor(v * _sigmoid(v))


def _nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _from_nchw(a):
    return a.transpose(0, 2, 3, 1)


_ONNX_TYPES = {np.dtype(np.uint8): 'UINT8', np.dtype(np.int8): 'INT8', np.dtype(np.float32): 'FLOAT'}


def _onnx_model(name, nodes, feeds, out, inits):
    """Serialised model of ``nodes`` [(op type, inputs, output, attributes)], with graph inputs ``feeds``
    {name: array}, output 'y' shaped like ``out`` and initializers ``inits`` {name: value}.  An op type
    'com.microsoft.X' is the contrib op X."""
    from onnx import TensorProto, helper, numpy_helper

    made = []
    for op, inputs, output, attrs in nodes:
        domain = ''
        if op.startswith('com.microsoft.'):
            domain, op = 'com.microsoft', op[len('com.microsoft.'):]
        made.append(helper.make_node(op, inputs, [output], domain=domain, **attrs))

    def info(n, a):
        return helper.make_tensor_value_info(n, getattr(TensorProto, _ONNX_TYPES[a.dtype]), list(a.shape))

    graph = helper.make_graph(made, name, [info(n, a) for n, a in feeds.items()], [info('y', out)],
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13),
                                                    helper.make_opsetid('com.microsoft', 1)])
    model.ir_version = 7
    return model.SerializeToString()


def _qin(prefix, t):
    """The scale and zero point initializers of a _QTensor, named ``prefix``_scale / _zero_point."""
    return {prefix + '_scale': np.float32(t.scale), prefix + '_zero_point': np.uint8(t.zp)}


class _OpCase:
    """Everything one kernel call needs: our callables, the NumPy references and the ONNX Runtime graphs.

    ``ours``: column -> (fn(num_threads), the preallocated output it fills);
    ``numpy``: column -> fn() returning the result in our layout (``numpy_check``: a different function
    for the correctness check, when the timed one is not the reference itself);
    ``ort``: column -> (fn() -> model bytes, feeds {name: array}, output array, fn(output) -> our layout).
    """

    def __init__(self, spec, isa, ort_layout):
        self.spec = spec
        self.isa = isa
        self.ort_layout = ort_layout
        self.ours = {}
        self.numpy = {}
        self.numpy_check = {}
        self.ort = {}

    def add_ort(self, key, nodes, feeds, out, inits, to_ours=None):
        name = self.spec.name
        self.ort[key] = (lambda: _onnx_model(name, nodes, feeds, out, inits), feeds, out,
                         to_ours or (lambda y: y))


def _case_linear(spec, rng, isa):
    m, k = spec.shape
    n = spec.other
    x = _activation(rng, (m, k), 2.0)
    w_real = rng.standard_normal((n, k)) * np.sqrt(2.0 / k)
    w_scale = (np.abs(w_real).max(axis=1) / 127).astype(np.float32)
    w_q = requant.quantize(w_real, w_scale[:, None], 0, np.int8)
    w_f = requant.dequantize(w_q, w_scale[:, None], 0)
    y_scale, y_zp = _qparams(linear_f32(x.f, w_f, None))
    mult = requant.multiplier(x.scale, w_scale, y_scale)
    ours = QLinear(w_q, None, x.zp, mult, y_zp, isa=isa)
    ours_f = FLinear(w_f, None, isa=isa)
    case = _OpCase(spec, ours.isa, '[M,K]|[M,K]')
    out, out_f = np.empty((m, n), np.uint8), np.empty((m, n), np.float32)
    case.ours['ours_int8'] = (lambda t: ours(x.q, out=out, num_threads=t), out)
    case.ours['ours_fp32'] = (lambda t: ours_f(x.f, out=out_f, num_threads=t), out_f)
    case.numpy['numpy_int8'] = lambda: gemm_int8(x.q, w_q, None, x.zp, mult, y_zp)
    case.numpy['numpy_fp32'] = lambda: linear_f32(x.f, w_f, None)
    q = dict(_qin('x', x), w_scale=w_scale, w_zero_point=np.zeros(n, np.int8), y_scale=np.float32(y_scale),
             y_zero_point=np.uint8(y_zp))
    inputs = ['x', 'x_scale', 'x_zero_point', 'w', 'w_scale', 'w_zero_point', 'y_scale', 'y_zero_point']
    case.add_ort('ort_int8', [('QLinearMatMul', inputs, 'y', {})], {'x': x.q}, np.empty_like(out),
                 dict(q, w=np.ascontiguousarray(w_q.T)))
    case.add_ort('ort_int8_2', [('com.microsoft.QGemm', inputs[:6] + [''] + inputs[6:], 'y', {'transB': 1})],
                 {'x': x.q}, np.empty_like(out), dict(q, w=w_q))
    case.add_ort('ort_fp32', [('Gemm', ['x', 'w'], 'y', {'transB': 1})], {'x': x.f}, np.empty_like(out_f),
                 {'w': w_f})
    return case


def _pool_attrs(spec):
    p = spec.padding
    return {'kernel_shape': [spec.kernel] * 2, 'strides': [spec.stride] * 2, 'pads': [p] * 4}


def _case_pool(spec, rng, isa):
    """max, average and global average pooling (uint8 and float32)."""
    fam = spec.family
    x = _activation(rng, spec.shape, 2.0)
    shape = spec.output_shape()
    kk, ss, pads = (spec.kernel,) * 2, (spec.stride,) * 2, (spec.padding,) * 4
    out, out_f = np.empty(shape, np.uint8), np.empty(shape, np.float32)
    case = _OpCase(spec, qvision_kernels.isa('pool') if isa is None else isa, 'NCHW|NHWC')
    x_nchw, xf_nchw = _nchw(x.q), _nchw(x.f)
    y_nchw, yf_nchw = np.empty(_nchw(out).shape, np.uint8), np.empty(_nchw(out).shape, np.float32)
    if fam == 'maxpool':
        kw = dict(kernel=spec.kernel, stride=spec.stride, padding=spec.padding)
        case.ours['ours_int8'] = (lambda t: max_pool2d(x.q, out=out, num_threads=t, isa=isa, **kw), out)
        case.ours['ours_fp32'] = (lambda t: max_pool2d(x.f, out=out_f, num_threads=t, isa=isa, **kw), out_f)
        case.numpy['numpy_int8'] = lambda: ref_pool.max_pool2d(x.q, kk, ss, pads)
        case.numpy['numpy_fp32'] = lambda: ref_pool.max_pool2d(x.f, kk, ss, pads)
        attrs = _pool_attrs(spec)
        case.add_ort('ort_int8', [('MaxPool', ['x'], 'y', attrs)], {'x': x_nchw}, y_nchw, {}, _from_nchw)
        case.add_ort('ort_int8_2', [('com.microsoft.NhwcMaxPool', ['x'], 'y', attrs)], {'x': x.q},
                     np.empty_like(out), {})
        case.add_ort('ort_fp32', [('MaxPool', ['x'], 'y', attrs)], {'x': xf_nchw}, yf_nchw, {}, _from_nchw)
        return case
    if fam == 'avgpool':
        y = _QTensor(ref_pool.avg_pool2d_f32(x.f, kk, ss, pads))
        kw = dict(kernel=spec.kernel, stride=spec.stride, padding=spec.padding, count_include_pad=False)
        case.ours['ours_int8'] = (lambda t: avg_pool2d(x.q, x_scale=x.scale, x_zero_point=x.zp, y_scale=y.scale,
                                                       y_zero_point=y.zp, out=out, num_threads=t, isa=isa,
                                                       **kw), out)
        case.ours['ours_fp32'] = (lambda t: avg_pool2d(x.f, out=out_f, num_threads=t, isa=isa, **kw), out_f)
        case.numpy['numpy_int8'] = lambda: ref_pool.avg_pool2d_int8(x.q, kk, ss, pads, x.scale, x.zp, y.scale, y.zp)
        case.numpy['numpy_fp32'] = lambda: ref_pool.avg_pool2d_f32(x.f, kk, ss, pads)
        op, attrs = 'com.microsoft.QLinearAveragePool', dict(_pool_attrs(spec), count_include_pad=0)
        f32 = ('AveragePool', dict(_pool_attrs(spec), count_include_pad=0))
    else:
        y = _QTensor(ref_pool.global_avg_pool2d_f32(x.f))
        case.ours['ours_int8'] = (lambda t: global_avg_pool2d(x.q, x.scale, x.zp, y.scale, y.zp, out=out,
                                                              num_threads=t, isa=isa), out)
        case.ours['ours_fp32'] = (lambda t: global_avg_pool2d(x.f, out=out_f, num_threads=t, isa=isa), out_f)
        case.numpy['numpy_int8'] = lambda: ref_pool.global_avg_pool2d_int8(x.q, x.scale, x.zp, y.scale, y.zp)
        case.numpy['numpy_fp32'] = lambda: ref_pool.global_avg_pool2d_f32(x.f)
        op, attrs = 'com.microsoft.QLinearGlobalAveragePool', {}
        f32 = ('GlobalAveragePool', {})
    inputs = ['x', 'x_scale', 'x_zero_point', 'y_scale', 'y_zero_point']
    q = dict(_qin('x', x), **_qin('y', y))
    case.add_ort('ort_int8', [(op, inputs, 'y', dict(attrs, channels_last=0))], {'x': x_nchw}, y_nchw, q,
                 _from_nchw)
    case.add_ort('ort_int8_2', [(op, inputs, 'y', dict(attrs, channels_last=1))], {'x': x.q}, np.empty_like(out),
                 q)
    case.add_ort('ort_fp32', [(f32[0], ['x'], 'y', f32[1])], {'x': xf_nchw}, yf_nchw, {}, _from_nchw)
    return case


def _case_binary(spec, rng, isa):
    """add_int8 / mul_int8 (and add_f32 / mul_f32): a is a SiLU output; b another one for Add (a residual),
    a sigmoid gate in [0, 1] for Mul (attention, squeeze-and-excitation)."""
    a = _activation(rng, spec.shape, 2.0)
    bshape = spec.other or spec.shape
    if spec.family == 'add':
        b = _activation(rng, bshape, 1.5)
        y = _QTensor(ref_eltwise.add_f32(a.f, b.f))
        ours_q, ours_f32, ref_q, ref_f32 = add_int8, add_f32, ref_eltwise.add_int8, ref_eltwise.add_f32
        op, f32_op = 'com.microsoft.QLinearAdd', 'Add'
    else:
        b = _QTensor(_sigmoid(rng.normal(0.0, 2.0, bshape)))
        y = _QTensor(ref_eltwise.mul_f32(a.f, b.f))
        ours_q, ours_f32, ref_q, ref_f32 = mul_int8, mul_f32, ref_eltwise.mul_int8, ref_eltwise.mul_f32
        op, f32_op = 'com.microsoft.QLinearMul', 'Mul'
    case = _OpCase(spec, qvision_kernels.isa('eltwise') if isa is None else isa, 'NHWC|-')
    out, out_f = np.empty(spec.shape, np.uint8), np.empty(spec.shape, np.float32)
    qargs = (a.scale, a.zp, b.scale, b.zp, y.scale, y.zp)
    case.ours['ours_int8'] = (lambda t: ours_q(a.q, b.q, *qargs, out=out, num_threads=t, isa=isa), out)
    case.ours['ours_fp32'] = (lambda t: ours_f32(a.f, b.f, out=out_f, num_threads=t, isa=isa), out_f)
    case.numpy['numpy_int8'] = lambda: ref_q(a.q, b.q, *qargs)
    case.numpy['numpy_fp32'] = lambda: ref_f32(a.f, b.f)
    inputs = ['a', 'a_scale', 'a_zero_point', 'b', 'b_scale', 'b_zero_point', 'y_scale', 'y_zero_point']
    case.add_ort('ort_int8', [(op, inputs, 'y', {})], {'a': a.q, 'b': b.q}, np.empty_like(out),
                 dict(_qin('a', a), **_qin('b', b), **_qin('y', y)))
    case.add_ort('ort_fp32', [(f32_op, ['a', 'b'], 'y', {})], {'a': a.f, 'b': b.f}, np.empty_like(out_f), {})
    return case


def _case_concat(spec, rng, isa):
    """concat_int8 of two inputs with their own scales (the YOLOv8 neck: an upsampled map and a skip)."""
    n, h, w, c = spec.shape
    a = _activation(rng, spec.shape, 2.0)
    b = _activation(rng, (n, h, w, spec.other), 3.0)
    y = _QTensor(np.concatenate([a.f, b.f], axis=-1))
    case = _OpCase(spec, qvision_kernels.isa('eltwise') if isa is None else isa, 'NCHW|NHWC')
    shape = spec.output_shape()
    out, out_f = np.empty(shape, np.uint8), np.empty(shape, np.float32)
    scales, zps = [a.scale, b.scale], [a.zp, b.zp]
    case.ours['ours_int8'] = (lambda t: concat_int8([a.q, b.q], scales, zps, y.scale, y.zp, axis=-1, out=out,
                                                    num_threads=t, isa=isa), out)
    case.ours['ours_fp32'] = (lambda t: concat_f32([a.f, b.f], axis=-1, out=out_f, num_threads=t, isa=isa),
                              out_f)
    case.numpy['numpy_int8'] = lambda: ref_eltwise.concat_int8([a.q, b.q], scales, zps, y.scale, y.zp, axis=-1)
    case.numpy['numpy_fp32'] = lambda: ref_eltwise.concat_f32([a.f, b.f], axis=-1)
    inputs = ['y_scale', 'y_zero_point', 'a', 'a_scale', 'a_zero_point', 'b', 'b_scale', 'b_zero_point']
    q = dict(_qin('a', a), **_qin('b', b), **_qin('y', y))
    op = 'com.microsoft.QLinearConcat'
    case.add_ort('ort_int8', [(op, inputs, 'y', {'axis': 1})], {'a': _nchw(a.q), 'b': _nchw(b.q)},
                 np.empty(_nchw(out).shape, np.uint8), q, _from_nchw)
    case.add_ort('ort_int8_2', [(op, inputs, 'y', {'axis': 3})], {'a': a.q, 'b': b.q}, np.empty_like(out), q)
    case.add_ort('ort_fp32', [('Concat', ['a', 'b'], 'y', {'axis': 1})], {'a': _nchw(a.f), 'b': _nchw(b.f)},
                 np.empty(_nchw(out).shape, np.float32), {}, _from_nchw)
    return case


def _case_upsample(spec, rng, isa):
    x = _activation(rng, spec.shape, 2.0)
    case = _OpCase(spec, qvision_kernels.isa('eltwise') if isa is None else isa, 'NCHW|NHWC')
    shape = spec.output_shape()
    out, out_f = np.empty(shape, np.uint8), np.empty(shape, np.float32)
    case.ours['ours_int8'] = (lambda t: upsample_nearest(x.q, 2, 2, out=out, num_threads=t, isa=isa), out)
    case.ours['ours_fp32'] = (lambda t: upsample_nearest(x.f, 2, 2, out=out_f, num_threads=t, isa=isa), out_f)
    case.numpy['numpy_int8'] = lambda: ref_eltwise.upsample_nearest(x.q, 2, 2)
    case.numpy['numpy_fp32'] = lambda: ref_eltwise.upsample_nearest(x.f, 2, 2)
    attrs = {'mode': 'nearest', 'coordinate_transformation_mode': 'asymmetric', 'nearest_mode': 'floor'}
    node = [('Resize', ['x', '', 'scales'], 'y', attrs)]
    nchw_scales = {'scales': np.array([1, 1, 2, 2], np.float32)}
    case.add_ort('ort_int8', node, {'x': _nchw(x.q)}, np.empty(_nchw(out).shape, np.uint8), nchw_scales,
                 _from_nchw)
    case.add_ort('ort_int8_2', node, {'x': x.q}, np.empty_like(out), {'scales': np.array([1, 2, 2, 1], np.float32)})
    case.add_ort('ort_fp32', node, {'x': _nchw(x.f)}, np.empty(_nchw(out).shape, np.float32), nchw_scales,
                 _from_nchw)
    return case


def _case_lut(spec, rng, isa):
    """lut_apply of SiLU / sigmoid on a convolution output (before its activation)."""
    x = _QTensor(rng.normal(0.0, 3.0, spec.shape))
    if spec.fn == 'sigmoid':
        def f(v):
            return _sigmoid(v)
    else:
        def f(v):
            return v * _sigmoid(v)
    y = _QTensor(f(x.f.astype(np.float64)))
    table = make_lut(spec.fn, x.scale, x.zp, y.scale, y.zp)
    case = _OpCase(spec, qvision_kernels.isa('eltwise') if isa is None else isa, 'NHWC|-')
    out, out_np = np.empty(spec.shape, np.uint8), np.empty(spec.shape, np.uint8)
    case.ours['ours_int8'] = (lambda t: lut_apply(x.q, table, out=out, num_threads=t, isa=isa), out)
    case.numpy['numpy_int8'] = lambda: np.take(table, x.q, out=out_np)
    case.numpy_check['numpy_int8'] = lambda: ref_eltwise.lut_apply(x.q, table)
    case.numpy['numpy_fp32'] = lambda: f(x.f)
    sig_q = {'s_scale': np.float32(1.0 / 255.0), 's_zero_point': np.uint8(0)}
    q = dict(_qin('x', x), **_qin('y', y))
    if spec.fn == 'sigmoid':
        nodes = [('com.microsoft.QLinearSigmoid', ['x', 'x_scale', 'x_zero_point', 'y_scale', 'y_zero_point'], 'y',
                  {})]
        f32 = [('Sigmoid', ['x'], 'y', {})]
    else:
        nodes = [('com.microsoft.QLinearSigmoid', ['x', 'x_scale', 'x_zero_point', 's_scale', 's_zero_point'], 's',
                  {}),
                 ('com.microsoft.QLinearMul', ['x', 'x_scale', 'x_zero_point', 's', 's_scale', 's_zero_point',
                                               'y_scale', 'y_zero_point'], 'y', {})]
        q.update(sig_q)
        f32 = [('Sigmoid', ['x'], 's', {}), ('Mul', ['x', 's'], 'y', {})]
    case.add_ort('ort_int8', nodes, {'x': x.q}, np.empty_like(out), q)
    case.add_ort('ort_fp32', f32, {'x': x.f}, np.empty(spec.shape, np.float32), {})
    return case


_OP_CASES = {'linear': _case_linear, 'maxpool': _case_pool, 'avgpool': _case_pool, 'gap': _case_pool,
             'add': _case_binary, 'mul': _case_binary, 'concat': _case_concat, 'upsample': _case_upsample,
             'lut': _case_lut}


def _max_abs_diff_f32(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _error_line(exc):
    """One line for the log and the table notes: the exception type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return '%s: %s' % (type(exc).__name__, text[0][:200] if text else '')


def bench_op(spec, threads, args, ort_mods, blas, log):
    """Time every column of one non-convolution kernel at each thread count (one result dict per count)."""
    case = _OP_CASES[spec.family](spec, np.random.default_rng(args.seed), args.isa)
    applicable = set(case.ours) | set(case.numpy) | set(case.ort)
    checks, notes = {}, {}

    def check(key, result):
        base = case.ours.get('ours_fp32' if key.endswith('fp32') else 'ours_int8')
        if base is None:
            return
        if key.endswith('fp32'):
            checks['max_abs_diff_vs_' + key] = _max_abs_diff_f32(base[1], result)
        else:
            checks['max_abs_diff_vs_' + key] = _max_abs_diff(base[1], result)

    # Correctness, once (reported, never raised).
    for fn, _ in case.ours.values():
        fn(1)
    for key, fn in case.numpy.items():
        check(key, case.numpy_check.get(key, fn)())
    models = {}
    if ort_mods is not None:
        ort = ort_mods[0]
        for key, (build, feeds, out, to_ours) in case.ort.items():
            try:
                model = build()
                _OrtRunner(ort, model, feeds, out, 1).run()
            except Exception as exc:   # an ORT op that refuses this shape, type or attribute: n/a
                notes[key] = _error_line(exc)
                log('%s: %s n/a: %s' % (spec.name, key, notes[key]))
                continue
            models[key] = model
            check(key, to_ours(out))

    results = []
    for t in threads:
        blas.set(t)
        fast = {key: functools.partial(fn, t) for key, (fn, _) in case.ours.items()}
        for key, model in models.items():
            _, feeds, out, _ = case.ort[key]
            fast[key] = _OrtRunner(ort, model, feeds, np.empty_like(out), t).run
        cols = time_columns(fast, args.repeat, args.warmup, args.rounds)
        cols.update(time_columns(case.numpy, args.repeat, min(args.warmup, 1), args.rounds))
        del fast
        median = {key: (cols[key][0] if key in cols else None) for key, _ in OP_COLUMNS}
        minimum = {key: (cols[key][1] if key in cols else None) for key, _ in OP_COLUMNS}
        results.append(_op_result(case, t, applicable, median, minimum, checks, notes))
        log('%-16s t=%d  ours i8 %.3f ms%s' % (
            spec.name, t, median['ours_int8'],
            '  ORT i8 %.3f ms' % median['ort_int8'] if median['ort_int8'] is not None else ''))
    return results


def _op_result(case, threads, applicable, median, minimum, checks, notes):
    spec = case.spec

    def ratio(key, base):
        return None if median[key] is None or median[base] is None else median[key] / median[base]

    ours = median['ours_int8']
    return dict(layer=spec.name, family=spec.family, shape=spec.describe(), macs=spec.macs, bytes=spec.nbytes,
                threads=threads, isa=case.isa, ort_layout=case.ort_layout,
                columns=[key for key, _ in OP_COLUMNS if key in applicable],
                median_ms=median, min_ms=minimum,
                gops={'ours_int8': 2.0 * spec.macs / (ours * 1e6) if spec.macs else None},
                gbps={'ours_int8': spec.nbytes / (ours * 1e6)},
                speedup_ours_int8={key: ratio(key, 'ours_int8') for key, _ in OP_SPEEDUPS_INT8},
                speedup_ours_fp32={key: ratio(key, 'ours_fp32') for key, _ in OP_SPEEDUPS_FP32},
                ort_notes=dict(notes), **checks)


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------

def _fmt(v, spec='%.3f'):
    return 'n/a' if v is None else spec % v


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ['  '.join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header] + rows]
    lines.insert(1, '-' * len(lines[0]))
    return '\n'.join(lines)


def _conv_tables(rows, out):
    """The time table and the speed table of convolution rows (the original layout of this report)."""
    header = ['layer', 'shape', 'MMAC'] + [h + ' ms' for _, h in COLUMNS] + ['max|d|']
    table = []
    for r in rows:
        diffs = [r.get(k) for k in ('max_abs_diff_vs_ort_int8', 'max_abs_diff_vs_ort_int8_nhwc')]
        diffs = [d for d in diffs if d is not None]
        table.append([r['layer'], r['shape'], '%.1f' % (r['macs'] / 1e6)]
                     + [_fmt(r['median_ms'][k]) for k, _ in COLUMNS]
                     + [str(max(diffs)) if diffs else 'n/a'])
    out.append(_table(header, table))
    out.append('')
    header = ['layer', 'GOPS ours i8', 'GOPS ORT i8', 'GOPS ORT nhwc'] + [h for _, h in SPEEDUPS]
    table = []
    for r in rows:
        g = r['gops']
        table.append([r['layer'], _fmt(g['ours_int8'], '%.1f'), _fmt(g['ort_int8'], '%.1f'),
                      _fmt(g['ort_int8_nhwc'], '%.1f')]
                     + [_fmt(r['speedup_ours_int8'][k], '%.2f') for k, _ in SPEEDUPS])
    out.append('speed of ours int8 relative to each column (> 1: ours is faster)')
    out.append(_table(header, table))
    slow = [r for r in rows if r['speedup_ours_int8']['ort_int8'] is not None
            and r['speedup_ours_int8']['ort_int8'] < 1.0]
    if slow:
        out.append('slower than ORT int8 (NCHW graph): ' + ', '.join(
            '%s (x%.2f)' % (r['layer'], r['speedup_ours_int8']['ort_int8']) for r in slow))
    slow = [r for r in rows if r['speedup_ours_int8']['ort_int8_nhwc'] is not None
            and r['speedup_ours_int8']['ort_int8_nhwc'] < 1.0]
    if slow:
        out.append('slower than ORT int8 nhwc kernel: ' + ', '.join(
            '%s (x%.2f)' % (r['layer'], r['speedup_ours_int8']['ort_int8_nhwc']) for r in slow))


def _op_cell(r, key, value, spec='%.3f'):
    """'-' where the family has no such column, 'n/a' where it could not run, else the value."""
    return '-' if key not in r['columns'] else _fmt(value, spec)


def _op_tables(rows, out):
    """The time table, the speed table and the notes of the rows of the other kernels."""
    families = [f for f in OP_FAMILIES if any(r['family'] == f for r in rows)]
    out.append('other kernels (uint8 NHWC, out= preallocated); ORT layout: what "ORT i8 | ORT #2" got '
               '(inputs transposed once, outside the timed loop); "-": no such column, n/a: could not run')
    for f in families:
        ours, ort = OP_FAMILIES[f]
        out.append('  %-9s ours: %s' % (f, ours))
        out.append('  %-9s %s' % ('', ort))
    header = (['layer', 'shape', 'ORT layout', 'MMAC', 'MB'] + [h + ' ms' for _, h in OP_COLUMNS]
              + ['max|d| ORT', 'max|d| ref', 'f32 max|d|'])
    table = []
    for r in rows:
        cols = r['columns']
        ort_keys = [k for k in ('ort_int8', 'ort_int8_2') if k in cols]
        diffs = [r['max_abs_diff_vs_' + k] for k in ort_keys if 'max_abs_diff_vs_' + k in r]
        d_ort = str(max(diffs)) if diffs else ('n/a' if ort_keys else '-')
        d_ref = str(r['max_abs_diff_vs_numpy_int8']) if 'max_abs_diff_vs_numpy_int8' in r else '-'
        fdiffs = [r['max_abs_diff_vs_' + k] for k in ('ort_fp32', 'numpy_fp32') if 'max_abs_diff_vs_' + k in r]
        d_f32 = '%.1e' % max(fdiffs) if fdiffs else ('n/a' if 'ours_fp32' in cols else '-')
        table.append([r['layer'], r['shape'], r['ort_layout'], '%.1f' % (r['macs'] / 1e6) if r['macs'] else '-',
                      '%.3f' % (r['bytes'] / 1e6)]
                     + [_op_cell(r, k, r['median_ms'][k]) for k, _ in OP_COLUMNS] + [d_ort, d_ref, d_f32])
    out.append(_table(header, table))
    out.append('')
    header = (['layer', 'GOPS i8', 'GB/s i8'] + [h for _, h in OP_SPEEDUPS_INT8]
              + [h for _, h in OP_SPEEDUPS_FP32])
    table = []
    for r in rows:
        cols = r['columns']

        def ratio(key, value, base):
            return '-' if key not in cols or base not in cols else _fmt(value, '%.2f')
        table.append([r['layer'], _fmt(r['gops']['ours_int8'], '%.1f') if r['macs'] else '-',
                      _fmt(r['gbps']['ours_int8'], '%.2f')]
                     + [ratio(k, r['speedup_ours_int8'][k], 'ours_int8') for k, _ in OP_SPEEDUPS_INT8]
                     + [ratio(k, r['speedup_ours_fp32'][k], 'ours_fp32') for k, _ in OP_SPEEDUPS_FP32])
    out.append('speed of ours int8 (then ours fp32) relative to each column (> 1: ours is faster)')
    out.append(_table(header, table))
    for key, what in (('ort_int8', 'ORT i8'), ('ort_int8_2', 'ORT #2')):
        slow = [r for r in rows if r['speedup_ours_int8'][key] is not None and r['speedup_ours_int8'][key] < 1.0]
        if slow:
            out.append('slower than %s: ' % what + ', '.join(
                '%s (x%.2f)' % (r['layer'], r['speedup_ours_int8'][key]) for r in slow))
    slow = [r for r in rows if r['speedup_ours_fp32']['ort_fp32'] is not None
            and r['speedup_ours_fp32']['ort_fp32'] < 1.0]
    if slow:
        out.append('ours fp32 slower than ORT f32: ' + ', '.join(
            '%s (x%.2f)' % (r['layer'], r['speedup_ours_fp32']['ort_fp32']) for r in slow))
    for r in rows:
        for key, reason in sorted(r['ort_notes'].items()):
            out.append('n/a %s %s: %s' % (r['layer'], dict(OP_COLUMNS)[key], reason))


def format_report(meta, results):
    out = []
    for t in meta['threads']:
        rows = [r for r in results if r['threads'] == t]
        out.append('')
        out.append('== threads=%d  isa=%s  cpu=%s (%s cores)  onnxruntime=%s  numpy=%s' % (
            t, meta['isa'], meta['cpu'], meta['cores'], meta['onnxruntime'] or 'n/a', meta['numpy']))
        out.append('   median of %d runs in %d rounds; NumPy BLAS threads %s; load average %s -> %s' % (
            meta['repeat'], meta['rounds'],
            'set to %d' % t if meta['blas_threads_controlled'] else 'not controlled',
            _fmt(meta['load_average_before'], '%.2f'), _fmt(meta['load_average_after'], '%.2f')))
        if meta['environment']:
            out.append('   environment: ' + ' '.join('%s=%s' % kv for kv in sorted(meta['environment'].items())))
        conv = [r for r in rows if r['family'] == 'conv']
        if conv:
            _conv_tables(conv, out)
        dw = [r for r in rows if r['family'] == 'depthwise']
        if dw:
            out.append('')
            out.append('depthwise convolutions (QConv2d, groups = C), the same columns: ORT i8 = QLinearConv '
                       'group=C (NCHW), ORT i8 nhwc = com.microsoft.QLinearConv channels_last=1, '
                       'ORT f32 = Conv group=C')
            _conv_tables(dw, out)
        ops = [r for r in rows if r['family'] in OP_FAMILIES]
        if ops:
            out.append('')
            _op_tables(ops, out)
    return '\n'.join(out)


def _parse(argv):
    p = argparse.ArgumentParser(prog='qvision-bench-kernels', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, nargs='+', default=[1, 2], help='thread counts (default: 1 2)')
    p.add_argument('--repeat', type=int, default=30, help='timed runs per column; the median is reported')
    p.add_argument('--warmup', type=int, default=5, help='untimed runs before each block of timed runs')
    p.add_argument('--rounds', type=int, default=5,
                   help='the timed runs of each column come in this many blocks, columns alternating')
    p.add_argument('--layers', nargs='+', default=None, metavar='SUBSTRING',
                   help='only layers whose name contains one of these substrings')
    p.add_argument('--isa', default=None, help='force an instruction-set variant of our kernels')
    p.add_argument('--seed', type=int, default=0, help='seed of the random layer data')
    p.add_argument('--json', default=None, metavar='PATH', help='write every raw median to this JSON file')
    p.add_argument('--list', action='store_true', help='list the layers and exit')
    args = p.parse_args(argv)
    if args.repeat < 1 or args.rounds < 1 or args.warmup < 0 or min(args.threads) < 1:
        p.error('--repeat, --rounds and --threads must be >= 1, --warmup >= 0')
    return args


def _all_specs():
    """Every benchmark, in report order: convolutions, depthwise convolutions, the other kernels."""
    return tuple(LAYERS) + tuple(DW_LAYERS) + tuple(OPS)


def _work(spec):
    if isinstance(spec, OpSpec) and not spec.macs:
        return '%8.3f MB' % (spec.nbytes / 1e6)
    return '%8.1f MMAC' % (spec.macs / 1e6)


def main(argv=None):
    args = _parse(argv)
    every = _all_specs()
    specs = [s for s in every if not args.layers or any(sub in s.name for sub in args.layers)]
    if args.list:
        for s in every:
            print('%-20s %-10s %-30s %s' % (s.name, s.family, s.describe(), _work(s)))
        return 0
    if not specs:
        print('no layer matches %s; known: %s' % (args.layers, ', '.join(s.name for s in every)),
              file=sys.stderr)
        return 2

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    ort_mods = _import_ort()
    blas = _BlasThreads()
    if ort_mods is None:
        log('onnxruntime or onnx is not importable: the ORT columns show n/a')
    load_before = _load_average()
    results = []
    try:
        for spec in specs:
            bench = bench_op if isinstance(spec, OpSpec) else bench_layer
            results.extend(bench(spec, args.threads, args, ort_mods, blas, log))
    finally:
        blas.restore()
    meta = dict(threads=args.threads, repeat=args.repeat, warmup=args.warmup, rounds=args.rounds, seed=args.seed,
                isa=results[0]['isa'], cpu=_cpu_model(), machine=platform.machine(),
                python=platform.python_version(), numpy=np.__version__,
                onnxruntime=ort_mods[0].__version__ if ort_mods else None,
                blas_threads_controlled=blas.controlled,
                load_average_before=load_before, load_average_after=_load_average(),
                environment={k: os.environ[k] for k in _ENV_SHOWN if k in os.environ},
                cores=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count())
    print(format_report(meta, results))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'meta': meta, 'results': results}, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
