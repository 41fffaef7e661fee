"""Fuzzing parameters: wrong types and out-of-range values for Preprocessor, Decoder and Engine, and
malformed feeds for Engine.run.  Each is accepted (and the object then works) or refused with a
ConfigError / InputError / ModelError that names the parameter."""
import numpy as np
import pytest

from fuzz_strategies import param_cases, rngs, run_cases
from hypothesis import strategies as st
from qvision_ros import fuzz
from qvision_ros.errors import ConfigError, InputError
from qvision_ros.vision.decode import Decoder
from qvision_ros.vision.preprocess import Preprocessor


def test_fuzz_params():
    seen = run_cases(st.tuples(param_cases(), rngs()), lambda case: fuzz.check_params(*case[0], case[1]), 450)
    refused = {'ConfigError@Preprocessor()', 'ConfigError@Decoder()', 'ConfigError@Engine()', 'InputError@Engine()',
               'InputError@run', 'ConfigError@decode', 'InputError@decode'}
    assert set(seen) <= refused | {'ok'}, seen
    assert seen['ok'] >= 30 and seen['ConfigError@Preprocessor()'] >= 30 and seen['InputError@run'] >= 20, seen


@pytest.mark.parametrize('model', fuzz.RUN_MODELS)
@pytest.mark.parametrize('feed', fuzz.RUN_FEEDS)
def test_every_malformed_feed(feed, model):
    """Each feed kind at least once on a float and a QDQ model, with the outcome it must have."""
    o = fuzz.check_params('run', {'feed': feed, 'model': model}, np.random.default_rng(0))
    accepted = {'nan', 'strided', 'readonly', 'fortran'}   # any layout; NaN flows through (batch: fixed 1)
    if model == 'tiny_qdq':
        accepted.add('quantized')                          # uint8 NHWC: engine.quantized_inputs
    assert o == ('ok' if feed in accepted else 'InputError@run'), (feed, o)


def test_long_mode_generator_runs():
    for k in range(50):
        rng = np.random.default_rng([0, 3, k])
        target, kw = fuzz.param_case(rng)
        assert fuzz.check_params(target, kw, rng) != ''


# --------------------------------------------------------------------------------------- regressions
# (the Engine parameters are in test_fuzz_models.py, the string options given as arrays and the dtype
# in test_fuzz_images.py)

@pytest.mark.parametrize('name', ['score_threshold', 'nms_iou_threshold'])
@pytest.mark.parametrize('value', [float('nan'), -0.0001, 1.5, '0.5x', None, [0.5], 1j])
def test_decoder_thresholds(name, value):
    with pytest.raises(ConfigError, match=name):
        Decoder(**{name: value})


@pytest.mark.parametrize('value', [0, -1, 1.0, True, '300', None, np.float32(3)])
def test_decoder_counts(value):
    for name in ('max_detections', 'max_candidates', 'top_k', 'num_classes'):
        if name == 'num_classes' and value is None:
            continue                # None means: from the output shape
        with pytest.raises(ConfigError, match=name):
            Decoder(**{name: value})


@pytest.mark.parametrize('value', [[-1], [1.5], [[1, 2]], 'person', np.array([0.0])])
def test_decoder_class_filter(value):
    with pytest.raises(ConfigError, match='classes'):
        Decoder(classes=value)


@pytest.mark.parametrize('name,kw', [
    ('input_width', dict(input_width=0)), ('input_height', dict(input_height=16385)),
    ('input_width', dict(input_width=32.0)), ('pad_value', dict(pad_value=256)), ('pad_value', dict(pad_value=-1)),
    ('pad_value', dict(pad_value=1.5)), ('mean', dict(mean=(0.1, 0.2))), ('std', dict(std=0)),
    ('std', dict(std=(1, 1, float('inf')))), ('input_zero_point', dict(input_scale=0.1)),
    ('input_scale', dict(input_scale=0.0, input_zero_point=0)),
    ('input_scale', dict(input_scale=1e-50, input_zero_point=0)),
    ('input_zero_point', dict(input_scale=0.1, input_zero_point=256)),
    ('input_zero_point', dict(input_scale=0.1, input_zero_point=-1))])
def test_preprocessor_values_out_of_range(name, kw):
    with pytest.raises(ConfigError, match=name):
        Preprocessor(**dict(dict(input_width=32, input_height=24), **kw))


def test_engine_run_messages_say_what_to_do():
    engine = fuzz.tiny_engine()
    x = np.zeros((1, 3, 16, 16), np.float64)
    with pytest.raises(InputError, match=r'convert with x.astype\(np.float32\)'):
        engine.run({'images': x})
    with pytest.raises(InputError, match=r"missing \['images'\], unknown \['image'\]"):
        engine.run({'image': x.astype(np.float32)})
    # feeds with keys of several types: was TypeError from sorting the unknown names
    with pytest.raises(InputError, match=r"missing \[\], unknown \[0, 'other'\]"):
        engine.run({'images': x.astype(np.float32), 0: x, 'other': x})
