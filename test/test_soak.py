"""The soak and overload benchmarks (qvision_ros.soak) in miniature: the accounting, not the timing.

Oracles: the frame schedule recomputed here from the documented rule, the kernel's own VmRSS line in
/proc/self/status for the RSS sampler, OpenCV for the encodings of the sensor_msgs/Image fields, and the
wall clock for the paced source.  The overload checks assert what holds on any machine: every produced
frame is processed or counted as dropped, the latest-frame policies never let frames queue, and an
unbounded FIFO under the same load does (so the queue measure can fail).
"""
import gc
import json
import time

import cv2
import numpy as np
import pytest

from qvision_ros import soak
from qvision_ros.errors import ConfigError, QVisionError
from qvision_ros.pipeline import Pipeline, PipelineConfig
from qvision_ros.vision.image import to_bgr

MODEL = soak.Path(soak.__file__).resolve().parent / 'data' / 'detector_320.onnx'


@pytest.fixture(scope='module')
def pipe():
    return Pipeline(MODEL, PipelineConfig(num_threads=2))


@pytest.fixture(scope='module')
def images():
    return soak.sample_frames(8)


def _vmrss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    raise AssertionError('no VmRSS line')


def test_rss_sampler_follows_allocations():
    gc.collect()
    before = soak.rss_bytes()
    assert abs(before - _vmrss()) < 8 * 2**20
    block = np.ones(64 * 2**20, np.uint8)       # 64 MiB, every page touched
    grown = soak.rss_bytes()
    assert grown - before > 60 * 2**20, (before, grown)
    assert abs(grown - _vmrss()) < 8 * 2**20
    del block
    gc.collect()
    assert soak.rss_bytes() < grown - 48 * 2**20   # a large NumPy block is unmapped when freed


@pytest.mark.parametrize('encoding', ['bgr8', 'rgb8', 'bgra8', 'rgba8'])
@pytest.mark.parametrize('padding', [0, 5])
def test_raw_image_fields_round_trip(encoding, padding):
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, (7, 10, 3), np.uint8)
    raw = soak.raw_image(bgr, encoding, padding)
    channels = len(encoding) - 1
    assert raw.step == 10 * channels + padding and len(raw.data) == raw.step * 7
    assert np.array_equal(to_bgr(raw.to_array(), encoding), bgr)


@pytest.mark.parametrize('encoding', ['uyvy', 'yuyv', 'yuv422', 'mono8'])
def test_raw_image_other_encodings_decode_to_the_image(encoding, images):
    image = images[0]
    raw = soak.raw_image(image, encoding, padding=6)
    decoded = to_bgr(raw.to_array(), encoding).astype(np.int16)
    if encoding == 'mono8':
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        assert np.array_equal(decoded, np.repeat(gray[:, :, None], 3, axis=2))
    else:   # 4:2:2 halves the colour resolution; on a camera frame the round trip stays close
        assert np.abs(decoded - image).mean() < 6.0


def test_every_malformed_kind_is_refused_with_a_project_error(pipe, images):
    rss = soak.rss_bytes()
    for kind in soak.MALFORMED:
        item = soak.malformed_frame(kind, images[0])
        with pytest.raises(QVisionError):
            if isinstance(item, soak.RawImage):
                pipe.process(item.to_array(), encoding=item.encoding)
            else:
                pipe.process(item)
    assert soak.rss_bytes() - rss < 100 * 2**20   # the 10-gigapixel frame was refused, not allocated
    with pytest.raises(ConfigError):
        soak.malformed_frame('nonsense', images[0])


def test_soak_accounts_for_every_frame(pipe):
    cfg = soak.SoakConfig(frames=240, block=40, malformed_every=23, vary_every=10, vary_len=3)
    report = soak.run_soak(pipe, cfg)
    kinds = {'base': 0, 'variant': 0, 'malformed': 0}
    for i in range(240):                    # the schedule, from the rule the docstring states
        if i % 23 == 22:
            kinds['malformed'] += 1
        elif i % 10 < 3:
            kinds['variant'] += 1
        else:
            kinds['base'] += 1
    assert report['processed_by_kind'] == {'base': kinds['base'], 'variant': kinds['variant']}
    assert report['errors'] == report['expected_malformed'] == kinds['malformed'] == 10
    assert report['processed'] + report['errors'] == 240
    assert set(report['errors_by_kind']) == set(soak.MALFORMED)   # 10 malformed frames cover all 8 kinds
    assert report['unclassified'] == 0 and report['good_frames_refused'] == 0 and not report['malformed_accepted']
    assert report['accounting_ok']
    samples = report['samples']
    assert [s['frames'] for s in samples] == [40, 80, 120, 160, 200, 240]
    assert [s['processed'] + s['errors'] for s in samples] == [40, 80, 120, 160, 200, 240]
    assert all(s['rss_mb'] > 10 and s['p99_ms'] >= s['p50_ms'] > 0 for s in samples)
    # Warm-up: half the run at most (120), rounded up to a cycle of the 8 variants (10 frames each).
    assert report['warmup_frames'] == 160
    assert report['rss_warm_mb'] == samples[3]['rss_mb'] and report['rss_end_mb'] == samples[-1]['rss_mb']
    assert report['rss_first_window_max_mb'] == samples[3]['rss_mb']   # windows of one sample here
    assert report['rss_last_window_max_mb'] == samples[-1]['rss_mb']
    assert np.isfinite(report['rss_growth_pct']) and np.isfinite(report['p50_drift_pct'])
    json.dumps(report)                      # JSON-ready


