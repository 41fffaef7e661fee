"""Hypothesis strategies and settings shared by the fuzz tests (``test/test_fuzz_*.py``).

The checks themselves live in :mod:`qvision_ros.fuzz` (also run by its long command-line mode); here the
cases are drawn by hypothesis, so that a failure shrinks to a small input and prints it.

Settings: CI runs a fixed number of examples per test, derandomised (the same cases on every run, no
example database written anywhere).  ``QVISION_FUZZ=long`` multiplies the examples by 50 (or
``QVISION_FUZZ=<factor>``) and draws fresh random cases on each run.
"""
import os
import tempfile
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from qvision_ros import fuzz

# Hypothesis keeps caches (Unicode tables, constants collected from the code) in ./.hypothesis by default;
# tests write nothing into the working directory, so they go to a folder in the temporary directory.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), 'qvision-hypothesis-%d' % os.getuid()))


def _factor():
    mode = os.environ.get('QVISION_FUZZ', '')
    if not mode:
        return None
    if mode == 'long':
        return 50
    try:
        return max(1, int(mode))
    except ValueError:
        raise ValueError('QVISION_FUZZ must be "long" or an integer factor, got %r' % mode) from None


def fuzz_settings(max_examples):
    """Settings of one fuzz test: ``max_examples`` cases in CI, more and random with QVISION_FUZZ."""
    factor = _factor()
    return settings(max_examples=max_examples * (factor or 1), deadline=None, derandomize=factor is None,
                    database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def run_cases(strategy, check, max_examples):
    """Run ``check`` on ``max_examples`` cases of ``strategy``; returns the Counter of outcomes (a bug
    raises and hypothesis shrinks it)."""
    from hypothesis import given

    seen = Counter()

    @fuzz_settings(max_examples)
    @given(strategy)
    def run(case):
        seen[check(case)] += 1
    run()
    return seen


def rngs():
    """A NumPy generator from a drawn seed (for the parts of a case that are random data)."""
    return st.integers(0, 2 ** 32 - 1).map(np.random.default_rng)


# ------------------------------------------------------------------------------------------ images

def sizes(limit=48):
    """An image width or height: mostly small valid ints, sometimes zero, negative, huge or not an int."""
    return st.one_of(st.integers(1, limit), st.integers(1, limit), st.integers(1, limit),
                     st.sampled_from(fuzz.ODD_SIZES), st.integers(-3, 0), st.integers(2000, 2 ** 64))


@st.composite
def image_messages(draw):
    """The fields of a sensor_msgs/Image: a valid message (any supported encoding, row padding, every
    buffer type) with none, one or several fields corrupted - unknown encodings, zero / odd / huge /
    non-integer sizes, wrong step, truncated or oversized data, odd is_bigendian flags, buffers of the
    wrong type (:data:`qvision_ros.fuzz.IMAGE_CORRUPTIONS`)."""
    bad = draw(st.one_of(st.just(()), st.just(()), st.tuples(st.sampled_from(fuzz.IMAGE_CORRUPTIONS)),
                         st.lists(st.sampled_from(fuzz.IMAGE_CORRUPTIONS), min_size=2, max_size=4)))
    enc = draw(st.sampled_from(fuzz.FUZZ_ENCODINGS if 'encoding' in bad else fuzz.FUZZ_ENCODINGS[:9]))
    ch = fuzz.channels_of(enc, draw(st.integers(1, 4)))
    width = draw(sizes() if 'width' in bad else st.integers(1, 48))
    height = draw(sizes() if 'height' in bad else st.integers(1, 48))
    if ch == 2 and 'width' not in bad:
        width += width % 2           # 4:2:2 needs an even width (an odd one is a corruption)
    w = width if isinstance(width, int) and 0 <= width < 4096 else 8
    h = height if isinstance(height, int) and 0 <= height < 4096 else 8
    step = w * ch + draw(st.sampled_from([0, 0, 1, 3, 64]))
    if 'step' in bad:
        step = draw(st.one_of(st.integers(-2, w * ch + 2), st.sampled_from([2 ** 40, None, 1.0, '12'])))
    s = step if isinstance(step, int) and 0 <= step < 1 << 20 else w * ch
    size = s * h + draw(st.sampled_from([0, 0, 1, 5]))       # extra bytes at the end are allowed
    if 'size' in bad:
        size = max(0, s * h - draw(st.sampled_from([1, s, s * h, 7])))
    payload = draw(rngs()).integers(0, 256, size, dtype=np.uint8).tobytes()
    kind = draw(st.sampled_from(fuzz.BUFFER_KINDS if 'buffer' in bad else
                                ['bytes', 'bytes', 'bytearray', 'memoryview', 'array_B', 'numpy']))
    flag = draw(st.sampled_from(fuzz.ODD_FLAGS if 'flag' in bad else [0, 1, False, True]))
    return dict(data=fuzz.make_buffer(payload, kind), width=width, height=height, encoding=enc, step=step,
                is_bigendian=flag)


@st.composite
def frames(draw):
    """``(frame, encoding)``: arrays in every memory layout (:data:`qvision_ros.fuzz.FRAME_LAYOUTS`), some
    of the wrong dtype, rank, channel count or size, or not arrays at all."""
    bad = draw(st.one_of(st.just(()), st.just(()),
                         st.lists(st.sampled_from(fuzz.FRAME_CORRUPTIONS), min_size=1, max_size=2)))
    enc = draw(st.sampled_from(fuzz.FUZZ_ENCODINGS if 'encoding' in bad else fuzz.FUZZ_ENCODINGS[:9]))
    ch = draw(st.integers(0, 5)) if 'channels' in bad else fuzz.channels_of(enc, 3)
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    if ch == 2:
        w += w % 2
    if 'size' in bad:
        h, w = draw(st.sampled_from([(0, w), (h, 0), (1, 5001), (5000, 1), (0, 0)]))
    shape = [h, w, ch] if ch != 1 or draw(st.booleans()) else [h, w]
    if 'rank' in bad:
        shape = draw(st.sampled_from([[h], [], [h, w, ch, 1], [1, h, w, ch]]))
    dtype = draw(st.sampled_from(fuzz.FRAME_DTYPES)) if 'dtype' in bad else np.uint8
    a = fuzz.frame_layout(draw(rngs()).integers(0, 256, shape).astype(dtype),
                          draw(st.sampled_from(fuzz.FRAME_LAYOUTS)))
    return (a.tolist() if 'list' in bad else a), enc


# ------------------------------------------------------------------------------------------ models

def model_mutations(names):
    """``(seed model name, mutation names, generator)`` for :func:`qvision_ros.fuzz.mutate_model`."""
    return st.tuples(st.sampled_from(sorted(names)),
                     st.lists(st.sampled_from(fuzz.MUTATIONS), min_size=1, max_size=3), rngs())


# ----------------------------------------------------------------------------------------- decoder

@st.composite
def decoder_cases(draw):
    """``(Decoder kwargs, output array, letterbox)`` with NaN/Inf, empty axes, thousands of candidates,
    wrong ranks and dtypes (the array from :func:`qvision_ros.fuzz.model_output`)."""
    from qvision_ros.vision.preprocess import Letterbox

    kind = draw(st.sampled_from(['yolov5', 'yolov8', 'classifier']))
    out = fuzz.model_output(draw(rngs()), kind)
    kw = {'kind': draw(st.sampled_from([kind, kind, 'auto']))}
    if draw(st.booleans()):
        kw['num_classes'] = draw(st.integers(1, 12))
    kw['score_threshold'] = draw(st.one_of(st.sampled_from([0.0, 0.25, 1.0]), st.floats(0, 1)))
    kw['nms_iou_threshold'] = draw(st.one_of(st.sampled_from([0.0, 0.45, 1.0]), st.floats(0, 1)))
    kw['max_detections'] = draw(st.sampled_from([1, 3, 100, 300]))
    kw['agnostic_nms'] = draw(st.booleans())
    if draw(st.integers(0, 4)) == 0:
        kw['classes'] = draw(st.lists(st.integers(0, 12), max_size=3))
    if draw(st.integers(0, 4)) == 0:
        kw['max_candidates'] = draw(st.integers(1, 50))
    if draw(st.integers(0, 9)) == 0:
        kw['transposed'] = draw(st.booleans())
    lb = None
    if draw(st.booleans()):
        lb = Letterbox.compute(draw(st.integers(1, 3000)), draw(st.integers(1, 3000)), 320, 320,
                               draw(st.sampled_from(['letterbox', 'stretch'])))
        if draw(st.integers(0, 9)) == 0:
            lb = [lb] * draw(st.integers(0, 3))
    return kw, out, lb


def nms_cases():
    """``(boxes, scores, class_ids, iou_threshold, max_output)`` (see :func:`qvision_ros.fuzz.nms_case`)."""
    return rngs().map(fuzz.nms_case)


# ------------------------------------------------------------------------------------------ params

def odd_values():
    """A parameter value of the wrong type or out of range."""
    return st.one_of(st.sampled_from(fuzz.ODD_VALUES), st.integers(-2 ** 70, 2 ** 70), st.floats(),
                     st.text(max_size=5), st.lists(st.integers(-2, 300), max_size=4))


@st.composite
def param_cases(draw):
    """``(target, kwargs)``: one parameter of Preprocessor, Decoder or Engine with an odd value, or a
    malformed Engine.run feed (target 'run')."""
    target = draw(st.sampled_from(['Preprocessor', 'Decoder', 'Engine', 'run']))
    if target == 'run':
        return target, {'feed': draw(st.sampled_from(fuzz.RUN_FEEDS)), 'model': draw(st.sampled_from(fuzz.RUN_MODELS))}
    keys = {'Preprocessor': fuzz.PREPROCESSOR_PARAMS, 'Decoder': fuzz.DECODER_PARAMS,
            'Engine': fuzz.ENGINE_PARAMS}[target]
    kw = {'input_width': 32, 'input_height': 24} if target == 'Preprocessor' else {}
    key = draw(st.sampled_from(keys))
    if key in ('input_scale', 'input_zero_point') and draw(st.booleans()):
        kw.update(input_scale=0.02, input_zero_point=3)
    kw[key] = draw(odd_values())
    return target, kw
