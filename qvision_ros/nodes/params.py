"""The parameters of the three nodes: one typed table, declared with descriptors and checked in one place.

:data:`PARAMETERS` is the single definition: name, default, type, range or allowed values, whether it may
change at run time, and which nodes declare it.  ``config/pipeline.yaml`` holds exactly these defaults
(a test compares them), the nodes declare them with :func:`declare` (rclpy ``ParameterDescriptor`` with
``description``, ``additional_constraints``, ``integer_range`` / ``floating_point_range`` and
``read_only``), and :func:`check_value` - the on-set-parameters callback - rejects a bad value both at
start-up (rclpy runs that callback for the initial values too) and at run time.  Nothing here imports
rclpy at module level, so the table and the checks are testable without ROS.
"""
import array
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from ..errors import ConfigError

PREPROCESS, INFERENCE, VISUALIZATION = 'preprocess', 'inference', 'visualization'
ALL = (PREPROCESS, INFERENCE, VISUALIZATION)

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')


@dataclass(frozen=True)
class ParamSpec:
    """One parameter.  ``kind``: 'int', 'float', 'str', 'bool', 'int_list' or 'str_list'.  ``range``:
    (from, to, step) for int/float (inclusive, rclpy's IntegerRange / FloatingPointRange; step 0 = any);
    ``choices``: allowed strings; ``dynamic``: may change while running; ``nodes``: who declares it."""
    name: str
    default: Any
    kind: str
    description: str
    nodes: Tuple[str, ...] = ALL
    range: Optional[Tuple] = None
    choices: Optional[Tuple[str, ...]] = None
    dynamic: bool = False
    path: bool = False            # a file that must exist when not empty
    min_item: Optional[int] = None   # int_list: smallest allowed entry
    constraints: str = field(default='')

    def constraint_text(self):
        parts = []
        if self.range is not None:
            parts.append('%s to %s' % (self.range[0], self.range[1]) + (' in steps of %s' % self.range[2]
                                                                          if self.range[2] else ''))
        if self.choices:
            parts.append('one of ' + ', '.join(self.choices))
        if self.min_item is not None:
            parts.append('entries >= %d' % self.min_item)
        if self.path:
            parts.append("an existing file, or '' for the shipped one")
        if self.constraints:
            parts.append(self.constraints)
        parts.append('changeable at run time' if self.dynamic else 'fixed after start-up')
        return '; '.join(parts)


