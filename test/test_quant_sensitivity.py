"""Sensitivity analysis and the report: per-layer and per-block error, the automatic choice of float
blocks within a budget, the JSON and the plot."""
import json
import sys

import numpy as np
import pytest

from models import model_bytes, ort_run
from qvision_ros.errors import ConfigError
from qvision_ros.quantization import QuantConfig, calibrate, prepare
from qvision_ros.quantization.report import write_report
from qvision_ros.quantization.sensitivity import MAX_SQNR_DB, sensitivity, sqnr_db
from qvision_ros.runtime.zoo import calibration_data

QUIET = QuantConfig(progress=False)


def test_sqnr_golden():
    y = [[np.array([[[1.0, 1.0], [100.0, 100.0]]])]]            # one output [1, 2, 2]: channels 1 and 100
    same = sqnr_db(y, y)
    assert same == MAX_SQNR_DB
    # channel 0: noise 0.02 on signal 2 (20 dB); channel 1: noise 2 on signal 20000 (40 dB): the mean in dB
    noisy = [[np.array([[[1.1, 0.9], [101.0, 99.0]]])]]
    assert abs(sqnr_db(noisy, y) - 30.0) < 1e-9
    # one channel exact and one 20 dB: the exact one counts as MAX_SQNR_DB, not infinity
    half = [[np.array([[[1.1, 0.9], [100.0, 100.0]]])]]
    assert abs(sqnr_db(half, y) - (20.0 + MAX_SQNR_DB) / 2) < 1e-9
    # one flat vector: the whole tensor is one channel
    assert abs(sqnr_db([[np.array([1.1, 0.9])]], [[np.array([1.0, 1.0])]]) - 20.0) < 1e-9


@pytest.fixture(scope='module')
def resnet():
    data = calibration_data((1, 3, 64, 64), 4)
    prep = prepare(model_bytes('resnet'), QUIET)
    return prep, data


def test_layers_and_blocks(resnet):
    prep, data = resnet
    report = sensitivity(prep, data, QUIET, n_eval=2)
    units = [u for u in prep.analysis.units if u.quantizable]
    assert [l.name for l in report.layers] == [u.name for u in units]
    # one layer alone adds less error than all of them
    assert all(l.sqnr_db > report.int8.sqnr_db for l in report.layers)
    assert {l.block for l in report.layers} == {'backbone', 'head'}
    assert set(report.blocks) == {'backbone', 'head'}                   # a classifier has no neck
    for b, v in report.blocks.items():
        assert v.sqnr_db > report.int8.sqnr_db
    assert report.blocks['backbone'].size_bytes < report.blocks['head'].size_bytes     # the convs hold the weights
    # the engine's SQNR agrees with an independent evaluation on ONNX Runtime of the same variant
    x = data[:2]                                                        # the evaluation inputs (n_eval=2)
    ref = [ort_run(prep.proto.SerializeToString(), {'images': v}) for v in x]
    from qvision_ros.quantization import quantize
    r = quantize(prep, data, config=QUIET)
    outs = [ort_run(r.model.SerializeToString(), {'images': v}) for v in x]
    assert abs(sqnr_db(outs, ref) - report.int8.sqnr_db) < 0.5


def test_choice_within_a_metric_budget(resnet):
    """A task metric (here: minus the output MSE against FP32 on held-out inputs): a loose budget keeps
    nothing float, a zero budget everything, and the choice is the smallest model within the budget."""
    prep, data = resnet
    fp32 = prep.proto.SerializeToString()
    held_out = calibration_data((1, 3, 64, 64), 3, seed=7)
    ref = [ort_run(fp32, {'images': x})[0] for x in held_out]
    calls = []

    def metric(model):
        calls.append(len(model))
        return -float(np.mean([((ort_run(model, {'images': x})[0] - r) ** 2).mean() for x, r in zip(held_out, ref)]))

    cal = calibrate(prep, data, QUIET, keep_samples=2)
    loose = sensitivity(prep, config=QUIET, metric=metric, budget=1e9, layers=False, calibration=cal)
    # the first variant tried is the smallest model (here the head kept float: a 10-class FC layer is
    # smaller in float than with its quantisation parameters and nodes)
    assert loose.variants == [loose.choice] and loose.choice.size_bytes <= loose.int8.size_bytes
    assert loose.fp32.metric == 0.0 and loose.int8.metric < 0
    tight = sensitivity(prep, config=QUIET, metric=metric, budget=0.0, layers=False, calibration=cal)
    assert sorted(tight.choice.keep_float_blocks) == ['backbone', 'head']
    # a budget between the two block variants picks the smaller one that meets it
    b, h = tight.blocks['backbone'], tight.blocks['head']            # only backbone / only head int8
    budget = -min(b.metric, h.metric) * 1.01
    mid = sensitivity(prep, config=QUIET, metric=metric, budget=budget, layers=False, calibration=cal)
    within = [v for v in mid.variants if v.metric >= -budget]
    assert mid.choice.metric >= -budget and mid.choice.size_bytes == min(v.size_bytes for v in within)
    assert all(v.metric < -budget for v in mid.variants if v.size_bytes < mid.choice.size_bytes)


def test_choice_by_sqnr_without_metric():
    data = calibration_data((1, 3, 64, 64), 3)
    r = sensitivity(model_bytes('yolov8'), data, QUIET, layers=False, n_eval=2, min_sqnr_db=0.0)
    assert r.choice.keep_float_blocks == [] and set(r.blocks) == {'backbone', 'neck', 'head'}
    r = sensitivity(model_bytes('yolov8'), data, QUIET, layers=False, n_eval=2, min_sqnr_db=99.0)
    assert sorted(r.choice.keep_float_blocks) == ['backbone', 'head', 'neck']


def test_report_json_and_plot(resnet, tmp_path):
    prep, data = resnet
    report = sensitivity(prep, data, QUIET, n_eval=2)
    paths = write_report(report, str(tmp_path / 'rep'), extra={'model': 'resnet'})
    d = json.loads(open(paths['json']).read())
    assert d['model'] == 'resnet' and len(d['layers']) == len(report.layers)
    assert d['fp32']['size_bytes'] > d['int8']['size_bytes'] and 'choice' in d and 'blocks' in d
    with open(paths['png'], 'rb') as fh:
        assert fh.read(8) == b'\x89PNG\r\n\x1a\n'


def test_plot_without_matplotlib_says_what_to_do(resnet, tmp_path, monkeypatch):
    prep, data = resnet
    report = sensitivity(prep, data, QUIET, n_eval=1, layers=False)
    for mod in [m for m in sys.modules if m == 'matplotlib' or m.startswith('matplotlib.')]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    with pytest.raises(ConfigError, match=r"pip install 'qvision_ros\[report\]'"):
        write_report(report, str(tmp_path / 'r'))
    assert (tmp_path / 'r' / 'sensitivity.json').exists()                 # the JSON is written first


def test_bad_sensitivity_arguments(resnet):
    prep, data = resnet
    with pytest.raises(ConfigError, match='budget'):
        sensitivity(prep, data, QUIET, budget=-1)
    with pytest.raises(ConfigError, match='calibration data'):
        sensitivity(prep, None, QUIET)
    with pytest.raises(ConfigError, match='no evaluation inputs'):
        sensitivity(prep, data, QUIET, n_eval=0)
