"""Smoke test of the kernel benchmark script (qvision_ros.bench_kernels): one tiny layer, two runs per column.

It checks the shape of the report (columns, one row per layer and thread count, positive numbers), not
the speed.  The ORT columns must be filled when onnxruntime and onnx are importable and read n/a when
they are not; the second test forces the latter so both paths run on every machine.
"""
import functools
import importlib
import json

import numpy as np

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


# ------------------------------------------------------------------------------------------------------------
# The other kernels: one tiny case of every family (and a tiny depthwise convolution)
# ------------------------------------------------------------------------------------------------------------

TINY_OPS = (
    bench.OpSpec('tiny_fc', 'linear', (3, 40), other=24),
    bench.OpSpec('tiny_maxpool', 'maxpool', (1, 6, 6, 8), 3, 1, 1),
    bench.OpSpec('tiny_avgpool', 'avgpool', (1, 6, 6, 8), 3, 2, 1),
    bench.OpSpec('tiny_gap', 'gap', (1, 4, 4, 16)),
    bench.OpSpec('tiny_add', 'add', (1, 4, 4, 8)),
    bench.OpSpec('tiny_mul', 'mul', (1, 4, 4, 8), other=(1, 1, 1, 8)),
    bench.OpSpec('tiny_concat', 'concat', (1, 4, 4, 8), other=16),
    bench.OpSpec('tiny_up2', 'upsample', (1, 4, 4, 8)),
    bench.OpSpec('tiny_silu', 'lut', (1, 4, 4, 8), fn='silu'),
    bench.OpSpec('tiny_sigmoid', 'lut', (1, 4, 4, 8), fn='sigmoid'),
)
TINY_DW = (bench.LayerSpec('tiny_dw', 8, 8, 16, 16, 3, 2, numpy_int8=True, depthwise=True),)
OP_KEYS = [key for key, _ in bench.OP_COLUMNS]
OP_ORT_KEYS = ['ort_int8', 'ort_int8_2', 'ort_fp32']
# Columns each family has (the others print '-').
FAMILY_COLUMNS = {
    'lut': ['ours_int8', 'ort_int8', 'numpy_int8', 'ort_fp32', 'numpy_fp32'],
    'add': ['ours_int8', 'ort_int8', 'numpy_int8', 'ours_fp32', 'ort_fp32', 'numpy_fp32'],
    'mul': ['ours_int8', 'ort_int8', 'numpy_int8', 'ours_fp32', 'ort_fp32', 'numpy_fp32'],
}


def _run_ops(tmp_path, capsys, monkeypatch, threads=('1', '2'), names=('tiny',)):
    monkeypatch.setattr(bench, 'OPS', TINY_OPS)
    monkeypatch.setattr(bench, 'DW_LAYERS', TINY_DW)
    # No pause between the timed blocks: this test checks the report, not the speed.
    monkeypatch.setattr(bench, 'time_columns', functools.partial(bench.time_columns, pause_s=0.0))
    path = tmp_path / 'ops.json'
    rc = bench.main(['--layers'] + list(names) + ['--threads'] + list(threads)
                    + ['--repeat', '2', '--rounds', '1', '--warmup', '1', '--json', str(path)])
    assert rc == 0
    text = capsys.readouterr().out
    with open(path) as f:
        return text, json.load(f)


def _op_rows(text, name):
    """The printed (times row, speed row) of ``name`` per thread count, as token lists."""
    rows = [line.split() for line in text.splitlines() if line.split()[:1] == [name]]
    return [(rows[i], rows[i + 1]) for i in range(0, len(rows), 2)]


