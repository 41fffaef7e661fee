"""Smoke test of the whole-model benchmark (qvision_ros.bench_engine): the small VGG-style model, one and two
threads, two runs per block.

It checks the shape of the report (a row per model, thread count and precision, positive times, the
ratios where ONNX Runtime ran, the JSON file), not the speed.  The second test hides ONNX Runtime so
that the n/a path runs on every machine.
"""
import json

import pytest

from qvision_ros import bench_engine as bench

ARGS = ['--models', 'vgg@32', '--threads', '1', '2', '--repeat', '2', '--rounds', '1', '--pause', '0.05']


def _run(tmp_path, capsys):
    path = tmp_path / 'bench.json'
    assert bench.main(ARGS + ['--json', str(path)]) == 0
    out = capsys.readouterr().out
    return out, json.loads(path.read_text())


def test_report_and_json(tmp_path, capsys):
    out, data = _run(tmp_path, capsys)
    rows = data['results']
    assert [(r['threads'], r['precision']) for r in rows] == [(1, 'int8'), (1, 'fp32'), (2, 'int8'), (2, 'fp32')]
    for r in rows:
        assert r['model'] == 'vgg-w16' and r['input'] == 32 and r['runs'] == 2
        assert r['ours_ms'] > 0 and r['ort_ms'] > 0
        assert r['ours_over_ort'] == pytest.approx(r['ours_ms'] / r['ort_ms'])
        assert r['agree'] < 0.05
    for r in rows[::2]:
        assert r['ours_int8_over_ort_fp32'] > 0
    assert rows[1]['ours_int8_over_ort_fp32'] is None
    assert data['meta']['onnxruntime'] and data['meta']['repeat'] == 2
    assert 'ours/ORT' in out and 'i8/ORT f32' in out and out.count('vgg-w16') == 4


def test_without_onnxruntime(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, '_import_ort', lambda: None)
    out, data = _run(tmp_path, capsys)
    assert all(r['ort_ms'] is None and r['ours_over_ort'] is None for r in data['results'])
    assert 'n/a' in out and '(not installed)' in out


def test_bad_arguments():
    with pytest.raises(SystemExit):
        bench.main(['--models', 'nosuchmodel@32', '--threads', '1', '--repeat', '1', '--rounds', '1'])
    with pytest.raises(SystemExit):
        bench.main(['--threads', '0'])
