"""launch/pipeline.launch.py, config/pipeline.yaml and config/qvision.rviz, run for real on the doubles.

The launch file is executed against a double of launch / launch_ros (rclpy_double.launch_double) that
builds the command lines ``ros2 launch`` would start; each process's ROS arguments (namespace, node name,
``--params-file`` with the shipped config, remappings) are then given to the node classes on the rclpy
double, and frames published on the camera topic must come out as detections in the right namespace.
"""
import ast
import re
from pathlib import Path

import pytest

import rclpy_double
from rclpy_double.harness import cached_engine_factory, executor, image_msg, probe, ros_session, scene
from rclpy_double.launch_double import evaluate, load_launch_file
from rclpy_double.yamlio import load as load_yaml

from qvision_ros.messages import header_stamp_ns
from qvision_ros.nodes.params import ALL, PARAMETERS

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / 'launch' / 'pipeline.launch.py'
CONFIG = ROOT / 'config' / 'pipeline.yaml'
RVIZ = ROOT / 'config' / 'qvision.rviz'


@pytest.fixture(autouse=True)
def _temporary_files_in_tmp_path(tmp_path, monkeypatch):
    """The launch file writes composed mode's overrides with tempfile, as launch_ros writes its own."""
    import tempfile
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))


def _processes(tmp_path, **arguments):
    module = load_launch_file(LAUNCH)
    return evaluate(module.generate_launch_description(), arguments, {'qvision_ros': str(ROOT)}, tmp_path)


