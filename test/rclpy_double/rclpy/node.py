"""rclpy.node of the double (ros2/rclpy ``rclpy/rclpy/node.py``, humble and jazzy).

Parameters follow the original step by step: ``declare_parameter(s)`` infers the static type from the
default (or takes a ``Parameter.Type``), takes an override (``parameter_overrides``, ``--params-file``,
``-p``) instead of the default unless ``ignore_override``, applies the descriptor (read-only, type,
``integer_range`` with step, ``floating_point_range`` with step and ``PARAM_REL_TOL``), runs the
``add_on_set_parameters_callback`` callbacks (also at declaration: an override the node rejects fails
the declaration with ``InvalidParameterValueException``, a wrong type with
``InvalidParameterTypeException``), and stores it.  ``set_parameters`` returns one
``SetParametersResult`` per parameter and raises ``ParameterNotDeclaredException`` for an undeclared one.

Topics: relative names are expanded with the node's namespace (``~`` with the node's name), invalid names
raise ``InvalidTopicNameException``; ``-r from:=to`` remaps topics.  Publishers check the message class
(``TypeError``) and its fields (:mod:`rclpy_double.msgcheck`) and hand it to the context's graph.
"""
import collections
import inspect
import math
import re
import threading
import time as _time
import warnings

from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult

from .clock import ROSClock
from .context import RosArguments
from .exceptions import (InvalidHandle, InvalidNamespaceException, InvalidNodeNameException,
                         InvalidParameterTypeException,
                         InvalidParameterValueException, InvalidTopicNameException,
                         NotInitializedException, ParameterAlreadyDeclaredException,
                         ParameterImmutableException, ParameterNotDeclaredException,
                         ParameterUninitializedException)
from .impl.implementation_singleton import rclpy_implementation as _rclpy
from .logging import get_logger
from .parameter import Parameter
from .qos import HistoryPolicy, QoSProfile
from .utilities import get_default_context

_TOKEN = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


def _validate_node_name(name):
    if not isinstance(name, str) or not name:
        raise InvalidNodeNameException(str(name), 'node name must not be empty', 0)
    if not _TOKEN.match(name):
        bad = next((i for i, c in enumerate(name) if not (c.isalnum() or c == '_')), 0)
        raise InvalidNodeNameException(name, 'node name must not contain characters other than '
                                       'alphanumerics or underscores, and must not start with a number', bad)


def _validate_namespace(ns):
    if not ns.startswith('/'):
        raise InvalidNamespaceException(ns, 'namespace must be absolute', 0)
    if ns != '/':
        for i, tok in enumerate(ns[1:].split('/')):
            if not _TOKEN.match(tok):
                raise InvalidNamespaceException(ns, 'namespace token %r is invalid' % tok, 0)


def _validate_topic_name(name):
    if not isinstance(name, str) or not name:
        raise InvalidTopicNameException(str(name), 'topic name must not be empty', 0)
    if name.endswith('/'):
        raise InvalidTopicNameException(name, 'topic name must not end with a forward slash', len(name) - 1)
    for i, c in enumerate(name):
        if not (c.isalnum() or c in '_/~{}'):
            raise InvalidTopicNameException(name, 'topic name must not contain characters other than '
                                            'alphanumerics, underscore, tilde, forward slash, curly braces', i)
    if '//' in name:
        raise InvalidTopicNameException(name, 'topic name must not contain repeated forward slashes',
                                        name.index('//'))
    if '~' in name[1:]:
        raise InvalidTopicNameException(name, "'~' must be the first character", name.index('~', 1))
    for tok in name.lstrip('~').split('/'):
        if tok and tok[0].isdigit():
            raise InvalidTopicNameException(name, 'topic name token must not start with a number',
                                            name.index(tok))


