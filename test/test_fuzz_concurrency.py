"""The engine used from several threads at once (executor callbacks, several cameras): every call gives
exactly the single-threaded result.  A plan owns its buffers, so Engine serialises run / profile /
intermediates with a lock; the last test shows that without it the results are garbage, i.e. that these
tests can see the difference."""
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from qvision_ros import fuzz
from qvision_ros.runtime import Engine

DETECTOR = os.path.join(os.path.dirname(fuzz.__file__), 'data', 'detector_320.onnx')
THREADS = 4


def _inputs(engine, n, seed=0, batch=None):
    rng = np.random.default_rng(seed)
    shape = engine.inputs[0].shape if batch is None else (batch,) + engine.inputs[0].shape[1:]
    return [rng.random(shape, dtype=np.float32) for _ in range(n)]


def _hammer(fn, jobs, threads=THREADS):
    """Run ``fn(job)`` for every job from ``threads`` threads at once; results in job order."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, jobs))


@pytest.mark.parametrize('model', ['detector_320', 'tiny_qdq'])
@pytest.mark.parametrize('num_threads', [1, 2])
def test_run_from_threads_equals_single_threaded(model, num_threads):
    engine = Engine(DETECTOR if model == 'detector_320' else fuzz.tiny_qdq(), num_threads=num_threads)
    xs = _inputs(engine, 6)
    expected = [engine.run({engine.inputs[0].name: x}) for x in xs]
    jobs = [k % len(xs) for k in range(8 * THREADS)]
    results = _hammer(lambda k: engine.run({engine.inputs[0].name: xs[k]}), jobs)
    for k, outs in zip(jobs, results):
        for a, b in zip(outs, expected[k]):
            np.testing.assert_array_equal(a, b)


def _dynamic_batch_model():
    rng = np.random.default_rng(2)
    n = helper.make_node
    nodes = [n('Conv', ['x', 'w', 'b'], ['c'], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), n('Sigmoid', ['c'], ['s']),
             n('Mul', ['c', 's'], ['a']), n('MaxPool', ['a'], ['p'], kernel_shape=[2, 2], strides=[2, 2]),
             n('GlobalAveragePool', ['p'], ['g']), n('Flatten', ['g'], ['f']),
             n('Gemm', ['f', 'fc', 'fb'], ['y'], transB=1)]
    inits = {'w': rng.standard_normal((8, 3, 3, 3)).astype(np.float32), 'b': np.zeros(8, np.float32),
             'fc': rng.standard_normal((4, 8)).astype(np.float32), 'fb': np.zeros(4, np.float32)}
    graph = helper.make_graph(nodes, 'dyn', [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['N', 3, 12, 12])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_plans_for_new_batch_sizes_compiled_from_threads():
    """Several cameras batching a varying number of frames: plans for new shapes are compiled while other
    threads run; each result equals that of a fresh engine running alone."""
    data = _dynamic_batch_model()
    engine = Engine(data, num_threads=1)
    batches = [1, 2, 3, 5, 2, 4, 1, 3] * 3
    xs = {b: _inputs(engine, 1, seed=b, batch=b)[0] for b in set(batches)}
    alone = Engine(data, num_threads=1)
    expected = {b: alone.run({'x': x})[0] for b, x in xs.items()}
    results = _hammer(lambda b: engine.run({'x': xs[b]})[0], batches)
    for b, y in zip(batches, results):
        assert y.shape == (b, 4)
        np.testing.assert_array_equal(y, expected[b])


def test_profile_and_intermediates_while_other_threads_run():
    engine = Engine(fuzz.tiny_detector(), num_threads=1)
    xs = _inputs(engine, 4)
    expected = [engine.run({'images': x})[0] for x in xs]

    def job(k):
        x = xs[k % 4]
        if k % 5 == 0:
            records = engine.profile({'images': x}, repeat=2)
            return len(records) == len(engine.graph.nodes)
        if k % 5 == 1:
            return np.array_equal(engine.intermediates({'images': x})['output'], expected[k % 4])
        return np.array_equal(engine.run({'images': x}, profile=k % 2 == 0)[0], expected[k % 4])
    assert all(_hammer(job, range(10 * THREADS)))


def test_without_the_lock_threads_corrupt_each_other(monkeypatch):
    """The guard matters: with the lock replaced by nothing, concurrent runs on the planned buffers give
    wrong outputs (so the tests above would see a missing or broken guard)."""
    engine = Engine(DETECTOR, num_threads=1)
    xs = _inputs(engine, 4)
    expected = [engine.run({'images': x})[0] for x in xs]
    monkeypatch.setattr(engine, '_lock', contextlib.nullcontext())

    def job(k):
        wrong = 0
        for i in range(25):
            j = (k + i) % 4
            with np.errstate(all='ignore'):
                wrong += not np.array_equal(engine.run({'images': xs[j]})[0], expected[j])
            if wrong:
                break
        return wrong
    assert sum(_hammer(job, range(THREADS))) > 0
