"""Network input from a camera frame: resize (letterbox or stretch), channel order, normalisation, quantisation.

Two stages, usable together (``Preprocessor.__call__``) or apart (the preprocessing node publishes the
result of the first, the inference node runs the second):

1. :meth:`Preprocessor.resize` - any supported encoding -> a network-size ``H x W x 3`` uint8 image in the
   network's channel order, resized with ``cv2.resize(INTER_LINEAR)``; in letterbox mode the image keeps its
   aspect ratio, is centred, and the borders hold ``pad_value`` as a pixel value.  The geometry is a
   :class:`Letterbox`, which maps boxes between network and source pixels.
2. :meth:`Preprocessor.normalize` - that image -> the input tensor, through one 256-entry lookup table per
   channel (``cv2.LUT``), so a pixel costs one table read whatever the arithmetic:

   * float output:  ``x = (p / 255 - mean[c]) / std[c]``, evaluated in float32;
   * quantised output (``input_scale`` / ``input_zero_point`` given, the int8 model's input quantisation):
     ``q = clamp(round_half_even(x / input_scale) + input_zero_point)`` - normalisation folded into the
     input quantisation, bit-exact with ``qvision_kernels.requant.quantize(x)`` applied to the float32 ``x``.

With fixed frame and network sizes nothing is allocated per call except by ``cv2.resize`` itself and, when
no ``out`` is given, the returned tensor; intermediate images live in buffers reused across calls.
"""
import math
from dataclasses import dataclass

import cv2
import numpy as np

from qvision_kernels.requant import quantize

from ..errors import ConfigError, ImageError
from .image import _check_array, _cv_into, encoding_info

