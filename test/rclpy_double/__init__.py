"""A test double of the rclpy subset qvision_ros's nodes use, and message classes with the ROS 2 fields.

Why: rclpy is neither on PyPI nor in Debian, so CI runs the nodes in-process against this double
(DESIGN.md section 8).  It is written from the real sources, read at these paths (branches humble and
jazzy where they differ; the double keeps to what both have):

* ros2/rclpy ``rclpy/rclpy/node.py`` - Node: parameters (declare_parameter(s), overrides, descriptors with
  integer/floating-point ranges and steps, read-only, on-set callbacks also at declaration, the exceptions
  raised), create_publisher / create_subscription / create_timer, topic name expansion;
* ``rclpy/rclpy/parameter.py`` (Parameter, Parameter.Type and its inference), ``exceptions.py``;
* ``rclpy/rclpy/qos.py`` (QoSProfile construction rules, policies; ``BEST_AVAILABLE`` is Jazzy-only and
  left out) with the profiles of ros2/rmw ``rmw/include/rmw/qos_profiles.h``;
* ``rclpy/rclpy/publisher.py`` (publish type check, get_subscription_count), ``subscription.py``,
  ``timer.py``, ``time.py``, ``clock.py``;
* ``rclpy/rclpy/executors.py`` and ``rclpy/rclpy/__init__.py`` (spin, spin_once, SingleThreadedExecutor,
  ExternalShutdownException);
* ``rclpy/rclpy/lifecycle/{node,managed_entity,publisher}.py`` with the state machine of ros2/rcl
  ``rcl_lifecycle/src/default_state_machine.c``;
* ``rclpy/rclpy/impl/rcutils_logger.py`` (logger methods and filters);
* ros2/rosidl_python ``rosidl_generator_py/resource/_msg.py.em`` for the message classes
  (:mod:`.msgtypes`, :mod:`.msgcheck`), whose fields come from rosbags' Jazzy typestore with vision_msgs
  4.1.1 registered (:mod:`qvision_ros.typestore`).

Use::

    import rclpy_double
    rclpy_double.install()          # `import rclpy`, `sensor_msgs.msg`, ... now resolve to the double
    ...
    rclpy_double.uninstall()

``rclpy.init()`` installs SIGINT/SIGTERM handlers that shut the contexts down, as rclpy's do
(:mod:`rclpy_double.rclpy.signals`); :func:`uninstall` removes them.

The transport is an in-process graph (:mod:`rclpy_double.rclpy.context`): CDR round trips through rosbags,
QoS matching, transient-local history, KEEP_LAST queues.  What the double does *not* model: DDS
discovery delays, services (lifecycle and parameter services), callback groups, multi-threaded
executors, intra-process communication, simulated time.
"""
import functools
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_saved = None


@functools.lru_cache(maxsize=None)
def registry():
    """The shared message class registry (Jazzy typestore + vision_msgs)."""
    from .msgtypes import Registry
    return Registry('jazzy')


def _is_double_module(name):
    return name == 'rclpy' or name.startswith('rclpy.')


def _purge_ros_users():
    """Forget modules that imported rclpy (qvision_ros.nodes.*), so that they import the current one."""
    for n in list(sys.modules):
        if n.startswith('qvision_ros.nodes.'):
            del sys.modules[n]


def install():
    """Make ``import rclpy`` and the message packages resolve to the double; returns the rclpy module."""
    global _saved
    if _saved is None:
        modules = registry().modules()
        names = set(modules) | {n for n in sys.modules if _is_double_module(n)}
        _saved = ({n: sys.modules[n] for n in names if n in sys.modules}, list(sys.path))
        for n in list(sys.modules):
            if _is_double_module(n):
                del sys.modules[n]
        sys.modules.update(modules)
        sys.path.insert(0, _HERE)
        _purge_ros_users()
    import rclpy
    rclpy.utilities.reset_default_context()
    return rclpy


def uninstall():
    """Undo :func:`install` (the previous modules and sys.path come back)."""
    global _saved
    if _saved is None:
        return
    old_modules, old_path = _saved
    signals = sys.modules.get('rclpy.signals')
    if signals is not None:         # rclpy.init() installed SIGINT/SIGTERM handlers; try_shutdown() keeps them
        signals.uninstall_signal_handlers()
    for n in list(sys.modules):
        if _is_double_module(n) or n in registry().modules():
            del sys.modules[n]
    sys.modules.update(old_modules)
    sys.path[:] = old_path
    _purge_ros_users()
    _saved = None


def spin_until(executor, predicate, timeout=10.0):
    """Spin ``executor`` until ``predicate()`` is true (True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while not predicate():
        left = end - time.monotonic()
        if left <= 0:
            return False
        executor.spin_once(timeout_sec=min(left, 0.02))
    return True


def log_records():
    """``[(severity, logger name, message)]`` logged through the double so far."""
    from rclpy.logging import RECORDS
    return RECORDS