class Publisher:
    def __init__(self, node, msg_type, topic, qos_profile):
        self._node = node
        self.msg_type = msg_type
        self.topic = topic
        self.topic_name = node.resolve_topic_name(topic)
        self.qos_profile = qos_profile
        self._graph = node.context.graph
        self._destroyed = False

    def publish(self, msg):
        from rclpy_double import registry
        from rclpy_double.msgcheck import check_message
        if not isinstance(msg, self.msg_type):
            raise TypeError('Expected {}, got {}'.format(self.msg_type, type(msg)))
        if self._destroyed:
            raise InvalidHandle('cannot use Destroyable because destruction was requested')
        if not self._node.context.ok():
            raise _rclpy.RCLError("Failed to publish: publisher's context is invalid")
        reg = registry()
        check_message(msg, msg._typename, reg.store, type(msg).__name__, reg.classes, strict=True)
        self._graph.publish(self, msg)

    def get_subscription_count(self):
        return self._graph.subscription_count(self)

    def destroy(self):
        self._destroyed = True
        self._graph.remove_publisher(self)


class Subscription:
    def __init__(self, node, msg_type, topic, callback, qos_profile, raw=False):
        if raw:
            raise NotImplementedError('raw subscriptions are not part of the double')
        try:
            # rclpy checks the callback takes the message (jazzy also accepts (message, message_info),
            # humble does not: the double keeps to what both accept)
            inspect.signature(callback).bind(object())
        except TypeError:
            raise RuntimeError('Subscription.__init__(): callback should be callable with one argument (the '
                               'message)') from None
        self._node = node
        self.msg_type = msg_type
        self.topic = topic
        self.topic_name = node.resolve_topic_name(topic)
        self.callback = callback
        self.qos_profile = qos_profile
        depth = qos_profile.depth if qos_profile.history == HistoryPolicy.KEEP_LAST else None
        self._queue = collections.deque(maxlen=depth or None)
        self._lock = threading.Lock()
        #: messages the middleware dropped because the queue was full (KEEP_LAST overflow)
        self.overflowed = 0

    def _deliver(self, msg):
        with self._lock:
            if self._queue.maxlen is not None and len(self._queue) == self._queue.maxlen:
                self.overflowed += 1
            self._queue.append(msg)
        self._node.context.wake()

    def _take(self):
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _ready(self):
        return bool(self._queue)

    def get_publisher_count(self):
        return self._node.context.graph.publisher_count(self)

    def destroy(self):
        self._node.context.graph.remove_subscription(self)


class Timer:
    """Steady-time timer: ready when ``timer_period_ns`` has passed since the last call (or start)."""

    def __init__(self, callback, timer_period_ns, clock, context):
        self.callback = callback
        self.timer_period_ns = timer_period_ns
        self._clock = clock
        self._context = context
        self._canceled = False
        self._next = _time.monotonic_ns() + timer_period_ns

    @property
    def clock(self):
        return self._clock

    def is_ready(self):
        return not self._canceled and _time.monotonic_ns() >= self._next

    def time_until_next_call(self):
        return None if self._canceled else max(0, self._next - _time.monotonic_ns())

    def _call(self):
        self._next = _time.monotonic_ns() + self.timer_period_ns
        self.callback()

    def is_canceled(self):
        return self._canceled

    def cancel(self):
        self._canceled = True

    def reset(self):
        self._canceled = False
        self._next = _time.monotonic_ns() + self.timer_period_ns
        self._context.wake()

    def destroy(self):
        self._canceled = True


