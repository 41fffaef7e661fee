"""The inference node (lifecycle): preprocessed images -> detections in the pixel frame of those images.

Lifecycle (rclpy.lifecycle): ``on_configure`` loads the model and compiles it (weights pre-packed,
buffers planned, one warm-up run), reads the labels and creates the topics; ``on_activate`` starts the
worker thread and enables the publishers; ``on_deactivate`` stops them; ``on_cleanup`` releases the
model.  With ``autostart`` (default) the node configures and activates itself; otherwise drive it with
``ros2 lifecycle set <node> configure|activate``.

Latest-frame policy: a subscription callback only stores the newest frame of its camera in a
:class:`~.policy.LatestSlot`; the worker thread takes whatever is newest when it is free.  A frame that was
replaced before the worker got to it is *dropped and counted* (``dropped_frames`` in ``/diagnostics``), so
nothing queues and latency does not grow under overload.

Several cameras: ``input_topics`` lists one image topic per camera (e.g. ``/cam1/image_preprocessed``);
frames that arrive together (within ``batch_window_ms``) run as one batch - one engine call when the model
has a dynamic batch dimension, else one call each - and each result goes to ``detections_raw`` beside its
input topic with that camera's header.  Outputs: ``vision_msgs/Detection2DArray``, boxes in the pixel
frame of the received image (clipped, degenerate ones dropped), empty when nothing is found.
"""
import functools
import threading
import time

import numpy as np
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from ..errors import ConfigError, InputError, QVisionError
from ..messages import ClassIdMode, detections_to_msg, header_stamp_ns
from ..runtime.engine import Engine
from ..vision.decode import Decoder
from ..vision.preprocess import Preprocessor
from . import params as P
from .common import Pacer, QVisionNodeMixin, image_qos, latency_status, output_qos, run_node
from .policy import LatestSlot, RateMeter, StageTimer

DECODER_PARAMS = ('score_threshold', 'nms_iou_threshold', 'max_detections', 'agnostic_nms', 'classes')


def output_topic(input_topic):
    """``detections_raw`` beside an input topic: ``/cam1/image_preprocessed`` -> ``/cam1/detections_raw``."""
    head, sep, _ = input_topic.rpartition('/')
    return head + sep + 'detections_raw'


def model_layout(shape):
    """('nchw' | 'nhwc', width, height) of a 4-D image input with 3 channels."""
    if len(shape) == 4 and shape[1] == 3:
        return 'nchw', shape[3], shape[2]
    if len(shape) == 4 and shape[3] == 3:
        return 'nhwc', shape[2], shape[1]
    raise ConfigError('the model input must be a 3-channel image [N, 3, H, W] or [N, H, W, 3], got %s'
                      % (list(shape),))


