"""Raw frame buffers as ``sensor_msgs/Image`` carries them, without ROS.

A ROS image is four numbers and a byte string: ``height`` rows of ``step`` bytes each, of which the first
``width * bytes_per_pixel`` hold pixels and the rest (if any) is row padding.  :func:`image_to_array` turns
those fields into an ``H x W x C`` uint8 array that *views* the buffer (no copy; read-only when the buffer
is ``bytes``), :func:`array_to_image_fields` goes back, and :func:`to_bgr` converts any supported encoding
to the BGR array the rest of the vision layer works on.

Encodings (names as in ``sensor_msgs/image_encodings.hpp``), all 8 bits per channel:

========================  ========  ===========================================================
encoding                  channels  bytes in memory
========================  ========  ===========================================================
``bgr8`` / ``rgb8``        3         B G R / R G B per pixel
``bgra8`` / ``rgba8``      4         B G R A / R G B A per pixel
``mono8``                  1         Y per pixel
``uyvy`` (``yuv422``)      2         U0 Y0 V0 Y1 per pair of pixels (4:2:2, fourcc UYVY)
``yuyv`` (``yuv422_yuy2``) 2         Y0 U0 Y1 V0 per pair of pixels (4:2:2, fourcc YUYV / YUY2)
========================  ========  ===========================================================

``yuv422`` and ``yuv422_yuy2`` are the older (deprecated) names that ROS 2 Humble still uses; they mean
exactly ``uyvy`` and ``yuyv``.  A 4:2:2 frame is returned as ``H x W x 2`` (the layout OpenCV's
``COLOR_YUV2BGR_UYVY`` / ``_YUY2`` conversions take) and needs an even width.  YUV is converted to BGR with
OpenCV's BT.601 limited-range ("video range") coefficients.

``is_bigendian`` only matters for multi-byte channels; every supported encoding is 8-bit, so it is accepted
and ignored.
"""
import array as _array

import cv2
import numpy as np

from ..errors import ImageError

# encoding -> (channels, canonical name).  The canonical name is the one this module converts by.
_ENCODINGS = {
    'bgr8': (3, 'bgr8'),
    'rgb8': (3, 'rgb8'),
    'bgra8': (4, 'bgra8'),
    'rgba8': (4, 'rgba8'),
    'mono8': (1, 'mono8'),
    'uyvy': (2, 'uyvy'),
    'yuv422': (2, 'uyvy'),
    'yuyv': (2, 'yuyv'),
    'yuv422_yuy2': (2, 'yuyv'),
}

#: Every encoding :func:`image_to_array` and :func:`to_bgr` accept.
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)

# Named in the error message when a known ROS encoding is not supported.
_SIXTEEN_BIT = ('mono16', 'rgb16', 'bgr16', 'rgba16', 'bgra16', 'bayer_rggb16', 'bayer_bggr16',
                'bayer_gbrg16', 'bayer_grbg16')

_TO_BGR = {
    'rgb8': cv2.COLOR_RGB2BGR,
    'bgra8': cv2.COLOR_BGRA2BGR,
    'rgba8': cv2.COLOR_RGBA2BGR,
    'mono8': cv2.COLOR_GRAY2BGR,
    'uyvy': cv2.COLOR_YUV2BGR_UYVY,
    'yuyv': cv2.COLOR_YUV2BGR_YUY2,
}

_FROM_BGR = {
    'rgb8': cv2.COLOR_BGR2RGB,
    'bgra8': cv2.COLOR_BGR2BGRA,
    'rgba8': cv2.COLOR_BGR2RGBA,
    'mono8': cv2.COLOR_BGR2GRAY,
}


def _unsupported(encoding):
    supported = ', '.join(SUPPORTED_ENCODINGS)
    enc = str(encoding)
    if enc in _SIXTEEN_BIT or enc.startswith(('16UC', '16SC')):
        return ImageError('image encoding %r has 16-bit channels, which are not supported; convert the frames '
                          'to one of the 8-bit encodings: %s' % (enc, supported))
    return ImageError('unsupported image encoding %r; supported: %s' % (encoding, supported))


