"""Field checks of ROS 2 Python messages, written from rosidl_python's generated setters.

Source read: ros2/rosidl_python, branches humble and jazzy, ``rosidl_generator_py/resource/_msg.py.em``
(the property setters: ``isinstance(value, float)`` / ``int`` / ``str``, integer ranges per width, float32
bounds +-3.402823466e+38, ``bytes`` of length 1 for ``byte``/``octet``, ``array.array`` with the matching
type code or a sequence for ``T[]`` of numbers, a NumPy array of the right dtype and size for ``T[N]``,
nested messages by class) and ``generate_py_impl.py`` (``SPECIAL_NESTED_BASIC_TYPES``: the dtypes and type
codes).  Humble always checks; Jazzy checks when ``ROS_PYTHON_CHECK_FIELDS=1`` and otherwise fails later,
in the C conversion at publish time - the double checks always, like Humble.

The field lists come from a rosbags typestore (``fielddefs``), i.e. the ROS 2 message definitions.
``check_message`` walks a message of either family (rosbags dataclasses or the double's rclpy-like
classes) and raises :class:`FieldError` naming the field path.
"""
import array
import math
from collections.abc import Sequence, Set

import numpy as np
from rosbags.interfaces import Nodetype

# rosbags base type -> (dtype name, array.array type code)
SPECIAL = {
    'float32': ('float32', 'f'), 'float64': ('float64', 'd'),
    'int8': ('int8', 'b'), 'uint8': ('uint8', 'B'), 'int16': ('int16', 'h'), 'uint16': ('uint16', 'H'),
    'int32': ('int32', 'i'), 'uint32': ('uint32', 'I'), 'int64': ('int64', 'q'), 'uint64': ('uint64', 'Q'),
}
FLOAT32_MAX = 3.402823466e+38
FLOAT64_MAX = 1.7976931348623157e+308


class FieldError(AssertionError):
    """A field value that rclpy's generated message class would reject."""


def _int_bounds(name):
    if name in ('byte', 'char'):
        return 0, 256
    bits = int(''.join(c for c in name if c.isdigit()))
    if name.startswith('u'):
        return 0, 2 ** bits
    return -2 ** (bits - 1), 2 ** (bits - 1)


def check_base(value, name, path, strict=False):
    """One scalar of base type ``name`` (rosbags spelling: bool, byte, char, int8..uint64, float32/64,
    string).  ``strict``: a ``byte`` must be ``bytes`` of length 1, as rclpy stores it."""
    if name == 'string':
        if not isinstance(value, str):
            raise FieldError("%s must be of type 'str', got %r" % (path, type(value).__name__))
        return
    if name == 'bool':
        if not isinstance(value, bool):
            raise FieldError("%s must be of type 'bool', got %r" % (path, type(value).__name__))
        return
    if name in ('byte', 'octet'):
        # rclpy stores a ROS byte as bytes of length 1; rosbags as int 0..255.
        if isinstance(value, (bytes, bytearray)) and len(value) == 1:
            return
        if not strict and isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 256:
            return
        raise FieldError("%s (byte) must be of type 'bytes' with length 1%s, got %r"
                         % (path, '' if strict else ' (rclpy) or an int in [0, 255] (rosbags)', value))
    if name in ('float32', 'float64'):
        if not isinstance(value, float):
            raise FieldError("%s must be of type 'float', got %r" % (path, type(value).__name__))
        bound = FLOAT32_MAX if name == 'float32' else FLOAT64_MAX
        if (value < -bound or value > bound) and not math.isinf(value):
            raise FieldError('%s must be a %s in [%g, %g], got %r' % (path, name, -bound, bound, value))
        return
    if name in SPECIAL or name == 'char':
        if not isinstance(value, int):
            raise FieldError("%s must be of type 'int', got %r" % (path, type(value).__name__))
        lo, hi = _int_bounds(name)
        if not lo <= value < hi:
            raise FieldError('%s must be an integer in [%d, %d], got %d' % (path, lo, hi - 1, value))
        return
    raise FieldError('%s has unknown base type %r' % (path, name))