def test_soak_config_is_checked():
    with pytest.raises(ConfigError):
        soak.SoakConfig(frames=0)
    with pytest.raises(ConfigError):
        soak.SoakConfig(source='camera')
    with pytest.raises(ConfigError):
        soak.SoakConfig(frames=100, warmup=100)
    assert soak.SoakConfig(frames=100_000).warmup_frames == 6000   # 5 %, rounded to 2 variant cycles
    with pytest.raises(ConfigError):
        soak.OverloadConfig(policies=('lifo',))
    with pytest.raises(ConfigError):
        soak.OverloadConfig(factor=0)


def test_paced_source_runs_at_the_asked_rate(images):
    src = soak.PacedSource(images, rate=200.0, duration_s=0.5)
    assert src.live and src.count == 100
    t0 = time.perf_counter()
    frames = list(src)
    elapsed = time.perf_counter() - t0
    assert len(frames) == src.produced == 100
    # Frame k is due k / rate after the first; a late hand-over (a loaded machine) shifts no later frame.
    due = np.asarray(src.due_s)
    assert np.allclose(due - due[0], np.arange(100) / 200.0, rtol=0, atol=1e-9)
    stamps = np.asarray([f.stamp_ns for f in frames])
    assert np.array_equal(stamps, src.handover_ns) and np.all(np.diff(stamps) >= 0)
    assert np.allclose(stamps / 1e9 - due, src.late_s, rtol=0, atol=1e-6) and min(src.late_s) >= 0
    assert elapsed >= 0.495 - 1e-3 and src.achieved_rate() <= 201.0   # never faster than asked
    assert np.median(src.late_s) < 0.05
    assert frames[0].image is not images[0] and np.array_equal(frames[8].image, images[0])


@pytest.mark.parametrize('policy', ['stream', 'node'])
def test_latest_frame_policies_drop_and_count_instead_of_queueing(pipe, images, policy):
    rate, _ = soak.measure_sustainable_rate(pipe, images, seconds=0.5)
    raw = soak.run_live(pipe, images, 3.0 * rate, 1.5, policy)
    phase = soak.summarize_phase([raw])
    assert phase['produced'] == phase['processed'] + phase['dropped'] and phase['unaccounted'] == 0
    assert phase['dropped'] > 0 and phase['processed'] > 0
    assert phase['queue_length_max'] <= 2
    assert phase['in_order']
    assert len(phase['series']['latency_ms']) == phase['processed']


def test_fifo_reference_queues_so_the_measure_can_fail(pipe, images):
    rate, _ = soak.measure_sustainable_rate(pipe, images, seconds=0.5)
    phase = soak.summarize_phase([soak.run_live(pipe, images, 3.0 * rate, 1.0, 'fifo')])
    assert phase['dropped'] == 0 and phase['processed'] == phase['produced']
    assert phase['queue_length_max'] >= 5
    assert phase['wait_p99_ms'] > phase['processing_p50_ms']


def test_command_writes_reports_and_plots(tmp_path, capsys):
    status = soak.main(['all', '--frames', '60', '--block', '20', '--malformed-every', '13', '--vary-every',
                        '10', '--vary-len', '2', '--source', 'synthetic', '--duration', '0.6', '--rounds', '2',
                        '--calibrate', '0.4', '--policy', 'stream', '--quiet', '--out', str(tmp_path)])
    assert status == 0
    out = capsys.readouterr().out
    assert 'RSS after the warm-up' in out and 'overload:' in out
    s = json.loads((tmp_path / soak.SOAK_JSON).read_text())
    assert s['processed'] + s['errors'] == 60 and s['errors'] == 4
    o = json.loads((tmp_path / soak.OVERLOAD_JSON).read_text())
    phases = o['policies']['stream']
    assert len(phases['sustainable_fps']) == 2
    for name in ('unloaded', 'overload'):
        assert phases[name]['rounds'] == 2 and phases[name]['unaccounted'] == 0
    for name in (soak.SOAK_PNG, soak.OVERLOAD_PNG):
        assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