def _console_scripts():
    tree = ast.parse((ROOT / 'setup.py').read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = re.fullmatch(r'\s*(\w+)\s*=\s*([\w.]+):(\w+)\s*', node.value)
            if m:
                scripts[m.group(1)] = (m.group(2), m.group(3))
    return scripts


def _start(process):
    """Build what the executable of ``process`` builds, with its ROS arguments: a list of nodes."""
    from qvision_ros.nodes.composed import ComposedPipeline
    from qvision_ros.nodes.inference import InferenceNode
    from qvision_ros.nodes.preprocess import PreprocessNode
    from qvision_ros.nodes.visualization import VisualizationNode
    builders = {'preprocess_node': PreprocessNode, 'visualization_node': VisualizationNode,
                'inference_node': lambda **kw: InferenceNode(engine_factory=cached_engine_factory, **kw),
                'composed_node': lambda **kw: ComposedPipeline(engine_factory=cached_engine_factory, **kw).nodes}
    module, func = _console_scripts()[process.executable]
    cls = {'preprocess_node': PreprocessNode, 'visualization_node': VisualizationNode,
           'inference_node': InferenceNode, 'composed_node': ComposedPipeline}[process.executable]
    assert (module, func) == (cls.__module__, 'main'), process.executable
    built = builders[process.executable](cli_args=process.ros_args)
    return built if isinstance(built, list) else [built]


def test_launch_arguments():
    module = load_launch_file(LAUNCH)
    declared = {a.name: a for a in module.generate_launch_description().entities if hasattr(a, 'choices')}
    assert set(declared) == {'namespace', 'input_topic', 'source', 'source_loop', 'model', 'params_file',
                             'composed', 'cameras', 'rviz', 'log_level'}
    assert declared['composed'].choices == ['true', 'false'] and declared['composed'].default_value == 'false'
    assert all(a.description for a in declared.values())


def test_launch_rejects_bad_arguments(tmp_path):
    with pytest.raises(RuntimeError, match='composed'):
        _processes(tmp_path, composed='yes')
    with pytest.raises(RuntimeError, match='separate processes'):
        _processes(tmp_path, composed='true', cameras='cam1,cam2')


def test_config_has_every_parameter_with_its_default():
    doc = load_yaml(CONFIG.read_text())
    seen = {}
    for key, body in doc.items():
        for name, value in body['ros__parameters'].items():
            assert name not in seen, '%s appears twice' % name
            seen[name] = (key, value)
    assert set(seen) == {p.name for p in PARAMETERS}
    for p in PARAMETERS:
        key, value = seen[p.name]
        assert value == p.default and type(value) is type(p.default), p.name
        expected_key = '/**' if len(p.nodes) > 1 else '/**/qvision_' + p.nodes[0]
        assert key == expected_key, p.name
    assert {n for p in PARAMETERS for n in p.nodes} == set(ALL)


def test_rviz_config_shows_the_annotated_image(tmp_path):
    doc = load_yaml(RVIZ.read_text())
    images = [d for d in doc['Visualization Manager']['Displays'] if d['Class'] == 'rviz_default_plugins/Image']
    assert images and images[0]['Topic']['Value'] == '/camera/image_annotated'
    procs = _processes(tmp_path, namespace='front', rviz='true')
    rviz = [p for p in procs if p.executable == 'rviz2'][0]
    assert rviz.arguments == ['-d', str(RVIZ)]
    assert '/camera/image_annotated:=/front/image_annotated' in rviz.ros_args


def _run_camera(nodes, namespace, input_topic, stamp):
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray
    p = probe('', 'probe_' + namespace)
    got = p.listen(Detection2DArray, '/%s/detections' % namespace)
    bgr, _, _ = scene(640, 480, 11)
    ex = executor(*nodes, p)
    p.publisher(Image, input_topic, 1).publish(image_msg(bgr, stamp, namespace + '_optical'))
    assert rclpy_double.spin_until(ex, lambda: got, 30.0)
    assert header_stamp_ns(got[0].header) == stamp and got[0].header.frame_id == namespace + '_optical'
    return got[0]


@pytest.mark.parametrize('composed', ['false', 'true'])
def test_launched_pipeline_runs(tmp_path, composed):
    model = str(ROOT / 'qvision_ros' / 'data' / 'detector_320.onnx')
    procs = _processes(tmp_path, namespace='front', input_topic='/front/color/image_raw', composed=composed,
                       model=model)
    expected = ['composed_node'] if composed == 'true' else ['preprocess_node', 'inference_node',
                                                             'visualization_node']
    assert [p.executable for p in procs] == expected and all(p.package == 'qvision_ros' for p in procs)
    for p in procs:
        assert '--params-file' in p.ros_args and str(CONFIG) in p.ros_args
        assert '__ns:=/front' in p.ros_args
    with ros_session():
        nodes = [n for p in procs for n in _start(p)]
        names = sorted(n.get_fully_qualified_name() for n in nodes)
        assert names == ['/front/qvision_inference', '/front/qvision_preprocess', '/front/qvision_visualization']
        inference = [n for n in nodes if n.get_name() == 'qvision_inference'][0]
        assert inference.get_parameter('model_path').value == model
        assert inference.get_parameter('score_threshold').value == 0.25      # from config/pipeline.yaml
        _run_camera(nodes, 'front', '/front/color/image_raw', 42_000_000_000)


@pytest.mark.parametrize('composed', ['false', 'true'])
def test_launch_arguments_win_over_the_params_file(tmp_path, composed):
    # config/pipeline.yaml sets source and model_path under /**/qvision_preprocess and /**/qvision_inference;
    # rcl applies those node keys after /** (launch_ros's key for a dict of a node without a name), so the
    # launch arguments must reach the nodes under their full names
    video = str(ROOT / 'qvision_ros' / 'data' / 'sample_road.mp4')
    model = str(ROOT / 'qvision_ros' / 'data' / 'detector_320.onnx')
    procs = _processes(tmp_path, namespace='front', composed=composed, source=video, model=model,
                       source_loop='true')
    with ros_session():
        nodes = [n for p in procs for n in _start(p)]
        try:
            by_name = {n.get_name(): n for n in nodes}
            assert by_name['qvision_preprocess'].get_parameter('source').value == video
            assert by_name['qvision_preprocess'].source is not None          # capturing, not subscribing
            assert by_name['qvision_preprocess'].get_parameter('source_loop').value is True
            assert by_name['qvision_inference'].get_parameter('model_path').value == model
            assert by_name['qvision_visualization'].get_parameter('score_threshold').value == 0.25
        finally:
            for n in nodes:
                n.destroy_node()


def test_two_cameras_share_one_batching_inference_node(tmp_path):
    procs = _processes(tmp_path, cameras='cam1,cam2')
    assert sorted(p.executable for p in procs) == ['inference_node', 'preprocess_node', 'preprocess_node',
                                                   'visualization_node', 'visualization_node']
    with ros_session():
        nodes = [n for p in procs for n in _start(p)]
        inference = [n for n in nodes if n.get_name() == 'qvision_inference'][0]
        assert inference.get_parameter('input_topics').value == ['/cam1/image_preprocessed',
                                                                 '/cam2/image_preprocessed']
        assert [pub.topic_name for _, pub in inference.cameras] == ['/cam1/detections_raw', '/cam2/detections_raw']
        a = _run_camera(nodes, 'cam1', '/cam1/image_raw', 1_000_000_000)
        b = _run_camera(nodes, 'cam2', '/cam2/image_raw', 2_000_000_000)
        assert a.header.frame_id == 'cam1_optical' and b.header.frame_id == 'cam2_optical'