def encoding_info(encoding):
    """``(channels, canonical_name)`` of a supported encoding; ImageError for any other.

    The canonical name maps the deprecated aliases: ``yuv422`` -> ``uyvy``, ``yuv422_yuy2`` -> ``yuyv``.
    """
    try:
        return _ENCODINGS[encoding]
    except (KeyError, TypeError):
        raise _unsupported(encoding) from None


def _as_int(value, name, minimum):
    """A non-bool integer (Python or NumPy) >= minimum, or ImageError."""
    if isinstance(value, (bool, np.bool_)):
        raise ImageError('image %s must be an integer, got %r' % (name, value))
    try:
        v = int(value.__index__())
    except (AttributeError, TypeError):
        raise ImageError('image %s must be an integer, got %r' % (name, value)) from None
    if v < minimum:
        raise ImageError('image %s must be >= %d, got %d' % (name, minimum, v))
    return v


def _byte_view(data):
    """A 1-D uint8 view of ``data`` (bytes, bytearray, memoryview, array.array, NumPy uint8 array)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageError('image data as a NumPy array must have dtype uint8, got %s' % data.dtype)
        return data.reshape(-1)  # a view when contiguous (the usual case); a copy otherwise
    if isinstance(data, _array.array) and data.itemsize != 1:
        raise ImageError("image data as array.array must hold bytes (typecode 'B' or 'b'), got typecode %r"
                         % data.typecode)
    if isinstance(data, str) or not isinstance(data, (bytes, bytearray, memoryview, _array.array)):
        raise ImageError('image data must be bytes, bytearray, memoryview, array.array or a uint8 NumPy '
                         'array, got %s' % type(data).__name__)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (ValueError, TypeError, BufferError) as exc:  # e.g. a non-contiguous memoryview
        raise ImageError('image data cannot be read as a byte buffer: %s' % exc) from None


def image_to_array(data, width, height, encoding, step, is_bigendian=False):
    """View the fields of a ``sensor_msgs/Image`` as an ``H x W x C`` uint8 array (no copy).

    ``step`` is the length of a row in bytes and may exceed ``width * bytes_per_pixel`` (row padding): the
    result is then a strided view that skips the padding.  ``data`` must hold at least ``step * height``
    bytes; anything after that is ignored.  4:2:2 encodings give ``H x W x 2``.

    The array shares memory with ``data``; it is read-only when ``data`` is immutable (``bytes``).
    Raises :class:`ImageError` for an unknown or 16-bit encoding, zero sizes, an odd width in 4:2:2, a step
    smaller than a row, or too little data.
    """
    channels, canonical = encoding_info(encoding)
    width = _as_int(width, 'width', 1)
    height = _as_int(height, 'height', 1)
    step = _as_int(step, 'step', 0)
    if not isinstance(is_bigendian, (bool, int, np.integer)) or int(is_bigendian) not in (0, 1):
        raise ImageError('image is_bigendian must be 0 or 1 (a bool), got %r' % (is_bigendian,))
    if channels == 2 and width % 2:
        raise ImageError('a %s (YUV 4:2:2) image needs an even width (two pixels share U and V), got width %d'
                         % (encoding, width))
    row = width * channels
    if step < row:
        raise ImageError('image step %d is smaller than a row of %d pixels of %s (%d bytes: width * %d)'
                         % (step, width, encoding, row, channels))
    buf = _byte_view(data)
    needed = step * height
    if buf.size < needed:
        raise ImageError('image data holds %d bytes; %s %dx%d with step %d needs step * height = %d'
                         % (buf.size, encoding, width, height, step, needed))
    rows = buf[:needed].reshape(height, step)
    # Splitting the unit-stride last axis keeps the view: no copy even when step > row.
    return rows[:, :row].reshape(height, width, channels)


def array_to_image_fields(array, encoding):
    """The ``sensor_msgs/Image`` fields of an ``H x W x C`` (or ``H x W`` for mono8) uint8 array.

    Returns ``dict(data=bytes, width, height, encoding, step, is_bigendian)`` with ``step = width * C``
    (rows packed, no padding).  The array must already be in ``encoding``'s channel order and count
    (see :func:`from_bgr`).  ``encoding`` is written as given (an alias stays an alias).
    """
    channels, _ = encoding_info(encoding)
    a = _check_array(array, channels, encoding, 'array')
    height, width = a.shape[:2]
    return dict(data=np.ascontiguousarray(a).tobytes(), width=int(width), height=int(height),
                encoding=encoding, step=int(width * channels), is_bigendian=0)


def _check_array(image, channels, encoding, what):
    """``image`` as H x W x channels uint8 (an H x W array is taken as one channel); ImageError otherwise."""
    if not isinstance(image, np.ndarray):
        raise ImageError('%s must be a NumPy array, got %s' % (what, type(image).__name__))
    if image.dtype != np.uint8:
        raise ImageError('%s must have dtype uint8, got %s' % (what, image.dtype))
    if image.ndim == 2 and channels == 1:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] != channels:
        raise ImageError('%s for encoding %s must have shape (H, W, %d)%s, got %s'
                         % (what, encoding, channels, ' or (H, W)' if channels == 1 else '', image.shape))
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError('%s must not be empty, got shape %s' % (what, image.shape))
    if channels == 2 and image.shape[1] % 2:
        raise ImageError('a %s (YUV 4:2:2) %s needs an even width, got shape %s' % (encoding, what, image.shape))
    return image


def _check_out(out, shape, what='out'):
    """ImageError unless ``out`` is a writable C-contiguous uint8 array of ``shape``."""
    if not isinstance(out, np.ndarray):
        raise ImageError('%s must be a NumPy array, got %s' % (what, type(out).__name__))
    if out.dtype != np.uint8 or out.shape != shape or not out.flags.c_contiguous or not out.flags.writeable:
        raise ImageError('%s must be a writable C-contiguous uint8 array of shape %s, got %s %s%s'
                         % (what, shape, out.dtype, out.shape,
                            '' if out.flags.c_contiguous and out.flags.writeable else ' (not contiguous or read-only)'))


def _cv_into(result, dst):
    """OpenCV writes into ``dst`` when the layouts allow; copy in the rare case it allocated instead."""
    if result is not dst and not np.shares_memory(result, dst):
        np.copyto(dst, result.reshape(dst.shape))
    return dst


def to_bgr(image, encoding, out=None):
    """Convert an ``H x W x C`` uint8 array in ``encoding`` (as :func:`image_to_array` returns) to BGR.

    Returns ``H x W x 3`` uint8.  For ``bgr8`` the input itself is returned (no copy) unless ``out`` is
    given.  YUV 4:2:2 uses OpenCV's BT.601 conversion (``cv2.COLOR_YUV2BGR_UYVY`` / ``_YUY2``).
    ``out``: an optional preallocated C-contiguous ``H x W x 3`` uint8 array to write into.
    """
    channels, canonical = encoding_info(encoding)
    image = _check_array(image, channels, encoding, 'image')
    shape = image.shape[:2] + (3,)
    if out is not None:
        _check_out(out, shape)
    if canonical == 'bgr8':
        if out is None:
            return image
        np.copyto(out, image)
        return out
    src = image[:, :, 0] if channels == 1 else image
    if out is None:
        return cv2.cvtColor(src, _TO_BGR[canonical])
    return _cv_into(cv2.cvtColor(src, _TO_BGR[canonical], dst=out), out)


def from_bgr(image_bgr, encoding):
    """Convert a BGR ``H x W x 3`` uint8 array to ``encoding`` (bgr8, rgb8, bgra8, rgba8, mono8).

    The inverse direction of :func:`to_bgr` for the RGB-family encodings, e.g. to publish a captured frame
    in the encoding a consumer asked for.  YUV 4:2:2 output is not provided (no camera source needs it).
    Alpha is set to 255; mono8 is OpenCV's BT.601 luma.  ``bgr8`` returns the input itself.
    """
    channels, canonical = encoding_info(encoding)
    image_bgr = _check_array(image_bgr, 3, 'bgr8', 'image_bgr')
    if canonical == 'bgr8':
        return image_bgr
    if canonical not in _FROM_BGR:
        raise ImageError('from_bgr cannot produce %s; it produces bgr8, rgb8, bgra8, rgba8 and mono8'
                         % encoding)
    res = cv2.cvtColor(image_bgr, _FROM_BGR[canonical])
    return res[:, :, None] if res.ndim == 2 else res
