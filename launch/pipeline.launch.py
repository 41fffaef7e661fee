"""Start the qvision_ros detection pipeline: preprocessing, inference (lifecycle) and visualization.

One camera (namespace ``camera``, frames on ``/camera/image_raw``)::

    ros2 launch qvision_ros pipeline.launch.py
    ros2 launch qvision_ros pipeline.launch.py namespace:=front input_topic:=/front/color/image_raw
    ros2 launch qvision_ros pipeline.launch.py source:=/path/to/video.mp4 source_loop:=true rviz:=true
    ros2 launch qvision_ros pipeline.launch.py composed:=true          # one process, image handed over in memory

Two cameras in two namespaces sharing one inference node (their frames run as one batch)::

    ros2 launch qvision_ros pipeline.launch.py cameras:=cam1,cam2

Arguments: ``namespace``, ``input_topic`` (the camera topic, remapped onto ``image_raw``), ``source``
(capture a camera index, video file or image folder instead of subscribing), ``source_loop`` (true|false:
play it again at its end), ``model`` (ONNX file; empty:
the shipped detector), ``params_file`` (default: the installed ``config/pipeline.yaml``), ``composed``
(true|false), ``cameras`` (comma-separated namespaces; overrides ``namespace``; separate processes
only), ``rviz`` (true|false: start rviz2 on ``config/qvision.rviz``) and ``log_level``.
"""
import json
import os
import tempfile

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'qvision_ros'
NODE_NAMES = {'preprocess_node': 'qvision_preprocess', 'inference_node': 'qvision_inference',
              'visualization_node': 'qvision_visualization'}
RVIZ_TOPIC = '/camera/image_annotated'   # the topic config/qvision.rviz shows; remapped per namespace

ARGUMENTS = (
    ('namespace', 'camera', 'namespace of the camera and of the three nodes'),
    ('input_topic', 'image_raw', 'camera image topic (sensor_msgs/Image), remapped onto image_raw'),
    ('source', '', 'capture this camera index, video file or image folder instead of subscribing'),
    ('source_loop', '', 'true: start the video or folder of source again at its end; empty: as the params file says'),
    ('model', '', 'ONNX model (float or QDQ int8); empty: the shipped detector'),
    ('params_file', None, 'parameters file; default: config/pipeline.yaml of this package'),
    ('composed', 'false', 'true: the three nodes in one process, the image handed over in memory'),
    ('cameras', '', 'comma-separated namespaces (cam1,cam2): one preprocess/visualization pair per camera '
                    'and one inference node batching them all'),
    ('rviz', 'false', 'true: start rviz2 showing image_annotated'),
    ('log_level', 'info', 'log level of the nodes (debug, info, warn, error, fatal)'),
)
CHOICES = {'composed': ('true', 'false'), 'rviz': ('true', 'false'), 'source_loop': ('', 'true', 'false'),
           'log_level': ('debug', 'info', 'warn', 'error', 'fatal')}


def _arg(context, name):
    return LaunchConfiguration(name).perform(context)


#: launch argument -> (node, parameter) it sets
OVERRIDES = (('model', 'qvision_inference', 'model_path'), ('source', 'qvision_preprocess', 'source'),
             ('source_loop', 'qvision_preprocess', 'source_loop'))


def _overrides(context):
    """{node name: {parameter: value}} of the launch arguments given (only those, so that a params file is not
    overridden by '')."""
    out = {}
    for arg, node, name in OVERRIDES:
        value = _arg(context, arg)
        if value:
            out.setdefault(node, {})[name] = (value == 'true') if arg in CHOICES else value   # true|false: bool
    return out


def _node_parameters(parameters, overrides, node):
    """A named node's parameters: launch_ros writes a dict under its fully qualified name, which rcl applies
    after the params file's keys."""
    values = overrides.get(node)
    if not values:
        return parameters
    return parameters + [{k: ParameterValue(v, value_type=type(v)) for k, v in values.items()}]


def _composed_params_file(namespace, overrides):
    """Composed mode: the process has no single node name, and launch_ros writes the dict of such a node
    under ``/**``.  rcl applies the node keys of all parameter files in the order they first appear, so the
    params file's ``/**/qvision_preprocess: source: ''`` would win over it.  The overrides go to a file keyed
    by the fully qualified node names instead (applied last, as launch_ros's own dicts of named nodes)."""
    prefix = '/' + namespace.strip('/') if namespace.strip('/') else ''
    lines = []
    for node, values in overrides.items():
        lines += ['%s/%s:' % (prefix, node), '  ros__parameters:']
        lines += ['    %s: %s' % (k, json.dumps(v)) for k, v in values.items()]   # JSON scalars are YAML
    fd, path = tempfile.mkstemp(prefix='qvision_launch_params_', suffix='.yaml')
    with os.fdopen(fd, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def _nodes(context):
    parameters = [_arg(context, 'params_file')]
    overrides = _overrides(context)
    remap = [('image_raw', _arg(context, 'input_topic'))]
    ros_args = ['--log-level', _arg(context, 'log_level')]
    common = dict(package=PACKAGE, output='screen', ros_arguments=ros_args)
    cameras = [c.strip().strip('/') for c in _arg(context, 'cameras').split(',') if c.strip().strip('/')]
    composed = _arg(context, 'composed') == 'true'
    actions = []

    def node(executable, namespace, action=Node, extra=(), **kwargs):
        name = NODE_NAMES[executable]
        params = _node_parameters(parameters, overrides, name) + list(extra)
        return action(executable=executable, name=name, namespace=namespace, parameters=params, **common,
                      **kwargs)
    if cameras:
        if composed:
            raise RuntimeError('cameras:=%s runs one inference node for several cameras, which needs separate '
                               'processes; leave composed:=false' % _arg(context, 'cameras'))
        topics = ['/%s/image_preprocessed' % c for c in cameras]
        for cam in cameras:
            for exe in ('preprocess_node', 'visualization_node'):
                actions.append(node(exe, cam, remappings=remap))
        actions.append(node('inference_node', '', LifecycleNode, extra=[{'input_topics': topics}]))
        shown = cameras[0]
    elif composed:
        namespace = _arg(context, 'namespace')
        params = parameters + ([_composed_params_file(namespace, overrides)] if overrides else [])
        actions.append(Node(executable='composed_node', namespace=namespace, remappings=remap, parameters=params,
                            **common))
        shown = namespace
    else:
        namespace = _arg(context, 'namespace')
        actions.append(node('preprocess_node', namespace, remappings=remap))
        actions.append(node('inference_node', namespace, LifecycleNode))
        actions.append(node('visualization_node', namespace, remappings=remap))
        shown = namespace
    if _arg(context, 'rviz') == 'true':
        rviz_config = PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'qvision.rviz']).perform(context)
        target = '/%s/image_annotated' % shown.strip('/') if shown.strip('/') else '/image_annotated'
        actions.append(Node(package='rviz2', executable='rviz2', name='rviz2', arguments=['-d', rviz_config],
                            remappings=[(RVIZ_TOPIC, target)], output='screen'))
    return actions


def generate_launch_description():
    declared = []
    for name, default, description in ARGUMENTS:
        if default is None:
            default = PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'pipeline.yaml'])
        kwargs = {'choices': CHOICES[name]} if name in CHOICES else {}
        declared.append(DeclareLaunchArgument(name, default_value=default, description=description, **kwargs))
    return LaunchDescription(declared + [OpaqueFunction(function=_nodes)])
