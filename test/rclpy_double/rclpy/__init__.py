"""The rclpy test double: the subset of rclpy that qvision_ros's nodes use, in-process, without ROS.

See ``rclpy_double/__init__.py`` for what it covers and which sources it was written from.
"""
from . import utilities
from .signals import SignalHandlerOptions, install_signal_handlers, register_context, uninstall_signal_handlers
from .utilities import get_default_context, ok, try_shutdown


def init(*, args=None, context=None, domain_id=None, signal_handler_options=None):
    context = get_default_context() if context is None else context
    if signal_handler_options is None:
        signal_handler_options = (SignalHandlerOptions.ALL if context is get_default_context()
                                  else SignalHandlerOptions.NO)
    install_signal_handlers(signal_handler_options)
    context.init(args)
    register_context(context)


def shutdown(*, context=None, uninstall_handlers=None):
    (context or get_default_context()).shutdown()
    if uninstall_handlers or (uninstall_handlers is None and (context is None
                                                              or context is get_default_context())):
        uninstall_signal_handlers()


_global_executor = None


def get_global_executor():
    global _global_executor
    if _global_executor is None or _global_executor.context is not get_default_context():
        from .executors import SingleThreadedExecutor
        _global_executor = SingleThreadedExecutor()
    return _global_executor


def create_node(node_name, *, context=None, cli_args=None, namespace=None, **kwargs):
    from .node import Node
    return Node(node_name, context=context, cli_args=cli_args, namespace=namespace, **kwargs)


def spin_once(node, *, executor=None, timeout_sec=None):
    executor = get_global_executor() if executor is None else executor
    try:
        executor.add_node(node)
        executor.spin_once(timeout_sec=timeout_sec)
    finally:
        executor.remove_node(node)


def spin(node, executor=None):
    executor = get_global_executor() if executor is None else executor
    try:
        executor.add_node(node)
        while executor.context.ok():
            executor.spin_once()
    finally:
        executor.remove_node(node)


__all__ = ['init', 'shutdown', 'ok', 'try_shutdown', 'spin', 'spin_once', 'create_node', 'utilities',
           'get_global_executor']
