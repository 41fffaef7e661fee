"""The preprocessing node: camera frames -> network-size, letterboxed images.

Subscribes ``image_raw`` (sensor_msgs/Image in any supported encoding; SensorData-like QoS, keep-last 1)
- or, when the ``source`` parameter names a camera index, video file or image folder, captures the frames
itself in a thread and also publishes them on ``image_raw`` (when someone listens).  Publishes
``image_preprocessed``: the frame resized to ``input_width x input_height`` (letterbox or stretch) in the
network's channel order, with the source header copied unchanged.  A malformed Image (wrong step, unknown
encoding, truncated data) is logged and skipped; the node keeps running.

The work itself is :class:`qvision_ros.vision.Preprocessor`; this class only wires topics and parameters.
"""
import threading
import time

import numpy as np
from rclpy.node import Node

from ..errors import ConfigError, QVisionError
from ..messages import array_to_image_msg, copy_header, make_header
from ..vision.preprocess import Preprocessor
from . import params as P
from .common import Pacer, QVisionNodeMixin, image_qos, latency_status, output_qos, run_node
from .policy import RateMeter, StageTimer


class PreprocessNode(QVisionNodeMixin, Node):
    """Preprocessing stage.  ``handover``: an :class:`~.common.InMemoryHandover` in composed mode."""

    kind = P.PREPROCESS

    def __init__(self, node_name='qvision_preprocess', *, handover=None, **kwargs):
        Node.__init__(self, node_name, **kwargs)
        v = self._setup()
        self.handover = handover
        self.preprocessor = Preprocessor(v['input_width'], v['input_height'], resize_mode=v['resize_mode'],
                                         pad_value=v['pad_value'], channel_order=v['channel_order'])
        self.encoding = self.preprocessor.image_encoding
        out_qos = output_qos(v)
        self.pub_preprocessed = self.create_publisher(self.types.Image, 'image_preprocessed', out_qos)
        self.timer = StageTimer()
        self.rate_in, self.rate_out = RateMeter(), RateMeter()
        self.counters = {'frames_in': 0, 'frames_out': 0, 'bad_frames': 0, 'skipped_rate': 0}
        self.latency_ms = 0.0
        self._pacer = Pacer()
        self._stop = threading.Event()
        self._capture = None
        self.source = None
        if v['source']:
            self.pub_raw = self.create_publisher(self.types.Image, 'image_raw', out_qos)
            try:
                self._open_capture(v)
            except Exception:
                Node.destroy_node(self)
                raise
        else:
            self.pub_raw = None
            self.sub_raw = self.create_subscription(self.types.Image, 'image_raw', self._on_image, image_qos(v))

    # -- input -------------------------------------------------------------------------------------
    def _on_image(self, msg):
        self.counters['frames_in'] += 1
        self.rate_in.tick()
        if not self._pacer.allow(self.values['max_rate_hz']):
            self.counters['skipped_rate'] += 1
            return
        frame = self.frame_of(msg, self.sub_raw.topic_name)
        if frame is None:
            return
        if self.handover is not None and self.handover.wants_raw:
            self.handover.raw(msg.header, frame, msg.encoding)
        self.process(msg.header, frame, msg.encoding)

    def _open_capture(self, v):
        try:
            from ..sources import open_source
        except ImportError as exc:   # qvision_ros.sources comes with the qvision command
            raise ConfigError('source %r needs qvision_ros.sources, which is missing: %s' % (v['source'], exc))
        spec = v['source']
        self.source = open_source(int(spec) if spec.strip().isdigit() else spec, loop=v['source_loop'],
                                  frame_id=v['frame_id'])
        self._capture = threading.Thread(target=self._capture_loop, name='qvision-capture', daemon=True)
        self._capture.start()

    def _capture_loop(self):
        """Read, stamp with the node clock, publish image_raw (when listened to) and preprocess."""
        src = self.source
        pacer = Pacer()
        try:
            for frame in src:
                if self.stopping():
                    break
                fps = 0.0 if src.live else (src.fps or 30.0)
                limit = self.values['max_rate_hz']
                rate = min(r for r in (fps, limit) if r > 0) if (fps > 0 or limit > 0) else 0.0
                pacer.wait(rate, self._stop)
                if self.stopping():
                    break
                header = make_header(self.types, self.now_ns(), frame.frame_id)
                self.counters['frames_in'] += 1
                self.rate_in.tick()
                image = np.ascontiguousarray(frame.image)
                if self.pub_raw.get_subscription_count() > 0:
                    self.pub_raw.publish(array_to_image_msg(self.types, image, 'bgr8', header))
                if self.handover is not None and self.handover.wants_raw:
                    self.handover.raw(header, image, 'bgr8')
                self.process(header, image, 'bgr8')
            else:
                self.get_logger().info('source %s ended after %d frames' % (src.name, self.counters['frames_in']))
        except QVisionError as exc:
            if not self.stopping():
                self.get_logger().error('capture from %s stopped: %s' % (src.name, exc))
        except Exception as exc:   # keep the reason visible; the node stays up for diagnostics
            if not self.stopping():
                self.get_logger().error('capture from %s failed: %r' % (src.name, exc))

    # -- work --------------------------------------------------------------------------------------
    def process(self, header, frame, encoding):
        """Resize one frame and hand it on (topic and/or in-memory); returns the network-size image."""
        t0 = time.perf_counter()
        in_memory = self.handover is not None
        publish = self.pub_preprocessed.get_subscription_count() > 0
        if not (in_memory or publish):
            return None
        try:
            out = np.empty((self.preprocessor.input_height, self.preprocessor.input_width, 3), np.uint8)
            image, _ = self.preprocessor.resize(frame, encoding, out=out)
        except QVisionError as exc:
            self.counters['bad_frames'] += 1
            self.log_bad_frame('frame', exc)
            return None
        self.timer.add(time.perf_counter() - t0)
        if in_memory:
            self.handover.preprocessed(copy_header(self.types, header), image, self.encoding)
        if publish:
            self.pub_preprocessed.publish(array_to_image_msg(self.types, image, self.encoding, header))
        self.counters['frames_out'] += 1
        self.rate_out.tick()
        stamp = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        self.latency_ms = (self.now_ns() - stamp) / 1e6
        return image

    # -- diagnostics / shutdown ----------------------------------------------------------------------
    def statuses(self):
        figures = [('preprocess_ms_mean', self.timer.mean_ms()), ('preprocess_ms_max', self.timer.max_ms())]
        self.timer.reset()
        counters = dict(self.counters, dropped_frames=self.counters['skipped_rate'])
        return [latency_status('qvision_ros preprocess', figures, counters, self.latency_ms,
                               self.rate_in.rate(), self.rate_out.rate(), warn_dropped=False)]

    def destroy_node(self):
        self._stop.set()
        if self.source is not None:
            if self._capture is not None:
                self._capture.join(timeout=2.0)
            self.source.close()
        return Node.destroy_node(self)


def main(args=None):
    return run_node(PreprocessNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
