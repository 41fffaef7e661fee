"""A double of the ``launch`` / ``launch_ros`` API that ``launch/pipeline.launch.py`` uses.

Written from ros2/launch and ros2/launch_ros, branch humble (the same in jazzy for these classes):
``launch/launch/actions/declare_launch_argument.py`` (name, default_value, description, choices; at
execution a value outside ``choices`` is an error), ``opaque_function.py``, ``substitutions/
launch_configuration.py`` and ``path_join_substitution.py``; ``launch_ros/actions/node.py`` (keyword-only
``executable``, ``package``, ``name``, ``namespace``, ``exec_name``, ``parameters``, ``remappings``,
``ros_arguments``, ``arguments`` plus ExecuteProcess options; the command line it builds: ``--ros-args``,
``-r __node:=``, ``-r __ns:=`` (absolute), ``--params-file`` for files and for dicts - written under the
node's full name when ``name`` and ``namespace`` are both given, else under ``/**`` - and ``-r src:=dst`` for
remappings), ``actions/lifecycle_node.py`` (``name`` and
``namespace`` required), ``parameter_descriptions.py`` (ParameterValue with ``value_type``) and
``substitutions/find_package.py`` (FindPackageShare).

:func:`evaluate` runs a launch description with given arguments and returns the :class:`Process` list -
what ``ros2 launch`` would start - without starting anything.
"""
import os
import sys
import types

from . import yamlio

_EXECUTE_PROCESS_KWARGS = {'output', 'emulate_tty', 'respawn', 'respawn_delay', 'condition', 'sigterm_timeout',
                           'sigkill_timeout', 'on_exit', 'shell', 'log_cmd', 'cached_output', 'prefix', 'cwd',
                           'env', 'additional_env'}


class LaunchContext:
    def __init__(self, arguments, share_dirs):
        self.launch_configurations = dict(arguments)
        self.share_dirs = dict(share_dirs)


def _perform(value, context):
    if isinstance(value, (list, tuple)):
        return ''.join(_perform(v, context) for v in value)
    if hasattr(value, 'perform'):
        return value.perform(context)
    return str(value)


class LaunchConfiguration:
    def __init__(self, variable_name, *, default=None):
        self.variable_name = variable_name
        self.default = default

    def perform(self, context):
        if self.variable_name in context.launch_configurations:
            return context.launch_configurations[self.variable_name]
        if self.default is not None:
            return _perform(self.default, context)
        raise KeyError('launch configuration %r does not exist' % self.variable_name)


class PathJoinSubstitution:
    def __init__(self, substitutions):
        self.substitutions = list(substitutions)

    def perform(self, context):
        return os.path.join(*[_perform(s, context) for s in self.substitutions])


class FindPackageShare:
    def __init__(self, package):
        self.package = package

    def perform(self, context):
        try:
            return context.share_dirs[self.package]
        except KeyError:
            raise LookupError("package '%s' not found" % self.package) from None


class ParameterValue:
    def __init__(self, value, *, value_type=None):
        self.value = value
        self.value_type = value_type


class DeclareLaunchArgument:
    def __init__(self, name, *, default_value=None, description=None, choices=None, **kwargs):
        if kwargs:
            raise TypeError('unexpected keyword arguments %s' % sorted(kwargs))
        self.name = name
        self.default_value = default_value
        self.description = description
        self.choices = None if choices is None else list(choices)
        if self.choices is not None:       # checked at construction too, for a plain-text default
            if not self.choices:
                raise RuntimeError('Provided choices arg is empty. Use None to ignore the choice list.')
            if isinstance(default_value, str) and default_value not in self.choices:
                raise RuntimeError('Provided default_value "%s" is not in provided choices "%s".'
                                   % (default_value, self.choices))

    def execute(self, context):
        if self.name not in context.launch_configurations:
            if self.default_value is None:
                raise RuntimeError('Required launch argument "%s" was not provided.' % self.name)
            context.launch_configurations[self.name] = _perform(self.default_value, context)
        if self.choices is not None and context.launch_configurations[self.name] not in self.choices:
            raise RuntimeError('Argument "%s" provided value "%s" is not valid. Valid options are: %s'
                               % (self.name, context.launch_configurations[self.name], self.choices))


class OpaqueFunction:
    def __init__(self, *, function, args=None, kwargs=None, **left_over_kwargs):
        self.function = function
        self.args = list(args or [])
        self.kwargs = dict(kwargs or {})

    def execute(self, context):
        return self.function(context, *self.args, **self.kwargs)


