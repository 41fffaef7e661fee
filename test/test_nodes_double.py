"""The rclpy test double rejects what rclpy rejects and delivers what rclpy delivers.

Each case is a behaviour read in the rclpy / rcl / rosidl_python sources (see rclpy_double's docstring);
if the double drifted from them, the node tests built on it would prove nothing.
"""
import array

import numpy as np
import pytest

import rclpy_double


@pytest.fixture
def ros():
    rclpy = rclpy_double.install()
    rclpy.init()
    yield rclpy
    rclpy.try_shutdown()
    rclpy_double.uninstall()


def test_parameters_descriptors_ranges_and_callbacks(ros):
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
    from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                                  ParameterAlreadyDeclaredException, ParameterNotDeclaredException)
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    node = Node('p', parameter_overrides=[Parameter('width', value=4000), Parameter('thr', value=1)])
    rng = ParameterDescriptor(integer_range=[IntegerRange(from_value=1, to_value=2048, step=1)])
    with pytest.raises(InvalidParameterValueException, match='out of range'):
        node.declare_parameter('width', 320, rng)
    with pytest.raises(InvalidParameterTypeException, match="expecting type 'DOUBLE'"):
        node.declare_parameter('thr', 0.25)
    fp = ParameterDescriptor(floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1.0, step=0.0)])
    assert node.declare_parameter('score', 0.25, fp).value == 0.25
    with pytest.raises(ParameterAlreadyDeclaredException):
        node.declare_parameter('score', 0.5)
    res = node.set_parameters([Parameter('score', value=1.5)])[0]
    assert not res.successful and 'out of range' in res.reason
    assert node.set_parameters([Parameter('score', value=1.0)])[0].successful    # edges are inclusive
    res = node.set_parameters([Parameter('score', value='high')])[0]
    assert not res.successful and res.reason.startswith('Wrong parameter type')
    with pytest.raises(ParameterNotDeclaredException):
        node.set_parameters([Parameter('nope', value=1)])
    with pytest.raises(ParameterNotDeclaredException):
        node.get_parameter('nope')
    seen = []

    def veto(params):
        seen.extend(p.name for p in params)
        return SetParametersResult(successful=all(p.value != 0.5 for p in params), reason='no halves')
    node.add_on_set_parameters_callback(veto)
    assert not node.set_parameters([Parameter('score', value=0.5)])[0].successful
    assert node.get_parameter('score').value == 1.0
    with pytest.raises(InvalidParameterValueException, match='no halves'):
        node.declare_parameter('other', 0.5)    # callbacks run at declaration too
    assert seen == ['score', 'other']
    ro = node.declare_parameter('model', 'a.onnx', ParameterDescriptor(read_only=True))
    assert ro.value == 'a.onnx'
    assert 'read-only' in node.set_parameters([Parameter('model', value='b.onnx')])[0].reason
    # rclpy types an empty list as a byte array: an integer list cannot replace it later.
    assert node.declare_parameter('classes', []).type_ == Parameter.Type.BYTE_ARRAY
    assert not node.set_parameters([Parameter('classes', value=[1, 2])])[0].successful


def test_messages_checked_like_rosidl_python(ros):
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from vision_msgs.msg import Detection2D, Detection2DArray
    with pytest.raises(AssertionError, match='Invalid arguments'):
        Image(hight=3)
    img = Image()
    assert img.header == Header() and isinstance(img.data, array.array) and img.data.typecode == 'B'
    with pytest.raises(AssertionError):
        img.width = np.int32(3)
    with pytest.raises(AssertionError):
        img.width = -1
    with pytest.raises(AssertionError):
        img.data = np.zeros(4, np.uint8)       # a sequence field takes array.array or a sequence
    with pytest.raises(AttributeError):
        img.colour = 'red'
    img.data = b'\x01\x02'
    assert list(img.data) == [1, 2]
    arr = Detection2DArray()
    with pytest.raises(AssertionError):
        arr.detections = [Header()]
    arr.detections = [Detection2D()]
    from geometry_msgs.msg import Quaternion, PoseWithCovariance
    assert Quaternion().w == 1.0 and PoseWithCovariance().covariance.shape == (36,)
    from diagnostic_msgs.msg import DiagnosticStatus
    assert DiagnosticStatus.WARN == b'\x01' and DiagnosticStatus().level == b'\x00'


