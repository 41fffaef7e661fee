"""Smoke tests of the quantizer's scripts at tiny sizes: paper 2's table, the shipped-model command and
the calibration memory benchmark (their real runs are long; these check that they work end to end)."""
import json

import numpy as np

from models import model_bytes
from qvision_ros.quantization import bench_calibration, shipped, tables


def test_table_rows(tmp_path, capsys):
    assert tables.main(['--calib-images', '3', '--eval-images', '3', '--runs', '2', '--quiet', '--workdir',
                        str(tmp_path / 'w'), '--json', str(tmp_path / 't.json'), '--out', str(tmp_path / 't.md'),
                        '--qat', str(tmp_path / 'w' / 'ptq_4.onnx')]) == 0      # any QDQ file stands for QAT
    rows = json.loads((tmp_path / 't.json').read_text())['rows']
    names = [r['name'] for r in rows]
    assert names[0] == 'FP32' and names[-2] == 'PTQ 8/8/8 (all)' and names[-1] == 'QAT 8/8/8' and len(rows) == 7
    sizes = {r['name']: r['size_bytes'] for r in rows}
    assert sizes['PTQ 8/8/8 (all)'] < sizes['partial 8/8/32 (backbone + neck)'] < sizes['FP32']
    assert all(0 <= r['map50'] <= 1 and r['latency_ms_1_thread'] > 0 and r['latency_ms_2_threads'] > 0 for r in rows)
    assert '| FP32 |' in (tmp_path / 't.md').read_text() and '| QAT 8/8/8 |' in capsys.readouterr().out


def test_shipped_command_is_deterministic(tmp_path):
    a, b = tmp_path / 'a.onnx', tmp_path / 'b.onnx'
    shipped.quantize_shipped(str(a), images=3, progress=False)
    assert shipped.main(['--out', str(b), '--images', '3']) == 0
    assert a.read_bytes() == b.read_bytes()


def test_calibration_memory_benchmark(tmp_path, capsys):
    model = tmp_path / 'yolo.onnx'
    model.write_bytes(model_bytes('yolov8'))
    assert bench_calibration.main(['--model', str(model), '--images', '12', '--size', '64',
                                   '--json', str(tmp_path / 'm.json')]) == 0
    figures = json.loads((tmp_path / 'm.json').read_text())
    assert figures['images'] == 12 and figures['peak_rss_mb'] >= figures['rss_mb_after_images']['10'] > 0
    assert figures['int8_model_bytes'] < figures['float_model_bytes']
    assert np.isfinite(figures['seconds'])
