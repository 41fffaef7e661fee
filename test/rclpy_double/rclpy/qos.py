"""rclpy.qos of the double (ros2/rclpy ``rclpy/rclpy/qos.py``, humble and jazzy).

``QoSProfile(**kwargs)``: only the policy names are accepted; history defaults to KEEP_LAST when only a
depth is given, and KEEP_LAST without a depth is an error (``InvalidQoSProfileException``).  Policies are
the IntEnums of rmw/types.h.  ``BEST_AVAILABLE`` (Iron and later) is left out: it does not exist in Humble.
The predefined profiles are rmw's (ros2/rmw ``rmw/include/rmw/qos_profiles.h``): default = KEEP_LAST 10,
RELIABLE, VOLATILE; sensor data = KEEP_LAST 5, BEST_EFFORT, VOLATILE; parameter events = KEEP_LAST 1000,
RELIABLE, VOLATILE.
"""
from enum import IntEnum


class InvalidQoSProfileException(Exception):
    def __init__(self, *args):
        Exception.__init__(self, 'Invalid QoSProfile', *args)


class QoSPolicyEnum(IntEnum):
    @classmethod
    def short_keys(cls):
        return [k.lower() for k in cls.__members__.keys()]

    @classmethod
    def get_from_short_key(cls, name):
        return cls[name.upper()].value

    @property
    def short_key(self):
        return self.name.lower()


class HistoryPolicy(QoSPolicyEnum):
    SYSTEM_DEFAULT = 0
    KEEP_LAST = 1
    KEEP_ALL = 2
    UNKNOWN = 3


class ReliabilityPolicy(QoSPolicyEnum):
    SYSTEM_DEFAULT = 0
    RELIABLE = 1
    BEST_EFFORT = 2
    UNKNOWN = 3


class DurabilityPolicy(QoSPolicyEnum):
    SYSTEM_DEFAULT = 0
    TRANSIENT_LOCAL = 1
    VOLATILE = 2
    UNKNOWN = 3


QoSHistoryPolicy = HistoryPolicy
QoSReliabilityPolicy = ReliabilityPolicy
QoSDurabilityPolicy = DurabilityPolicy

_DEFAULT = dict(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.VOLATILE)


class QoSProfile:
    __slots__ = ['_history', '_depth', '_reliability', '_durability']

    def __init__(self, **kwargs):
        assert all('_' + key in self.__slots__ for key in kwargs.keys()), \
            'Invalid arguments passed to constructor: %r' % kwargs.keys()
        if 'history' not in kwargs:
            if 'depth' not in kwargs:
                raise InvalidQoSProfileException('History and/or depth settings are required.')
            kwargs['history'] = HistoryPolicy.KEEP_LAST
        self.history = kwargs['history']
        if self.history == HistoryPolicy.KEEP_LAST and 'depth' not in kwargs:
            raise InvalidQoSProfileException('History set to KEEP_LAST without a depth setting.')
        self.depth = kwargs.get('depth', _DEFAULT['depth'])
        self.reliability = kwargs.get('reliability', _DEFAULT['reliability'])
        self.durability = kwargs.get('durability', _DEFAULT['durability'])

    @property
    def history(self):
        return self._history

    @history.setter
    def history(self, value):
        assert isinstance(value, (HistoryPolicy, int))
        self._history = HistoryPolicy(value)

    @property
    def depth(self):
        return self._depth

    @depth.setter
    def depth(self, value):
        assert isinstance(value, int)
        self._depth = value

    @property
    def reliability(self):
        return self._reliability

    @reliability.setter
    def reliability(self, value):
        assert isinstance(value, (ReliabilityPolicy, int))
        self._reliability = ReliabilityPolicy(value)

    @property
    def durability(self):
        return self._durability

    @durability.setter
    def durability(self, value):
        assert isinstance(value, (DurabilityPolicy, int))
        self._durability = DurabilityPolicy(value)

    def __eq__(self, other):
        if not isinstance(other, QoSProfile):
            return False
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self):
        return 'QoSProfile(history=%s, depth=%d, reliability=%s, durability=%s)' % (
            self.history.name, self.depth, self.reliability.name, self.durability.name)


qos_profile_default = QoSProfile(**_DEFAULT)
qos_profile_system_default = QoSProfile(history=HistoryPolicy.SYSTEM_DEFAULT, depth=0,
                                        reliability=ReliabilityPolicy.SYSTEM_DEFAULT,
                                        durability=DurabilityPolicy.SYSTEM_DEFAULT)
qos_profile_sensor_data = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                                     reliability=ReliabilityPolicy.BEST_EFFORT,
                                     durability=DurabilityPolicy.VOLATILE)
qos_profile_parameter_events = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                                          reliability=ReliabilityPolicy.RELIABLE,
                                          durability=DurabilityPolicy.VOLATILE)