def test_topics_qos_matching_and_transient_local(ros):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from std_msgs.msg import Header
    node = Node('n', namespace='cam1')
    best_effort_pub = node.create_publisher(Header, 'a', qos_profile_sensor_data)
    reliable = []
    node.create_subscription(Header, 'a', reliable.append, 10)   # RELIABLE does not match BEST_EFFORT
    sensor = []
    node.create_subscription(Header, '/cam1/a', sensor.append, qos_profile_sensor_data)
    assert best_effort_pub.topic_name == '/cam1/a' and best_effort_pub.get_subscription_count() == 1
    best_effort_pub.publish(Header(frame_id='x'))
    latched_qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
    latched = node.create_publisher(Header, 'labels', latched_qos)
    latched.publish(Header(frame_id='first'))
    latched.publish(Header(frame_id='second'))
    late = []
    node.create_subscription(Header, 'labels', late.append, latched_qos)    # joins after publishing
    volatile = []
    node.create_subscription(Header, 'labels', volatile.append, 10)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    assert rclpy_double.spin_until(ex, lambda: sensor and late, 2.0)
    ex.spin_once(timeout_sec=0.05)
    assert reliable == [] and sensor[0].frame_id == 'x'
    assert [h.frame_id for h in late] == ['second'] and volatile == []
    with pytest.raises(TypeError):
        best_effort_pub.publish('not a message')
    from rclpy.exceptions import InvalidTopicNameException
    with pytest.raises(InvalidTopicNameException):
        node.create_publisher(Header, 'bad name', 10)


def test_keep_last_queue_and_timer(ros):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from std_msgs.msg import Header
    node = Node('n')
    got = []
    sub = node.create_subscription(Header, 'h', got.append, 1)   # RELIABLE: no BEST_EFFORT publisher
    assert node.create_publisher(Header, 'h', qos_profile_sensor_data).get_subscription_count() == 0
    pub = node.create_publisher(Header, 'h', 10)
    for i in range(3):
        pub.publish(Header(frame_id=str(i)))
    ticks = []
    node.create_timer(0.01, lambda: ticks.append(1))
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    assert rclpy_double.spin_until(ex, lambda: got and len(ticks) >= 3, 2.0)
    assert [h.frame_id for h in got] == ['2'] and sub.overflowed == 2


def test_lifecycle_state_machine(ros):
    from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
    from std_msgs.msg import Header

    class N(LifecycleNode):
        fail_configure = True

        def on_configure(self, state):
            if self.fail_configure:
                self.fail_configure = False
                return TransitionCallbackReturn.FAILURE
            return TransitionCallbackReturn.SUCCESS

    node = N('lc')
    pub = node.create_lifecycle_publisher(Header, 'out', 10)
    got = []
    node.create_subscription(Header, 'out', got.append, 10)
    with pytest.raises(_rclpy.RCLError):
        node.trigger_activate()                      # not from unconfigured
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node._current_state.label == 'unconfigured'
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node._current_state.label == 'inactive'
    pub.publish(Header())
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    pub.publish(Header(frame_id='on'))
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    pub.publish(Header())
    assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
    assert node._current_state.label == 'finalized'
    assert [h.frame_id for h in node.subscriptions.__next__()._queue] == ['on']


def test_logger_filters(ros):
    from rclpy.node import Node
    node = Node('log')
    for _ in range(3):
        node.get_logger().warning('once', once=True)
    with pytest.raises(TypeError):
        node.get_logger().info('x', every=3)
    msgs = [m for _, name, m in rclpy_double.log_records() if name == 'log']
    assert msgs.count('once') == 1


def test_params_file_and_namespace_args(ros, tmp_path):
    ros.shutdown()
    f = tmp_path / 'p.yaml'
    f.write_text('/**:\n  ros__parameters:\n    a: 1\n/**/n:\n  ros__parameters:\n    b: {c: 2.5}\n'
                 '/other:\n  ros__parameters:\n    a: 7\n')
    ros.init(args=['prog', '--ros-args', '--params-file', str(f), '-r', '__ns:=/cam2', '-p', 'd:=[1, 2]'])
    from rclpy.node import Node
    node = Node('n')
    assert node.get_fully_qualified_name() == '/cam2/n'
    assert node.declare_parameter('a', 0).value == 1
    assert node.declare_parameter('b.c', 0.0).value == 2.5
    assert node.declare_parameter('d', [0]).value == [1, 2]
    bad = tmp_path / 'bad.yaml'
    bad.write_text('/**:\n  ros__parameters:\n    classes: []\n')
    ros.shutdown()
    with pytest.raises(ValueError, match='empty list'):
        ros.init(args=['--ros-args', '--params-file', str(bad)])


