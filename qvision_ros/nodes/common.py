"""What the three nodes share: message classes, QoS from parameters, /diagnostics, the in-memory hand-over
of composed mode, and the few lines every ``main()`` runs."""
import signal
import sys
import threading
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..errors import ConfigError, QVisionError
from ..messages import DiagnosticLevel, StageStatus, diagnostic_array_msg, image_msg_to_array
from ..typestore import MessageTypes
from . import params as P


def ros_message_types():
    """:class:`~qvision_ros.typestore.MessageTypes` of the installed ROS 2 message packages."""
    import builtin_interfaces.msg
    import diagnostic_msgs.msg
    import geometry_msgs.msg
    import sensor_msgs.msg
    import std_msgs.msg
    import vision_msgs.msg
    return MessageTypes.from_modules(builtin_interfaces=builtin_interfaces.msg, std_msgs=std_msgs.msg,
                                     sensor_msgs=sensor_msgs.msg, geometry_msgs=geometry_msgs.msg,
                                     vision_msgs=vision_msgs.msg, diagnostic_msgs=diagnostic_msgs.msg)


def _reliability(name):
    return ReliabilityPolicy.RELIABLE if name == 'reliable' else ReliabilityPolicy.BEST_EFFORT


def image_qos(values):
    """Image subscriptions: SensorData-like (best effort, volatile), keep-last ``image_qos_depth`` (1)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=values['image_qos_depth'],
                      reliability=_reliability(values['image_qos_reliability']),
                      durability=DurabilityPolicy.VOLATILE)


def output_qos(values):
    """Publishers (and the detections subscription): reliable by default, keep-last ``output_qos_depth``."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=values['output_qos_depth'],
                      reliability=_reliability(values['output_qos_reliability']),
                      durability=DurabilityPolicy.VOLATILE)


#: LabelInfo: latched, so a subscriber that starts later still gets it (vision_msgs' own advice).
LABEL_INFO_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
DIAGNOSTICS_TOPIC = '/diagnostics'   # absolute by convention: diagnostic_aggregator listens there


def header_key(header):
    """(stamp in ns, frame_id): what pairs an image with its detections."""
    return (int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec), str(header.frame_id))


class InMemoryHandover:
    """Composed mode: the preprocessing node hands frames to the other two by reference, no serialization.

    ``preprocessed(header, image, encoding)`` goes to the inference node (a fresh network-size array per
    frame, never reused), ``raw(header, frame, encoding)`` to the visualization node.
    """

    def __init__(self):
        self._preprocessed = []
        self._raw = []

    def connect_preprocessed(self, fn):
        self._preprocessed.append(fn)

    def disconnect_preprocessed(self, fn):
        if fn in self._preprocessed:
            self._preprocessed.remove(fn)

    def connect_raw(self, fn):
        self._raw.append(fn)

    @property
    def wants_raw(self):
        return bool(self._raw)

    def preprocessed(self, header, image, encoding):
        for fn in list(self._preprocessed):
            fn(header, image, encoding)

    def raw(self, header, frame, encoding):
        for fn in list(self._raw):
            fn(header, frame, encoding)


