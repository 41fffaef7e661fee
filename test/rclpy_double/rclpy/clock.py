"""rclpy.clock of the double: ROS time = the system clock (no /clock, use_sim_time is not modelled)."""
import enum
import time as _time

from .time import Time


class ClockType(enum.IntEnum):
    UNINITIALIZED = 0
    ROS_TIME = 1
    SYSTEM_TIME = 2
    STEADY_TIME = 3


class Clock:
    def __init__(self, *, clock_type=ClockType.SYSTEM_TIME):
        self._clock_type = clock_type

    @property
    def clock_type(self):
        return self._clock_type

    def now(self):
        ns = _time.monotonic_ns() if self._clock_type == ClockType.STEADY_TIME else _time.time_ns()
        return Time(nanoseconds=ns, clock_type=self._clock_type)


class ROSClock(Clock):
    def __init__(self):
        super().__init__(clock_type=ClockType.ROS_TIME)