def test_param_overrides_merge_as_rcl_merges_them(ros, tmp_path):
    # rcl keeps one table of node keys in order of first appearance; -p is the key /**.  So a node key of
    # a params file wins over a later -p or a later file's /** (what bit composed mode on the real thing).
    ros.shutdown()
    f = tmp_path / 'p.yaml'
    f.write_text('/**:\n  ros__parameters:\n    a: 1\n/**/n:\n  ros__parameters:\n    source: ""\n')
    later = tmp_path / 'later.yaml'
    later.write_text('/**:\n  ros__parameters:\n    source: wild\n    a: 2\n'
                     '/cam/n:\n  ros__parameters:\n    b: 3\n')
    ros.init(args=['--ros-args', '--params-file', str(f), '-p', 'source:=cli', '--params-file', str(later)])
    from rclpy.node import Node
    node = Node('n', namespace='cam')
    assert node.declare_parameter('source', 'x').value == ''
    assert node.declare_parameter('a', 0).value == 2
    assert node.declare_parameter('b', 0).value == 3


def test_parameters_from_the_parameter_service_are_message_values(ros):
    import array as _array

    from rcl_interfaces.msg import ParameterType
    from rclpy.node import Node
    from rclpy.parameter import Parameter, get_parameter_value
    from rclpy_double.harness import ros2_param_set

    types = {text: get_parameter_value(text).type for text in ('true', '3', '0.5', '[1, 2]', '[0.5]', '[a, b]',
                                                               'hello', '[1, a]')}
    assert types == {'true': ParameterType.PARAMETER_BOOL, '3': ParameterType.PARAMETER_INTEGER,
                     '0.5': ParameterType.PARAMETER_DOUBLE, '[1, 2]': ParameterType.PARAMETER_INTEGER_ARRAY,
                     '[0.5]': ParameterType.PARAMETER_DOUBLE_ARRAY, '[a, b]': ParameterType.PARAMETER_STRING_ARRAY,
                     'hello': ParameterType.PARAMETER_STRING, '[1, a]': ParameterType.PARAMETER_STRING}
    node = Node('svc')
    node.declare_parameter('ids', [0])
    node.declare_parameter('flags', [False])
    seen = []
    node.add_on_set_parameters_callback(lambda ps: seen.extend(ps) or
                                        __import__('rcl_interfaces.msg').msg.SetParametersResult(successful=True))
    assert ros2_param_set(node, 'ids', '[4, 5]').successful
    assert ros2_param_set(node, 'flags', '[true, false]').successful
    ids, flags = seen
    assert isinstance(ids.value, _array.array) and ids.value.typecode == 'q' and list(ids.value) == [4, 5]
    assert flags.value == [True, False]
    assert Parameter.from_parameter_msg(Parameter('x', value=[1.5]).to_parameter_msg()).value.typecode == 'd'
    res = ros2_param_set(node, 'ids', '[0.5]')
    assert not res.successful and 'Wrong parameter type' in res.reason
    assert not ros2_param_set(node, 'undeclared', '1').successful


def test_destroyed_node_and_shut_down_context_raise(ros):
    from rclpy.exceptions import InvalidHandle
    from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
    from rclpy.node import Node
    from std_msgs.msg import Header

    node = Node('gone')
    pub = node.create_publisher(Header, 'h', 10)
    node.destroy_node()
    for call in (node.get_name, node.get_fully_qualified_name, lambda: node.create_publisher(Header, 'h', 10),
                 lambda: node.create_subscription(Header, 'h', print, 10), lambda: pub.publish(Header())):
        with pytest.raises(InvalidHandle, match='destruction was requested'):
            call()
    node.get_logger().info('a logger outlives its node')
    live = Node('live')
    pub = live.create_publisher(Header, 'h', 10)
    ros.try_shutdown()
    with pytest.raises(_rclpy.RCLError, match="context is invalid"):
        pub.publish(Header())


def test_spin_raises_external_shutdown_and_sigint_shuts_the_context_down(ros):
    import signal
    import threading

    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node

    ex = SingleThreadedExecutor()
    ex.add_node(Node('spinner'))
    threading.Timer(0.2, ros.try_shutdown).start()
    with pytest.raises(ExternalShutdownException):
        ex.spin()
    # rclpy.init() installed a SIGINT handler that shuts the contexts down, then calls the previous one
    ros.init()
    got = []
    previous = signal.getsignal(signal.SIGINT)
    assert callable(previous) and previous is not signal.default_int_handler
    ros.shutdown()
    assert signal.getsignal(signal.SIGINT) is not previous           # uninstalled by shutdown()
    original = signal.signal(signal.SIGINT, lambda s, f: got.append(s))
    try:
        ros.init()
        signal.raise_signal(signal.SIGINT)
        assert got == [signal.SIGINT] and not ros.ok()
        ros.try_shutdown()                                             # keeps the handlers (rclpy's does)
        assert ros.signals.get_current_signal_handlers_options() == ros.signals.SignalHandlerOptions.ALL
    finally:
        ros.signals.uninstall_signal_handlers()
        signal.signal(signal.SIGINT, original)
