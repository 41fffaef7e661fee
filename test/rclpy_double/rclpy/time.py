"""rclpy.time / rclpy.duration of the double (ros2/rclpy ``rclpy/rclpy/time.py``, ``duration.py``):
integer nanoseconds, ``to_msg`` / ``from_msg`` with builtin_interfaces/Time."""

S_TO_NS = 1000 * 1000 * 1000


class Duration:
    def __init__(self, *, seconds=0, nanoseconds=0):
        self._nanoseconds = int(seconds * S_TO_NS) + int(nanoseconds)

    @property
    def nanoseconds(self):
        return self._nanoseconds

    def __eq__(self, other):
        return isinstance(other, Duration) and self._nanoseconds == other._nanoseconds

    def __lt__(self, other):
        return self._nanoseconds < other._nanoseconds


class Time:
    def __init__(self, *, seconds=0, nanoseconds=0, clock_type=None):
        if seconds < 0:
            raise ValueError('Seconds value must not be negative')
        if nanoseconds < 0:
            raise ValueError('Nanoseconds value must not be negative')
        self._nanoseconds = int(seconds * S_TO_NS) + int(nanoseconds)
        self._clock_type = clock_type

    @property
    def nanoseconds(self):
        return self._nanoseconds

    @property
    def clock_type(self):
        return self._clock_type

    def seconds_nanoseconds(self):
        return divmod(self._nanoseconds, S_TO_NS)

    def __sub__(self, other):
        if isinstance(other, Time):
            return Duration(nanoseconds=self._nanoseconds - other._nanoseconds)
        return Time(nanoseconds=self._nanoseconds - other.nanoseconds, clock_type=self._clock_type)

    def __add__(self, other):
        return Time(nanoseconds=self._nanoseconds + other.nanoseconds, clock_type=self._clock_type)

    def __eq__(self, other):
        return isinstance(other, Time) and self._nanoseconds == other._nanoseconds

    def __lt__(self, other):
        return self._nanoseconds < other._nanoseconds

    def to_msg(self):
        from builtin_interfaces.msg import Time as TimeMsg
        sec, nanosec = self.seconds_nanoseconds()
        return TimeMsg(sec=sec, nanosec=nanosec)

    @classmethod
    def from_msg(cls, msg, clock_type=None):
        return cls(seconds=msg.sec, nanoseconds=msg.nanosec, clock_type=clock_type)