class QVisionNodeMixin:
    """Parameters, message classes and diagnostics of a qvision node (mixed into Node / LifecycleNode)."""

    kind = None

    def _setup(self, on_change=None):
        self.types = ros_message_types()
        try:
            self.values = P.declare(self, self.kind,
                                    on_change=self._on_parameters if on_change is None else on_change)
        except ConfigError:
            Node.destroy_node(self)     # nothing of a rejected node stays in the graph
            raise
        self._bad_frame_reasons = set()
        self._diag_pub = self.create_publisher(self.types.DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._diag_timer = None
        if self.values['diagnostics_period_sec'] > 0:
            self._diag_timer = self.create_timer(self.values['diagnostics_period_sec'], self.publish_diagnostics)
        return self.values

    def _on_parameters(self, params):
        """Run-time change of dynamic parameters (already checked): update :attr:`values`."""
        for p in params:
            self.values[p.name] = p.value

    def now_ns(self):
        return self.get_clock().now().nanoseconds

    def stopping(self):
        """True once the node is being destroyed or Ctrl-C shut the context down: worker threads end
        quietly (publishing would raise, and there is nobody left to tell)."""
        stop = getattr(self, '_stop', None)
        return (stop is not None and stop.is_set()) or not self.context.ok()

    def statuses(self):
        """[:class:`StageStatus`] of this node; subclasses add their figures."""
        return []

    def publish_diagnostics(self):
        statuses = self.statuses()
        for s in statuses:
            s.hardware_id = self.get_fully_qualified_name()
        self._diag_pub.publish(diagnostic_array_msg(self.types, statuses, self.now_ns()))

    def frame_of(self, msg, topic):
        """The pixels of an Image message (a view), or None - counted in ``bad_frames`` and logged - when
        it is malformed (wrong step, unknown encoding, truncated data...)."""
        try:
            return image_msg_to_array(msg)
        except QVisionError as exc:
            self.counters['bad_frames'] += 1
            self.log_bad_frame('image on %s' % topic, exc)
            return None

    def log_bad_frame(self, what, exc):
        """A frame that cannot be used: log it and keep running.  Each new kind of problem is logged when it
        first happens; repeats at most once a second (a broken camera must not flood the log)."""
        text = 'dropped a malformed %s: %s' % (what, exc)
        seen = self._bad_frame_reasons
        reason = str(exc).split(';')[0].split(',')[0]
        if reason not in seen and len(seen) < 64:
            seen.add(reason)
            self.get_logger().error(text)
        else:
            self.get_logger().error(text, throttle_duration_sec=1.0)


def latency_status(name, timer_figures, counters, latency_ms, rate_in, rate_out, warn_dropped=True):
    """A :class:`StageStatus` with the usual figures; WARN when frames were dropped since the last one."""
    values = [('input_rate_hz', rate_in), ('output_rate_hz', rate_out)]
    values += list(timer_figures) + list(counters.items())
    values.append(('end_to_end_latency_ms', latency_ms))
    dropped = counters.get('dropped_frames', 0)
    level = DiagnosticLevel.WARN if warn_dropped and dropped else DiagnosticLevel.OK
    message = ('dropping frames (latest-frame policy): %d so far' % dropped) if level is DiagnosticLevel.WARN \
        else 'ok'
    return StageStatus(name=name, level=level, message=message, values=values)


def _no_keyboard_interrupt(signum, frame):
    """Python's own SIGINT handler while a node runs: nothing (rclpy's handler does the work; see run_node)."""


def run_node(factory, args=None):
    """``main()`` of a node executable: init, build, spin until Ctrl-C or shutdown, clean up.

    ``factory()`` returns a node or a list of nodes (composed mode: one executor spins them all).  A
    :class:`~qvision_ros.errors.QVisionError` while building (bad parameters, unreadable model) ends the
    process with status 2 after its message was logged.

    Ctrl-C: rclpy's signal handler shuts the context down, which ends ``spin()`` (with
    ExternalShutdownException on Jazzy); it also chains to Python's handler, whose KeyboardInterrupt would
    hit the main thread wherever it is.  ``ros2 launch`` forwards the terminal's SIGINT, so each node gets
    two, the second one often while the worker threads are being joined: a traceback, or "process has died
    [exit code -2]" when it lands while the interpreter exits.  So Python's part is a no-op while the node
    runs, and SIGINT is ignored once the clean-up has begun (this function is the body of an executable).
    """
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        signal.signal(signal.SIGINT, _no_keyboard_interrupt)
    rclpy.init(args=args)
    nodes, executor = [], None
    try:
        try:
            built = factory()
        except QVisionError as exc:
            print('qvision_ros: %s' % exc, file=sys.stderr)
            return 2
        except Exception:
            if not rclpy.ok():    # Ctrl-C while starting: the context went away under the constructor
                return 0
            raise
        nodes = list(built) if isinstance(built, (list, tuple)) else [built]
        executor = SingleThreadedExecutor()
        for node in nodes:
            executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except RuntimeError:
            # rclpy's signal handler shuts the context down from its own thread: when that lands between
            # spin()'s ok() check and the next wait set, the wait set fails (RCLError; ros2/rclpy#398)
            if rclpy.ok():
                raise
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if executor is not None:
            executor.shutdown()
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


class Pacer:
    """Holds a loop to at most ``rate_hz`` iterations per second (0 = no limit); ``wait(stop_event)``."""

    def __init__(self):
        self._next = 0.0

    def wait(self, rate_hz, stop_event=None):
        if rate_hz <= 0:
            return
        now = time.monotonic()
        if self._next > now:
            if stop_event is not None:
                stop_event.wait(self._next - now)
            else:
                time.sleep(self._next - now)
        self._next = max(self._next, now) + 1.0 / rate_hz

    def allow(self, rate_hz, now=None):
        """Non-blocking: True when an iteration may run now (and books it)."""
        if rate_hz <= 0:
            return True
        now = time.monotonic() if now is None else now
        if now < self._next:
            return False
        self._next = now + 1.0 / rate_hz
        return True


__all__ = ['ros_message_types', 'image_qos', 'output_qos', 'LABEL_INFO_QOS', 'DIAGNOSTICS_TOPIC', 'header_key',
           'InMemoryHandover', 'QVisionNodeMixin', 'latency_status', 'run_node', 'Pacer', 'ConfigError']
