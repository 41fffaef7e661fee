"""Kernel benchmark of qvision_kernels: one convolution layer at a time, ours against the alternatives.

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
"""
import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from qvision_kernels import requant
from qvision_kernels.conv import QConv2d
from qvision_kernels.fconv import FConv2d
from qvision_kernels.reference import conv2d_f32_im2col, conv2d_int8, conv_output_size

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

    @property
    def padding(self):
        return self.kernel // 2

    def output_hw(self):
        p = self.padding
        return (conv_output_size(self.height, self.kernel, self.stride, p, p, 1),
                conv_output_size(self.width, self.kernel, self.stride, p, p, 1))

    @property
    def macs(self):
        ho, wo = self.output_hw()
        return ho * wo * self.out_channels * self.kernel * self.kernel * self.in_channels

    def describe(self):
        ho, wo = self.output_hw()
        return '%dx%dx%d->%dx%dx%d/k%ds%d' % (self.height, self.width, self.in_channels, ho, wo,
                                             self.out_channels, self.kernel, self.stride)


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


class QuantLayer:
    """Random but realistic quantised data of one layer, and its float (dequantised) twin.

    Weights come from a float convolution (He-normal) quantised per output channel, symmetric, to
    [-127, 127]; the input is uint8 around a zero point near 128 over 0..255; the output scale and zero
    point come from the range of the float output, so that the outputs use the whole uint8 range.
    """

    def __init__(self, spec, rng):
        self.spec = spec
        k, c, oc = spec.kernel, spec.in_channels, spec.out_channels
        self.stride = (spec.stride, spec.stride)
        self.pads = (spec.padding,) * 4
        w_real = rng.standard_normal((oc, k, k, c)).astype(np.float32) * np.float32(np.sqrt(2.0 / (k * k * c)))
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
        y = conv2d_f32_im2col(self.x_f, self.w_f, self.bias_f, self.stride, self.pads)
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
_ENV_SHOWN = ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'OMP_PROC_BIND', 'OMP_PLACES', 'OMP_NUM_THREADS',
              'OPENBLAS_NUM_THREADS', 'QVISION_ISA')


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
                 dilations=[1, 1], group=1)
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
                            strides=list(layer.stride), pads=list(layer.pads), dilations=[1, 1], group=1)
    ho, wo = spec.output_hw()
    graph = helper.make_graph(
        [node], spec.name,
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, spec.in_channels, spec.height, spec.width])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, spec.out_channels, ho, wo])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 7
    return model.SerializeToString()


class _OrtRunner:
    """A session whose input and (preallocated) output are bound once; ``run()`` is the timed call."""

    def __init__(self, ort, model_bytes, x, out, threads):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(model_bytes, so, providers=['CPUExecutionProvider'])
        self.x = np.ascontiguousarray(x)
        self.out = out
        self.binding = self.sess.io_binding()
        self.binding.bind_cpu_input('x', self.x)
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
    starts with a pause (the worker threads of the previous library - OpenMP, ONNX Runtime, OpenBLAS -
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
    ours = QConv2d(layer.w_q, layer.bias_q, layer.x_zp, layer.mult, layer.y_zp, stride=layer.stride,
                   padding=layer.pads, isa=args.isa)
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
                          layer.stride, layer.pads)
        checks['max_abs_diff_vs_numpy_int8'] = _max_abs_diff(out_q, ref)
    saturated = float(np.mean((out_q == 0) | (out_q == 255)))
    fconv = FConv2d(layer.w_f, layer.bias_f, stride=layer.stride, padding=layer.pads)
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
                                                               layer.stride, layer.pads)}
        if spec.numpy_int8:
            slow['numpy_int8'] = lambda: conv2d_int8(layer.x_q, layer.w_q, layer.bias_q, layer.x_zp, layer.mult,
                                                     layer.y_zp, layer.stride, layer.pads)
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
    return dict(layer=spec.name, shape=spec.describe(), height=spec.height, width=spec.width,
                in_channels=spec.in_channels, out_channels=spec.out_channels, kernel=spec.kernel,
                stride=spec.stride, padding=spec.padding, macs=spec.macs, threads=threads, isa=isa,
                median_ms=median, min_ms=minimum,
                gops={'ours_int8': gops(ours), 'ort_int8': gops(median['ort_int8']),
                      'ort_int8_nhwc': gops(median['ort_int8_nhwc'])},
                speedup_ours_int8=speedup, saturated_fraction=saturated, **checks)


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


def main(argv=None):
    args = _parse(argv)
    specs = [s for s in LAYERS if not args.layers or any(sub in s.name for sub in args.layers)]
    if args.list:
        for s in LAYERS:
            print('%-16s %-28s %8.1f MMAC' % (s.name, s.describe(), s.macs / 1e6))
        return 0
    if not specs:
        print('no layer matches %s; known: %s' % (args.layers, ', '.join(s.name for s in LAYERS)),
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
            results.extend(bench_layer(spec, args.threads, args, ort_mods, blas, log))
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
