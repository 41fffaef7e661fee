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


def check_base(value, name, path):
    """One scalar of base type ``name`` (rosbags spelling: bool, byte, char, int8..uint64, float32/64,
    string)."""
    if name == 'string':
        if not isinstance(value, str):
            raise FieldError("%s must be of type 'str', got %r" % (path, type(value).__name__))
        return
    if name == 'bool':
        if not isinstance(value, bool):
            raise FieldError("%s must be of type 'bool', got %r" % (path, type(value).__name__))
        return
    if name in ('byte', 'octet'):
        # rclpy stores a ROS byte as bytes of length 1; rosbags as int 0..255.  Both are accepted.
        if isinstance(value, (bytes, bytearray)) and len(value) == 1:
            return
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 256:
            return
        raise FieldError('%s (byte) must be bytes of length 1 (rclpy) or an int in [0, 255], got %r'
                         % (path, value))
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


def _check_number_container(value, name, size, path):
    """``T[N]`` (size > 0) or ``T[]`` (size 0) of a numeric base type."""
    dtype, code = SPECIAL[name]
    if isinstance(value, np.ndarray):
        if value.dtype != np.dtype(dtype) or value.ndim != 1 or (size and value.size != size):
            raise FieldError('%s must be a 1-D numpy.%s array%s, got %s %s'
                             % (path, dtype, ' of size %d' % size if size else '', value.dtype, value.shape))
        return
    if isinstance(value, array.array):
        if size:
            raise FieldError('%s is a fixed-size array (%d): give a numpy.%s array or a sequence'
                             % (path, size, dtype))
        if value.typecode != code:
            raise FieldError("%s array.array() must have the type code of '%s', got '%s'"
                             % (path, code, value.typecode))
        return
    _check_sequence(value, size, path)
    for i, v in enumerate(value):
        check_base(v, name, '%s[%d]' % (path, i))


def _check_sequence(value, size, path):
    if not isinstance(value, (Sequence, Set)) or isinstance(value, (str, bytes)):
        raise FieldError('%s must be a set or sequence, got %r' % (path, type(value).__name__))
    if size and len(value) != size:
        raise FieldError('%s must have length %d, got %d' % (path, size, len(value)))


def check_value(value, desc, store, path, classes=None):
    """``value`` against a rosbags field description ``(Nodetype, detail)``."""
    kind, detail = desc
    if kind == Nodetype.BASE:
        check_base(value, detail[0], path)
    elif kind == Nodetype.NAME:
        check_message(value, detail, store, path, classes)
    elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        (sub_kind, sub_detail), size = detail
        size = size if kind == Nodetype.ARRAY else 0
        if sub_kind == Nodetype.BASE and sub_detail[0] in SPECIAL:
            _check_number_container(value, sub_detail[0], size, path)
            return
        _check_sequence(value, size, path)
        for i, v in enumerate(value):
            check_value(v, (sub_kind, sub_detail), store, '%s[%d]' % (path, i), classes)
    else:
        raise FieldError('%s: unknown field kind %r' % (path, kind))


def field_names(store, typename):
    """Field names of ``typename`` in definition order."""
    return [name for name, _ in store.fielddefs[typename][1]]


def check_message(msg, typename, store, path='msg', classes=None):
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
        check_value(getattr(msg, name), desc, store, '%s.%s' % (path, name), classes)
