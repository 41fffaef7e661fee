"""Smoke test of the kernel benchmark script (qvision_ros.bench_kernels): one tiny layer, two runs per column.

It checks the shape of the report (columns, one row per layer and thread count, positive numbers), not
the speed.  The ORT columns must be filled when onnxruntime and onnx are importable and read n/a when
they are not; the second test forces the latter so both paths run on every machine.
"""
import importlib
import json

from qvision_ros import bench_kernels as bench



def _importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


HAVE_ORT = _importable('onnxruntime') and _importable('onnx')
LAYER = 'c2f4_1x1_10'   # 10x10x256 -> 256, 1x1: the cheapest layer of the table
TIME_KEYS = [key for key, _ in bench.COLUMNS]
ORT_KEYS = ['ort_int8', 'ort_int8_nhwc', 'ort_fp32']


def _run(tmp_path, capsys):
    path = tmp_path / 'bench.json'
    rc = bench.main(['--layers', LAYER, '--threads', '1', '2', '--repeat', '2', '--rounds', '1',
                     '--warmup', '1', '--json', str(path)])
    assert rc == 0
    text = capsys.readouterr().out
    with open(path) as f:
        return text, json.load(f)


def _rows(text, name):
    """The two printed rows of ``name`` per thread count: (times row, speed row) as token lists."""
    rows = [line.split() for line in text.splitlines() if line.startswith(name)]
    return [(rows[i], rows[i + 1]) for i in range(0, len(rows), 2)]


def _positive(v):
    return v is not None and v > 0 and v == v and v != float('inf')


def _check(text, data, have_ort):
    for column in ['layer', 'shape', 'MMAC', 'max|d|', 'GOPS ours i8', 'GOPS ORT i8']:
        assert column in text, 'missing column %r in:\n%s' % (column, text)
    for _, header in bench.COLUMNS:
        assert header + ' ms' in text, 'missing column %r in:\n%s' % (header, text)
    for _, header in bench.SPEEDUPS:
        assert header in text, 'missing column %r in:\n%s' % (header, text)
    assert 'threads=1' in text and 'threads=2' in text and 'isa=' in text and 'onnxruntime=' in text

    meta, results = data['meta'], data['results']
    assert meta['threads'] == [1, 2] and meta['repeat'] == 2
    assert meta['isa'] and meta['cpu']
    assert (meta['onnxruntime'] is not None) == have_ort
    assert [r['threads'] for r in results] == [1, 2]
    for r in results:
        assert r['layer'] == LAYER and r['macs'] == 10 * 10 * 256 * 256, r
        assert set(r['median_ms']) == set(TIME_KEYS)
        for key in ['ours_int8', 'numpy_fp32_im2col']:
            assert _positive(r['median_ms'][key]), (key, r['median_ms'])
            assert r['min_ms'][key] <= r['median_ms'][key]
        assert r['median_ms']['numpy_int8'] is None          # the papers' layer only
        assert _positive(r['gops']['ours_int8'])
        assert _positive(r['speedup_ours_int8']['numpy_fp32_im2col'])
        assert 0.0 <= r['saturated_fraction'] < 0.5, r['saturated_fraction']
        for key in ORT_KEYS:
            if have_ort:
                assert _positive(r['median_ms'][key]), (key, r['median_ms'])
                assert _positive(r['speedup_ours_int8'][key])
            else:
                assert r['median_ms'][key] is None and r['speedup_ours_int8'][key] is None
        if have_ort:
            assert _positive(r['gops']['ort_int8'])
            assert r['max_abs_diff_vs_ort_int8'] <= 1 and r['max_abs_diff_vs_ort_int8_nhwc'] <= 1, r
        else:
            assert 'max_abs_diff_vs_ort_int8' not in r

    rows = _rows(text, LAYER)
    assert len(rows) == 2, text
    ort_cols = [3 + TIME_KEYS.index(k) for k in ORT_KEYS]
    for times, speeds in rows:
        # layer, shape, MMAC, one time per column, max|d|
        assert len(times) == 3 + len(TIME_KEYS) + 1, times
        assert float(times[2]) == 6.6
        assert float(times[3]) > 0                           # ours int8
        for i in ort_cols:
            assert (times[i] != 'n/a') == have_ort, (i, times)
            if have_ort:
                assert float(times[i]) > 0
        assert (times[-1] != 'n/a') == have_ort
        # layer, GOPS ours / ORT / ORT nhwc, one speed-up per compared column
        assert len(speeds) == 4 + len(bench.SPEEDUPS), speeds
        assert float(speeds[1]) > 0
        assert (speeds[2] != 'n/a') == have_ort


def test_bench_report(tmp_path, capsys):
    text, data = _run(tmp_path, capsys)
    _check(text, data, HAVE_ORT)


def test_bench_without_onnxruntime(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, '_import_ort', lambda: None)
    text, data = _run(tmp_path, capsys)
    _check(text, data, False)


def test_bench_layer_filter(capsys):
    assert bench.main(['--list']) == 0
    listing = capsys.readouterr().out
    assert all(spec.name in listing for spec in bench.LAYERS)
    assert bench.main(['--layers', 'no_such_layer']) == 2
    assert 'no layer matches' in capsys.readouterr().err
