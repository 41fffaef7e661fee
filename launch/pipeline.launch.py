"""Start the qvision_ros detection pipeline: preprocessing, inference (lifecycle) and visualization.

One camera (namespace ``camera``, frames on ``/camera/image_raw``)::

    ros2 launch qvision_ros pipeline.launch.py
    ros2 launch qvision_ros pipeline.launch.py namespace:=front input_topic:=/front/color/image_raw
    ros2 launch qvision_ros pipeline.launch.py source:=/path/to/video.mp4 rviz:=true
    ros2 launch qvision_ros pipeline.launch.py composed:=true          # one process, image handed over in memory

Two cameras in two namespaces sharing one inference node (their frames run as one batch)::

    ros2 launch qvision_ros pipeline.launch.py cameras:=cam1,cam2

Arguments: ``namespace``, ``input_topic`` (the camera topic, remapped onto ``image_raw``), ``source``
(capture a camera index, video file or image folder instead of subscribing), ``model`` (ONNX file; empty:
the shipped detector), ``params_file`` (default: the installed ``config/pipeline.yaml``), ``composed``
(true|false), ``cameras`` (comma-separated namespaces; overrides ``namespace``; separate processes
only), ``rviz`` (true|false: start rviz2 on ``config/qvision.rviz``) and ``log_level``.
"""
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
    ('model', '', 'ONNX model (float or QDQ int8); empty: the shipped detector'),
    ('params_file', None, 'parameters file; default: config/pipeline.yaml of this package'),
    ('composed', 'false', 'true: the three nodes in one process, the image handed over in memory'),
    ('cameras', '', 'comma-separated namespaces (cam1,cam2): one preprocess/visualization pair per camera '
                    'and one inference node batching them all'),
    ('rviz', 'false', 'true: start rviz2 showing image_annotated'),
    ('log_level', 'info', 'log level of the nodes (debug, info, warn, error, fatal)'),
)
CHOICES = {'composed': ('true', 'false'), 'rviz': ('true', 'false'),
           'log_level': ('debug', 'info', 'warn', 'error', 'fatal')}


def _arg(context, name):
    return LaunchConfiguration(name).perform(context)


def _overrides(context):
    """Parameters the launch arguments set (only those given, so a params file is not overridden by '')."""
    out = {}
    if _arg(context, 'model'):
        out['model_path'] = ParameterValue(_arg(context, 'model'), value_type=str)
    if _arg(context, 'source'):
        out['source'] = ParameterValue(_arg(context, 'source'), value_type=str)
    return out


def _nodes(context):
    params_file = _arg(context, 'params_file')
    overrides = _overrides(context)
    parameters = [params_file] + ([overrides] if overrides else [])
    remap = [('image_raw', _arg(context, 'input_topic'))]
    ros_args = ['--log-level', _arg(context, 'log_level')]
    common = dict(package=PACKAGE, parameters=parameters, output='screen', ros_arguments=ros_args)
    cameras = [c.strip().strip('/') for c in _arg(context, 'cameras').split(',') if c.strip().strip('/')]
    composed = _arg(context, 'composed') == 'true'
    actions = []
    if cameras:
        if composed:
            raise RuntimeError('cameras:=%s runs one inference node for several cameras, which needs separate '
                               'processes; leave composed:=false' % _arg(context, 'cameras'))
        topics = ['/%s/image_preprocessed' % c for c in cameras]
        for cam in cameras:
            for exe in ('preprocess_node', 'visualization_node'):
                actions.append(Node(executable=exe, name=NODE_NAMES[exe], namespace=cam, remappings=remap,
                                    **common))
        batch = dict(common, parameters=parameters + [{'input_topics': topics}])
        actions.append(LifecycleNode(executable='inference_node', name=NODE_NAMES['inference_node'],
                                     namespace='', **batch))
        shown = cameras[0]
    elif composed:
        namespace = _arg(context, 'namespace')
        actions.append(Node(executable='composed_node', namespace=namespace, remappings=remap, **common))
        shown = namespace
    else:
        namespace = _arg(context, 'namespace')
        actions.append(Node(executable='preprocess_node', name=NODE_NAMES['preprocess_node'], namespace=namespace,
                            remappings=remap, **common))
        actions.append(LifecycleNode(executable='inference_node', name=NODE_NAMES['inference_node'],
                                     namespace=namespace, **common))
        actions.append(Node(executable='visualization_node', name=NODE_NAMES['visualization_node'],
                            namespace=namespace, remappings=remap, **common))
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
