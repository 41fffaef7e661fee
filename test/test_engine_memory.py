"""No allocation per frame after warm-up (DESIGN.md section 4: buffers planned once).

A QDQ (int8) and a float model run 1000 times each; the resident set (/proc/self/statm) may not grow by more
than 1 MB over those runs, and tracemalloc must see no Python allocation that outlives a run (the traced
size after 300 more runs equals the size after 100, within a few kilobytes of interpreter noise).  The
outputs returned by ``run`` are fresh arrays owned by the caller; they are dropped at once here.  The
figures are printed (``pytest -s``).
"""
import gc
import os
import resource
import sys
import tracemalloc

import numpy as np
import pytest

from models import model_bytes, qdq_bytes
from qvision_ros.runtime import Engine

RUNS = 1000
MAX_RSS_GROWTH = 1 << 20        # bytes over RUNS runs
MAX_TRACED_GROWTH = 16 << 10    # bytes of Python allocations over 200 runs


def rss_bytes():
    """Resident set size of this process: /proc/self/statm (in pages) on Linux; elsewhere the peak
    resident size (getrusage), which also grows when a run keeps allocating."""
    if os.path.exists('/proc/self/statm'):
        with open('/proc/self/statm') as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024


MODELS = {'int8': lambda: qdq_bytes('yolov8'), 'fp32': lambda: model_bytes('yolov8')}


@pytest.mark.parametrize('precision', sorted(MODELS))
def test_rss_does_not_grow(precision):
    engine = Engine(MODELS[precision](), num_threads=1)
    feeds = {'images': np.random.default_rng(0).random(engine.inputs[0].shape, dtype=np.float32)}
    for _ in range(50):
        engine.run(feeds)
    gc.collect()
    before = rss_bytes()
    for _ in range(RUNS):
        engine.run(feeds)
    gc.collect()
    after = rss_bytes()
    print('\nyolov8 %s %s: RSS %.2f MB -> %.2f MB after %d runs (%+d bytes)'
          % (precision, engine.inputs[0].shape, before / 2 ** 20, after / 2 ** 20, RUNS, after - before))
    assert after - before < MAX_RSS_GROWTH, (before, after)


@pytest.mark.parametrize('precision', sorted(MODELS))
def test_no_python_allocation_survives_a_run(precision):
    engine = Engine(MODELS[precision](), num_threads=1)
    feeds = {'images': np.random.default_rng(1).random(engine.inputs[0].shape, dtype=np.float32)}
    for _ in range(20):
        engine.run(feeds)
    tracemalloc.start()
    try:
        for _ in range(100):
            engine.run(feeds)
        gc.collect()
        first = tracemalloc.get_traced_memory()[0]
        snap1 = tracemalloc.take_snapshot()
        for _ in range(200):
            engine.run(feeds)
        gc.collect()
        second = tracemalloc.get_traced_memory()[0]
        snap2 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    top = snap2.compare_to(snap1, 'lineno')[:5]
    print('\nyolov8 %s: traced Python memory %d -> %d bytes over 200 runs; largest changes:\n  %s'
          % (precision, first, second, '\n  '.join(str(t) for t in top)))
    assert second - first < MAX_TRACED_GROWTH, top