RESIZE_MODES = ('letterbox', 'stretch')
CHANNEL_ORDERS = ('rgb', 'bgr')
LAYOUTS = ('nhwc', 'nchw')
MAX_SIDE = 16384


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one resize from a ``src_w x src_h`` frame to a ``dst_w x dst_h`` network input.

    The frame is resized to ``resized_w x resized_h`` and placed with its top-left corner at
    ``(pad_x, pad_y)``; the rest is padding.  Build it with :meth:`compute`.

    Coordinates are continuous pixel coordinates (pixel ``i`` spans ``[i, i + 1)``), so a source box maps
    to ``x_net = x_src * scale_x + pad_x`` with ``scale_x = resized_w / src_w`` - the exact ratio of the
    resize, which differs from the nominal :attr:`scale` by the rounding of ``resized_w`` to whole pixels.
    """
    src_w: int
    src_h: int
    dst_w: int
    dst_h: int
    mode: str
    resized_w: int
    resized_h: int
    pad_x: int
    pad_y: int

    def __post_init__(self):
        for name in ('src_w', 'src_h', 'dst_w', 'dst_h', 'resized_w', 'resized_h', 'pad_x', 'pad_y'):
            v = getattr(self, name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise ConfigError('Letterbox.%s must be an integer, got %r' % (name, v))
            object.__setattr__(self, name, int(v))
        if not isinstance(self.mode, str) or self.mode not in RESIZE_MODES:
            raise ConfigError('Letterbox.mode must be one of %s, got %r' % (RESIZE_MODES, self.mode))
        if min(self.src_w, self.src_h, self.dst_w, self.dst_h, self.resized_w, self.resized_h) < 1:
            raise ConfigError('Letterbox sizes must be >= 1: %r' % (self,))
        if (self.pad_x < 0 or self.pad_y < 0 or self.pad_x + self.resized_w > self.dst_w
                or self.pad_y + self.resized_h > self.dst_h):
            raise ConfigError('Letterbox content (%d x %d at %d, %d) does not fit in %d x %d'
                              % (self.resized_w, self.resized_h, self.pad_x, self.pad_y, self.dst_w, self.dst_h))

    @classmethod
    def compute(cls, src_w, src_h, dst_w, dst_h, mode='letterbox'):
        """The geometry :class:`Preprocessor` uses.

        ``letterbox``: ``scale = min(dst_w / src_w, dst_h / src_h)``; ``resized = floor(src * scale + 0.5)``
        per axis (at least 1, at most dst); ``pad = (dst - resized) // 2`` (the extra pixel of an odd
        difference goes to the right / bottom).  ``stretch``: resized = dst, no padding.
        """
        if not isinstance(mode, str) or mode not in RESIZE_MODES:
            raise ConfigError('resize mode must be one of %s, got %r' % (RESIZE_MODES, mode))
        if mode == 'stretch':
            return cls(src_w, src_h, dst_w, dst_h, mode, dst_w, dst_h, 0, 0)
        for name, v in (('src_w', src_w), ('src_h', src_h), ('dst_w', dst_w), ('dst_h', dst_h)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError('%s must be a positive integer, got %r' % (name, v))
        s = min(dst_w / src_w, dst_h / src_h)
        rw = min(dst_w, max(1, int(math.floor(src_w * s + 0.5))))
        rh = min(dst_h, max(1, int(math.floor(src_h * s + 0.5))))
        return cls(src_w, src_h, dst_w, dst_h, mode, rw, rh, (dst_w - rw) // 2, (dst_h - rh) // 2)

    @classmethod
    def identity(cls, width, height):
        """No resize: network pixels are source pixels (for an image already at the network size)."""
        return cls(width, height, width, height, 'stretch', width, height, 0, 0)

    @property
    def scale_x(self):
        """Exact horizontal ratio ``resized_w / src_w`` (network pixels per source pixel)."""
        return self.resized_w / self.src_w

    @property
    def scale_y(self):
        """Exact vertical ratio ``resized_h / src_h``."""
        return self.resized_h / self.src_h

    @property
    def scale(self):
        """Nominal uniform gain ``min(dst_w / src_w, dst_h / src_h)`` (in stretch mode use scale_x/scale_y)."""
        return min(self.dst_w / self.src_w, self.dst_h / self.src_h)

    @property
    def content(self):
        """``(x1, y1, x2, y2)`` of the frame's area inside the network input, in network pixels."""
        return (self.pad_x, self.pad_y, self.pad_x + self.resized_w, self.pad_y + self.resized_h)

    def to_source(self, boxes):
        """Map ``[..., 4]`` boxes (x1, y1, x2, y2) from network pixels to source pixels (not clipped).

        ``x_src = (x_net - pad_x) * src_w / resized_w`` (same for y).  float32 in -> float32 out, anything
        else -> float64.
        """
        b, dtype = _boxes_f64(boxes)
        out = np.empty_like(b)
        out[..., 0::2] = (b[..., 0::2] - self.pad_x) * self.src_w / self.resized_w
        out[..., 1::2] = (b[..., 1::2] - self.pad_y) * self.src_h / self.resized_h
        return out.astype(dtype, copy=False)

    def to_network(self, boxes):
        """Map ``[..., 4]`` boxes from source to network pixels: ``x_net = x_src * resized_w / src_w + pad_x``."""
        b, dtype = _boxes_f64(boxes)
        out = np.empty_like(b)
        out[..., 0::2] = b[..., 0::2] * self.resized_w / self.src_w + self.pad_x
        out[..., 1::2] = b[..., 1::2] * self.resized_h / self.src_h + self.pad_y
        return out.astype(dtype, copy=False)


def _boxes_f64(boxes):
    b = np.asarray(boxes)
    if b.ndim < 1 or b.shape[-1] != 4:
        raise ConfigError('boxes must have shape [..., 4] (x1, y1, x2, y2), got %s' % (b.shape,))
    dtype = np.float32 if b.dtype == np.float32 else np.float64
    return b.astype(np.float64), dtype


