"""Fuzzing every entry point that takes outside data, in a long mode runnable outside CI.

    python -m qvision_ros.fuzz --images 10000 --models 1000            # the default counts
    python -m qvision_ros.fuzz --models 200 --seed 7 --zoo              # also mutate the PyTorch zoo models
    python -m qvision_ros.fuzz --replay models:123 --seed 7             # one case again, with its traceback

Entry points and what a case is:

* ``images`` - the fields of a ``sensor_msgs/Image`` (every encoding and unknown ones, wrong ``step``,
  truncated or oversized data, zero / odd / huge sizes, odd ``is_bigendian``, buffers of the wrong type)
  through :func:`~qvision_ros.vision.image.image_to_array`, :func:`~qvision_ros.vision.image.to_bgr` and a
  :class:`~qvision_ros.vision.preprocess.Preprocessor`; and frames given as arrays (wrong dtype or rank,
  non-contiguous, read-only, empty).
* ``models`` - a model file made by mutating a seed model (:func:`seed_models`: the shipped detector and
  small built-in models, ``--zoo`` adds the PyTorch zoo and its QDQ versions): bytes truncated, flipped or
  replaced, and protobuf-level changes (op types, attributes, element types, dims, missing initializers,
  cycles, dangling inputs, absurd shapes, external data, messages of the wrong kind...); loaded with
  :class:`~qvision_ros.runtime.Engine` from bytes or from a file and, when it loads, run once.
* ``decoder`` - model outputs with NaN/Inf, empty or wrong-rank arrays, thousands of candidates, through
  :class:`~qvision_ros.vision.decode.Decoder`, :func:`~qvision_ros.vision.nms.nms` and ``batched_nms``.
* ``params`` - parameters of the wrong type or out of range for Preprocessor, Decoder, Engine and
  ``Engine.run``.

Every case ends in an *outcome*: ``ok`` (and then the result is checked: shapes, dtypes, the rules of
DESIGN.md for detections, a reference for :func:`image_to_array`, ONNX-free invariants for the engine) or
the name of the project's exception type that refused it (``ImageError``, ``ModelError``, ``ConfigError``,
``InputError``, ``KernelError``), with the stage that raised it.  Anything else - another exception, an
empty error message, a result that breaks an invariant - is a bug: it is counted under ``BUG`` with its
case number, and ``--replay`` runs that case alone.  A run prints the counts per entry point and outcome,
the time and the peak memory; the exit status is 1 when there was a bug.

Case ``k`` of entry point ``e`` is generated from ``numpy.random.default_rng([seed, index of e, k])``, so
any case is reproducible alone.  The tests (``test/test_fuzz_*.py``) drive the same checks with
hypothesis strategies; this module needs only NumPy, OpenCV and onnx.
"""
import argparse
import array
import os
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter

import numpy as np

from .errors import QVisionError

ENTRY_POINTS = ('images', 'models', 'decoder', 'params')

# Above this many input elements a model that loads is not run (the loader's own limit is far higher).
RUN_LIMIT_ELEMENTS = 1 << 22


class FuzzBug(AssertionError):
    """A case that ended neither in a valid result nor in one of the project's exception types."""


def outcome(fn, *args, **kwargs):
    """``('ok', result)``, or ``(name of the error type, error)`` when ``fn`` raised one of the project's
    exception types (QVisionError subclasses, qvision_kernels' KernelError) with a non-empty message.
    Any other exception propagates: it is a bug."""
    from qvision_kernels import KernelError

    try:
        return 'ok', fn(*args, **kwargs)
    except (QVisionError, KernelError) as e:
        if not str(e).strip():
            raise FuzzBug('%s raised with an empty message' % type(e).__name__) from e
        return type(e).__name__, e


def expect(condition, message, *args):
    """A checked invariant of a valid result: FuzzBug when it does not hold."""
    if not condition:
        raise FuzzBug(message % args if args else message)


# =========================================================================================== images

#: Encodings a fuzzed image message may carry: every supported one, ROS names that are not supported,
#: and names no camera uses.
FUZZ_ENCODINGS = ('bgr8', 'rgb8', 'bgra8', 'rgba8', 'mono8', 'uyvy', 'yuv422', 'yuyv', 'yuv422_yuy2',
                  'mono16', 'bgr16', '16UC1', '8UC3', '32FC1', 'bayer_rggb8', 'nv21', 'BGR8', '', ' bgr8')


def _fuzz_preprocessors():
    """A few preprocessors covering the output variants (letterbox/stretch, rgb/bgr, float/quantised)."""
    from .vision.preprocess import Preprocessor

    return [Preprocessor(32, 24, 'letterbox', channel_order='rgb', layout='nchw'),
            Preprocessor(17, 31, 'stretch', pad_value=0, channel_order='bgr', mean=0.5, std=0.25),
            Preprocessor(20, 20, 'letterbox', input_scale=1 / 255, input_zero_point=0),
            Preprocessor(16, 12, 'letterbox', channel_order='bgr', input_scale=0.02, input_zero_point=-3,
                         dtype=np.int8, layout='nchw')]


_PREPROCESSORS = []


def preprocessors():
    """The shared preprocessors of the image checks (built once)."""
    if not _PREPROCESSORS:
        _PREPROCESSORS.extend(_fuzz_preprocessors())
    return _PREPROCESSORS


