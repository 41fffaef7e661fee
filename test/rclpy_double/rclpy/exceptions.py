"""rclpy.exceptions of the double (ros2/rclpy ``rclpy/rclpy/exceptions.py``): the parameter exceptions
with the same messages, the name validation errors, and ``InvalidHandle`` (the C extension's)."""
from .impl.implementation_singleton import rclpy_implementation as _rclpy

InvalidHandle = _rclpy.InvalidHandle


class NotInitializedException(Exception):
    def __init__(self, message=None):
        Exception.__init__(self, 'rclpy.init() has not been called.' if message is None
                           else 'rclpy.init() has not been called. msg:%s' % message)


class NameValidationException(Exception):
    def __init__(self, name_type, name, error_msg, invalid_index):
        Exception.__init__(self, 'Invalid {0}: {1}:\n  {2}\n  {3}^'.format(
            name_type, error_msg, name, ' ' * invalid_index))


class InvalidNamespaceException(NameValidationException):
    def __init__(self, name, error_msg, invalid_index):
        NameValidationException.__init__(self, 'namespace', name, error_msg, invalid_index)


class InvalidNodeNameException(NameValidationException):
    def __init__(self, name, error_msg, invalid_index):
        NameValidationException.__init__(self, 'node name', name, error_msg, invalid_index)


class InvalidTopicNameException(NameValidationException):
    def __init__(self, name, error_msg, invalid_index):
        NameValidationException.__init__(self, 'topic name', name, error_msg, invalid_index)


class ParameterException(Exception):
    def __init__(self, error_msg, parameters):
        Exception.__init__(self, '%s: %s' % (error_msg, parameters))


class ParameterNotDeclaredException(ParameterException):
    def __init__(self, parameters):
        ParameterException.__init__(self, 'Invalid access to undeclared parameter(s)', parameters)


class ParameterAlreadyDeclaredException(ParameterException):
    def __init__(self, parameters):
        ParameterException.__init__(self, 'Parameter(s) already declared', parameters)


class InvalidParameterException(ParameterException):
    def __init__(self, parameter_name):
        ParameterException.__init__(self, 'Invalid parameter name', parameter_name)


class InvalidParameterTypeException(ParameterException):
    def __init__(self, desired_parameter, expected_type):
        from .parameter import Parameter
        ParameterException.__init__(
            self,
            "Trying to set parameter '%s' to '%s' of type '%s', expecting type '%s'" % (
                desired_parameter._name, desired_parameter._value,
                Parameter.Type.from_parameter_value(desired_parameter._value).name, expected_type),
            desired_parameter.name)


class InvalidParameterValueException(ParameterException):
    def __init__(self, parameter, value, reason):
        ParameterException.__init__(
            self, 'Invalid parameter value ({value}) for parameter. Reason: {reason}'.format(
                value=value, reason=reason), parameter)


class ParameterImmutableException(ParameterException):
    def __init__(self, parameter_name):
        ParameterException.__init__(self, 'Attempted to modify read-only parameter', parameter_name)


class ParameterUninitializedException(ParameterException):
    def __init__(self, parameter_name):
        ParameterException.__init__(self, "The parameter '%s' is not initialized" % parameter_name,
                                    parameter_name)


class ROSInterruptException(Exception):
    def __init__(self):
        Exception.__init__(self, 'rclpy.shutdown() has been called')