def _positive_int(value, name, maximum=MAX_SIDE):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 1 <= value <= maximum:
        raise ConfigError('%s must be an integer in [1, %d], got %r' % (name, maximum, value))
    return int(value)


def _dtype(value):
    """np.dtype(value), or ConfigError for something that is not a dtype."""
    try:
        return np.dtype(value)
    except (TypeError, ValueError):
        raise ConfigError('dtype must be a NumPy dtype (np.float32, np.float64, np.uint8 or np.int8), got %r'
                          % (value,)) from None


def _triple(value, name, positive):
    """A scalar or 3 finite numbers -> float tuple of 3; ConfigError otherwise."""
    try:
        vals = [float(value)] * 3 if np.ndim(value) == 0 else [float(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError('%s must be a number or 3 numbers, got %r' % (name, value)) from None
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise ConfigError('%s must be a finite number or 3 finite numbers (one per channel), got %r'
                          % (name, value))
    if positive and not all(v > 0 for v in vals):
        raise ConfigError('%s must be > 0 for every channel, got %r' % (name, value))
    return tuple(vals)


def normalize_float32(pixels, mean, std):
    """``(p / 255 - mean[c]) / std[c]`` in float32 on the last axis: the one definition of normalisation.

    ``pixels`` uint8 ``[..., 3]`` (or any shape broadcasting against 3 channels); the lookup tables of
    :class:`Preprocessor` are this function applied to 0..255.
    """
    p = np.asarray(pixels).astype(np.float32)
    return (p / np.float32(255) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


class Preprocessor:
    """Frame -> network input tensor (see the module docstring for the arithmetic).

    Parameters (all checked here; a wrong one raises :class:`ConfigError`):

    * ``input_width``, ``input_height`` - network input size in pixels.
    * ``resize_mode`` - ``'letterbox'`` (keep aspect ratio, pad) or ``'stretch'``.
    * ``pad_value`` - 0..255, the pixel value of the letterbox borders (before normalisation).
    * ``channel_order`` - ``'rgb'`` or ``'bgr'``: the order the network expects.
    * ``mean``, ``std`` - per channel in 0..1 units, in the network's channel order (a scalar means all 3).
    * ``input_scale``, ``input_zero_point`` - give both for quantised output (the model's input
      QuantizeLinear); neither for float output.
    * ``layout`` - ``'nhwc'`` or ``'nchw'`` of the returned tensor (batch of 1).
    * ``dtype`` - float output: float32 (default) or float64; quantised: uint8 (default) or int8.

    An instance keeps intermediate images in buffers it reuses, so use one instance per thread.
    """

    def __init__(self, input_width, input_height, resize_mode='letterbox', pad_value=114, channel_order='rgb',
                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), input_scale=None, input_zero_point=None,
                 layout='nhwc', dtype=None):
        self.input_width = _positive_int(input_width, 'input_width')
        self.input_height = _positive_int(input_height, 'input_height')
        if not isinstance(resize_mode, str) or resize_mode not in RESIZE_MODES:
            raise ConfigError('resize_mode must be one of %s, got %r' % (RESIZE_MODES, resize_mode))
        self.resize_mode = resize_mode
        if (isinstance(pad_value, (bool, np.bool_)) or not isinstance(pad_value, (int, np.integer))
                or not 0 <= pad_value <= 255):
            raise ConfigError('pad_value must be an integer pixel value in [0, 255], got %r' % (pad_value,))
        self.pad_value = int(pad_value)
        if not isinstance(channel_order, str) or channel_order not in CHANNEL_ORDERS:
            raise ConfigError('channel_order must be one of %s, got %r' % (CHANNEL_ORDERS, channel_order))
        self.channel_order = channel_order
        self.mean = _triple(mean, 'mean', positive=False)
        self.std = _triple(std, 'std', positive=True)
        if not isinstance(layout, str) or layout not in LAYOUTS:
            raise ConfigError('layout must be one of %s, got %r' % (LAYOUTS, layout))
        self.layout = layout
        if (input_scale is None) != (input_zero_point is None):
            raise ConfigError('give both input_scale and input_zero_point (quantised input) or neither (float '
                              'input); got input_scale=%r, input_zero_point=%r' % (input_scale, input_zero_point))
        self.quantized = input_scale is not None
        if self.quantized:
            self.dtype = _dtype(np.uint8 if dtype is None else dtype)
            if self.dtype not in (np.dtype(np.uint8), np.dtype(np.int8)):
                raise ConfigError('quantised input must have dtype uint8 or int8, got %s' % self.dtype)
            try:
                scale = float(input_scale)
            except (TypeError, ValueError):
                raise ConfigError('input_scale must be a number, got %r' % (input_scale,)) from None
            if not (math.isfinite(scale) and scale > 0) or not np.isfinite(np.float32(scale)) \
                    or np.float32(scale) <= 0:
                raise ConfigError('input_scale must be a finite number > 0 (also in float32), got %r'
                                  % (input_scale,))
            info = np.iinfo(self.dtype)
            if (isinstance(input_zero_point, (bool, np.bool_)) or not isinstance(input_zero_point, (int, np.integer))
                    or not info.min <= input_zero_point <= info.max):
                raise ConfigError('input_zero_point must be an integer in [%d, %d] for %s, got %r'
                                  % (info.min, info.max, self.dtype, input_zero_point))
            self.input_scale = scale
            self.input_zero_point = int(input_zero_point)
        else:
            self.dtype = _dtype(np.float32 if dtype is None else dtype)
            if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
                raise ConfigError('float input must have dtype float32 or float64 (integer dtypes need '
                                  'input_scale and input_zero_point), got %s' % self.dtype)
            self.input_scale = None
            self.input_zero_point = None
        self.lut = self._build_lut()
        if not np.isfinite(self.lut).all():
            raise ConfigError('mean=%r and std=%r make (p / 255 - mean) / std not finite in %s; give mean and '
                              'std in 0..1 units (e.g. std=0.229)' % (mean, std, self.dtype))
        self._geometry = {}   # (src_w, src_h) -> Letterbox
        self._buffers = {}    # name -> array, reused across calls

    # -- tables ---------------------------------------------------------------------------------------
    def _build_lut(self):
        """``(1, 256, 3)`` table in the output dtype: entry ``[0, p, c]`` is the value of pixel p on channel c."""
        levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
        with np.errstate(over='ignore', divide='ignore', invalid='ignore'):   # checked by the caller
            if self.dtype == np.float64:
                x = (levels / 255.0 - np.asarray(self.mean)) / np.asarray(self.std)
            else:
                x = normalize_float32(levels, self.mean, self.std)
            if self.quantized:
                x = quantize(x, self.input_scale, self.input_zero_point, dtype=self.dtype)
        return np.ascontiguousarray(x.astype(self.dtype).reshape(1, 256, 3))

    # -- shapes -------------------------------------------------------------------------------------
    @property
    def output_shape(self):
        """Shape of the tensor :meth:`__call__` returns: ``(1, H, W, 3)`` or ``(1, 3, H, W)``."""
        h, w = self.input_height, self.input_width
        return (1, h, w, 3) if self.layout == 'nhwc' else (1, 3, h, w)

    @property
    def image_encoding(self):
        """Encoding of the images :meth:`resize` returns: ``'rgb8'`` or ``'bgr8'`` (the network's order)."""
        return self.channel_order + '8'

    def letterbox_for(self, src_w, src_h):
        """The :class:`Letterbox` of a ``src_w x src_h`` frame (cached per size)."""
        key = (src_w, src_h)
        lb = self._geometry.get(key)
        if lb is None:
            if len(self._geometry) > 16:
                self._geometry.clear()
            lb = Letterbox.compute(src_w, src_h, self.input_width, self.input_height, self.resize_mode)
            self._geometry[key] = lb
        return lb

    def _buffer(self, name, shape, dtype=np.uint8):
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = np.empty(shape, dtype)
            self._buffers[name] = buf
        return buf

    # -- stage 1 ------------------------------------------------------------------------------------
    def resize(self, frame, encoding='bgr8', out=None):
        """Frame in ``encoding`` -> ``(image, letterbox)``: network-size ``H x W x 3`` uint8 image in the
        network's channel order (:attr:`image_encoding`), letterboxed or stretched.

        ``frame``: ``H x W x C`` uint8 as :func:`~qvision_ros.vision.image.image_to_array` returns (a strided
        view with row padding is fine; ``H x W`` for mono8).  ``out``: optional writable C-contiguous
        ``(input_height, input_width, 3)`` uint8 array; otherwise an internal buffer is returned, which the
        next call overwrites (copy it to keep it).
        """
        channels, canonical = encoding_info(encoding)
        frame = _check_array(frame, channels, encoding, 'frame')
        h, w = frame.shape[:2]
        target = self.channel_order + '8'
        shape = (self.input_height, self.input_width, 3)
        if out is None:
            out = self._buffer('image', shape)
        elif (not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != shape
              or not out.flags.c_contiguous or not out.flags.writeable):
            raise ConfigError('out must be a writable C-contiguous uint8 array of shape %s, got %s'
                              % (shape, _describe(out)))
        lb = self.letterbox_for(w, h)

        if canonical == 'mono8':
            gray = self._buffer('gray', shape[:2])
            self._place(frame[:, :, 0], gray, lb)
            return _cv_into(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR, dst=out), out), lb
        if canonical in ('bgr8', 'rgb8'):
            src = frame
        else:
            # Convert at the source size straight to the network's order (one pass).
            code = _CONVERT_TO[canonical][target]
            conv = self._buffer('converted', (h, w, 3))
            src = _cv_into(cv2.cvtColor(frame, code, dst=conv), conv)
            canonical = target
        if canonical == target:
            self._place(src, out, lb)
            return out, lb
        swapped = self._buffer('swap', shape)
        self._place(src, swapped, lb)
        return _cv_into(cv2.cvtColor(swapped, cv2.COLOR_BGR2RGB, dst=out), out), lb

    def _place(self, src, dst, lb):
        """Resize ``src`` into the content area of ``dst`` and fill the borders with pad_value."""
        x0, y0, x1, y1 = lb.content
        if y0 > 0:
            dst[:y0] = self.pad_value
        if y1 < lb.dst_h:
            dst[y1:] = self.pad_value
        if x0 > 0:
            dst[y0:y1, :x0] = self.pad_value
        if x1 < lb.dst_w:
            dst[y0:y1, x1:] = self.pad_value
        view = dst[y0:y1, x0:x1]
        if (lb.resized_w, lb.resized_h) == (lb.src_w, lb.src_h):
            np.copyto(view, src)
        else:
            _cv_into(cv2.resize(src, (lb.resized_w, lb.resized_h), dst=view, interpolation=cv2.INTER_LINEAR),
                     view)

    # -- stage 2 ------------------------------------------------------------------------------------
    def normalize(self, image, encoding=None, out=None):
        """Network-size image -> input tensor of :attr:`output_shape` and :attr:`dtype`.

        ``encoding`` defaults to :attr:`image_encoding`; ``bgr8``/``rgb8`` are reordered on the fly, any
        other supported encoding is converted first.  ``out``: optional writable C-contiguous array of
        :attr:`output_shape` or of the same without the batch axis (e.g. ``batch[i]``); it is returned.
        """
        encoding = self.image_encoding if encoding is None else encoding
        channels, canonical = encoding_info(encoding)
        image = _check_array(image, channels, encoding, 'image')
        if image.shape[:2] != (self.input_height, self.input_width):
            raise ImageError('image to normalise must be %d x %d (the network input), got %d x %d; resize it '
                             'first' % (self.input_width, self.input_height, image.shape[1], image.shape[0]))
        if canonical not in ('bgr8', 'rgb8'):
            conv = self._buffer('normalize_bgr', image.shape[:2] + (3,))
            src = image[:, :, 0] if channels == 1 else image
            image = _cv_into(cv2.cvtColor(src, _CONVERT_TO[canonical]['bgr8'], dst=conv), conv)
            canonical = 'bgr8'
        shape = self.output_shape
        if out is None:
            result = np.empty(shape, self.dtype)
            dst = result[0]
        else:
            if (not isinstance(out, np.ndarray) or out.dtype != self.dtype or out.shape not in (shape, shape[1:])
                    or not out.flags.c_contiguous or not out.flags.writeable):
                raise ConfigError('out must be a writable C-contiguous %s array of shape %s or %s, got %s'
                                  % (self.dtype, shape, shape[1:], _describe(out)))
            result = out
            dst = out[0] if out.shape == shape else out
        if canonical[:3] != self.channel_order:
            swapped = self._buffer('normalize_swap', image.shape)
            src = _cv_into(cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=swapped), swapped)
        elif image.flags.c_contiguous:
            src = image
        else:
            src = self._buffer('normalize_src', image.shape)
            np.copyto(src, image)
        lut = self.lut
        if self.layout == 'nhwc':
            _cv_into(cv2.LUT(src, lut, dst=dst), dst)
        else:
            hwc = self._buffer('normalize_hwc', image.shape, self.dtype)
            _cv_into(cv2.LUT(src, lut, dst=hwc), hwc)
            for c in range(3):
                np.copyto(dst[c], hwc[:, :, c])
        return result

    # -- both -----------------------------------------------------------------------------------------
    def __call__(self, frame, out=None, encoding='bgr8'):
        """Frame -> ``(tensor, letterbox)``: :meth:`resize` then :meth:`normalize`."""
        image, lb = self.resize(frame, encoding)
        return self.normalize(image, self.image_encoding, out=out), lb

    def __repr__(self):
        q = (', input_scale=%r, input_zero_point=%r' % (self.input_scale, self.input_zero_point)
             if self.quantized else '')
        return ('Preprocessor(%d, %d, resize_mode=%r, pad_value=%d, channel_order=%r, mean=%r, std=%r%s, '
                'layout=%r, dtype=%s)' % (self.input_width, self.input_height, self.resize_mode, self.pad_value,
                                          self.channel_order, self.mean, self.std, q, self.layout, self.dtype))


# canonical encoding -> {'bgr8' | 'rgb8': OpenCV conversion code}
_CONVERT_TO = {
    'bgra8': {'bgr8': cv2.COLOR_BGRA2BGR, 'rgb8': cv2.COLOR_BGRA2RGB},
    'rgba8': {'bgr8': cv2.COLOR_RGBA2BGR, 'rgb8': cv2.COLOR_RGBA2RGB},
    'mono8': {'bgr8': cv2.COLOR_GRAY2BGR, 'rgb8': cv2.COLOR_GRAY2RGB},
    'uyvy': {'bgr8': cv2.COLOR_YUV2BGR_UYVY, 'rgb8': cv2.COLOR_YUV2RGB_UYVY},
    'yuyv': {'bgr8': cv2.COLOR_YUV2BGR_YUY2, 'rgb8': cv2.COLOR_YUV2RGB_YUY2},
}


def _describe(a):
    if not isinstance(a, np.ndarray):
        return type(a).__name__
    flags = []
    if not a.flags.c_contiguous:
        flags.append('not C-contiguous')
    if not a.flags.writeable:
        flags.append('read-only')
    return '%s %s%s' % (a.dtype, a.shape, (' (%s)' % ', '.join(flags)) if flags else '')