def make_buffer(payload, kind):
    """``payload`` (bytes) as the buffer type ``kind`` a message or a caller might hand over."""
    if kind == 'bytes':
        return payload
    if kind == 'bytearray':
        return bytearray(payload)
    if kind == 'memoryview':
        return memoryview(payload)
    if kind == 'strided_memoryview':            # non-contiguous
        return memoryview(payload + payload)[::2]
    if kind == 'array_B':
        return array.array('B', payload)
    if kind == 'array_H':                       # 16-bit items
        return array.array('H', payload[:len(payload) // 2 * 2])
    if kind == 'numpy':
        return np.frombuffer(payload, np.uint8).copy()
    if kind == 'numpy_strided':
        return np.frombuffer(payload + payload, np.uint8)[::2]
    if kind == 'numpy_2d':
        return np.frombuffer(payload, np.uint8).reshape(1, -1)
    if kind == 'numpy_float':
        return np.frombuffer(payload[:len(payload) // 4 * 4], np.float32)
    if kind == 'list':
        return list(payload)
    if kind == 'str':
        return payload.decode('latin-1')
    if kind == 'none':
        return None
    raise ValueError(kind)


BUFFER_KINDS = ('bytes', 'bytearray', 'memoryview', 'strided_memoryview', 'array_B', 'array_H', 'numpy',
                'numpy_strided', 'numpy_2d', 'numpy_float', 'list', 'str', 'none')

# Values a size field may take besides plain small integers.
ODD_SIZES = (0, -1, 1, 2, 3, 2 ** 31 - 1, 2 ** 31, 2 ** 63, 2 ** 70, 1.5, 2.0, '64', None, True, np.int64(6),
             np.uint16(4), np.float32(8))
ODD_FLAGS = (0, 1, True, False, 2, -1, '1', None, np.uint8(1), 1.0)


IMAGE_CORRUPTIONS = ('encoding', 'width', 'height', 'step', 'size', 'buffer', 'flag')


def channels_of(encoding, default):
    """Channels of a supported encoding, ``default`` for any other."""
    from .vision.image import encoding_info

    try:
        return encoding_info(encoding)[0]
    except QVisionError:
        return default


def image_message(rng):
    """The fields of one fuzzed image message, as a dict for :func:`check_image_message`: a valid message
    with none, one or several fields corrupted (:data:`IMAGE_CORRUPTIONS`)."""
    r = rng.random
    k = rng.integers(4)
    bad = set() if k < 2 else {_pick(rng, IMAGE_CORRUPTIONS) for _ in range(k - 1 + int(rng.integers(3)))}
    enc = _pick(rng, FUZZ_ENCODINGS if 'encoding' in bad else FUZZ_ENCODINGS[:9])
    ch = channels_of(enc, int(rng.integers(1, 5)))
    big = r() < 0.05
    width = int(rng.integers(1, 2000 if big else 48))
    height = int(rng.integers(1, 2000 if big else 48))
    if ch == 2:
        width += width % 2
    if 'width' in bad:
        width = _pick(rng, ODD_SIZES)
    if 'height' in bad:
        height = _pick(rng, ODD_SIZES)
    w = width if isinstance(width, int) and 0 <= width < 4096 else 8
    h = height if isinstance(height, int) and 0 <= height < 4096 else 8
    step = w * ch + (int(rng.integers(0, 70)) if r() < 0.3 else 0)
    if 'step' in bad:
        step = _pick(rng, (w * ch - int(rng.integers(1, 4)), 0, -w * ch, 2 ** 40, None, float(step), str(step)))
    s = step if isinstance(step, int) and 0 <= step < 1 << 20 else w * ch
    size = s * h + (int(rng.integers(0, 9)) if r() < 0.2 else 0)
    if 'size' in bad:
        size = max(0, s * h - int(rng.integers(1, s * h + 2)))
    payload = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    kind = _pick(rng, BUFFER_KINDS if 'buffer' in bad else ('bytes', 'bytes', 'bytearray', 'memoryview', 'numpy'))
    flag = _pick(rng, ODD_FLAGS if 'flag' in bad else (0, 1))
    return dict(data=make_buffer(payload, kind), width=width, height=height, encoding=enc, step=step,
                is_bigendian=flag)


def _reference_rows(data, width, height, encoding, step):
    """The image an ``image_to_array`` call must return, from the bytes row by row (for testing)."""
    from .vision.image import encoding_info

    ch = encoding_info(encoding)[0]
    raw = bytes(np.asarray(data, np.uint8).reshape(-1)) if isinstance(data, np.ndarray) else bytes(data)
    rows = [np.frombuffer(raw[r * step:r * step + width * ch], np.uint8) for r in range(height)]
    return np.stack(rows).reshape(height, width, ch)


def check_image_message(fields, preprocessor=None):
    """Outcome of one image message through image_to_array -> to_bgr -> a Preprocessor; results checked."""
    from .vision.image import image_to_array, to_bgr

    name, arr = outcome(image_to_array, **fields)
    if name != 'ok':
        return '%s@image_to_array' % name
    enc = fields['encoding']
    w, h, step = (int(fields[k]) for k in ('width', 'height', 'step'))
    expect(arr.dtype == np.uint8 and arr.shape[:2] == (h, w), 'image_to_array gave %s %s for %dx%d',
           arr.dtype, arr.shape, w, h)
    ref = _reference_rows(fields['data'], w, h, enc, step)
    expect(np.array_equal(arr, ref), 'image_to_array differs from the bytes of the message')
    name, bgr = outcome(to_bgr, arr, enc)
    if name != 'ok':
        return '%s@to_bgr' % name
    expect(bgr.shape == (h, w, 3) and bgr.dtype == np.uint8, 'to_bgr gave %s %s', bgr.dtype, bgr.shape)
    return check_frame(arr, enc, preprocessor, arr_stage='')


def check_frame(frame, encoding, preprocessor=None, arr_stage='to_bgr'):
    """Outcome of a frame (any object) through to_bgr and a Preprocessor (resize, then normalize)."""
    from .vision.image import to_bgr

    if arr_stage:
        name, bgr = outcome(to_bgr, frame, encoding)
        if name != 'ok':
            return '%s@to_bgr' % name
        expect(isinstance(bgr, np.ndarray) and bgr.dtype == np.uint8 and bgr.ndim == 3 and bgr.shape[2] == 3,
               'to_bgr gave %r', getattr(bgr, 'shape', bgr))
    pres = preprocessors() if preprocessor is None else [preprocessor]
    for pre in pres:
        name, res = outcome(pre, frame, encoding=encoding)
        if name != 'ok':
            return '%s@Preprocessor' % name
        tensor, lb = res
        expect(tensor.shape == pre.output_shape and tensor.dtype == pre.dtype,
               'Preprocessor gave %s %s, expected %s %s', tensor.dtype, tensor.shape, pre.dtype,
               pre.output_shape)
        expect(tensor.dtype.kind != 'f' or bool(np.isfinite(tensor).all()), 'Preprocessor gave non-finite values')
        x0, y0, x1, y1 = lb.content
        expect(0 <= x0 < x1 <= pre.input_width and 0 <= y0 < y1 <= pre.input_height,
               'letterbox content %s outside the network input', lb.content)
    return 'ok'


FRAME_DTYPES = (np.uint8, np.int8, np.uint16, np.float32, np.float64, bool, object)
FRAME_LAYOUTS = ('plain', 'padded', 'flipped', 'fortran', 'readonly', 'zero_stride')
FRAME_CORRUPTIONS = ('encoding', 'channels', 'size', 'rank', 'dtype', 'list')


def frame_layout(a, how):
    """``a`` in the memory layout ``how`` (:data:`FRAME_LAYOUTS`): rows with padding (a strided view, as
    image_to_array gives), flipped rows, Fortran order, read-only, a zero stride."""
    if how == 'padded' and a.ndim >= 2:
        return np.concatenate([a, a], axis=1)[:, :a.shape[1]]
    if how == 'flipped' and a.ndim >= 2:
        return a[::-1]
    if how == 'fortran':
        return np.asfortranarray(a)
    if how == 'readonly':
        a.setflags(write=False)
    if how == 'zero_stride' and a.ndim >= 2:
        return np.broadcast_to(a[:1], a.shape)
    return a


def frame_array(rng):
    """``(frame, encoding)``: an array (or not) handed to to_bgr / Preprocessor directly, valid or with
    some of :data:`FRAME_CORRUPTIONS`."""
    k = rng.integers(4)
    bad = set() if k < 2 else {_pick(rng, FRAME_CORRUPTIONS) for _ in range(k - 1)}
    enc = _pick(rng, FUZZ_ENCODINGS if 'encoding' in bad else FUZZ_ENCODINGS[:9])
    ch = channels_of(enc, 3)
    if 'channels' in bad:
        ch = int(rng.integers(0, 6))
    h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    if ch == 2:
        w += w % 2
    if 'size' in bad:
        h, w = _pick(rng, ((0, w), (h, 0), (1, int(rng.integers(1000, 20000))), (int(rng.integers(1000, 20000)), 1),
                           (0, 0)))
    shape = [h, w, ch] if ch != 1 or rng.random() < 0.5 else [h, w]
    if 'rank' in bad:
        shape = _pick(rng, ([h], [], [h, w, ch, 1], [1, h, w, ch]))
    dtype = _pick(rng, FRAME_DTYPES) if 'dtype' in bad else np.uint8
    a = frame_layout(rng.integers(0, 256, shape).astype(dtype), _pick(rng, FRAME_LAYOUTS))
    return (a.tolist() if 'list' in bad else a), enc


# =========================================================================================== models

def _model_proto(nodes, inputs, outputs, inits, opset=17):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, 'fuzz_seed', [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
    m.ir_version = 8
    return m.SerializeToString()


def tiny_detector(seed=0, size=16, nc=3):
    """A small float model with the ops of an exported YOLOv8 head (Conv, SiLU as Sigmoid * x, MaxPool,
    Resize, Concat, Reshape, Split, Softmax, Transpose, Add/Sub/Mul with constants): output [1, 4 + nc, A]."""
    from onnx import helper

    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    c = 8
    n = helper.make_node
    nodes = [
        n('Conv', ['images', 'w0', 'b0'], ['c0'], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], name='stem'),
        n('Sigmoid', ['c0'], ['s0']), n('Mul', ['c0', 's0'], ['a0']),
        n('MaxPool', ['a0'], ['p0'], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        n('Conv', ['p0', 'w1', 'b1'], ['c1'], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], group=2),
        n('Relu', ['c1'], ['a1']),
        n('Resize', ['a1', '', 'scales'], ['u1'], mode='nearest'),
        n('Concat', ['u1', 'a0'], ['cat'], axis=1),
        n('Conv', ['cat', 'w2', 'b2'], ['head'], kernel_shape=[1, 1]),
        n('Reshape', ['head', 'shape'], ['flat']),
        n('Split', ['flat', 'split'], ['box', 'cls'], axis=1),
        n('Softmax', ['box'], ['box_s'], axis=1),
        n('Mul', ['box_s', 'gain'], ['box_g']),
        n('Add', ['box_g', 'offset'], ['box_o']),
        n('Sigmoid', ['cls'], ['cls_s']),
        n('Transpose', ['cls_s'], ['cls_t'], perm=[0, 2, 1]),
        n('Transpose', ['cls_t'], ['cls_b'], perm=[0, 2, 1]),
        n('Concat', ['box_o', 'cls_b'], ['output'], axis=1),
    ]
    hw = (size // 2) ** 2
    inits = {'w0': w(c, 3, 3, 3), 'b0': w(c), 'w1': w(c, c // 2, 3, 3), 'b1': w(c),
             'scales': np.array([1, 1, 2, 2], np.float32), 'w2': w(4 + nc, 2 * c, 1, 1), 'b2': w(4 + nc),
             'shape': np.array([1, 4 + nc, hw], np.int64), 'split': np.array([4, nc], np.int64),
             'gain': np.float32(size), 'offset': np.arange(hw, dtype=np.float32)}
    return _model_proto(nodes, [('images', (1, 3, size, size))], ['output'], inits)


def tiny_qdq(seed=0, size=16):
    """A small QDQ model (the form of ONNX Runtime's quantizer): uint8 activations per tensor, int8
    weights per channel, int32 biases; QConv, QLut (Sigmoid), QMul, QAdd, QConcat, pooling and a float head."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    n = helper.make_node
    inits = {}
    nodes = []

    def qdq(src, scale, zp, name):
        inits[name + '_s'] = np.float32(scale)
        inits[name + '_z'] = np.uint8(zp)
        nodes.append(n('QuantizeLinear', [src, name + '_s', name + '_z'], [name + '_q']))
        nodes.append(n('DequantizeLinear', [name + '_q', name + '_s', name + '_z'], [name]))
        return name

    def conv(src, s_in, cin, cout, k, name, stride=1):
        wf = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * 0.3
        sw = (np.abs(wf).reshape(cout, -1).max(1) / 127).astype(np.float32)
        inits[name + '_w'] = np.clip(np.rint(wf / sw[:, None, None, None]), -127, 127).astype(np.int8)
        inits[name + '_ws'] = sw
        inits[name + '_wz'] = np.zeros(cout, np.int8)
        inits[name + '_b'] = rng.integers(-500, 500, cout).astype(np.int32)
        inits[name + '_bs'] = (s_in * sw).astype(np.float32)
        inits[name + '_bz'] = np.zeros(cout, np.int32)
        nodes.append(n('DequantizeLinear', [name + '_w', name + '_ws', name + '_wz'], [name + '_wd'], axis=0))
        nodes.append(n('DequantizeLinear', [name + '_b', name + '_bs', name + '_bz'], [name + '_bd'], axis=0))
        nodes.append(n('Conv', [src, name + '_wd', name + '_bd'], [name + '_y'], kernel_shape=[k, k],
                       strides=[stride, stride], pads=[k // 2] * 4, name=name))
        return name + '_y'

    x = qdq('images', 1 / 255, 0, 'xq')
    c0 = qdq(conv(x, 1 / 255, 3, 8, 3, 'conv0', 2), 0.05, 128, 'c0q')
    nodes.append(n('Sigmoid', [c0], ['sig']))
    s0 = qdq('sig', 1 / 255, 0, 'sq')
    nodes.append(n('Mul', [c0, s0], ['silu']))
    a0 = qdq('silu', 0.03, 10, 'aq')
    nodes.append(n('MaxPool', [a0], ['pool'], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1]))
    p0 = qdq('pool', 0.03, 10, 'pq')
    c1 = qdq(conv(p0, 0.03, 8, 8, 1, 'conv1'), 0.04, 100, 'c1q')
    nodes.append(n('Add', [c1, a0], ['sum']))
    s1 = qdq('sum', 0.06, 90, 'addq')
    nodes.append(n('Concat', [s1, p0], ['cat'], axis=1))
    cat = qdq('cat', 0.06, 90, 'catq')
    nodes.append(n('GlobalAveragePool', [cat], ['gap']))
    g = qdq('gap', 0.05, 90, 'gapq')
    inits['fc_w'] = (rng.standard_normal((5, 16)) * 0.2).astype(np.float32)
    inits['fc_b'] = np.zeros(5, np.float32)
    inits['fc_shape'] = np.array([1, 16], np.int64)
    nodes.append(n('Reshape', [g, 'fc_shape'], ['flat']))
    nodes.append(n('Gemm', ['flat', 'fc_w', 'fc_b'], ['output'], transB=1))
    return _model_proto(nodes, [('images', (1, 3, size, size))], ['output'], inits)


def seed_models(shipped=True, zoo=False):
    """{name: ONNX bytes} the model mutations start from: the built-in small models, the shipped detector
    (``shipped``) and, with ``zoo`` (needs PyTorch and ONNX Runtime), the zoo models and their QDQ forms."""
    seeds = {'tiny_detector': tiny_detector(), 'tiny_qdq': tiny_qdq()}
    if shipped:
        path = os.path.join(os.path.dirname(__file__), 'data', 'detector_320.onnx')
        with open(path, 'rb') as fh:
            seeds['detector_320'] = fh.read()
    if zoo:
        from .runtime import zoo as z

        for name, builder, size in (('yolov8', z.yolov8_like, 64), ('yolov5', z.yolov5_like, 64),
                                    ('mobilenetv2', z.mobilenetv2_like, 64), ('resnet', z.resnet_like, 64)):
            seeds[name] = z.export(builder(), size)
            seeds[name + '_qdq'] = z.quantize_qdq(seeds[name])
    return seeds


# --- mutations: each takes (ModelProto, rng) and changes it in place, or (bytes, rng) -> bytes

ODD_INTS = (-2 ** 63, -2 ** 31, -7, -1, 0, 1, 2, 3, 5, 64, 2 ** 16, 2 ** 31 - 1, 2 ** 40, 2 ** 62)
ODD_FLOATS = (float('nan'), float('inf'), -float('inf'), -1.0, 0.0, 1e-38, 1e30, 0.5, 3.0)
OP_TYPES = ('Foo', 'Loop', 'NonMaxSuppression', 'LSTM', 'Conv', 'Relu', 'Gemm', 'Softmax', 'Resize', 'Concat',
            'Reshape', 'MaxPool', 'AveragePool', 'Add', 'Mul', 'Split', 'Slice', 'Transpose', 'Sigmoid',
            'QuantizeLinear', 'DequantizeLinear', 'BatchNormalization', 'ConstantOfShape', 'Expand', 'Tile',
            'Range', 'Pad', 'Gather', 'MatMul', 'Flatten', 'Clip', 'Cast', 'Squeeze', 'Unsqueeze', 'Shape',
            'ReduceMean', 'ArgMax', 'Where', 'Identity', 'GlobalAveragePool', 'Upsample', 'Einsum')


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))] if len(seq) else None


def _odd_int(rng):
    return int(_pick(rng, ODD_INTS)) if rng.random() < 0.5 else int(rng.integers(-3, 10))


def _mut_op_type(m, rng):
    node = _pick(rng, m.graph.node)
    node.op_type = _pick(rng, OP_TYPES)


def _mut_attribute(m, rng):
    from onnx import AttributeProto

    nodes = [nd for nd in m.graph.node if len(nd.attribute)]
    if not nodes or rng.random() < 0.15:
        node = _pick(rng, m.graph.node)
        node.attribute.add(name=_pick(rng, ('axis', 'perm', 'pads', 'strides', 'group', 'kernel_shape',
                                             'mode', 'to', 'value')), type=AttributeProto.INT, i=_odd_int(rng))
        return
    node = _pick(rng, nodes)
    k = int(rng.integers(len(node.attribute)))
    a = node.attribute[k]
    if rng.random() < 0.15:
        del node.attribute[k]
    elif a.type == AttributeProto.INT:
        a.i = _odd_int(rng)
    elif a.type == AttributeProto.INTS:
        vals = list(a.ints) or [1]
        choice = rng.integers(4)
        if choice == 0:
            vals[int(rng.integers(len(vals)))] = _odd_int(rng)
        elif choice == 1:
            vals = vals[:int(rng.integers(len(vals)))]
        elif choice == 2:
            vals = vals + [_odd_int(rng)]
        else:
            vals = [_odd_int(rng) for _ in vals]
        del a.ints[:]
        a.ints.extend(vals)
    elif a.type == AttributeProto.FLOAT:
        a.f = _pick(rng, ODD_FLOATS)
    elif a.type == AttributeProto.STRING:
        a.s = _pick(rng, (b'', b'linear', b'nearest', b'cubic', b'\xff\xfe', b'NOTSET', b'SAME_UPPER'))
    elif a.type == AttributeProto.TENSOR:
        _mutate_tensor(a.t, rng)
    else:
        a.type = int(rng.integers(0, 16))


def _mutate_tensor(t, rng):
    from onnx import TensorProto

    choice = rng.integers(7)
    if choice == 0:             # element type
        t.data_type = int(rng.integers(0, 26))
    elif choice == 1:           # one dim
        if len(t.dims):
            t.dims[int(rng.integers(len(t.dims)))] = _pick(rng, (0, 2, 3, 2 ** 20, 2 ** 40, 2 ** 62, -1))
        else:
            t.dims.append(_pick(rng, (0, 2, 2 ** 31)))
    elif choice == 2:           # rank
        if len(t.dims) and rng.random() < 0.5:
            del t.dims[-1]
        else:
            t.dims.append(int(rng.integers(1, 4)))
    elif choice == 3:           # data shorter
        if t.HasField('raw_data') and len(t.raw_data):
            t.raw_data = t.raw_data[:int(rng.integers(len(t.raw_data)))]
        else:
            for f in ('float_data', 'int64_data', 'int32_data', 'double_data'):
                if len(getattr(t, f)):
                    del getattr(t, f)[-1]
    elif choice == 4:           # external data
        t.data_location = TensorProto.EXTERNAL
        t.ClearField('raw_data')
        t.external_data.add(key='location', value=_pick(rng, ('/etc/passwd', '../../../../etc/shadow', 'w.bin',
                                                              '/proc/self/mem', 'nonexistent/x')))
        if rng.random() < 0.5:
            t.external_data.add(key='length', value=str(_pick(rng, (16, 2 ** 40))))
    elif choice == 5:           # values (NaN, Inf, huge) in a float tensor
        if t.data_type == TensorProto.FLOAT and t.HasField('raw_data') and len(t.raw_data) >= 4:
            a = np.frombuffer(t.raw_data, np.float32).copy()
            a[rng.integers(0, a.size, max(1, a.size // 4))] = _pick(rng, ODD_FLOATS)
            t.raw_data = a.tobytes()
        else:
            t.data_type = int(rng.integers(0, 26))
    else:                       # raw data replaced by typed data of another field
        if t.HasField('raw_data'):
            t.ClearField('raw_data')
            t.float_data.extend([1.0] * int(rng.integers(0, 5)))


def _mut_initializer(m, rng):
    if not len(m.graph.initializer):
        return
    _mutate_tensor(_pick(rng, m.graph.initializer), rng)


def _mut_drop_initializer(m, rng):
    if len(m.graph.initializer):
        del m.graph.initializer[int(rng.integers(len(m.graph.initializer)))]


def _mut_dangling(m, rng):
    node = _pick(rng, [nd for nd in m.graph.node if len(nd.input)] or m.graph.node)
    if len(node.input):
        node.input[int(rng.integers(len(node.input)))] = 'dangling_%d' % rng.integers(100)
    else:
        node.input.append('dangling')


def _mut_cycle(m, rng):
    nodes = m.graph.node
    if len(nodes) < 2:
        return
    i = int(rng.integers(len(nodes) - 1))
    j = int(rng.integers(i, len(nodes)))
    if len(nodes[i].input) and len(nodes[j].output):
        nodes[i].input[int(rng.integers(len(nodes[i].input)))] = nodes[j].output[0]


def _mut_rewire(m, rng):
    """A node reads another existing value (wrong shape, wrong type, an initializer...)."""
    names = [o for nd in m.graph.node for o in nd.output] + [i.name for i in m.graph.input] + \
        [t.name for t in m.graph.initializer]
    node = _pick(rng, [nd for nd in m.graph.node if len(nd.input)])
    if node is not None and names:
        node.input[int(rng.integers(len(node.input)))] = _pick(rng, names)


def _mut_arity(m, rng):
    node = _pick(rng, m.graph.node)
    if rng.random() < 0.5 and len(node.input):
        del node.input[-1]
    elif rng.random() < 0.5:
        node.input.append(_pick(rng, [i.name for i in m.graph.input] + ['']))
    elif len(node.output):
        node.output.append('extra_out_%d' % rng.integers(100))


def _mut_drop_node(m, rng):
    del m.graph.node[int(rng.integers(len(m.graph.node)))]


def _mut_shuffle(m, rng):
    nodes = list(m.graph.node)
    order = rng.permutation(len(nodes))
    copies = [type(nodes[0])() for _ in nodes]
    for c, k in zip(copies, order):
        c.CopyFrom(nodes[k])
    del m.graph.node[:]
    m.graph.node.extend(copies)


def _mut_duplicate_output(m, rng):
    nodes = m.graph.node
    if len(nodes) >= 2:
        a, b = rng.choice(len(nodes), 2, replace=False)
        if len(nodes[a].output) and len(nodes[b].output):
            nodes[b].output[0] = nodes[a].output[0]


def _mut_input(m, rng):
    vi = m.graph.input[0]
    tt = vi.type.tensor_type
    choice = rng.integers(5)
    if choice == 0:
        tt.elem_type = int(rng.integers(0, 26))
    elif choice == 1 and len(tt.shape.dim):
        d = tt.shape.dim[int(rng.integers(len(tt.shape.dim)))]
        if rng.random() < 0.3:
            d.dim_param = _pick(rng, ('N', 'height', ''))
        else:
            d.dim_value = _pick(rng, (0, -1, 1, 2, 7, 2 ** 16, 2 ** 31, 2 ** 62))
    elif choice == 2:
        if len(tt.shape.dim) and rng.random() < 0.5:
            del tt.shape.dim[-1]
        else:
            tt.shape.dim.add(dim_value=int(rng.integers(1, 4)))
    elif choice == 3:
        tt.ClearField('shape')
    else:
        vi.name = _pick(rng, ('', 'images', 'renamed', m.graph.initializer[0].name if len(m.graph.initializer)
                              else 'x'))


def _mut_outputs(m, rng):
    outs = m.graph.output
    choice = rng.integers(4)
    if choice == 0 and len(outs):
        del outs[int(rng.integers(len(outs)))]
    elif choice == 1 and len(outs):
        outs[int(rng.integers(len(outs)))].name = _pick(
            rng, ['nowhere', m.graph.input[0].name] + [t.name for t in m.graph.initializer[:3]])
    elif choice == 2:
        outs.add().CopyFrom(outs[0]) if len(outs) else None
    elif len(outs):
        outs[0].type.tensor_type.elem_type = int(rng.integers(0, 26))


def _mut_opset(m, rng):
    choice = rng.integers(3)
    if choice == 0 and len(m.opset_import):
        m.opset_import[0].version = _pick(rng, (0, 1, 7, 10, 11, 13, 17, 21, 99, 2 ** 62))
    elif choice == 1 and len(m.opset_import):
        m.opset_import[0].domain = _pick(rng, ('ai.onnx.ml', 'com.microsoft', 'ai.onnx'))
    else:
        node = _pick(rng, m.graph.node)
        node.domain = _pick(rng, ('com.microsoft', 'ai.onnx.ml', 'ai.onnx', 'custom'))


def _mut_huge(m, rng):
    """A node whose output size is set by a constant: ConstantOfShape, Expand, Tile, Range, Resize, Pad,
    or a Constant declaring huge dims."""
    from onnx import TensorProto, helper

    g = m.graph
    x = g.input[0].name
    big = _pick(rng, (2 ** 14, 2 ** 20, 2 ** 31, 2 ** 62))
    k = rng.integers(7)
    name = 'huge_%d' % rng.integers(1000)
    if k == 0:
        g.initializer.append(helper.make_tensor(name + '_s', TensorProto.INT64, [3], [big, big, 3]))
        node = helper.make_node('ConstantOfShape', [name + '_s'], [name])
    elif k == 1:
        g.initializer.append(helper.make_tensor(name + '_s', TensorProto.INT64, [4], [big, 3, big, 1]))
        node = helper.make_node('Expand', [x, name + '_s'], [name])
    elif k == 2:
        g.initializer.append(helper.make_tensor(name + '_s', TensorProto.INT64, [4], [1, 1, big, big]))
        node = helper.make_node('Tile', [x, name + '_s'], [name])
    elif k == 3:
        for s, v in (('_a', 0.0), ('_b', float(big)), ('_c', 1.0)):
            g.initializer.append(helper.make_tensor(name + s, TensorProto.FLOAT, [], [v]))
        node = helper.make_node('Range', [name + '_a', name + '_b', name + '_c'], [name])
    elif k == 4:
        g.initializer.append(helper.make_tensor(name + '_s', TensorProto.FLOAT, [4], [1, 1, big, big]))
        node = helper.make_node('Resize', [x, '', name + '_s'], [name], mode='nearest')
    elif k == 5:
        g.initializer.append(helper.make_tensor(name + '_s', TensorProto.INT64, [8], [0, 0, big, 0, 0, 0, big, 0]))
        node = helper.make_node('Pad', [x, name + '_s'], [name])
    else:
        t = TensorProto(name=name + '_v', data_type=TensorProto.FLOAT, dims=[big, big])   # no data carried
        node = helper.make_node('Constant', [], [name], value=t)
    g.node.append(node)
    result = name
    if rng.random() < 0.7:
        g.node.append(helper.make_node('Add', [x, name], [name + '_sum']))
        result = name + '_sum'
    if not len(g.output):
        g.output.add()
    g.output[0].name = result


PROTO_MUTATIONS = {
    'op_type': _mut_op_type, 'attribute': _mut_attribute, 'initializer': _mut_initializer,
    'drop_initializer': _mut_drop_initializer, 'dangling': _mut_dangling, 'cycle': _mut_cycle,
    'rewire': _mut_rewire, 'arity': _mut_arity, 'drop_node': _mut_drop_node, 'shuffle': _mut_shuffle,
    'duplicate_output': _mut_duplicate_output, 'input': _mut_input, 'outputs': _mut_outputs,
    'opset': _mut_opset, 'huge': _mut_huge,
}


def _truncate(data, rng):
    return data[:int(rng.integers(len(data)))]


def _bitflip(data, rng):
    b = bytearray(data)
    # half of the flips in the first 4 KiB, where the small structural fields of most models are
    for _ in range(int(rng.integers(1, 9))):
        pos = int(rng.integers(len(b))) if rng.random() < 0.5 else int(rng.integers(min(len(b), 4096)))
        b[pos] ^= 1 << int(rng.integers(8))
    return bytes(b)


def _splice(data, rng):
    b = bytearray(data)
    pos = int(rng.integers(len(b)))
    n = int(rng.integers(1, 64))
    k = rng.integers(3)
    if k == 0:
        b[pos:pos + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    elif k == 1:
        del b[pos:pos + n]
    else:
        b[pos:pos] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return bytes(b)


def _random_file(data, rng):
    n = int(rng.integers(0, 4096))
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def _wrong_kind(data, rng):
    """Valid bytes of something that is not an ONNX model (another protobuf message, a pickle...)."""
    import pickle

    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception:
        return data
    if not len(m.graph.node):
        return data                     # an earlier mutation left no model to take pieces from
    k = rng.integers(9)
    if k == 0:
        return m.graph.SerializeToString()
    if k == 1:
        return m.graph.initializer[0].SerializeToString() if len(m.graph.initializer) else b'\x08\x01'
    if k == 2:
        return m.graph.node[0].SerializeToString()
    if k == 3:
        m.ClearField('graph')
        return m.SerializeToString()
    if k == 4:
        return numpy_helper.from_array(np.zeros((2, 2), np.float32), 'x').SerializeToString()
    if k == 5:
        return helper.make_opsetid('', 17).SerializeToString()
    if k in (6, 7):
        # A pickle whose loading would run code (exit the process): nothing may unpickle it.  Case 6
        # wraps it in a .npy header of an object array, as numpy.save(allow_pickle=True) writes.
        payload = pickle.dumps(_NeverLoaded())
        if k == 7:
            return payload
        header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
        header += b' ' * (-(len(header) + 11) % 64) + b'\n'
        return b'\x93NUMPY\x01\x00' + len(header).to_bytes(2, 'little') + header + payload
    return b'{"graph": {"node": []}, "opset_import": [{"version": 17}]}'


class _NeverLoaded:
    def __reduce__(self):
        return (os._exit, (99,))


BYTE_MUTATIONS = {'truncate': _truncate, 'bitflip': _bitflip, 'splice': _splice, 'random_file': _random_file,
                  'wrong_kind': _wrong_kind}
MUTATIONS = tuple(PROTO_MUTATIONS) + tuple(BYTE_MUTATIONS)


def mutate_model(data, rng, kinds=None):
    """``(names of the mutations, new bytes)``: one to three mutations of the ONNX bytes ``data`` (names
    from :data:`MUTATIONS`, chosen by ``rng`` unless ``kinds`` is given)."""
    import onnx

    if kinds is None:
        count = 1 if rng.random() < 0.6 else int(rng.integers(2, 4))
        kinds = [MUTATIONS[int(rng.integers(len(MUTATIONS)))] for _ in range(count)]
    for kind in kinds:
        if kind in BYTE_MUTATIONS:
            data = BYTE_MUTATIONS[kind](data, rng) if data else data
            continue
        m = onnx.ModelProto()
        try:
            m.ParseFromString(data)
        except Exception:
            continue                    # an earlier mutation broke the protobuf: nothing to edit
        if not len(m.graph.node) or not len(m.graph.input):
            continue
        PROTO_MUTATIONS[kind](m, rng)
        data = m.SerializeToString()
    return list(kinds), data


def random_feed(info, rng):
    """A random array for an engine input (TensorInfo)."""
    dtype = np.dtype(info.dtype)
    if dtype.kind == 'f':
        return rng.standard_normal(info.shape).astype(dtype)
    if dtype.kind in 'iu':
        lo, hi = (0, 256) if dtype.itemsize == 1 else (-100, 100)
        return rng.integers(lo, hi, info.shape).astype(dtype)
    return np.zeros(info.shape, dtype)


def check_model(data, rng, path_dir=None):
    """Outcome of loading the model bytes ``data`` (from a file in ``path_dir`` when given, else from
    bytes) and, when it loads, of one run on random inputs; the outputs are checked against the
    engine's declared outputs."""
    from .runtime import Engine

    source = data
    if path_dir is not None:
        source = os.path.join(path_dir, 'model.onnx')
        with open(source, 'wb') as fh:
            fh.write(data)
    name, engine = outcome(Engine, source, num_threads=1)
    if name != 'ok':
        return '%s@load' % name
    if sum(int(np.prod(i.shape)) for i in engine.inputs) > RUN_LIMIT_ELEMENTS:
        return 'ok(not run)'
    feeds = {i.name: random_feed(i, rng) for i in engine.inputs}
    name, outs = outcome(engine.run, feeds)
    if name != 'ok':
        return '%s@run' % name
    expect(len(outs) == len(engine.outputs), 'run returned %d outputs, the engine declares %d', len(outs),
           len(engine.outputs))
    for o, info in zip(outs, engine.outputs):
        expect(isinstance(o, np.ndarray) and o.shape == info.shape and o.dtype == info.dtype,
               'output %r is %s %s, declared %s %s', info.name, getattr(o, 'dtype', None),
               getattr(o, 'shape', None), info.dtype, info.shape)
    return 'ok'


# ========================================================================================== decoder

DECODER_DTYPES = (np.float32, np.float32, np.float32, np.float64, np.float16, np.int32, np.uint8, bool,
                  np.complex64, object)


def model_output(rng, kind):
    """A fuzzed output array of a ``kind`` model ('yolov5', 'yolov8', 'classifier'): right layouts with
    NaN/Inf/huge values sprinkled in, empty axes, thousands of candidates, wrong ranks and dtypes."""
    r = rng.random
    n = 1 if r() < 0.7 else int(rng.integers(0, 4))
    nc = int(rng.integers(1, 12)) if r() < 0.9 else int(rng.integers(0, 2))
    a = int(rng.integers(0, 300)) if r() < 0.8 else int(rng.integers(1000, 8000))
    if r() < 0.05:
        a = 0
    if kind == 'yolov5':
        shape = [n, a, 5 + nc]
    elif kind == 'yolov8':
        shape = [n, 4 + nc, a] if r() < 0.8 else [n, a, 4 + nc]
    else:
        shape = [n, max(nc, 1)] if r() < 0.9 else [n, max(nc, 1), 1, 1]
    if r() < 0.1:
        shape = shape[:int(rng.integers(0, len(shape)))] if r() < 0.5 else shape + [int(rng.integers(1, 3))]
    dtype = np.float32 if r() < 0.85 else DECODER_DTYPES[rng.integers(len(DECODER_DTYPES))]
    x = rng.random(shape).astype(np.float64)
    if kind != 'classifier' and len(shape) == 3:
        # box coordinates in pixels of a 320 network input on the box rows/columns
        sel = (slice(None), slice(0, 4), slice(None)) if shape[1] == 4 + nc and kind == 'yolov8' else \
            (slice(None), slice(None), slice(0, 4))
        x[sel] = x[sel] * 400 - 40
    if x.size and r() < 0.5:
        k = max(1, int(x.size * r() * 0.2))
        x.reshape(-1)[rng.integers(0, x.size, k)] = rng.choice(
            [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, 1.0, 2.0, -1.0], k)
    if r() < 0.1:
        x = np.round(x * 4) / 4            # ties: equal scores and identical boxes
    with np.errstate(invalid='ignore', over='ignore'):
        out = x.astype(dtype) if dtype is not object else x.astype(object)
    if r() < 0.1 and out.ndim >= 2:
        out = out[..., ::-1]               # non-contiguous
    return out


def decoder_case(rng):
    """``(decoder kwargs, output, letterbox)`` of one fuzzed decoding."""
    from .vision.preprocess import Letterbox

    r = rng.random
    kind = ('yolov5', 'yolov8', 'classifier')[rng.integers(3)]
    out = model_output(rng, kind)
    kw = dict(kind=kind if r() < 0.7 else 'auto')
    if r() < 0.5:
        kw['num_classes'] = int(rng.integers(1, 12))
    kw['score_threshold'] = float(rng.choice([0.0, 0.1, 0.25, 0.5, 1.0])) if r() < 0.8 else float(r())
    kw['nms_iou_threshold'] = float(rng.choice([0.0, 0.45, 0.7, 1.0])) if r() < 0.8 else float(r())
    kw['max_detections'] = int(rng.choice([1, 5, 100, 300]))
    kw['agnostic_nms'] = bool(r() < 0.3)
    if r() < 0.2:
        kw['classes'] = [int(c) for c in rng.integers(0, 12, int(rng.integers(0, 4)))]
    if r() < 0.2:
        kw['max_candidates'] = int(rng.integers(1, 50))
    if r() < 0.1:
        kw['transposed'] = bool(r() < 0.5)
    lb = None
    if r() < 0.6:
        src = (int(rng.integers(1, 2000)), int(rng.integers(1, 2000)))
        lb = Letterbox.compute(src[0], src[1], 320, 320, 'letterbox' if r() < 0.8 else 'stretch')
        if r() < 0.1:
            lb = [lb] * int(rng.integers(0, 4))
    return kw, out, lb


def check_detections(det, decoder, lb):
    """DESIGN.md's rules on one image's detections: finite boxes with positive size inside the image,
    scores in [0, 1] by descending score, at most max_detections, only the requested classes."""
    from .vision.decode import Detections

    expect(isinstance(det, Detections), 'a detector result is %s', type(det).__name__)
    b, s, c = det.boxes, det.scores, det.class_ids
    expect(b.dtype == np.float32 and s.dtype == np.float32 and c.dtype == np.int32, 'dtypes %s %s %s',
           b.dtype, s.dtype, c.dtype)
    expect(len(det) <= decoder.max_detections, '%d detections > max_detections', len(det))
    expect(bool(np.isfinite(b).all()) and bool(((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()),
           'non-finite or degenerate boxes %s', b)
    expect(bool(((s >= 0) & (s <= 1)).all()), 'scores outside [0, 1]: %s', s)
    expect(bool((np.diff(s) <= 0).all()), 'scores not sorted: %s', s)
    if lb is not None:
        expect(bool((b[:, 0::2] >= 0).all() and (b[:, 0::2] <= lb.src_w).all() and (b[:, 1::2] >= 0).all()
                    and (b[:, 1::2] <= lb.src_h).all()), 'boxes outside the %dx%d image', lb.src_w, lb.src_h)
    if decoder.classes is not None:
        expect(bool(np.isin(c, decoder.classes).all()), 'classes %s not in the filter', c)


def check_decoder(kw, output, letterbox):
    """Outcome of ``Decoder(**kw)(output, letterbox)``; each result checked (:func:`check_detections`)."""
    from .vision.decode import Classification, Decoder

    name, decoder = outcome(Decoder, **kw)
    if name != 'ok':
        return '%s@Decoder()' % name
    name, results = outcome(decoder, output, letterbox)
    if name != 'ok':
        return '%s@decode' % name
    arr = np.asarray(output)
    expect(isinstance(results, list), 'Decoder returned %s', type(results).__name__)
    lbs = letterbox if isinstance(letterbox, list) else [letterbox] * len(results)
    expect(arr.ndim < 2 or len(results) in (arr.shape[0], 1), '%d results for output %s', len(results), arr.shape)
    for res, lb in zip(results, lbs):
        if isinstance(res, Classification):
            expect(len(res.class_ids) == len(res.scores) <= decoder.top_k, 'classification of %d', len(res))
            expect(bool(np.isfinite(res.scores).all()), 'non-finite class scores %s', res.scores)
        else:
            check_detections(res, decoder, lb)
    return 'ok'


def nms_case(rng):
    """``(boxes, scores, class_ids, iou_threshold, max_output)`` for nms / batched_nms."""
    r = rng.random
    k = int(rng.integers(0, 60)) if r() < 0.8 else int(rng.integers(500, 4000))
    xy = rng.random((k, 2)) * 300
    wh = rng.random((k, 2)) * 80 * (r() < 0.9) + (rng.random((k, 2)) < 0.05) * -5
    boxes = np.concatenate([xy, xy + wh], axis=1)
    if r() < 0.1:
        boxes = np.round(boxes / 20) * 20          # identical and touching boxes
    scores = rng.random(k) if r() < 0.8 else np.round(rng.random(k) * 3) / 3
    if k and r() < 0.3:
        bad = rng.integers(0, k, max(1, k // 10))
        boxes[bad, rng.integers(0, 4)] = rng.choice([np.nan, np.inf, -np.inf], len(bad))
        scores[rng.integers(0, k, max(1, k // 10))] = rng.choice([np.nan, np.inf, -np.inf])
    classes = rng.integers(0, int(rng.integers(1, 6)), k)
    thr = float(rng.choice([0.0, 0.3, 0.5, 1.0])) if r() < 0.7 else float(r())
    max_output = None if r() < 0.4 else int(rng.integers(0, 50))
    dtype = (np.float32, np.float64, np.float16)[rng.integers(3)] if r() < 0.3 else np.float32
    with np.errstate(over='ignore'):
        return boxes.astype(dtype), scores.astype(dtype), classes, thr, max_output


def check_nms(boxes, scores, class_ids, iou_threshold, max_output):
    """Outcome of nms and batched_nms; results checked, against the reference loop when the inputs are
    finite and small."""
    from .vision.nms import batched_nms, nms, nms_reference

    for fn, kw in ((nms, {}), (batched_nms, {'class_ids': class_ids})):
        name, keep = outcome(fn, boxes, scores, iou_threshold=iou_threshold, max_output=max_output, **kw)
        if name != 'ok':
            return '%s@%s' % (name, fn.__name__)
        n = len(np.asarray(scores))
        expect(keep.dtype == np.intp and len(np.unique(keep)) == len(keep) and bool(((keep >= 0) & (keep < n)).all()),
               '%s kept invalid indices %s', fn.__name__, keep)
        expect(max_output is None or len(keep) <= max_output, '%s kept %d > %s', fn.__name__, len(keep), max_output)
        b = np.asarray(boxes, np.float64)
        if n <= 200 and np.isfinite(b).all() and np.isfinite(np.asarray(scores, np.float64)).all():
            ref = nms_reference(b, np.asarray(scores, np.float64), iou_threshold, max_output,
                                kw.get('class_ids'))
            expect(np.array_equal(keep, ref), '%s kept %s, the reference %s', fn.__name__, keep, ref)
    return 'ok'


# ========================================================================================== params

#: Values a parameter of the wrong type or out of range may take.
ODD_VALUES = (None, -1, 0, 1, 2 ** 70, -2 ** 70, 1e9, 0.5, -0.5, 1.5, float('nan'), float('inf'), True, False,
              '3', '', 'letterbox', b'x', [1, 2], (1, 2, 3), (1, 2, 3, 4), [], {}, object(), 1j, np.int64(3),
              np.float32(0.5), np.uint8(200), np.array([1, 2, 3]), np.array(5), np.float64('nan'))

PREPROCESSOR_PARAMS = ('input_width', 'input_height', 'resize_mode', 'pad_value', 'channel_order', 'mean', 'std',
                       'input_scale', 'input_zero_point', 'layout', 'dtype')
DECODER_PARAMS = ('kind', 'num_classes', 'score_threshold', 'nms_iou_threshold', 'max_detections',
                  'agnostic_nms', 'classes', 'max_candidates', 'transposed', 'top_k')
ENGINE_PARAMS = ('num_threads', 'input_shapes', 'disable_passes')
RUN_FEEDS = ('not_a_dict', 'missing', 'extra', 'keys', 'dtype', 'shape', 'list', 'strided', 'nan', 'scalar',
             'batch', 'readonly', 'fortran', 'quantized', 'quantized_nchw', 'quantized_int8')
RUN_MODELS = ('tiny_detector', 'tiny_qdq')


def param_case(rng):
    """``(target, kwargs)``: one parameter of Preprocessor, Decoder or Engine set to an odd value (or a
    malformed Engine.run feed when target is 'run')."""
    r = rng.random
    target = ('Preprocessor', 'Decoder', 'Engine', 'run')[rng.integers(4)]
    value = ODD_VALUES[rng.integers(len(ODD_VALUES))]
    if target == 'Preprocessor':
        kw = {'input_width': 32, 'input_height': 24}
        key = PREPROCESSOR_PARAMS[rng.integers(len(PREPROCESSOR_PARAMS))]
        if key in ('input_scale', 'input_zero_point') and r() < 0.5:
            kw.update(input_scale=0.02, input_zero_point=3)
        kw[key] = value if r() < 0.8 else _pick(rng, (np.uint8, np.int8, np.float16, 'float32', int, 'nchw',
                                                      'stretch', 'bgr', 255, 256, 16384, 16385, 1e-45))
    elif target == 'Decoder':
        kw = {}
        key = DECODER_PARAMS[rng.integers(len(DECODER_PARAMS))]
        kw[key] = value if r() < 0.8 else _pick(rng, ('yolov8', 'yolov5', 'classifier', 'auto', 1.0001, -1e-9,
                                                      [0, -1], [1.5], np.array([0, 3], np.uint8)))
    elif target == 'Engine':
        key = ENGINE_PARAMS[rng.integers(len(ENGINE_PARAMS))]
        kw = {key: value if r() < 0.7 else _pick(rng, ({'images': (2, 3, 16, 16)}, {'images': (1, 3, 8, 8)},
                                                       {'x': (1,)}, {'images': 'abc'}, ['fuse_silu'],
                                                       ['propagate'], ['nope'], 'fuse_silu', 10 ** 6, 4096))}
    else:
        kw = {'feed': _pick(rng, RUN_FEEDS), 'model': _pick(rng, RUN_MODELS)}
    return target, kw


_ENGINES = {}


def tiny_engine(name='tiny_detector'):
    """A shared engine of a built-in model (:data:`RUN_MODELS`)."""
    if name not in _ENGINES:
        from .runtime import Engine

        _ENGINES[name] = Engine({'tiny_detector': tiny_detector, 'tiny_qdq': tiny_qdq}[name](), num_threads=1)
    return _ENGINES[name]


def _feeds(kind, rng):
    x = rng.random((1, 3, 16, 16)).astype(np.float32)
    if kind == 'not_a_dict':
        return [x]
    if kind == 'missing':
        return {}
    if kind == 'extra':
        return {'images': x, 'other': x}
    if kind == 'keys':
        return {'images': x, 0: x, 'other': x, None: x}
    if kind.startswith('quantized'):
        q = rng.integers(0, 256, (1, 16, 16, 3)).astype(np.int8 if kind.endswith('int8') else np.uint8)
        return {'images': q.transpose(0, 3, 1, 2) if kind.endswith('nchw') else q}
    if kind == 'dtype':
        return {'images': x.astype(np.float64)}
    if kind == 'shape':
        return {'images': x[:, :, :8]}
    if kind == 'list':
        return {'images': x.tolist()}
    if kind == 'strided':
        return {'images': np.concatenate([x, x], axis=3)[..., ::2]}
    if kind == 'nan':
        x[0, 0, 0, 0] = np.nan
        return {'images': x}
    if kind == 'scalar':
        return {'images': np.float32(1)}
    if kind == 'batch':
        return {'images': np.concatenate([x, x])}
    if kind == 'readonly':
        x.setflags(write=False)
        return {'images': x}
    return {'images': np.asfortranarray(x)}


def check_params(target, kw, rng):
    """Outcome of building (and using once) a Preprocessor, Decoder or Engine with ``kw``, or of
    Engine.run with a malformed feed."""
    from .runtime import Engine
    from .vision.decode import Decoder
    from .vision.preprocess import Preprocessor

    if target == 'Preprocessor':
        name, pre = outcome(Preprocessor, **kw)
        if name != 'ok':
            return '%s@Preprocessor()' % name
        return check_frame(rng.integers(0, 256, (13, 21, 3), dtype=np.uint8), 'bgr8', pre, arr_stage='')
    if target == 'Decoder':
        name, dec = outcome(Decoder, **kw)
        if name != 'ok':
            return '%s@Decoder()' % name
        out = rng.random((1, 9, 50)).astype(np.float32) * 100
        name, res = outcome(dec, out)
        return 'ok' if name == 'ok' else '%s@decode' % name
    if target == 'Engine':
        name, eng = outcome(Engine, tiny_detector(), **kw)
        if name != 'ok':
            return '%s@Engine()' % name
        feeds = {i.name: random_feed(i, rng) for i in eng.inputs}
        name, outs = outcome(eng.run, feeds)
        return 'ok' if name == 'ok' else '%s@run' % name
    engine = tiny_engine(kw['model'])
    feeds = _feeds(kw['feed'], rng)
    name, outs = outcome(engine.run, feeds)
    if name != 'ok':
        return '%s@run' % name
    expect(all(o.shape[1:] == i.shape[1:] for o, i in zip(outs, engine.outputs)), 'wrong output shapes')
    return 'ok'


# ============================================================================================= runner

def _case(entry, seed, k, seeds, tmp):
    """Generate and check case ``k`` of ``entry``: (outcome, kind of case, description of the case)."""
    rng = np.random.default_rng([seed, ENTRY_POINTS.index(entry), k])
    if entry == 'images':
        if rng.random() < 0.7:
            fields = image_message(rng)
            return check_image_message(fields), 'message', 'image message %s' % _describe_fields(fields)
        frame, enc = frame_array(rng)
        return check_frame(frame, enc), 'frame', 'frame %s %s' % (_describe_obj(frame), enc)
    if entry == 'models':
        names = sorted(seeds)
        base = names[int(rng.integers(len(names)))]
        kinds, data = mutate_model(seeds[base], rng)
        where = tmp if rng.random() < 0.3 else None
        return check_model(data, rng, where), kinds[0] if len(kinds) == 1 else 'several', \
            'model %s mutated by %s (%d bytes)%s' % (base, kinds, len(data), ' from a file' if where else '')
    if entry == 'decoder':
        if rng.random() < 0.7:
            kw, out, lb = decoder_case(rng)
            return check_decoder(kw, out, lb), 'Decoder', 'Decoder(%s) on %s, letterbox %r' % (
                kw, _describe_obj(out), lb)
        case = nms_case(rng)
        return check_nms(*case), 'nms', 'nms on %d boxes %s, thr %r, max_output %r' % (
            len(case[1]), case[0].dtype, case[3], case[4])
    target, kw = param_case(rng)
    return check_params(target, kw, rng), target, '%s %r' % (target, kw)


def _describe_obj(x):
    if isinstance(x, np.ndarray):
        return 'array %s %s strides %s' % (x.dtype, x.shape, x.strides)
    return type(x).__name__


def _describe_fields(f):
    return '%s' % {k: (_describe_obj(v) + ' len %d' % len(v) if k == 'data' and hasattr(v, '__len__') else
                       _describe_obj(v) if k == 'data' else v) for k, v in f.items()}


def _progress(entry, done, total, t0):
    """A progress line on stderr: rewritten in place on a terminal, every 10 % otherwise."""
    tty = sys.stderr.isatty()
    if done != total and (done % max(1, total // 10) if not tty else done % max(1, total // 200)):
        return
    rate = done / max(time.perf_counter() - t0, 1e-9)
    end = '\n' if done == total or not tty else ''
    sys.stderr.write('\r%-8s %6d / %d  (%.0f cases/s)%s' % (entry, done, total, rate, end))
    sys.stderr.flush()


def run(counts, seed=0, zoo=False, replay=None, memory_limit_gb=None, out=sys.stdout):
    """Run ``counts`` ({entry point: number of cases}); returns ({entry: (Counter of outcomes, Counter of
    (kind of case, outcome), seconds, (slowest seconds, its case))}, bugs).  ``replay``: (entry, k) to run
    one case and print its traceback."""
    if memory_limit_gb:
        limit = int(memory_limit_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    seeds = seed_models(shipped=True, zoo=zoo) if counts.get('models') or (replay and replay[0] == 'models') \
        else {}
    results, bugs = {}, []
    with tempfile.TemporaryDirectory(prefix='qvision-fuzz-') as tmp:
        if replay:
            entry, k = replay
            try:
                o, _, what = _case(entry, seed, k, seeds, tmp)
                out.write('%s case %d: %s\n  %s\n' % (entry, k, o, what))
            except Exception:
                traceback.print_exc(file=out)
                bugs.append((entry, k, traceback.format_exc()))
            return results, bugs
        for entry in ENTRY_POINTS:
            total = counts.get(entry, 0)
            if not total:
                continue
            c, by_kind = Counter(), Counter()
            t0 = time.perf_counter()
            slowest = (0.0, None)
            for k in range(total):
                t = time.perf_counter()
                kind = '?'
                try:
                    o, kind, _ = _case(entry, seed, k, seeds, tmp)
                except Exception as e:
                    o = 'BUG %s' % type(e).__name__
                    bugs.append((entry, k, ''.join(traceback.format_exception_only(type(e), e)).strip()))
                c[o] += 1
                by_kind[kind, o.split('@')[0]] += 1
                dt = time.perf_counter() - t
                if dt > slowest[0]:
                    slowest = (dt, k)
                _progress(entry, k + 1, total, t0)
            results[entry] = (c, by_kind, time.perf_counter() - t0, slowest)
    return results, bugs


def report(results, bugs, out=sys.stdout):
    """The counts per entry point and outcome, times, peak memory and bugs, as text."""
    for entry, (c, by_kind, seconds, (slow_s, slow_k)) in results.items():
        total = sum(c.values())
        out.write('%s: %d cases in %.1f s (%.1f ms/case, slowest case %s: %.2f s)\n'
                  % (entry, total, seconds, 1000 * seconds / max(total, 1), slow_k, slow_s))
        for o, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])):
            out.write('  %7d  %s\n' % (n, o))
        kinds = sorted({kind for kind, _ in by_kind})
        out.write('  by kind of case: %s\n' % '; '.join(
            '%s %s' % (kind, ', '.join('%s %d' % (o, n) for (k2, o), n in sorted(by_kind.items()) if k2 == kind))
            for kind in kinds))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write('peak RSS %.0f MB\n' % peak_mb)
    out.write('%d bug(s)\n' % len(bugs))
    for entry, k, msg in bugs[:50]:
        out.write('  %s:%d  %s\n' % (entry, k, msg.splitlines()[-1] if msg else ''))


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m qvision_ros.fuzz', description=__doc__.split('\n\n')[0])
    p.add_argument('--images', type=int, default=10000, help='image messages and frames (default 10000)')
    p.add_argument('--models', type=int, default=1000, help='mutated model files (default 1000)')
    p.add_argument('--decoder', type=int, default=5000, help='decoder and NMS inputs (default 5000)')
    p.add_argument('--params', type=int, default=2000, help='parameter sets (default 2000)')
    p.add_argument('--seed', type=int, default=0, help='run seed: case k of a run is reproducible alone')
    p.add_argument('--zoo', action='store_true', help='also mutate the PyTorch zoo models and their QDQ forms '
                   '(needs torch and onnxruntime)')
    p.add_argument('--memory-limit-gb', type=float, default=None,
                   help='address-space limit of the process: an allocation past it is a MemoryError, a bug')
    p.add_argument('--replay', metavar='ENTRY:K', help='run case K of ENTRY (images, models, decoder, params) '
                   'alone and print its traceback')
    a = p.parse_args(argv)
    replay = None
    if a.replay:
        entry, _, k = a.replay.partition(':')
        if entry not in ENTRY_POINTS or not k.isdigit():
            p.error('--replay takes ENTRY:K with ENTRY one of %s' % (ENTRY_POINTS,))
        replay = (entry, int(k))
    counts = {'images': a.images, 'models': a.models, 'decoder': a.decoder, 'params': a.params}
    t0 = time.perf_counter()
    results, bugs = run(counts, a.seed, a.zoo, replay, a.memory_limit_gb)
    if not replay:
        print('qvision_ros.fuzz seed %d, %.1f s in all' % (a.seed, time.perf_counter() - t0))
        report(results, bugs)
    return 1 if bugs else 0


if __name__ == '__main__':
    sys.exit(main())
