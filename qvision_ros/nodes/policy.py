"""The frame-handling policies of the nodes, pure Python (no rclpy): testable anywhere.

* :class:`LatestSlot` - the latest-frame policy: a slot holding at most one frame per camera; putting a
  frame while the previous one is still waiting replaces it and counts a drop.  The consumer always gets
  the newest frame, so latency cannot grow under overload, and nothing queues.
* :class:`StampPairer` - pairs images and detections that carry the same header stamp (and frame_id),
  in whichever order they arrive; entries that find no partner within ``max_delay_ns`` are dropped and
  counted; memory is bounded.
* :class:`RateMeter` and :class:`StageTimer` - the figures of ``/diagnostics``.
"""
import collections
import threading
import time


class LatestSlot:
    """Latest-frame hand-over between a producer (a subscription callback) and a worker thread.

    ``put(key, item)`` stores ``item`` as the newest of ``key`` (a camera); if an older item of that key was
    still waiting it is discarded and :attr:`dropped` grows.  ``take_all(timeout, window)`` waits for at
    least one item, optionally a further ``window`` seconds for the other keys, and returns
    ``{key: item}`` (emptying the slot); ``{}`` on timeout or after :meth:`close`.
    """

    def __init__(self):
        self._items = {}
        self._cond = threading.Condition()
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, key, item):
        with self._cond:
            if key in self._items:
                self.dropped += 1
            self._items[key] = item
            self.received += 1
            self._cond.notify_all()

    def take_all(self, timeout=None, window=0.0, expected=1):
        """Wait until an item is there; then until ``expected`` keys are there or ``window`` s passed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return {}
            if window > 0 and len(self._items) < expected:
                self._cond.wait_for(lambda: len(self._items) >= expected or self._closed, window)
            items, self._items = self._items, {}
            return items

    def pending(self):
        with self._cond:
            return len(self._items)

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self):
        return self._closed


class StampPairer:
    """Match items of two streams ('image' and 'detections') by key (stamp in ns, frame_id).

    ``add(kind, key, item, now_ns)`` returns ``(image_item, detections_item)`` when the partner is
    already waiting (both leave), else None (the item waits).  Waiting items older than ``max_delay_ns``
    (by ``now_ns``) are dropped and counted in :attr:`unpaired`; at most ``max_items`` wait per stream
    (the oldest goes first).
    """

    KINDS = ('image', 'detections')

    def __init__(self, max_delay_ns, max_items=64):
        self.max_delay_ns = int(max_delay_ns)
        self.max_items = int(max_items)
        self._waiting = {k: collections.OrderedDict() for k in self.KINDS}
        self.unpaired = {k: 0 for k in self.KINDS}
        self.paired = 0

    def _expire(self, now_ns):
        for kind, waiting in self._waiting.items():
            while waiting:
                key, (t, _) = next(iter(waiting.items()))
                if now_ns - t <= self.max_delay_ns and len(waiting) <= self.max_items:
                    break
                waiting.popitem(last=False)
                self.unpaired[kind] += 1

    def add(self, kind, key, item, now_ns):
        if kind not in self._waiting:
            raise ValueError('kind must be one of %s, got %r' % (self.KINDS, kind))
        other = self._waiting['detections' if kind == 'image' else 'image']
        if key in other:
            _, partner = other.pop(key)
            self.paired += 1
            self._expire(now_ns)
            return (item, partner) if kind == 'image' else (partner, item)
        waiting = self._waiting[kind]
        if key in waiting:          # same stamp again (a repeated frame): keep the newer one
            waiting.pop(key)
            self.unpaired[kind] += 1
        waiting[key] = (now_ns, item)
        self._expire(now_ns)
        return None

    def waiting(self, kind):
        return len(self._waiting[kind])


class RateMeter:
    """Events per second over a sliding window of the last ``window_s`` seconds."""

    def __init__(self, window_s=2.0):
        self.window_s = float(window_s)
        self._times = collections.deque()
        self.count = 0

    def tick(self, now=None):
        now = time.monotonic() if now is None else now
        self._times.append(now)
        self.count += 1
        self._trim(now)

    def _trim(self, now):
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def rate(self, now=None):
        now = time.monotonic() if now is None else now
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = now - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class StageTimer:
    """Mean and maximum of durations (seconds) since the last :meth:`reset`, in milliseconds."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.n = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds):
        self.n += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    def mean_ms(self):
        return 1000.0 * self.total / self.n if self.n else 0.0

    def max_ms(self):
        return 1000.0 * self.max


__all__ = ['LatestSlot', 'StampPairer', 'RateMeter', 'StageTimer']
