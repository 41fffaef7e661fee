"""rclpy.logging of the double (ros2/rclpy ``rclpy/rclpy/impl/rcutils_logger.py``).

Kept from the original: severities, ``debug/info/warning/warn/error/fatal``, the filters
``throttle_duration_sec``, ``skip_first`` and ``once`` with the same keyword checks (an unknown keyword
raises TypeError), and the per-call-site context that forbids changing a call site's severity or filters
between calls (ValueError).  Records go to :data:`RECORDS` (for tests) instead of rcutils' output.
"""
import enum
import sys
import time as _time


class LoggingSeverity(enum.IntEnum):
    UNSET = 0
    DEBUG = 10
    INFO = 20
    WARN = 30
    ERROR = 40
    FATAL = 50


#: (severity, logger name, message) of every message logged, in order.
RECORDS = []
_LEVELS = {}
_FILTER_PARAMS = {'throttle_duration_sec': 'throttle', 'throttle_time_source_type': 'throttle',
                  'skip_first': 'skip_first', 'once': 'once'}


def get_logger(name):
    return RcutilsLogger(name)


class RcutilsLogger:
    def __init__(self, name=''):
        self.name = name
        self._contexts = {}     # per logger object, keyed by call site (rclpy: self.contexts)

    def get_child(self, name):
        if not name:
            raise ValueError('Child logger name must not be empty.')
        return RcutilsLogger('%s.%s' % (self.name, name) if self.name else name)

    def set_level(self, level):
        _LEVELS[self.name] = LoggingSeverity(level)

    def get_effective_level(self):
        return _LEVELS.get(self.name, LoggingSeverity.INFO)

    def is_enabled_for(self, severity):
        return LoggingSeverity(severity) >= self.get_effective_level()

    def log(self, message, severity, **kwargs):
        if not self.is_enabled_for(severity):
            return False
        severity = LoggingSeverity(severity)
        name = kwargs.pop('name', self.name)
        for k in kwargs:
            if k not in _FILTER_PARAMS:
                raise TypeError('parameter "%s" is not one of the recognized logging options "%s"'
                                % (k, list(_FILTER_PARAMS)))
        filters = sorted({_FILTER_PARAMS[k] for k, v in kwargs.items() if v})
        if 'throttle' in filters and 'throttle_duration_sec' not in kwargs:
            raise TypeError('required parameter "throttle_duration_sec" not specified but is required for '
                            'the the logging filter "throttle"')
        frame = sys._getframe(2)
        caller = (frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)
        ctx = self._contexts.get(caller)
        if ctx is None:
            ctx = {'name': name, 'severity': severity, 'filters': filters, 'count': 0, 'last': None,
                   'kwargs': dict(kwargs)}
            self._contexts[caller] = ctx
        else:
            if severity != ctx['severity']:
                raise ValueError('Logger severity cannot be changed between calls.')
            if name != ctx['name']:
                raise ValueError('Logger name cannot be changed between calls.')
            if filters != ctx['filters']:
                raise ValueError('Requested logging filters cannot be changed between calls.')
        ctx['count'] += 1
        if 'once' in filters and ctx['count'] > 1:
            return False
        if 'skip_first' in filters and ctx['count'] == 1:
            return False
        if 'throttle' in filters:
            now = _time.monotonic()
            if ctx['last'] is not None and now - ctx['last'] < float(kwargs['throttle_duration_sec']):
                return False
            ctx['last'] = now
        RECORDS.append((severity, name, str(message)))
        return True

    def debug(self, message, **kwargs):
        return self.log(message, LoggingSeverity.DEBUG, **kwargs)

    def info(self, message, **kwargs):
        return self.log(message, LoggingSeverity.INFO, **kwargs)

    def warning(self, message, **kwargs):
        return self.log(message, LoggingSeverity.WARN, **kwargs)

    def warn(self, message, **kwargs):
        return self.log(message, LoggingSeverity.WARN, **kwargs)

    def error(self, message, **kwargs):
        return self.log(message, LoggingSeverity.ERROR, **kwargs)

    def fatal(self, message, **kwargs):
        return self.log(message, LoggingSeverity.FATAL, **kwargs)