def _check_ops(text, data, have_ort, threads=(1, 2), refused=None):
    """``refused``: (layer, column) that ORT must have refused (n/a with a reason)."""
    for header in ['ORT layout', 'MB', 'max|d| ORT', 'max|d| ref', 'f32 max|d|', 'GOPS i8', 'GB/s i8']:
        assert header in text, 'missing column %r in:\n%s' % (header, text)
    for _, header in bench.OP_COLUMNS:
        assert header + ' ms' in text, 'missing column %r in:\n%s' % (header, text)
    for _, header in bench.OP_SPEEDUPS_INT8 + bench.OP_SPEEDUPS_FP32:
        assert header in text, 'missing column %r in:\n%s' % (header, text)
    for family, (ours, ort) in bench.OP_FAMILIES.items():
        assert ours in text and ort in text, family
    assert 'depthwise convolutions' in text

    results = data['results']
    names = [s.name for s in TINY_DW + TINY_OPS]
    assert [(r['layer'], r['threads']) for r in results] == [(n, t) for n in names for t in threads]
    for r in results:
        if r['family'] == 'depthwise':
            assert r['groups'] == 16 and r['macs'] == 4 * 4 * 16 * 9
            assert _positive(r['median_ms']['ours_int8']) and _positive(r['median_ms']['numpy_int8'])
            assert r['max_abs_diff_vs_numpy_int8'] == 0, r
            if have_ort:
                assert r['max_abs_diff_vs_ort_int8'] <= 1 and r['max_abs_diff_vs_ort_int8_nhwc'] <= 1, r
                assert _positive(r['speedup_ours_int8']['ort_int8'])
            else:
                assert r['median_ms']['ort_int8'] is None
            continue
        family = r['family']
        assert family in bench.OP_FAMILIES
        cols = r['columns']
        assert cols == FAMILY_COLUMNS.get(family, OP_KEYS), (family, cols)
        assert set(r['median_ms']) == set(OP_KEYS)
        assert r['bytes'] > 0 and (r['macs'] > 0) == (family == 'linear')
        assert _positive(r['gbps']['ours_int8'])
        for key in OP_KEYS:
            value = r['median_ms'][key]
            ran = key in cols and (have_ort or key not in OP_ORT_KEYS) and (r['layer'], key) != refused
            if ran:
                assert _positive(value), (r['layer'], key, value)
                assert r['min_ms'][key] <= value
            else:
                assert value is None, (r['layer'], key, value)
        # bit-exact against our NumPy reference; ORT within one LSB (SiLU: ORT holds the sigmoid at 1/255)
        assert r['max_abs_diff_vs_numpy_int8'] == 0, r
        if 'ours_fp32' in cols:
            assert r['max_abs_diff_vs_numpy_fp32'] < 1e-4, r
        for key in OP_ORT_KEYS:
            diff = r.get('max_abs_diff_vs_' + key)
            if not have_ort or key not in cols or (r['layer'], key) == refused:
                assert diff is None
                assert r['speedup_ours_int8'].get(key) is None and r['speedup_ours_fp32'].get(key) is None
            elif key == 'ort_fp32':
                assert diff is None if 'ours_fp32' not in cols else diff < 1e-4, (r['layer'], diff)
                if 'ours_fp32' in cols:
                    assert _positive(r['speedup_ours_fp32']['ort_fp32'])
            else:
                assert diff <= (2 if r['layer'] == 'tiny_silu' else 1), (r['layer'], key, diff)
                assert _positive(r['speedup_ours_int8'][key])
        if (r['layer'], 'ort_int8_2') == refused:
            assert 'ort_int8_2' in r['ort_notes'] and r['ort_notes']['ort_int8_2']
        else:
            assert r['ort_notes'] == {}, r['ort_notes']

    by_name = {s.name: s for s in TINY_OPS}
    for name, spec in by_name.items():
        rows = _op_rows(text, name)
        assert len(rows) == len(threads), (name, text)
        for i, (times, speeds) in enumerate(rows):
            r = next(r for r in results if r['layer'] == name and r['threads'] == threads[i])
            # ... ORT layout, MMAC, MB, one time per column, three differences
            cells = times[-3 - len(OP_KEYS):-3]
            for key, cell in zip(OP_KEYS, cells):
                if key not in r['columns']:
                    assert cell == '-', (name, key, times)
                elif r['median_ms'][key] is None:
                    assert cell == 'n/a', (name, key, times)
                else:
                    assert float(cell) > 0, (name, key, times)
            assert times[-3] == ('-' if 'ort_int8' not in r['columns'] else 'n/a' if not have_ort
                                 else str(max(r['max_abs_diff_vs_' + k] for k in ('ort_int8', 'ort_int8_2')
                                              if 'max_abs_diff_vs_' + k in r))), times
            assert times[-2] == '0', times
            # layer, GOPS, GB/s, one ratio per int8 and fp32 comparison
            assert len(speeds) == 3 + len(bench.OP_SPEEDUPS_INT8) + len(bench.OP_SPEEDUPS_FP32), speeds
            # (a tiny case moves a few hundred bytes: its GB/s may print as 0.00)
            assert (speeds[1] == '-') == (spec.family != 'linear') and float(speeds[2]) >= 0, speeds
            assert (speeds[3] != 'n/a') == have_ort, speeds
    if refused:
        assert 'n/a %s ORT #2: ' % refused[0] in text, text


def test_bench_ops_report(tmp_path, capsys, monkeypatch):
    text, data = _run_ops(tmp_path, capsys, monkeypatch)
    _check_ops(text, data, HAVE_ORT)


def test_bench_ops_without_onnxruntime(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, '_import_ort', lambda: None)
    text, data = _run_ops(tmp_path, capsys, monkeypatch, threads=('1',))
    _check_ops(text, data, False, threads=(1,))


def test_bench_ops_ort_refusal_is_na(tmp_path, capsys, monkeypatch):
    """An ORT graph that ORT refuses (here a Resize with scales of the wrong rank) gives n/a and a reason,
    and the other columns still run."""
    if not HAVE_ORT:
        # nothing to refuse without onnxruntime; the report path is covered by the test above
        return
    original = bench._OP_CASES['upsample']

    def refusing(spec, rng, isa):
        case = original(spec, rng, isa)
        _, feeds, out, _ = case.ort['ort_int8_2']
        case.add_ort('ort_int8_2', [('Resize', ['x', '', 'scales'], 'y', {'mode': 'nearest'})], feeds, out,
                     {'scales': np.array([1, 2, 2], np.float32)})
        return case

    monkeypatch.setitem(bench._OP_CASES, 'upsample', refusing)
    monkeypatch.setattr(bench, 'OPS', TINY_OPS)
    monkeypatch.setattr(bench, 'DW_LAYERS', TINY_DW)
    monkeypatch.setattr(bench, 'time_columns', functools.partial(bench.time_columns, pause_s=0.0))
    path = tmp_path / 'ops.json'
    assert bench.main(['--layers', 'tiny_up2', '--threads', '1', '--repeat', '2', '--rounds', '1',
                       '--warmup', '1', '--json', str(path)]) == 0
    captured = capsys.readouterr()
    with open(path) as f:
        results = json.load(f)['results']
    assert len(results) == 1
    r = results[0]
    assert r['median_ms']['ort_int8_2'] is None and r['ort_notes']['ort_int8_2']
    assert _positive(r['median_ms']['ort_int8']) and r['max_abs_diff_vs_ort_int8'] == 0
    assert 'ort_int8_2 n/a' in captured.err
    times, _ = _op_rows(captured.out, 'tiny_up2')[0]
    assert times[-3 - len(OP_KEYS) + OP_KEYS.index('ort_int8_2')] == 'n/a', times
    assert 'n/a tiny_up2 ORT #2: ' in captured.out
