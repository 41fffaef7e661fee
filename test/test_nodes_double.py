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
    from rclpy.lifecycle import LifecycleNode, RCLError, TransitionCallbackReturn
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
    with pytest.raises(RCLError):
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
