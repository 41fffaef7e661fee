"""The qvision command: run and demo end to end on small inputs made here, and how errors are reported.

Every output goes to tmp_path (the default output folder is checked with the working directory moved
there).  Oracles: the files themselves read back with OpenCV and json, the frames the test wrote, and the
exact boxes of synthetic scenes.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from qvision_ros import synthetic
from qvision_ros.cli import Progress, main
from qvision_ros.cli_run import parse_classes

ROOT = Path(__file__).resolve().parents[1]


def scene_folder(tmp_path, n=4, size=(480, 360)):
    """n synthetic scenes as PNG files, with their ground-truth annotations."""
    folder = tmp_path / 'frames'
    folder.mkdir()
    truth = []
    for i in range(n):
        image, anns = synthetic.render_scene(synthetic.scene_for_index(5, i, size))
        cv2.imwrite(str(folder / ('%03d.png' % i)), image)
        truth.append(anns)
    return folder, truth


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_run_on_image_folder(tmp_path, capsys):
    folder, truth = scene_folder(tmp_path)
    out = tmp_path / 'out'
    status = main(['run', str(folder), '--out', str(out), '--threads', '1', '--quiet', '--frame-id', 'front'])
    assert status == 0
    captured = capsys.readouterr()
    assert 'writing to %s' % out in captured.err
    for stage in ('preprocess', 'inference', 'postprocess', 'draw', 'output'):
        assert stage in captured.out
    assert 'FPS' in captured.out and 'dropped 0' in captured.out and str(out) in captured.out

    records = read_jsonl(out / 'detections.jsonl')
    assert [r['index'] for r in records] == [0, 1, 2, 3]
    found = total = 0
    for rec, anns in zip(records, truth):
        assert (rec['width'], rec['height'], rec['frame_id']) == (480, 360, 'front')
        assert set(rec['stamp']) == {'sec', 'nanosec'}
        for d in rec['detections']:
            x1, y1, x2, y2 = d['box']
            assert 0 <= x1 < x2 <= 480 and 0 <= y1 < y2 <= 360 and 0.25 <= d['score'] <= 1
            assert d['label'] == synthetic.CLASSES[d['class_id']]
        for a in anns:
            if min(a.bbox[2], a.bbox[3]) >= 24 and a.visibility > 0.9:
                total += 1
                found += any(iou(a.xyxy, d['box']) > 0.5 and d['class_id'] == a.class_id
                             for d in rec['detections'])
    assert total >= 3 and found >= 0.75 * total

    cap = cv2.VideoCapture(str(out / 'annotated.mp4'))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (360, 480, 3)
        n += 1
    assert n == 4
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['stats']['frames'] == 4 and summary['stats']['dropped'] == 0
    assert summary['model']['precision'] in ('fp32', 'int8') and summary['files'][0] == 'annotated.mp4'
    assert summary['stats']['stages_ms']['inference']['p50_ms'] > 0


def test_run_default_output_folder_classes_and_no_video(tmp_path, capsys, monkeypatch):
    folder, _ = scene_folder(tmp_path, n=2)
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(['run', str(folder), '--no-video', '--classes', 'car,pedestrian', '--threads', '1',
                 '-q', '--max-frames', '1']) == 0
    (made,) = list(work.iterdir())
    assert made.name.startswith('qvision_run_') and not (made / 'annotated.mp4').exists()
    records = read_jsonl(made / 'detections.jsonl')
    assert len(records) == 1
    assert {d['label'] for d in records[0]['detections']} <= {'car', 'pedestrian'}
    assert str(made) in capsys.readouterr().err


def test_demo_runs_on_the_shipped_clip(tmp_path, capsys):
    out = tmp_path / 'demo'
    assert main(['demo', '--out', str(out), '--max-frames', '3', '--threads', '1', '-q']) == 0
    records = read_jsonl(out / 'detections.jsonl')
    assert [(r['width'], r['height']) for r in records] == [(640, 480)] * 3
    assert (out / 'annotated.mp4').stat().st_size > 0
    assert 'sample_road.json' in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(['run', str(tmp_path / 'missing.mp4'), '--out', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('qvision: error: ') and 'no such file' in err and 'Traceback' not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'o').exists()   # nothing is created for a source that cannot be opened
    np.save(tmp_path / 'a.npy', np.zeros((2, 32, 32, 3), np.uint8))
    assert main(['run', str(tmp_path / 'a.npy'), '--model', str(tmp_path / 'none.onnx')]) == 2
    assert 'none.onnx' in capsys.readouterr().err
    assert main(['run', str(tmp_path / 'a.npy'), '--classes', 'unicorn', '--out', str(tmp_path / 'o')]) == 2
    assert 'unicorn' in capsys.readouterr().err
    from qvision_ros.errors import DataError
    with pytest.raises(DataError):
        main(['--debug', 'run', str(tmp_path / 'missing.mp4')])
    with pytest.raises(SystemExit) as exc:
        main(['run', str(tmp_path / 'a.npy'), '--threads', '0'])
    assert exc.value.code == 2


def test_source_failing_part_way_keeps_outputs(tmp_path, capsys):
    """A bag that cannot be read: one line, exit 2; a corrupt image in a folder: skipped and counted."""
    folder, _ = scene_folder(tmp_path, n=3)
    (folder / '001.png').write_bytes(b'not a png')
    out = tmp_path / 'o'
    assert main(['run', str(folder), '--out', str(out), '--threads', '1', '-q', '--no-video']) == 0
    assert len(read_jsonl(out / 'detections.jsonl')) == 2
    assert 'skipped 1' in capsys.readouterr().out
    assert json.loads((out / 'summary.json').read_text())['stats']['skipped'] == 1
    bag = tmp_path / 'broken.mcap'
    bag.write_bytes(b'\x89MCAP0\r\n' + b'\x00' * 64)
    assert main(['run', str(bag), '--out', str(tmp_path / 'b')]) == 2
    assert 'bag' in capsys.readouterr().err


def test_parse_classes():
    labels = ('car', 'bus')
    assert parse_classes('1, car', labels) == [0, 1]
    assert parse_classes(None, labels) is None and parse_classes(' , ', labels) is None
    from qvision_ros.errors import ConfigError
    with pytest.raises(ConfigError, match='car, bus'):
        parse_classes('truck', labels)


def test_progress_plain_and_tty():
    import io

    log = io.StringIO()
    p = Progress('job', total=10, stream=log, log_interval=0)
    p.update(5, 'half')
    p.close()
    lines = log.getvalue().splitlines()
    assert lines[0].startswith('job [############............] 5/10') and lines[0].endswith('| half')

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    p = Progress('job', total=None, stream=tty, interval=0)
    p.update(3)
    p.close()
    assert tty.getvalue().startswith('\rjob 3 ') and tty.getvalue().endswith('\n')
    quiet = io.StringIO()
    p = Progress('job', 4, stream=quiet, enabled=False)
    p.update(1)
    p.close()
    assert quiet.getvalue() == ''


def test_module_entry_point_help():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    res = subprocess.run([sys.executable, '-m', 'qvision_ros', '--help'], capture_output=True, text=True,
                         env=env, cwd=str(ROOT), timeout=120)
    assert res.returncode == 0
    for name in ('run', 'demo', 'eval', 'bench'):
        assert name in res.stdout


def test_run_on_rosbag_keeps_headers(tmp_path, capsys):
    """Stamps and frame_id of a bag's Image headers reach the JSON lines unchanged."""
    from test_sources import Image, image_msg, write_bag

    msgs = []
    for i in range(3):
        image, _ = synthetic.render_scene(synthetic.scene_for_index(8, i, (320, 240)))
        msgs.append(image_msg(image, 'rgb8' if i % 2 else 'bgr8', i, pad=8, frame_id='cam_left'))
    bag = tmp_path / 'bag'
    write_bag(bag, {'/left/image_raw': (Image.__msgtype__, msgs)})
    out = tmp_path / 'o'
    assert main(['run', str(bag), '--out', str(out), '--threads', '1', '-q', '--no-video']) == 0
    records = read_jsonl(out / 'detections.jsonl')
    assert [(r['stamp']['sec'], r['stamp']['nanosec'], r['frame_id']) for r in records] == \
        [(1000 + i, 7 * i, 'cam_left') for i in range(3)]
    assert all((r['width'], r['height']) == (320, 240) for r in records)
    assert '/left/image_raw' in capsys.readouterr().err