def _check_number_container(value, name, fixed, bound, path, strict):
    """``T[N]`` (``fixed`` = N), ``T[]`` or ``T[<=N]`` (``bound`` = N, 0 for none) of a numeric type."""
    dtype, code = SPECIAL[name]
    if isinstance(value, np.ndarray):
        if strict and not fixed:
            # rclpy: a sequence field takes array.array or a Sequence; numpy arrays are neither.
            raise FieldError("%s must be an array.array('%s') or a sequence of values, not a numpy array"
                             % (path, code))
        if value.dtype != np.dtype(dtype) or value.ndim != 1 or (fixed and value.size != fixed):
            raise FieldError('%s must be a 1-D numpy.%s array%s, got %s %s'
                             % (path, dtype, ' of size %d' % fixed if fixed else '', value.dtype, value.shape))
        if bound and value.size > bound:
            raise FieldError('%s must have at most %d values, got %d' % (path, bound, value.size))
        return
    if isinstance(value, array.array) and not fixed:
        if value.typecode != code:
            raise FieldError("%s array.array() must have the type code of '%s', got '%s'"
                             % (path, code, value.typecode))
        if bound and len(value) > bound:
            raise FieldError('%s must have at most %d values, got %d' % (path, bound, len(value)))
        return
    _check_sequence(value, fixed, bound, path)
    if isinstance(value, (bytes, bytearray)) and code == 'B':
        return   # bytes iterate as ints in [0, 255]
    for i, v in enumerate(value):
        check_base(v, name, '%s[%d]' % (path, i))


def _check_sequence(value, fixed, bound, path):
    if not isinstance(value, (Sequence, Set)) or isinstance(value, str):
        raise FieldError('%s must be a set or sequence, got %r' % (path, type(value).__name__))
    if fixed and len(value) != fixed:
        raise FieldError('%s must have length %d, got %d' % (path, fixed, len(value)))
    if bound and len(value) > bound:
        raise FieldError('%s must have at most %d values, got %d' % (path, bound, len(value)))


def check_value(value, desc, store, path, classes=None, strict=False):
    """``value`` against a rosbags field description ``(Nodetype, detail)``.

    ``classes``: ``{typename: class}`` that nested messages must be instances of; ``strict``: rclpy's
    storage rules (see :func:`check_base` and :func:`_check_number_container`)."""
    kind, detail = desc
    if kind == Nodetype.BASE:
        check_base(value, detail[0], path, strict)
    elif kind == Nodetype.NAME:
        check_message(value, detail, store, path, classes, strict)
    elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        (sub_kind, sub_detail), size = detail
        fixed = size if kind == Nodetype.ARRAY else 0
        bound = size if kind == Nodetype.SEQUENCE else 0
        if sub_kind == Nodetype.BASE and sub_detail[0] in SPECIAL:
            _check_number_container(value, sub_detail[0], fixed, bound, path, strict)
            return
        if isinstance(value, (bytes, bytearray)):
            raise FieldError('%s must be a sequence of %s, got bytes' % (path, sub_detail))
        _check_sequence(value, fixed, bound, path)
        for i, v in enumerate(value):
            check_value(v, (sub_kind, sub_detail), store, '%s[%d]' % (path, i), classes, strict)
    else:
        raise FieldError('%s: unknown field kind %r' % (path, kind))


def field_names(store, typename):
    """Field names of ``typename`` in definition order."""
    return [name for name, _ in store.fielddefs[typename][1]]


def check_message(msg, typename, store, path='msg', classes=None, strict=False):
    """Every field of ``msg`` exists in ``typename``'s definition, and only those, each with a value of
    the type rclpy accepts.  ``classes``: ``{typename: class}`` the message (and nested ones) must be an
    instance of (rclpy checks nested messages by class); default: the message's own ``__msgtype__``."""
    if typename not in store.fielddefs:
        raise FieldError('%s: %s is not a known message type' % (path, typename))
    expected = classes.get(typename) if classes else None
    if expected is not None and not isinstance(msg, expected):
        raise FieldError("%s must be a sub message of type '%s', got %s" % (path, typename, type(msg).__name__))
    own = getattr(type(msg), '__msgtype__', None)
    if own is not None and own != typename:
        raise FieldError('%s must be a %s, got a %s' % (path, typename, own))
    names = field_names(store, typename)
    declared = getattr(type(msg), '__slots__', None)
    if declared is not None:
        extra = sorted(s.lstrip('_') for s in declared if s.lstrip('_') not in names and s != '_check_fields')
        if extra:
            raise FieldError('%s has fields %s that %s does not define' % (path, extra, typename))
    for name, desc in store.fielddefs[typename][1]:
        if not hasattr(msg, name):
            raise FieldError('%s.%s is missing (a field of %s)' % (path, name, typename))
        check_value(getattr(msg, name), desc, store, '%s.%s' % (path, name), classes, strict)
