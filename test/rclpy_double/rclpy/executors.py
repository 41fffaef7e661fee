"""rclpy.executors of the double (ros2/rclpy ``rclpy/rclpy/executors.py``).

``SingleThreadedExecutor``: ``add_node`` / ``remove_node`` / ``get_nodes``, ``spin_once(timeout_sec)``
runs at most one ready callback (None or negative: wait until one is ready; 0: do not wait), ``spin()``
until the context shuts down (raising ExternalShutdownException when that happens while it waits, as
rclpy's does), ``shutdown()``.  Per node, ready timers come before subscriptions, as in
the original's wait-set order.  ``spin_once`` raises ``ExternalShutdownException`` when the context was
shut down while waiting, and RCLError when it was already down (rclpy cannot build its wait set).  Callbacks run in the thread that spins; other threads may publish (the graph
is locked) - that is how a worker thread hands results back in the real thing too.
"""
import time as _time

from .impl.implementation_singleton import rclpy_implementation as _rclpy
from .utilities import get_default_context


class ExternalShutdownException(Exception):
    """Context has been shutdown."""


class ShutdownException(Exception):
    """Signal that executor was shut down."""


class Executor:
    def __init__(self, *, context=None):
        self._context = get_default_context() if context is None else context
        self._nodes = []
        self._is_shutdown = False
        self._last = 0

    @property
    def context(self):
        return self._context

    def add_node(self, node):
        if node not in self._nodes:
            self._nodes.append(node)
            return True
        return False

    def remove_node(self, node):
        if node in self._nodes:
            self._nodes.remove(node)

    def get_nodes(self):
        return list(self._nodes)

    def wake(self):
        self._context.wake()

    def shutdown(self, timeout_sec=None):
        self._is_shutdown = True
        self._nodes = []
        self._context.wake()
        return True

    def _next_ready(self):
        # Round robin over nodes so that one busy node cannot starve the others.
        nodes = self._nodes[self._last:] + self._nodes[:self._last]
        for i, node in enumerate(nodes):
            for timer in list(node.timers):
                if timer.is_ready():
                    self._last = (self._last + i + 1) % max(1, len(self._nodes))
                    return timer._call, ()
            for sub in list(node.subscriptions):
                if sub._ready():
                    msg = sub._take()
                    if msg is not None:
                        self._last = (self._last + i + 1) % max(1, len(self._nodes))
                        return sub.callback, (msg,)
        return None

    def _wait_time(self):
        waits = [t.time_until_next_call() for n in self._nodes for t in n.timers]
        waits = [w for w in waits if w is not None]
        return min(waits) / 1e9 if waits else None

    def spin_once(self, timeout_sec=None):
        if self._is_shutdown:
            raise ShutdownException()
        if not self._context.ok():
            # rclpy builds its wait set on the context first; spin() checks ok() just before, so a context
            # shut down in between by the signal handler's thread ends spin() with this (ros2/rclpy#398)
            raise _rclpy.RCLError('failed to initialize wait set: the given context is not valid, either '
                                  'rcl_init() was not called or rcl_shutdown() was called.')
        deadline = None if timeout_sec is None or timeout_sec < 0 else _time.monotonic() + timeout_sec
        while True:
            if not self._context.ok():
                raise ExternalShutdownException()
            work = self._next_ready()
            if work is not None:
                fn, args = work
                fn(*args)
                return
            now = _time.monotonic()
            if deadline is not None and now >= deadline:
                return
            wait = self._wait_time()
            if deadline is not None:
                wait = deadline - now if wait is None else min(wait, deadline - now)
            with self._context.cond:
                if self._next_ready_peek():
                    continue
                self._context.cond.wait(timeout=0.05 if wait is None else min(max(wait, 0.0), 0.05))

    def _next_ready_peek(self):
        return any(s._ready() for n in self._nodes for s in n.subscriptions) or \
            any(t.is_ready() for n in self._nodes for t in n.timers)

    def spin(self):
        # As rclpy's: ExternalShutdownException from spin_once (the context was shut down - Ctrl-C - while
        # waiting) goes to the caller; spin() returns by itself only when the context was already down.
        while self._context.ok() and not self._is_shutdown:
            self.spin_once()


class SingleThreadedExecutor(Executor):
    pass
