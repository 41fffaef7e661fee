"""rclpy.lifecycle of the double (ros2/rclpy ``rclpy/rclpy/lifecycle/``, identical in humble and jazzy;
the state machine is rcl_lifecycle's default one, ros2/rcl ``rcl_lifecycle/src/default_state_machine.c``).

States: unconfigured(1), inactive(2), active(3), finalized(4); transition states configuring(10),
cleaningup(11), shuttingdown(12), activating(13), deactivating(14), errorprocessing(15).  A trigger
that is not valid from the current state raises ``RCLError`` (the C extension's error: reach it as
``rclpy.impl.implementation_singleton.rclpy_implementation.RCLError``; rclpy.lifecycle does not export it).
A callback's ``SUCCESS`` / ``FAILURE`` / ``ERROR`` picks the goal state; ERROR goes through ``on_error``
(SUCCESS there -> unconfigured, otherwise finalized); an exception in a callback counts as ERROR.
Lifecycle publishers publish only while activated (``LifecycleNode.on_activate``/``on_deactivate`` enable
them; a subclass that overrides those must call ``super()``).
"""
import enum
from typing import NamedTuple

from ..impl.implementation_singleton import rclpy_implementation as _rclpy
from ..node import Node, Publisher


class TransitionCallbackReturn(enum.Enum):
    SUCCESS = 'transition_success'
    FAILURE = 'transition_failure'
    ERROR = 'transition_error'

    def to_label(self):
        return self.value


class LifecycleState(NamedTuple):
    label: str
    state_id: int


State = LifecycleState

_LABELS = {1: 'unconfigured', 2: 'inactive', 3: 'active', 4: 'finalized', 10: 'configuring',
           11: 'cleaningup', 12: 'shuttingdown', 13: 'activating', 14: 'deactivating', 15: 'errorprocessing'}
# transition id -> (start state, transition state)
_TRIGGERS = {1: (1, 10), 2: (2, 11), 3: (2, 13), 4: (3, 14), 5: (1, 12), 6: (2, 12), 7: (3, 12)}
# transition state -> {label: goal state}
_GOALS = {
    10: {'transition_success': 2, 'transition_failure': 1, 'transition_error': 15},
    11: {'transition_success': 1, 'transition_failure': 2, 'transition_error': 15},
    13: {'transition_success': 3, 'transition_failure': 2, 'transition_error': 15},
    14: {'transition_success': 2, 'transition_failure': 3, 'transition_error': 15},
    12: {'transition_success': 4, 'transition_failure': 4, 'transition_error': 15},
    15: {'transition_success': 1, 'transition_failure': 4, 'transition_error': 4},
}


class ManagedEntity:
    def on_configure(self, state):
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state):
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state):
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state):
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state):
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state):
        return TransitionCallbackReturn.SUCCESS


class SimpleManagedEntity(ManagedEntity):
    def __init__(self):
        self._enabled = False

    def on_activate(self, state):
        self._enabled = True
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state):
        self._enabled = False
        return TransitionCallbackReturn.SUCCESS

    @property
    def is_activated(self):
        return self._enabled


class LifecyclePublisher(SimpleManagedEntity, Publisher):
    def __init__(self, *args, **kwargs):
        SimpleManagedEntity.__init__(self)
        Publisher.__init__(self, *args, **kwargs)

    def publish(self, msg):
        if not self._enabled:
            return
        Publisher.publish(self, msg)


class LifecycleNodeMixin(ManagedEntity):
    def __init__(self, *, enable_communication_interface=True, callback_group=None):
        self._managed_entities = set()
        self._state_id = 1
        self._callbacks = {10: self.on_configure, 11: self.on_cleanup, 12: self.on_shutdown,
                           13: self.on_activate, 14: self.on_deactivate, 15: self.on_error}

    @property
    def _current_state(self):
        return LifecycleState(label=_LABELS[self._state_id], state_id=self._state_id)

    def _transition_callback_impl(self, name, state):
        for entity in self._managed_entities:
            ret = getattr(entity, name)(state)
            if not isinstance(ret, TransitionCallbackReturn):
                raise TypeError('%s() return value of class %s should be `TransitionCallbackReturn`.'
                                % (name, type(entity)))
            if ret != TransitionCallbackReturn.SUCCESS:
                return ret
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state):
        return self._transition_callback_impl('on_configure', state)

    def on_cleanup(self, state):
        return self._transition_callback_impl('on_cleanup', state)

    def on_shutdown(self, state):
        return self._transition_callback_impl('on_shutdown', state)

    def on_activate(self, state):
        return self._transition_callback_impl('on_activate', state)

    def on_deactivate(self, state):
        return self._transition_callback_impl('on_deactivate', state)

    def on_error(self, state):
        return self._transition_callback_impl('on_error', state)

    def _execute(self, state_id, previous):
        cb = self._callbacks.get(state_id)
        if cb is None:
            return TransitionCallbackReturn.SUCCESS
        try:
            return cb(previous)
        except Exception:
            return TransitionCallbackReturn.ERROR

    def _change_state(self, transition_id):
        start, via = _TRIGGERS[transition_id]
        if self._state_id != start:
            raise _rclpy.RCLError('Transition is not registered: transition %d from state %s'
                           % (transition_id, _LABELS[self._state_id]))
        previous = self._current_state
        self._state_id = via
        ret = self._execute(via, previous)
        if not isinstance(ret, TransitionCallbackReturn):
            ret = TransitionCallbackReturn.ERROR
        self._state_id = _GOALS[via][ret.to_label()]
        if ret == TransitionCallbackReturn.ERROR:
            err = self._execute(15, previous)
            if not isinstance(err, TransitionCallbackReturn):
                err = TransitionCallbackReturn.ERROR
            self._state_id = _GOALS[15][err.to_label()]
        return ret

    def trigger_configure(self):
        return self._change_state(1)

    def trigger_cleanup(self):
        return self._change_state(2)

    def trigger_activate(self):
        return self._change_state(3)

    def trigger_deactivate(self):
        return self._change_state(4)

    def trigger_shutdown(self):
        ids = {1: 5, 2: 6, 3: 7}
        if self._state_id not in ids:
            raise _rclpy.RCLError('Shutdown transtion not possible')
        return self._change_state(ids[self._state_id])

    def add_managed_entity(self, entity):
        if not isinstance(entity, ManagedEntity):
            raise TypeError('Expected a rclpy.lifecycle.ManagedEntity instance.')
        self._managed_entities.add(entity)

    def create_lifecycle_publisher(self, *args, **kwargs):
        if 'publisher_class' in kwargs:
            raise TypeError("create_publisher() got an unexpected keyword argument 'publisher_class'")
        pub = Node.create_publisher(self, *args, **kwargs, publisher_class=LifecyclePublisher)
        self._managed_entities.add(pub)
        return pub

    def destroy_lifecycle_publisher(self, publisher):
        self._managed_entities.discard(publisher)
        return Node.destroy_publisher(self, publisher)


class LifecycleNode(LifecycleNodeMixin, Node):
    def __init__(self, node_name, *, enable_communication_interface=True, **kwargs):
        Node.__init__(self, node_name, **kwargs)
        LifecycleNodeMixin.__init__(self, enable_communication_interface=enable_communication_interface)


__all__ = ['LifecycleNodeMixin', 'LifecycleNode', 'LifecycleState', 'LifecyclePublisher', 'ManagedEntity',
           'SimpleManagedEntity']
