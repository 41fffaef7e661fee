"""qvision bench: both tables on tiny workloads (a small model made here, the paper's layer with one run).

Timing figures cannot be checked against an oracle; what is checked is that every measurement is
present, positive and consistent (file sizes, FPS against the median, memory of a fresh process), and
that the tables are shaped as documented.
"""
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qvision_ros.bench import format_layer_table, format_model_table
from qvision_ros.cli import main


def small_detector(path):
    """A Conv + SiLU + Conv head with a YOLOv8-layout output [1, 4 + 3, 64] (random weights)."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.2, (8, 3, 3, 3)).astype(np.float32), 'w1')
    w2 = numpy_helper.from_array(rng.normal(0, 0.2, (7, 8, 1, 1)).astype(np.float32), 'w2')
    shape = numpy_helper.from_array(np.array([1, 7, 64], np.int64), 's')
    nodes = [helper.make_node('Conv', ['images', 'w1'], ['a'], strides=[4, 4], pads=[1, 1, 1, 1]),
             helper.make_node('Sigmoid', ['a'], ['g']), helper.make_node('Mul', ['a', 'g'], ['b']),
             helper.make_node('Conv', ['b', 'w2'], ['c']), helper.make_node('Reshape', ['c', 's'], ['output0'])]
    g = helper.make_graph(nodes, 'small', [helper.make_tensor_value_info('images', TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info('output0', TensorProto.FLOAT, [1, 7, 64])],
                          [w1, w2, shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_bench_command(tmp_path, capsys):
    model = small_detector(tmp_path / 'small.onnx')
    out = tmp_path / 'bench.json'
    status = main(['bench', '--model', str(model), '--threads', '1', '--repeat', '5', '--warmup', '1',
                   '--layers', 'paper_3x3_128', '--layer-repeat', '1', '--no-map', '-q', '--json', str(out)])
    assert status == 0
    text = capsys.readouterr().out
    assert 'Table 1' in text and 'Table 2' in text and 'NumPy int8 : Cython int8' in text
    assert 'no whole-model NumPy reference path' in text
    data = json.loads(out.read_text())
    (layer,) = data['layers']
    for key in ('numpy_fp32_im2col', 'numpy_int8', 'ours_fp32', 'ours_int8', 'ort_fp32', 'ort_int8'):
        assert layer['median_ms'][key] > 0
    assert layer['max_abs_diff_vs_numpy_int8'] == 0    # ours is bit-exact with the NumPy reference
    rows = data['models']
    assert [r['runtime'] for r in rows] == ['ours', 'ort']
    for r in rows:
        assert r['size_bytes'] == model.stat().st_size and r['precision'] == 'fp32' and r['runs'] == 5
        assert 0 < r['median_ms'] <= r['p99_ms'] and r['fps'] > 0 and r['memory_mb'] >= 0
        assert r['peak_rss_mb'] > r['memory_mb']


def test_bench_rejects_unknown_layer(tmp_path, capsys):
    model = small_detector(tmp_path / 'small.onnx')
    assert main(['bench', '--model', str(model), '--layers', 'nope', '--no-map', '-q']) == 2
    assert 'unknown layer' in capsys.readouterr().err


def test_tables_shape():
    layer = {'layer': 'paper_3x3_128', 'shape': '128x128x3->128x128x16/k3s1', 'macs': 7077888, 'threads': 2,
             'median_ms': {'numpy_fp32_im2col': 10.0, 'numpy_int8': 50.0, 'ours_fp32': 0.3, 'ours_int8': 0.2,
                           'ort_fp32': 0.25, 'ort_int8': None}}
    text = '\n'.join(format_layer_table([layer]))
    assert '2 threads' in text and '250 : 1' in text and 'n/a' in text and '1.50x' in text
    rows = [dict(model='a/fp32.onnx', precision='fp32', runtime='ours', threads=1, size_bytes=4_000_000,
                 median_ms=20.0, p99_ms=25.0, fps=48.0, memory_mb=14.0, map50=0.9, map=0.6),
            dict(model='a/int8.onnx', precision='int8', runtime='ours', threads=1, size_bytes=1_200_000,
                 median_ms=10.0, p99_ms=12.0, fps=95.0, memory_mb=6.0, map50=0.89, map=0.58)]
    text = '\n'.join(format_model_table(rows))
    assert '(-70%)' in text and '(-50%)' in text and '0.890' in text