class InferenceNode(QVisionNodeMixin, LifecycleNode):
    """Inference stage.  ``handover``: composed mode's in-memory input; ``engine_factory(path,
    num_threads=...)``: how to build the engine (default :class:`~qvision_ros.runtime.engine.Engine`)."""

    kind = P.INFERENCE

    def __init__(self, node_name='qvision_inference', *, handover=None, engine_factory=None, **kwargs):
        LifecycleNode.__init__(self, node_name, **kwargs)
        self._setup()
        self.handover = handover
        self.engine_factory = engine_factory or Engine
        self.engine = None
        self.decoder = None
        self.labels = []
        self.slot = LatestSlot()
        self.cameras = []           # [(input topic, publisher)]
        self._subs = []
        self._active = False
        self._stop = threading.Event()
        self._worker = None
        self._busy = False
        self._pacer = Pacer()
        self.stage_timers = {name: StageTimer() for name in ('preprocess', 'inference', 'postprocess')}
        self.rate_in, self.rate_out = RateMeter(), RateMeter()
        self.counters = {'frames_in': 0, 'frames_out': 0, 'batches': 0, 'bad_frames': 0, 'inactive_dropped': 0}
        self.latency_ms = 0.0
        if self.values['autostart']:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                name = self.get_fully_qualified_name()     # rclpy: no name once the node is destroyed
                LifecycleNode.destroy_node(self)
                raise ConfigError('%s could not configure (the reason is logged above)' % name)
            self.trigger_activate()

    # -- lifecycle -----------------------------------------------------------------------------------
    def on_configure(self, state):
        try:
            self._configure()
        except (QVisionError, OSError) as exc:
            self.get_logger().error('configure failed: %s' % exc)
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info('model %s ready: input %dx%d %s, %d camera(s)%s'
                               % (self.model_path, self.preprocessor.input_width, self.preprocessor.input_height,
                                  self.preprocessor.layout, len(self.cameras),
                                  ', batched' if self.batchable and len(self.cameras) > 1 else ''))
        return super().on_configure(state)

    def on_activate(self, state):
        self._active = True
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name='qvision-inference', daemon=True)
        self._worker.start()
        return super().on_activate(state)

    def on_deactivate(self, state):
        self._stop_worker()
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state):
        self._stop_worker()
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state):
        self._stop_worker()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # -- configuration -------------------------------------------------------------------------------
    def _configure(self):
        v = self.values
        self.labels = P.read_labels(v['labels_path'])
        self.model_path = v['model_path'] or P.default_model_path()
        self.engine = self.engine_factory(self.model_path, num_threads=v['num_threads'] or None)
        inp = self.engine.inputs[0]
        if np.dtype(inp.dtype) != np.float32:
            raise ConfigError('the model input %r is %s; the node feeds float32 images (pixel / 255)'
                              % (inp.name, np.dtype(inp.dtype).name))
        layout, width, height = model_layout(inp.shape)
        if (width, height) != (v['input_width'], v['input_height']):
            raise ConfigError('the model %s takes %dx%d images but input_width x input_height is %dx%d; set '
                              'them to the model size' % (self.model_path, width, height, v['input_width'],
                                                          v['input_height']))
        # An int8 model whose first node quantises the image: the preprocessing's lookup table writes the
        # quantised NHWC tensor directly (no float tensor, no quantisation pass; same values).
        q = getattr(self.engine, 'quantized_inputs', {}).get(inp.name)
        self.input_quant = q if q is not None and q.layout == 'NHWC' else None
        self._batches = {}      # number of cameras -> the input batch buffer, reused frame after frame
        if self.input_quant is None:
            self.preprocessor = Preprocessor(width, height, resize_mode=v['resize_mode'], pad_value=v['pad_value'],
                                             channel_order=v['channel_order'], layout=layout)
        else:
            self.preprocessor = Preprocessor(width, height, resize_mode=v['resize_mode'], pad_value=v['pad_value'],
                                             channel_order=v['channel_order'], layout='nhwc',
                                             input_scale=q.scale, input_zero_point=q.zero_point, dtype=q.dtype)
        self.decoder = self._make_decoder(v)
        kind = self.decoder.resolve_kind([o.shape for o in self.engine.outputs])
        if kind == 'classifier':
            raise ConfigError('the model %s is a classifier; the inference node needs a detector'
                              % self.model_path)
        # Warm-up: the first run touches every planned buffer and pre-packed weight once.
        self.engine.run({inp.name: np.zeros(*self._input_spec(inp.shape[0]))})
        topics = list(v['input_topics'])
        self.batchable = False
        if len(topics) > 1:
            try:
                self.engine.run({inp.name: np.zeros(*self._input_spec(len(topics)))})
                self.batchable = True
            except InputError:
                self.batchable = False
        out_qos = output_qos(v)
        self.cameras = []
        for k, topic in enumerate(topics):
            pub = self.create_lifecycle_publisher(self.types.Detection2DArray, output_topic(topic), out_qos)
            self.cameras.append((topic, pub))
            if self.handover is None:
                self._subs.append(self.create_subscription(self.types.Image, topic,
                                                           functools.partial(self._on_image, k), image_qos(v)))
        if self.handover is not None:
            if len(topics) != 1:
                raise ConfigError('composed mode serves one camera; input_topics has %d' % len(topics))
            self.handover.connect_preprocessed(self._on_handover)

    def _input_spec(self, n):
        """(shape, dtype) of an input batch of ``n`` images in the form this node feeds the engine."""
        q = self.input_quant
        if q is None:
            return (n,) + tuple(self.engine.inputs[0].shape[1:]), np.float32
        return (n,) + tuple(q.shape[1:]), q.dtype

    def _make_decoder(self, v):
        return Decoder(kind=v['decoder'], num_classes=len(self.labels) or None,
                       score_threshold=v['score_threshold'], nms_iou_threshold=v['nms_iou_threshold'],
                       max_detections=v['max_detections'], agnostic_nms=v['agnostic_nms'],
                       classes=P.class_filter(v['classes']))

    def _on_parameters(self, params):
        changed = dict(self.values)
        changed.update({p.name: p.value for p in params})
        if self.decoder is not None and any(p.name in DECODER_PARAMS for p in params):
            decoder = self._make_decoder(changed)      # ConfigError here rejects the change
            decoder._resolved = self.decoder._resolved
            self.decoder = decoder
        self.values.update(changed)

    def _release(self):
        if self.handover is not None:
            self.handover.disconnect_preprocessed(self._on_handover)
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        for _, pub in self.cameras:
            self.destroy_lifecycle_publisher(pub)
        self.cameras = []
        self.engine = None
        self.decoder = None

    # -- input ---------------------------------------------------------------------------------------
    def _on_image(self, camera, msg):
        if not self._active:
            self.counters['inactive_dropped'] += 1
            return
        frame = self.frame_of(msg, self.cameras[camera][0])
        if frame is None:
            return
        self._put(camera, msg.header, frame, msg.encoding)

    def _on_handover(self, header, image, encoding):
        if not self._active:
            self.counters['inactive_dropped'] += 1
            return
        self._put(0, header, image, encoding)

    def _put(self, camera, header, frame, encoding):
        self.counters['frames_in'] += 1
        self.rate_in.tick()
        self.slot.put(camera, (header, frame, encoding))

    # -- work ----------------------------------------------------------------------------------------
    def _work(self):
        n = len(self.cameras)
        window = self.values['batch_window_ms'] / 1000.0 if n > 1 else 0.0
        while not self.stopping():
            self._pacer.wait(self.values['max_rate_hz'], self._stop)
            items = self.slot.take_all(timeout=0.1, window=window, expected=n)
            if not items or self.stopping():
                continue
            self._busy = True
            try:
                self.run_batch(items)
            except QVisionError as exc:
                self.counters['bad_frames'] += len(items)
                self.get_logger().error('inference failed on %d frame(s): %s' % (len(items), exc),
                                        throttle_duration_sec=1.0)
            except Exception:
                if self.stopping():     # Ctrl-C shut the context down while publishing
                    break
                raise
            finally:
                self._busy = False

    def run_batch(self, items):
        """``{camera: (header, frame, encoding)}`` -> one Detection2DArray per camera, published."""
        engine, decoder, pre = self.engine, self.decoder, self.preprocessor
        if engine is None:
            return
        cams = sorted(items)
        t0 = time.perf_counter()
        inp = engine.inputs[0]
        batch = self._batches.get(len(cams))
        if batch is None:
            batch = self._batches[len(cams)] = np.empty(*self._input_spec(len(cams)))
        letterboxes, sizes = [], []
        for i, cam in enumerate(cams):
            _, frame, encoding = items[cam]
            image, lb = pre.resize(frame, encoding)
            pre.normalize(image, pre.image_encoding, out=batch[i])
            letterboxes.append(lb)
            sizes.append((lb.src_w, lb.src_h))
        t1 = time.perf_counter()
        if len(cams) == 1 or self.batchable:
            outputs = engine.run({inp.name: batch})
            t_inf = time.perf_counter() - t1
            results = decoder(outputs, letterbox=letterboxes)
        else:
            results, t_inf = [], 0.0
            for i in range(len(cams)):
                s = time.perf_counter()
                outputs = engine.run({inp.name: batch[i:i + 1]})
                t_inf += time.perf_counter() - s
                results.extend(decoder(outputs, letterbox=letterboxes[i]))
        mode = ClassIdMode.parse(self.values['class_id_mode'])
        now = self.now_ns()
        for cam, det, size in zip(cams, results, sizes):
            header = items[cam][0]
            msg = detections_to_msg(self.types, det, header, image_size=size, class_id_mode=mode,
                                    labels=self.labels)
            self.cameras[cam][1].publish(msg)
            self.counters['frames_out'] += 1
            self.rate_out.tick()
            self.latency_ms = (now - header_stamp_ns(header)) / 1e6
        t3 = time.perf_counter()
        self.counters['batches'] += 1
        self.stage_timers['preprocess'].add(t1 - t0)
        self.stage_timers['inference'].add(t_inf)
        self.stage_timers['postprocess'].add(max(0.0, t3 - t1 - t_inf))

    # -- diagnostics / shutdown ----------------------------------------------------------------------
    def _worker_busy(self):
        return self._busy

    @property
    def dropped_frames(self):
        return self.slot.dropped

    def statuses(self):
        figures = []
        for name, timer in self.stage_timers.items():
            figures += [('%s_ms_mean' % name, timer.mean_ms()), ('%s_ms_max' % name, timer.max_ms())]
            timer.reset()
        counters = dict(self.counters, dropped_frames=self.slot.dropped)
        return [latency_status('qvision_ros inference', figures, counters, self.latency_ms,
                               self.rate_in.rate(), self.rate_out.rate())]

    def _stop_worker(self):
        self._active = False
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

    def destroy_node(self):
        self._stop_worker()
        return LifecycleNode.destroy_node(self)


def main(args=None):
    return run_node(InferenceNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
