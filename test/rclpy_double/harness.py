"""Test helpers for running qvision_ros's nodes on the rclpy double.

``ros_session()`` installs the double and initialises a fresh context; :func:`probe` is a plain node that
publishes frames and records what comes out; :func:`cached_engine_factory` shares one compiled engine per
model file across the tests of a process (compiling the shipped detector takes about a second);
:class:`SlowEngine` wraps an engine to make inference slow on purpose; :func:`ros2_param_set` changes a
parameter the way ``ros2 param set`` does.
"""
import contextlib
import functools
import time

import numpy as np

import rclpy_double


@contextlib.contextmanager
def ros_session(args=None):
    rclpy = rclpy_double.install()
    rclpy.init(args=args)
    try:
        yield rclpy
    finally:
        rclpy.try_shutdown()
        rclpy_double.uninstall()


@functools.lru_cache(maxsize=None)
def _engine(path, num_threads):
    from qvision_ros.runtime.engine import Engine
    return Engine(path, num_threads=num_threads)


def cached_engine_factory(path, num_threads=None):
    return _engine(path, num_threads or 1)


class SlowEngine:
    """An engine whose ``run`` takes at least ``delay`` seconds (inference slower than the camera)."""

    def __init__(self, engine, delay):
        self._engine = engine
        self.delay = delay
        self.inputs = engine.inputs
        self.outputs = engine.outputs
        self.calls = 0

    def run(self, feeds, profile=False):
        self.calls += 1
        time.sleep(self.delay)
        return self._engine.run(feeds)


def slow_factory(delay):
    made = []

    def factory(path, num_threads=None):
        engine = SlowEngine(cached_engine_factory(path, num_threads), delay)
        made.append(engine)
        return engine
    factory.made = made
    return factory


def probe(namespace='', name='probe'):
    """A test node: ``listen(type, topic, qos) -> list`` of received messages, ``publisher(type, topic, qos)``."""
    from rclpy.node import Node

    class Probe(Node):
        def __init__(self):
            super().__init__(name, namespace=namespace)

        def listen(self, msg_type, topic, qos=10):
            got = []
            self.create_subscription(msg_type, topic, got.append, qos)
            return got

        def publisher(self, msg_type, topic, qos=10):
            return self.create_publisher(msg_type, topic, qos)
    return Probe()


def image_msg(bgr, stamp_ns, frame_id='camera', encoding='bgr8'):
    """A double ``sensor_msgs/Image`` of a BGR frame."""
    from qvision_ros.messages import bgr_to_image_msg, make_header
    from qvision_ros.nodes.common import ros_message_types
    types = ros_message_types()
    return bgr_to_image_msg(types, bgr, make_header(types, stamp_ns, frame_id), encoding)


def scene(width, height, seed=0, max_objects=5):
    """A synthetic road scene (BGR) and its ground-truth boxes [K, 4] and classes [K]."""
    from qvision_ros.synthetic import random_scene, render_scene
    img, anns = render_scene(random_scene(np.random.default_rng(seed), width=width, height=height,
                                          max_objects=max_objects, empty_probability=0.0))
    boxes = np.array([a.xyxy for a in anns], np.float64).reshape(-1, 4)
    return img, boxes, np.array([a.class_id for a in anns], np.int64)


def executor(*nodes):
    from rclpy.executors import SingleThreadedExecutor
    ex = SingleThreadedExecutor()
    for n in nodes:
        ex.add_node(n)
    return ex


def ros2_param_set(node, name, text):
    """``ros2 param set <node> <name> <text>``: ros2param reads the text (``get_parameter_value``), the request
    crosses the wire (a CDR round trip) and rclpy's set_parameters service callback hands
    ``Parameter.from_parameter_msg`` to ``set_parameters_atomically`` - so a list arrives as the message's
    ``array.array``, not as a Python list.  Returns the SetParametersResult."""
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.exceptions import ParameterNotDeclaredException
    from rclpy.parameter import Parameter, get_parameter_value
    reg = rclpy_double.registry()
    request = ParameterMsg(name=name, value=get_parameter_value(text))
    received = reg.deserialize(reg.serialize(request), request._typename)
    try:
        return node.set_parameters_atomically([Parameter.from_parameter_msg(received)])
    except ParameterNotDeclaredException as exc:
        return SetParametersResult(successful=False, reason=str(exc))


def errors_logged(contains=''):
    from rclpy.logging import LoggingSeverity
    return [m for sev, _, m in rclpy_double.log_records() if sev >= LoggingSeverity.ERROR and contains in m]