_QOS = ('best_effort', 'reliable')
PARAMETERS = (
    # geometry and colour of the network input
    ParamSpec('input_width', 320, 'int', 'network input width in pixels (the preprocessed image width)',
              range=(1, 8192, 1)),
    ParamSpec('input_height', 320, 'int', 'network input height in pixels', range=(1, 8192, 1)),
    ParamSpec('resize_mode', 'letterbox', 'str', 'letterbox keeps the aspect ratio and pads; stretch does not',
              choices=('letterbox', 'stretch')),
    ParamSpec('pad_value', 114, 'int', 'pixel value of the letterbox borders', (PREPROCESS, INFERENCE),
              range=(0, 255, 1)),
    ParamSpec('channel_order', 'rgb', 'str', 'channel order the network expects',
              (PREPROCESS, INFERENCE), choices=('rgb', 'bgr')),
    # model and decoding
    ParamSpec('model_path', '', 'str', "ONNX model (float or QDQ int8); '' = the shipped detector",
              (INFERENCE,), path=True),
    ParamSpec('labels_path', '', 'str', "class names, one per line; '' = the shipped labels",
              (INFERENCE, VISUALIZATION), path=True),
    ParamSpec('decoder', 'auto', 'str', 'model output format', (INFERENCE,),
              choices=('auto', 'yolov5', 'yolov8')),
    ParamSpec('score_threshold', 0.25, 'float', 'minimum detection score', (INFERENCE, VISUALIZATION),
              range=(0.0, 1.0, 0.0), dynamic=True),
    ParamSpec('nms_iou_threshold', 0.45, 'float', 'IoU above which non-maximum suppression drops a box',
              (INFERENCE,), range=(0.0, 1.0, 0.0), dynamic=True),
    ParamSpec('max_detections', 100, 'int', 'most detections per image', (INFERENCE,), range=(1, 10000, 1),
              dynamic=True),
    ParamSpec('agnostic_nms', False, 'bool', 'suppress overlapping boxes across classes', (INFERENCE,),
              dynamic=True),
    ParamSpec('classes', [-1], 'int_list', 'class indices to keep; [-1] keeps every class', (INFERENCE,),
              dynamic=True, min_item=-1),
    ParamSpec('class_id_mode', 'index', 'str', 'ObjectHypothesis.class_id: the class index or its name',
              (INFERENCE, VISUALIZATION), choices=('index', 'name')),
    ParamSpec('num_threads', 0, 'int', 'inference threads; 0 = every available core', (INFERENCE,),
              range=(0, 256, 1)),
    ParamSpec('input_topics', ['image_preprocessed'], 'str_list',
              'image topics served by this inference node (several cameras: one per namespace, run as one '
              'batch); the outputs go to detections_raw beside each', (INFERENCE,),
              constraints='relative or absolute topic names ending in the image topic'),
    ParamSpec('batch_window_ms', 5.0, 'float', 'with several input topics: how long to wait for the other '
              'cameras once a frame arrived', (INFERENCE,), range=(0.0, 1000.0, 0.0)),
    ParamSpec('autostart', True, 'bool', 'configure and activate the lifecycle node by itself at start-up',
              (INFERENCE,)),
    # rates
    ParamSpec('max_rate_hz', 0.0, 'float', 'most frames per second processed; 0 = as fast as they come',
              (PREPROCESS, INFERENCE), range=(0.0, 1000.0, 0.0), dynamic=True),
    # capture
    ParamSpec('source', '', 'str', "'' subscribes to image_raw; a camera index, video file or image folder "
              'is captured by the node, which then also publishes image_raw', (PREPROCESS,)),
    ParamSpec('source_loop', False, 'bool', 'start a video or folder again at its end', (PREPROCESS,)),
    ParamSpec('frame_id', 'camera', 'str', 'frame_id of captured frames', (PREPROCESS,)),
    # visualization
    ParamSpec('max_pair_delay_sec', 1.0, 'float', 'how long an image or detections wait for their partner '
              '(same header stamp) before being dropped', (VISUALIZATION,), range=(0.01, 60.0, 0.0)),
    ParamSpec('annotated_encoding', 'bgr8', 'str', 'encoding of image_annotated', (VISUALIZATION,),
              choices=('bgr8', 'rgb8')),
    ParamSpec('line_thickness', 2, 'int', 'box line width on image_annotated', (VISUALIZATION,),
              range=(1, 20, 1), dynamic=True),
    # QoS and diagnostics
    ParamSpec('image_qos_reliability', 'best_effort', 'str', 'reliability of the image subscriptions '
              '(history keep-last image_qos_depth)', choices=_QOS),
    ParamSpec('image_qos_depth', 1, 'int', 'queue depth of the image subscriptions (1 = latest frame only)',
              range=(1, 100, 1)),
    ParamSpec('output_qos_reliability', 'reliable', 'str', 'reliability of the publishers', choices=_QOS),
    ParamSpec('output_qos_depth', 5, 'int', 'queue depth of the publishers', range=(1, 1000, 1)),
    ParamSpec('diagnostics_period_sec', 1.0, 'float', 'period of the /diagnostics status; 0 = off',
              range=(0.0, 3600.0, 0.0)),
)
BY_NAME = {p.name: p for p in PARAMETERS}


def specs_for(node_kind):
    """The parameters a node of ``node_kind`` ('preprocess', 'inference', 'visualization') declares."""
    return [p for p in PARAMETERS if node_kind in p.nodes]


