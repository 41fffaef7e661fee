"""``qvision quantize``: image sources through the run-time preprocessing, the report, errors, and the
wiring as a subcommand of the ``qvision`` command."""
import io
import json
import os

import cv2
import numpy as np
import onnx
import pytest

from models import model_bytes
from qvision_ros.errors import DataError
from qvision_ros import cli as qvision_cli
from qvision_ros.quantization import QuantConfig, calibrate, prepare
from qvision_ros.quantization import cli
from qvision_ros.synthetic import random_scene, render_scene
from qvision_ros.vision import Preprocessor

DETECTOR = os.path.join(os.path.dirname(__file__), '..', 'qvision_ros', 'data', 'detector_320.onnx')


@pytest.fixture(scope='module')
def frames():
    """Four synthetic BGR camera frames of 480 x 360 (letterboxed to 320 x 320 by the preprocessing)."""
    rng = np.random.default_rng(11)
    return [render_scene(random_scene(rng, 480, 360))[0] for _ in range(4)]


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    parser = cli.add_arguments(__import__('argparse').ArgumentParser())
    code = cli.run(parser.parse_args(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_image_folder_and_uint8_array_go_through_the_runtime_preprocessing(frames, tmp_path):
    folder = tmp_path / 'frames'
    folder.mkdir()
    for k, f in enumerate(frames):
        cv2.imwrite(str(folder / ('f%d.png' % k)), f)
    np.save(tmp_path / 'frames.npy', np.stack(frames))           # uint8 BGR images, sources' array format
    config = QuantConfig(progress=False, observer='minmax')
    prep = prepare(DETECTOR, config)
    pre = Preprocessor(320, 320, resize_mode='letterbox', pad_value=114, channel_order='rgb', layout='nchw')
    tensors = ['images', '/detector/p2/p2.0/act/Mul_output_0']
    expected = calibrate(prep, [pre(f)[0] for f in frames], config, tensors=tensors)
    for source in (folder, tmp_path / 'frames.npy'):
        got = calibrate(prep, str(source), config, tensors=tensors)
        assert got.num_images == 4 and got.params == expected.params


def test_quantize_command(frames, tmp_path):
    folder = tmp_path / 'frames'
    folder.mkdir()
    for k, f in enumerate(frames):
        cv2.imwrite(str(folder / ('f%d.jpg' % k)), f)
    out = tmp_path / 'det.int8.onnx'
    code, stdout, stderr = _run([DETECTOR, '--calib', str(folder), '--out', str(out), '--max-images', '3',
                                 '--keep-float-block', 'head', '--quiet'])
    assert code == 0, stderr
    assert 'wrote %s' % out in stdout and '3 calibration images' in stdout and 'decode sub-graph' in stdout
    m = onnx.load(str(out))
    names = {n.name for n in m.graph.node}
    float_head = [n for n in m.graph.node if n.name.startswith('/detector/head/') and n.op_type == 'Conv']
    assert float_head and all(not n.input[1].endswith('_dequantized') for n in float_head)
    assert '/detector/p2/p2.0/conv/Conv' in names


def test_report_option(tmp_path):
    model = tmp_path / 'resnet.onnx'
    model.write_bytes(model_bytes('resnet'))
    calib = tmp_path / 'calib.npy'
    np.save(calib, np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32))
    code, stdout, stderr = _run([str(model), '--calib', str(calib), '--out', str(tmp_path / 'q.onnx'),
                                 '--report', str(tmp_path / 'rep'), '--quiet', '--observer', 'mse',
                                 '--weight-bits', '4'])
    assert code == 0, stderr
    report = json.loads((tmp_path / 'rep' / 'sensitivity.json').read_text())
    assert report['weight_bits'] == 4 and report['observer'] == 'mse' and len(report['layers']) == 23
    assert (tmp_path / 'rep' / 'sensitivity.png').stat().st_size > 1000
    assert 'most sensitive layers' in stdout


def test_errors_exit_2_with_a_message(tmp_path):
    code, _, stderr = _run([DETECTOR, '--calib', str(tmp_path / 'none'), '--out', str(tmp_path / 'o.onnx')])
    assert code == 2 and 'does not exist' in stderr
    code, _, stderr = _run([str(tmp_path / 'm.onnx'), '--calib', 'x', '--out', str(tmp_path / 'o.onnx')])
    assert code == 2 and 'model file' in stderr
    code, _, stderr = _run([DETECTOR, '--calib', 'x', '--out', 'o.onnx', '--block', 'stem'])
    assert code == 2 and 'NAME=PREFIX' in stderr
    code, _, stderr = _run([DETECTOR, '--calib', 'x', '--out', 'o.onnx', '--input-size', '640'])
    assert code == 2 and 'WIDTHxHEIGHT' in stderr
    # the qvision command's --debug shows the traceback instead
    assert qvision_cli.main(['quantize', DETECTOR, '--calib', str(tmp_path / 'none'), '--out', 'o.onnx']) == 2
    with pytest.raises(DataError, match='does not exist'):
        qvision_cli.main(['quantize', DETECTOR, '--calib', str(tmp_path / 'none'), '--out', 'o.onnx', '--debug'])


def test_wired_as_a_qvision_subcommand(tmp_path, capsys):
    """The ``qvision`` command's table takes the module as it is (``add_arguments`` / ``run``)."""
    table = {'quantize': ('qvision_ros.quantization.cli', 'quantize a float ONNX model to int8 QDQ')}
    model = tmp_path / 'vgg.onnx'
    model.write_bytes(model_bytes('vgg'))
    np.save(tmp_path / 'c.npy', np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32))
    parser = qvision_cli.build_parser(table)
    args = parser.parse_args(['quantize', str(model), '--calib', str(tmp_path / 'c.npy'), '--out',
                              str(tmp_path / 'q.onnx'), '--block', 'features=/features', '--keep-float-block',
                              'features', '--quiet'])
    assert args._module.run(args) == 0
    m = onnx.load(str(tmp_path / 'q.onnx'))
    convs = [n for n in m.graph.node if n.op_type == 'Conv']
    assert convs and all(not n.input[1].endswith('_dequantized') for n in convs)          # the user's block
    assert any(n.op_type == 'Gemm' and n.input[1].endswith('_dequantized') for n in m.graph.node)
