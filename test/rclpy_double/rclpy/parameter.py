"""rclpy.parameter of the double (ros2/rclpy ``rclpy/rclpy/parameter.py``, humble and jazzy).

``Parameter.Type.from_parameter_value`` infers the type from a Python value exactly as rclpy does -
including its quirk that an empty list is a BYTE_ARRAY (``all()`` of nothing is true) - and
``Parameter(name, type_, value)`` raises ValueError when type and value disagree.
``Parameter.from_parameter_msg`` is what the parameter services build from a request: its value is the
message field as is, so an integer or double list is an ``array.array`` ('q' / 'd'), not a list (a
parameters file or ``-p`` gives lists).  :func:`get_parameter_value` is ``ros2 param set``'s reading of its
value text (YAML, then the type).
"""
import array
from enum import Enum

from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.msg import ParameterValue

PARAMETER_SEPARATOR_STRING = '.'


class Parameter:

    class Type(Enum):
        NOT_SET = ParameterType.PARAMETER_NOT_SET
        BOOL = ParameterType.PARAMETER_BOOL
        INTEGER = ParameterType.PARAMETER_INTEGER
        DOUBLE = ParameterType.PARAMETER_DOUBLE
        STRING = ParameterType.PARAMETER_STRING
        BYTE_ARRAY = ParameterType.PARAMETER_BYTE_ARRAY
        BOOL_ARRAY = ParameterType.PARAMETER_BOOL_ARRAY
        INTEGER_ARRAY = ParameterType.PARAMETER_INTEGER_ARRAY
        DOUBLE_ARRAY = ParameterType.PARAMETER_DOUBLE_ARRAY
        STRING_ARRAY = ParameterType.PARAMETER_STRING_ARRAY

        @classmethod
        def from_parameter_value(cls, parameter_value):
            if parameter_value is None:
                return Parameter.Type.NOT_SET
            if isinstance(parameter_value, bool):
                return Parameter.Type.BOOL
            if isinstance(parameter_value, int):
                return Parameter.Type.INTEGER
            if isinstance(parameter_value, float):
                return Parameter.Type.DOUBLE
            if isinstance(parameter_value, str):
                return Parameter.Type.STRING
            if isinstance(parameter_value, (list, tuple, array.array)):
                for kind, check in ((Parameter.Type.BYTE_ARRAY, bytes), (Parameter.Type.BOOL_ARRAY, bool),
                                    (Parameter.Type.INTEGER_ARRAY, int), (Parameter.Type.DOUBLE_ARRAY, float),
                                    (Parameter.Type.STRING_ARRAY, str)):
                    if all(isinstance(v, check) for v in parameter_value):
                        return kind
                raise TypeError("The given value is not a list of one of the allowed types '%s'."
                                % (parameter_value,))
            raise TypeError("The given value is not one of the allowed types '%s'." % (parameter_value,))

        def check(self, parameter_value):
            T = Parameter.Type
            if self == T.NOT_SET:
                return parameter_value is None
            if self == T.BOOL:
                return isinstance(parameter_value, bool)
            if self == T.INTEGER:
                return isinstance(parameter_value, int)
            if self == T.DOUBLE:
                return isinstance(parameter_value, float)
            if self == T.STRING:
                return isinstance(parameter_value, str)
            if self == T.BYTE_ARRAY:
                return isinstance(parameter_value, (list, tuple)) and \
                    all(isinstance(v, bytes) and len(v) == 1 for v in parameter_value)
            if self == T.BOOL_ARRAY:
                return isinstance(parameter_value, (list, tuple)) and \
                    all(isinstance(v, bool) for v in parameter_value)
            if self == T.INTEGER_ARRAY:
                return isinstance(parameter_value, (list, tuple, array.array)) and \
                    all(isinstance(v, int) for v in parameter_value)
            if self == T.DOUBLE_ARRAY:
                return isinstance(parameter_value, (list, tuple, array.array)) and \
                    all(isinstance(v, float) for v in parameter_value)
            if self == T.STRING_ARRAY:
                return isinstance(parameter_value, (list, tuple)) and \
                    all(isinstance(v, str) for v in parameter_value)
            return False

    @classmethod
    def from_parameter_msg(cls, param_msg):
        type_ = Parameter.Type(param_msg.value.type)
        field = _VALUE_FIELDS.get(type_)
        return cls(param_msg.name, type_, None if field is None else getattr(param_msg.value, field))

    def __init__(self, name, type_=None, value=None):
        if type_ is None:
            type_ = Parameter.Type.from_parameter_value(value)
        if not isinstance(type_, Parameter.Type):
            raise TypeError("type must be an instance of '{}'".format(repr(Parameter.Type)))
        if not type_.check(value):
            raise ValueError("Type '{}' and value '{}' do not agree".format(type_, value))
        self._type_ = type_
        self._name = name
        self._value = value

    @property
    def name(self):
        return self._name

    @property
    def type_(self):
        return self._type_

    @property
    def value(self):
        return self._value

    def get_parameter_value(self):
        pv = ParameterValue(type=self.type_.value)
        field = _VALUE_FIELDS.get(self.type_)
        if field is not None:
            setattr(pv, field, self.value)
        return pv

    def to_parameter_msg(self):
        return ParameterMsg(name=self.name, value=self.get_parameter_value())

    def __repr__(self):
        return 'Parameter(%r, %s, %r)' % (self._name, self._type_, self._value)


_VALUE_FIELDS = {
    Parameter.Type.BOOL: 'bool_value', Parameter.Type.INTEGER: 'integer_value',
    Parameter.Type.DOUBLE: 'double_value', Parameter.Type.STRING: 'string_value',
    Parameter.Type.BYTE_ARRAY: 'byte_array_value', Parameter.Type.BOOL_ARRAY: 'bool_array_value',
    Parameter.Type.INTEGER_ARRAY: 'integer_array_value', Parameter.Type.DOUBLE_ARRAY: 'double_array_value',
    Parameter.Type.STRING_ARRAY: 'string_array_value'}


def get_parameter_value(string_value):
    """The ParameterValue of a value typed on the command line (``ros2 param set``): read as YAML, then a
    bool, int, float, list of one of those or of strings - else the text as a string."""
    from rclpy_double import yamlio
    try:
        yaml_value = yamlio.load(string_value)
    except Exception:          # rclpy catches yaml.parser.ParserError
        yaml_value = string_value
    value = ParameterValue()
    if isinstance(yaml_value, bool):
        value.type, value.bool_value = ParameterType.PARAMETER_BOOL, yaml_value
    elif isinstance(yaml_value, int):
        value.type, value.integer_value = ParameterType.PARAMETER_INTEGER, yaml_value
    elif isinstance(yaml_value, float):
        value.type, value.double_value = ParameterType.PARAMETER_DOUBLE, yaml_value
    elif isinstance(yaml_value, list):
        for kind, field, check in ((ParameterType.PARAMETER_BOOL_ARRAY, 'bool_array_value', bool),
                                   (ParameterType.PARAMETER_INTEGER_ARRAY, 'integer_array_value', int),
                                   (ParameterType.PARAMETER_DOUBLE_ARRAY, 'double_array_value', float),
                                   (ParameterType.PARAMETER_STRING_ARRAY, 'string_array_value', str)):
            if all(isinstance(v, check) for v in yaml_value):
                value.type = kind
                setattr(value, field, yaml_value)
                break
        else:
            value.type, value.string_value = ParameterType.PARAMETER_STRING, string_value
    else:
        value.type = ParameterType.PARAMETER_STRING
        value.string_value = yaml_value if yaml_value is not None else string_value
    return value
