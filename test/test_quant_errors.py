"""Bad input to the quantizer raises the project's error types, with messages that say what to do."""
import numpy as np
import pytest

from models import model_bytes
from qvision_ros.errors import ConfigError, DataError, InputError, ModelError, QVisionError
from qvision_ros.quantization import QuantConfig, quantize
from qvision_ros.runtime.zoo import calibration_data

QUIET = QuantConfig(progress=False)


def _calib(n=2):
    return calibration_data((1, 3, 32, 32), n)


def test_missing_and_corrupt_models(tmp_path):
    with pytest.raises(ModelError, match='cannot read the model file'):
        quantize(str(tmp_path / 'nope.onnx'), _calib(), config=QUIET)
    with pytest.raises(ModelError, match='corrupt or truncated'):
        quantize(model_bytes('vgg')[:100], _calib(), config=QUIET)
    with pytest.raises(ModelError, match='empty'):
        quantize(b'', _calib(), config=QUIET)


def test_missing_calibration_sources(tmp_path):
    with pytest.raises(DataError, match='does not exist'):
        quantize(model_bytes('vgg'), str(tmp_path / 'frames.npy'), config=QUIET)
    with pytest.raises(DataError, match='does not exist.*image folder'):
        quantize(model_bytes('vgg'), str(tmp_path / 'no_such_folder'), config=QUIET)
    bad = tmp_path / 'bad.npy'
    bad.write_bytes(b'not an npy file')
    with pytest.raises(DataError, match='cannot read the calibration array'):
        quantize(model_bytes('vgg'), str(bad), config=QUIET)
    with pytest.raises(ConfigError, match='needs calibration data'):
        quantize(model_bytes('vgg'), None, config=QUIET)


def test_empty_calibration():
    for empty in ([], iter(()), np.zeros((0, 3, 32, 32), np.float32)):
        with pytest.raises(DataError, match='no images'):
            quantize(model_bytes('vgg'), empty, config=QUIET)


def test_calibration_data_that_does_not_fit_the_model():
    with pytest.raises(InputError, match='must have shape'):
        quantize(model_bytes('vgg'), calibration_data((1, 3, 64, 64), 1), config=QUIET)
    with pytest.raises(InputError, match='float array'):
        quantize(model_bytes('vgg'), [np.zeros((1, 3, 32, 32), np.uint8)], config=QUIET)
    with pytest.raises(InputError, match='float32 arrays or dicts'):
        quantize(model_bytes('vgg'), ['image.png'], config=QUIET)
    with pytest.raises(InputError, match='the model inputs are'):
        quantize(model_bytes('vgg'), [{'input': _calib()[0]}], config=QUIET)


@pytest.mark.parametrize('options, message', [
    (dict(observer='kl'), 'observer must be one of'),
    (dict(weight_bits=3), 'weight_bits must be 8, 4 or 2'),
    (dict(weight_bits=True), 'weight_bits'),
    (dict(percentile=20), 'percentile must be in'),
    (dict(bins=10), 'bins must be an integer'),
    (dict(keep_float_blocks=('tail',)), "keep_float_blocks names 'tail'"),
    (dict(keep_float=('',)), 'non-empty strings'),
    (dict(blocks={'stem': 3}), 'list of strings'),
    (dict(max_images=0), 'max_images'),
    (dict(weight_scaling='best'), 'weight_scaling must be one of'),
])
def test_bad_config(options, message):
    with pytest.raises(ConfigError, match=message):
        QuantConfig(**options)


def test_selections_that_match_nothing_or_everything():
    with pytest.raises(ConfigError, match="matches no node.*globs"):
        quantize(model_bytes('vgg'), _calib(), config=QuantConfig(progress=False, keep_float=('/head/*',)))
    with pytest.raises(ConfigError, match="op type 'Sigmoid' is not in the model"):
        quantize(model_bytes('vgg'), _calib(), config=QuantConfig(progress=False, keep_float_ops=('Sigmoid',)))
    with pytest.raises(ConfigError, match='nothing left to quantise'):
        quantize(model_bytes('vgg'), _calib(), config=QuantConfig(progress=False, keep_float=('*',)))
    with pytest.raises(ConfigError, match='config must be a QuantConfig'):
        quantize(model_bytes('vgg'), _calib(), config={'observer': 'minmax'})


def test_bad_output_path(tmp_path):
    with pytest.raises(ConfigError, match='output folder .* does not exist'):
        quantize(model_bytes('vgg'), _calib(), tmp_path / 'missing' / 'm.onnx', config=QUIET)


def test_every_error_is_a_qvision_error():
    for cls in (ConfigError, DataError, InputError, ModelError):
        assert issubclass(cls, QVisionError)