class Process:
    """What a Node action starts: the package, the executable and its ROS arguments."""

    def __init__(self, package, executable, arguments, ros_args, node):
        self.package = package
        self.executable = executable
        self.arguments = arguments
        self.ros_args = ros_args
        self.node = node

    def __repr__(self):
        return 'Process(%s %s %s)' % (self.package, self.executable, ' '.join(self.ros_args))


class Node:
    def __init__(self, *, executable, package=None, name=None, namespace=None, exec_name=None, parameters=None,
                 remappings=None, ros_arguments=None, arguments=None, **kwargs):
        unknown = set(kwargs) - _EXECUTE_PROCESS_KWARGS
        if unknown:
            raise TypeError('__init__() got unexpected keyword arguments %s' % sorted(unknown))
        self.executable, self.package, self.name, self.namespace = executable, package, name, namespace
        self.parameters = list(parameters or [])
        self.remappings = list(remappings or [])
        self.ros_arguments = list(ros_arguments or [])
        self.arguments = list(arguments or [])
        self.kwargs = kwargs

    def _params_file(self, params, tmpdir, node_name=None):
        values = {}
        for k, v in params.items():
            if isinstance(v, ParameterValue):
                values[k] = v.value_type(v.value) if v.value_type else yamlio.load(str(v.value))
            else:
                values[k] = v
        path = os.path.join(tmpdir, 'params_%d.yaml' % len(os.listdir(tmpdir)))
        with open(path, 'w') as f:      # launch_ros: under the node's full name when name and namespace are given
            yamlio.dump({node_name or '/**': {'ros__parameters': values}}, f)
        return path

    def execute(self, context):
        args = ['--ros-args'] + [_perform(a, context) for a in self.ros_arguments]
        name = ns = None
        if self.name is not None:
            name = _perform(self.name, context)
            args += ['-r', '__node:=' + name]
        if self.namespace is not None:
            ns = _perform(self.namespace, context)
            ns = ns if ns.startswith('/') else '/' + ns
            args += ['-r', '__ns:=' + ns]
        full_name = None if name is None or ns is None else ns.rstrip('/') + '/' + name
        for params in self.parameters:
            if isinstance(params, dict):
                args += ['--params-file', self._params_file(params, context.tmpdir, full_name)]
            else:
                path = os.path.abspath(_perform(params, context))
                if not os.path.isfile(path):
                    raise FileNotFoundError('parameter file %s does not exist' % path)
                args += ['--params-file', path]
        for src, dst in self.remappings:
            args += ['-r', '%s:=%s' % (_perform(src, context), _perform(dst, context))]
        return [Process(_perform(self.package, context), _perform(self.executable, context),
                        [_perform(a, context) for a in self.arguments], args, self)]


class LifecycleNode(Node):
    def __init__(self, *, name, namespace, **kwargs):
        super().__init__(name=name, namespace=namespace, **kwargs)


class LaunchDescription:
    def __init__(self, initial_entities=None):
        self.entities = list(initial_entities or [])


def evaluate(description, arguments, share_dirs, tmpdir):
    """The processes ``description`` starts with launch ``arguments`` ({name: value}); parameter files made
    from dicts go to ``tmpdir``."""
    context = LaunchContext(arguments, share_dirs)
    context.tmpdir = str(tmpdir)
    processes = []
    pending = list(description.entities)
    while pending:
        entity = pending.pop(0)
        result = list(entity.execute(context) or [])
        processes.extend(item for item in result if isinstance(item, Process))
        pending[0:0] = [item for item in result if not isinstance(item, Process)]
    return processes


_MODULES = {
    'launch': {'LaunchDescription': LaunchDescription, 'LaunchContext': LaunchContext},
    'launch.actions': {'DeclareLaunchArgument': DeclareLaunchArgument, 'OpaqueFunction': OpaqueFunction},
    'launch.substitutions': {'LaunchConfiguration': LaunchConfiguration,
                             'PathJoinSubstitution': PathJoinSubstitution},
    'launch_ros': {},
    'launch_ros.actions': {'Node': Node, 'LifecycleNode': LifecycleNode},
    'launch_ros.substitutions': {'FindPackageShare': FindPackageShare},
    'launch_ros.parameter_descriptions': {'ParameterValue': ParameterValue},
}


def load_launch_file(path):
    """Import a launch file against this double; returns its module (sys.modules restored afterwards)."""
    import importlib.util
    saved = {name: sys.modules.get(name) for name in _MODULES}
    try:
        for name, attrs in _MODULES.items():
            mod = types.ModuleType(name)
            mod.__path__ = []
            mod.__dict__.update(attrs)
            sys.modules[name] = mod
        spec = importlib.util.spec_from_file_location('launch_file_under_test', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
