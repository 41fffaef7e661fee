"""rclpy.signals of the double (ros2/rclpy ``rclpy/rclpy/signals.py``, ``rclpy/src/rclpy/signal_handler.cpp``,
and ``rclpy/rclpy/__init__.py`` for when they are installed).

``rclpy.init()`` of the default context installs handlers for SIGINT and SIGTERM (``SignalHandlerOptions``,
default ALL).  On a signal rclpy's handler calls the handler that was installed before it (for SIGINT
normally Python's, which raises KeyboardInterrupt in the main thread; SIG_DFL and SIG_IGN are not called)
and then shuts every initialised context down, so an executor waiting in ``spin()`` ends with
ExternalShutdownException.  ``rclpy.shutdown()`` of the default context uninstalls them - putting the
previous handler back unless another one was installed on top since; ``rclpy.try_shutdown()`` does not.

The double does this with Python's ``signal`` module, so only from the main thread (rclpy's C handler has no
such limit), and in the opposite order - contexts first, then the previous handler, which may raise.
"""
import enum
import signal
import threading
import weakref


class SignalHandlerOptions(enum.IntEnum):
    NO = 0
    SIGINT = 1
    SIGTERM = 2
    ALL = 3


_contexts = weakref.WeakSet()    # every initialised context (rclpy::shutdown_contexts shuts them all down)
_previous = {}                   # signal number -> the handler found when ours was installed


def register_context(context):
    _contexts.add(context)


def _handler(signum, frame):
    for context in list(_contexts):
        context.try_shutdown()
    previous = _previous.get(signum)
    if callable(previous):
        previous(signum, frame)


def install_signal_handlers(options=SignalHandlerOptions.ALL):
    if threading.current_thread() is not threading.main_thread():
        return
    options = SignalHandlerOptions(options)
    for flag, signum in ((SignalHandlerOptions.SIGINT, signal.SIGINT), (SignalHandlerOptions.SIGTERM,
                                                                        signal.SIGTERM)):
        if options & flag and signum not in _previous:
            _previous[signum] = signal.signal(signum, _handler)


def get_current_signal_handlers_options():
    return SignalHandlerOptions((signal.SIGINT in _previous) + 2 * (signal.SIGTERM in _previous))


def uninstall_signal_handlers():
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in list(_previous.items()):
        if signal.getsignal(signum) is _handler:
            signal.signal(signum, previous)
        del _previous[signum]