def check_value(name, value):
    """None when ``value`` is acceptable for parameter ``name``, else the reason (type and range are also
    enforced by rclpy through the descriptor; this adds choices, list entries and files)."""
    spec = BY_NAME.get(name)
    if spec is None:
        return None       # not ours: leave it to whoever declared it
    kind = spec.kind
    # A list arrives as a list from a parameters file but as an array.array ('q' for integers) from the
    # set_parameters service (`ros2 param set`): rclpy hands over the message's integer_array_value.
    sequence = (list, tuple, array.array)
    ok_type = {'int': lambda v: isinstance(v, int) and not isinstance(v, bool),
               'float': lambda v: isinstance(v, float),
               'str': lambda v: isinstance(v, str),
               'bool': lambda v: isinstance(v, bool),
               'int_list': lambda v: isinstance(v, sequence) and all(
                   isinstance(x, int) and not isinstance(x, bool) for x in v),
               'str_list': lambda v: isinstance(v, sequence) and all(isinstance(x, str) for x in v)}[kind]
    if not ok_type(value):
        return '%s must be %s, got %r' % (name, {'int': 'an integer', 'float': 'a floating-point number '
                                                 '(write 1.0, not 1)', 'str': 'a string', 'bool': 'true or false',
                                                 'int_list': 'a list of integers',
                                                 'str_list': 'a list of strings'}[kind], value)
    if spec.range is not None and kind in ('int', 'float'):
        lo, hi = spec.range[0], spec.range[1]
        if not (lo <= value <= hi) or (kind == 'float' and not math.isfinite(value)):
            return '%s must be in [%s, %s], got %r' % (name, lo, hi, value)
    if spec.choices is not None and value not in spec.choices:
        return '%s must be one of %s, got %r' % (name, ', '.join(spec.choices), value)
    if spec.min_item is not None and any(v < spec.min_item for v in value):
        return '%s entries must be >= %d, got %r' % (name, spec.min_item, list(value))
    if kind == 'str_list' and (not value or any(not v.strip() for v in value)):
        return '%s must be a non-empty list of non-empty names, got %r' % (name, list(value))
    if spec.path and value and not os.path.isfile(value):
        return '%s: no file %r (give an existing file, or an empty string for the shipped one)' % (name, value)
    return None


def class_filter(classes):
    """The ``classes`` parameter as a Decoder class filter: None (every class) when it holds -1."""
    values = [int(c) for c in classes]
    if not values or any(c < 0 for c in values):
        return None
    return values


def default_model_path():
    """The shipped detector: ``detector_320.int8.onnx`` when present, else ``detector_320.onnx``."""
    int8 = os.path.join(DATA_DIR, 'detector_320.int8.onnx')
    return int8 if os.path.isfile(int8) else os.path.join(DATA_DIR, 'detector_320.onnx')


def default_labels_path():
    return os.path.join(DATA_DIR, 'labels.txt')


def read_labels(path):
    """Class names from a labels file, read as ``qvision run`` reads it
    (:func:`qvision_ros.pipeline.load_labels`: one per line, or JSON); '' = the shipped labels."""
    from ..pipeline import load_labels
    return list(load_labels(path or default_labels_path()))


# -- rclpy side -------------------------------------------------------------------------------------

def descriptor(spec):
    """The rclpy ``ParameterDescriptor`` of ``spec``."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    d = ParameterDescriptor(description=spec.description, additional_constraints=spec.constraint_text(),
                            read_only=not spec.dynamic)
    if spec.range is not None and spec.kind == 'int':
        d.integer_range = [IntegerRange(from_value=spec.range[0], to_value=spec.range[1], step=spec.range[2])]
    elif spec.range is not None and spec.kind == 'float':
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                     to_value=float(spec.range[1]), step=float(spec.range[2]))]
    return d


def declare(node, node_kind, on_change=None):
    """Declare ``node_kind``'s parameters on ``node``; returns ``{name: value}``.

    The validation callback is registered first, so the values from the parameters file are checked by
    the same code as later changes.  Every problem is collected; then one :class:`ConfigError` lists them
    all (what was given, what is allowed), after logging it.  ``on_change(params)``: called with the
    accepted rclpy ``Parameter`` list of a run-time change (not at declaration).
    """
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    state = {'declared': False}

    def on_set(params):
        for p in params:
            reason = check_value(p.name, p.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        if state['declared'] and on_change is not None:
            try:
                on_change(params)
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    errors = []
    values = {}
    for spec in specs_for(node_kind):
        try:
            values[spec.name] = node.declare_parameter(spec.name, spec.default, descriptor(spec)).value
        except InvalidParameterTypeException as exc:
            errors.append('%s has the wrong type (%s); default %r' % (spec.name, exc, spec.default))
        except InvalidParameterValueException as exc:
            errors.append('%s: %s; allowed: %s' % (spec.name, exc, spec.constraint_text()))
    if errors:
        msg = ('node %s rejected its parameters (defaults and meanings: config/pipeline.yaml):\n  - %s'
               % (node.get_fully_qualified_name(), '\n  - '.join(errors)))
        node.get_logger().fatal(msg)
        raise ConfigError(msg)
    state['declared'] = True
    return values


__all__ = ['ParamSpec', 'PARAMETERS', 'BY_NAME', 'specs_for', 'check_value', 'class_filter', 'declare',
           'descriptor', 'default_model_path', 'default_labels_path', 'read_labels', 'PREPROCESS', 'INFERENCE',
           'VISUALIZATION']
