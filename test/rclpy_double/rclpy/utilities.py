"""rclpy.utilities of the double: the default context, ok(), shutdown(), try_shutdown()."""
from .context import Context

_default_context = Context()


def get_default_context():
    return _default_context


def reset_default_context():
    """Double only: a fresh default context (tests start from a clean graph)."""
    global _default_context
    _default_context = Context()
    return _default_context


def ok(*, context=None):
    return (context or get_default_context()).ok()


def shutdown(*, context=None):
    (context or get_default_context()).shutdown()


def try_shutdown(*, context=None):
    (context or get_default_context()).try_shutdown()