class Node:
    PARAM_REL_TOL = 1e-6

    def __init__(self, node_name, *, context=None, cli_args=None, namespace=None, use_global_arguments=True,
                 enable_rosout=True, start_parameter_services=True, parameter_overrides=None,
                 allow_undeclared_parameters=False, automatically_declare_parameters_from_overrides=False):
        self._context = get_default_context() if context is None else context
        if not self._context.ok():
            raise NotInitializedException('cannot create node')
        args = self._context.arguments if use_global_arguments else None
        local = RosArguments(cli_args) if cli_args else None     # node-specific, they win
        remaps = dict(args.remaps) if args else {}
        if local is not None:
            remaps.update(local.remaps)
        node_name = remaps.pop('__node', remaps.pop('__name', node_name))
        namespace = remaps.pop('__ns', namespace) or ''
        _validate_node_name(node_name)
        if not namespace:
            namespace = '/'
        if not namespace.startswith('/'):
            namespace = '/' + namespace
        _validate_namespace(namespace)
        self._name = node_name
        self._namespace = namespace
        self._destroyed = False
        self._topic_remaps = remaps
        self._parameters = {}
        self._descriptors = {}
        self._on_set_parameters_callbacks = []
        self._allow_undeclared_parameters = allow_undeclared_parameters
        self._publishers = []
        self._subscriptions = []
        self._timers = []
        self._logger = get_logger(self.get_fully_qualified_name().lstrip('/').replace('/', '.'))
        self._clock = ROSClock()
        self._parameter_overrides = {}
        for source in (args, local):
            if source is not None:
                for name, value in source.overrides_for(self.get_fully_qualified_name()).items():
                    self._parameter_overrides[name] = Parameter(name, value=value)
        if parameter_overrides is not None:
            self._parameter_overrides.update({p.name: p for p in parameter_overrides})
        if automatically_declare_parameters_from_overrides:
            self.declare_parameters('', [(n, p.value, ParameterDescriptor())
                                         for n, p in self._parameter_overrides.items()], ignore_override=True)

    # -- identity ------------------------------------------------------------------------------------
    @property
    def context(self):
        return self._context

    @property
    def publishers(self):
        yield from self._publishers

    @property
    def subscriptions(self):
        yield from self._subscriptions

    @property
    def timers(self):
        yield from self._timers

    def _check_handle(self):
        """rclpy: every call that goes through the node's handle (``with self.handle``) raises once
        destroy_node() ran - its name, topics, new publishers and subscriptions, graph queries."""
        if self._destroyed:
            raise InvalidHandle('cannot use Destroyable because destruction was requested')

    def get_name(self):
        self._check_handle()
        return self._name

    def get_namespace(self):
        self._check_handle()
        return self._namespace

    def get_fully_qualified_name(self):
        self._check_handle()
        return ('/' if self._namespace == '/' else self._namespace + '/') + self._name

    def get_logger(self):
        return self._logger

    def get_clock(self):
        return self._clock

    # -- parameters ----------------------------------------------------------------------------------
    def declare_parameter(self, name, value=None, descriptor=None, ignore_override=False):
        if value is None and descriptor is None:
            args = (name,)
        else:
            args = (name, value, ParameterDescriptor() if descriptor is None else descriptor)
        return self.declare_parameters('', [args], ignore_override)[0]

    def declare_parameters(self, namespace, parameters, ignore_override=False):
        parameter_list = []
        descriptors = {}
        for index, parameter_tuple in enumerate(parameters):
            if len(parameter_tuple) < 1 or len(parameter_tuple) > 3:
                raise TypeError('Invalid parameter tuple length at index %d in parameters list: %s; '
                                'expecting length between 1 and 3' % (index, parameter_tuple))
            name = parameter_tuple[0]
            if not isinstance(name, str):
                raise TypeError('First element %s at index %d in parameters list is not a str.' % (name, index))
            if namespace:
                name = '%s.%s' % (namespace, name)
            second = parameter_tuple[1] if len(parameter_tuple) > 1 else None
            descriptor = parameter_tuple[2] if len(parameter_tuple) > 2 else ParameterDescriptor()
            if not isinstance(descriptor, ParameterDescriptor):
                raise TypeError('Third element %s at index %d in parameters list is not a ParameterDescriptor.'
                                % (descriptor, index))
            if len(parameter_tuple) == 1:
                warnings.warn("when declaring parameter named '%s', declaring a parameter only providing "
                              'its name is deprecated.' % name)
                descriptor.dynamic_typing = True
            value = None
            if isinstance(second, Parameter.Type):
                if second == Parameter.Type.NOT_SET:
                    raise ValueError('Cannot declare parameter {%s} as statically typed of type NOT_SET' % name)
                if descriptor.dynamic_typing is True:
                    raise ValueError('When declaring parameter {%s} passing a descriptor with'
                                     '`dynamic_typing=True` is not allowed when the parameter type is provided'
                                     % name)
                descriptor.type = second.value
            else:
                value = second
                if not descriptor.dynamic_typing:
                    descriptor.type = Parameter.Type.from_parameter_value(value).value
                    if descriptor.type == ParameterType.PARAMETER_NOT_SET:
                        raise ValueError('Cannot declare a statically typed parameter with default value '
                                         'of type PARAMETER_NOT_SET')
            if not ignore_override and name in self._parameter_overrides:
                value = self._parameter_overrides[name].value
            parameter_list.append(Parameter(name, value=value))
            descriptors[name] = descriptor
        already = [p.name for p in parameter_list if p.name in self._parameters]
        if already:
            raise ParameterAlreadyDeclaredException(already)
        for param in parameter_list:
            result = self._set_parameters_atomically_common([param], descriptors, allow_not_set_type=True)
            if not result.successful:
                if result.reason.startswith('Wrong parameter type'):
                    raise InvalidParameterTypeException(param, Parameter.Type(descriptors[param.name].type).name)
                raise InvalidParameterValueException(param.name, param.value, result.reason)
        return [self._parameters[p.name] for p in parameter_list]

    def undeclare_parameter(self, name):
        if not self.has_parameter(name):
            raise ParameterNotDeclaredException(name)
        if self._descriptors[name].read_only:
            raise ParameterImmutableException(name)
        del self._parameters[name]
        del self._descriptors[name]

    def has_parameter(self, name):
        return name in self._parameters

    def get_parameter(self, name):
        if self.has_parameter(name):
            parameter = self._parameters[name]
            if parameter.type_ != Parameter.Type.NOT_SET or self._descriptors[name].dynamic_typing:
                return parameter
            raise ParameterUninitializedException(name)
        if self._allow_undeclared_parameters:
            return Parameter(name, Parameter.Type.NOT_SET, None)
        raise ParameterNotDeclaredException(name)

    def get_parameters(self, names):
        if not all(isinstance(n, str) for n in names):
            raise TypeError('All names must be instances of type str')
        return [self.get_parameter(n) for n in names]

    def get_parameter_or(self, name, alternative_value=None):
        if alternative_value is None:
            alternative_value = Parameter(name, Parameter.Type.NOT_SET)
        if not self.has_parameter(name) or self._parameters[name].type_ == Parameter.Type.NOT_SET:
            return alternative_value
        return self._parameters[name]

    def describe_parameter(self, name):
        try:
            return self._descriptors[name]
        except KeyError:
            if self._allow_undeclared_parameters:
                return ParameterDescriptor()
            raise ParameterNotDeclaredException(name)

    def set_parameters(self, parameter_list):
        return [self._set_parameters_atomically([p]) for p in parameter_list]

    def set_parameters_atomically(self, parameter_list):
        return self._set_parameters_atomically(parameter_list)

    def _set_parameters_atomically(self, parameter_list):
        if not all(isinstance(p, Parameter) for p in parameter_list):
            raise TypeError("parameter must be instance of type '{}'".format(repr(Parameter)))
        # rclpy's own quirk kept: any() consumes the generator up to the first undeclared name, so the
        # message lists only those after it ('...undeclared parameter(s): []' for a single one)
        undeclared = (p.name for p in parameter_list if p.name not in self._parameters)
        if not self._allow_undeclared_parameters and any(undeclared):
            raise ParameterNotDeclaredException(list(undeclared))
        return self._set_parameters_atomically_common(parameter_list)

    def _set_parameters_atomically_common(self, parameter_list, descriptors=None, allow_not_set_type=False):
        if descriptors is not None:
            result = self._apply_descriptors(parameter_list, descriptors, False)
        else:
            result = self._apply_descriptors(parameter_list, self._descriptors, True)
        if not result.successful:
            return result
        for callback in self._on_set_parameters_callbacks:
            result = callback(parameter_list)
            if not result.successful:
                return result
        for param in parameter_list:
            if not allow_not_set_type and param.type_ == Parameter.Type.NOT_SET:
                self._parameters.pop(param.name, None)
                self._descriptors.pop(param.name, None)
                continue
            if descriptors is not None:
                self._descriptors[param.name] = descriptors[param.name]
            elif param.name not in self._descriptors:
                self._descriptors[param.name] = ParameterDescriptor(dynamic_typing=True)
            self._parameters[param.name] = param
        return SetParametersResult(successful=True)

    def _apply_descriptors(self, parameter_list, descriptors, check_read_only=True):
        for param in parameter_list:
            if param.name in descriptors:
                result = self._apply_descriptor(param, descriptors[param.name], check_read_only)
                if not result.successful:
                    return result
        return SetParametersResult(successful=True)

    def _apply_descriptor(self, parameter, descriptor, check_read_only=True):
        descriptor.name = parameter.name
        if check_read_only and descriptor.read_only:
            return SetParametersResult(successful=False,
                                       reason='Trying to set a read-only parameter: %s.' % parameter.name)
        if descriptor.dynamic_typing:
            descriptor.type = parameter.type_.value
        elif self.has_parameter(parameter.name) and parameter.type_ == Parameter.Type.NOT_SET:
            return SetParametersResult(successful=False, reason='Static parameter cannot be undeclared')
        elif parameter.type_ != Parameter.Type.NOT_SET and parameter.type_.value != descriptor.type:
            return SetParametersResult(
                successful=False, reason="Wrong parameter type, expected '%s' got '%s'"
                % (Parameter.Type(descriptor.type), parameter.type_))
        if parameter.type_ == Parameter.Type.INTEGER and descriptor.integer_range:
            return self._apply_integer_range(parameter, descriptor.integer_range[0])
        if parameter.type_ == Parameter.Type.DOUBLE and descriptor.floating_point_range:
            return self._apply_floating_point_range(parameter, descriptor.floating_point_range[0])
        return SetParametersResult(successful=True)

    def _apply_integer_range(self, parameter, integer_range):
        lo = min(integer_range.from_value, integer_range.to_value)
        hi = max(integer_range.from_value, integer_range.to_value)
        if parameter.value in (lo, hi):
            return SetParametersResult(successful=True)
        if not lo < parameter.value < hi:
            return SetParametersResult(successful=False, reason='Parameter %s out of range. Min: %s, Max: %s, '
                                       'value: %s' % (parameter.name, lo, hi, parameter.value))
        if integer_range.step != 0 and (parameter.value - lo) % integer_range.step != 0:
            return SetParametersResult(successful=False, reason='The parameter value for %s is not a valid '
                                       'step. Min: %s, max: %s, value: %s, step: %s'
                                       % (parameter.name, lo, hi, parameter.value, integer_range.step))
        return SetParametersResult(successful=True)

    def _apply_floating_point_range(self, parameter, fp_range):
        lo = min(fp_range.from_value, fp_range.to_value)
        hi = max(fp_range.from_value, fp_range.to_value)
        if (math.isclose(parameter.value, lo, rel_tol=self.PARAM_REL_TOL)
                or math.isclose(parameter.value, hi, rel_tol=self.PARAM_REL_TOL)):
            return SetParametersResult(successful=True)
        if not lo < parameter.value < hi:
            return SetParametersResult(successful=False, reason='Parameter %s out of range Min: %s, Max: %s, '
                                       'value: %s' % (parameter.name, lo, hi, parameter.value))
        if fp_range.step != 0.0:
            steps = round((parameter.value - lo) / fp_range.step)
            if not math.isclose(lo + steps * fp_range.step, parameter.value, rel_tol=self.PARAM_REL_TOL):
                return SetParametersResult(successful=False, reason='The parameter value for %s is not close '
                                           'enough to a valid step. Min: %s, max: %s, value: %s, step: %s'
                                           % (parameter.name, lo, hi, parameter.value, fp_range.step))
        return SetParametersResult(successful=True)

    def add_on_set_parameters_callback(self, callback):
        self._on_set_parameters_callbacks.insert(0, callback)

    def remove_on_set_parameters_callback(self, callback):
        self._on_set_parameters_callbacks.remove(callback)

    # -- topics --------------------------------------------------------------------------------------
    def resolve_topic_name(self, topic, *, only_expand=False):
        self._check_handle()
        _validate_topic_name(topic)
        if topic.startswith('~'):
            name = self.get_fully_qualified_name() + topic[1:]
        elif topic.startswith('/'):
            name = topic
        else:
            name = ('' if self._namespace == '/' else self._namespace) + '/' + topic
        if not only_expand:
            for src in (topic, name):
                if src in self._topic_remaps:
                    dst = self._topic_remaps[src]
                    name = dst if dst.startswith('/') else (
                        ('' if self._namespace == '/' else self._namespace) + '/' + dst)
                    break
        return name

    @staticmethod
    def _qos(qos_or_depth):
        if isinstance(qos_or_depth, QoSProfile):
            return qos_or_depth
        if isinstance(qos_or_depth, int) and not isinstance(qos_or_depth, bool):
            if qos_or_depth < 0:
                raise ValueError('history depth must be greater than or equal to zero')
            return QoSProfile(depth=qos_or_depth)
        raise TypeError('Expected QoSProfile or int, but received {!r}'.format(type(qos_or_depth)))

    @staticmethod
    def _check_msg_type(msg_type):
        if not (isinstance(msg_type, type) and getattr(msg_type, '_typename', None)):
            raise AttributeError("'%s' has no attribute '_TYPE_SUPPORT' (not a ROS message class)"
                                 % getattr(msg_type, '__name__', msg_type))

    def create_publisher(self, msg_type, topic, qos_profile, *, callback_group=None, event_callbacks=None,
                         qos_overriding_options=None, publisher_class=Publisher):
        self._check_handle()
        self._check_msg_type(msg_type)
        pub = publisher_class(self, msg_type, topic, self._qos(qos_profile))
        self._publishers.append(pub)
        self.context.graph.add_publisher(pub)
        return pub

    def create_subscription(self, msg_type, topic, callback, qos_profile, *, callback_group=None,
                            event_callbacks=None, qos_overriding_options=None, raw=False):
        self._check_handle()
        self._check_msg_type(msg_type)
        sub = Subscription(self, msg_type, topic, callback, self._qos(qos_profile), raw)
        self._subscriptions.append(sub)
        self.context.graph.add_subscription(sub)
        return sub

    def create_timer(self, timer_period_sec, callback, callback_group=None, clock=None):
        timer = Timer(callback, int(float(timer_period_sec) * 1e9), clock or self._clock, self.context)
        self._timers.append(timer)
        self.context.wake()
        return timer

    def destroy_publisher(self, publisher):
        if publisher in self._publishers:
            self._publishers.remove(publisher)
            publisher.destroy()
            return True
        return False

    def destroy_subscription(self, subscription):
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            subscription.destroy()
            return True
        return False

    def destroy_timer(self, timer):
        if timer in self._timers:
            self._timers.remove(timer)
            timer.destroy()
            return True
        return False

    def count_publishers(self, topic_name):
        return self.context.graph.count(self.resolve_topic_name(topic_name), publishers=True)

    def count_subscribers(self, topic_name):
        return self.context.graph.count(self.resolve_topic_name(topic_name), publishers=False)

    def destroy_node(self):
        for p in list(self._publishers):
            self.destroy_publisher(p)
        for s in list(self._subscriptions):
            self.destroy_subscription(s)
        for t in list(self._timers):
            self.destroy_timer(t)
        self._destroyed = True
