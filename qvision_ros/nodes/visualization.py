"""The post-processing / visualization node: network-frame detections -> original image pixels, drawn.

Subscribes ``image_raw`` (the camera frames, SensorData-like QoS) and ``detections_raw`` (boxes in the
pixel frame of ``image_preprocessed``), pairs them by header (stamp and frame_id; whichever arrives
first waits up to ``max_pair_delay_sec``), maps the boxes back through the same letterbox the
preprocessing node applied (``input_width`` / ``input_height`` / ``resize_mode``, shared through the
parameters file) and publishes

* ``detections`` - Detection2DArray in original image pixels, the camera header copied, empty when
  nothing was found;
* ``image_annotated`` - the frame with boxes and labels, built only while someone subscribes;
* ``label_info`` - vision_msgs/LabelInfo (class map and score threshold), transient local: published
  once at start and whenever the threshold changes.
"""
import threading
import time

from rclpy.node import Node

from ..errors import QVisionError
from ..messages import ClassIdMode, bgr_to_image_msg, detections_to_msg, label_info_msg, msg_to_detections
from ..vision.decode import Detections
from ..vision.draw import draw_detections
from ..vision.image import to_bgr
from ..vision.preprocess import Letterbox
from . import params as P
from .common import (LABEL_INFO_QOS, QVisionNodeMixin, header_key, image_qos, latency_status, output_qos,
                     run_node)
from .policy import RateMeter, StageTimer, StampPairer

MAX_WAITING = 16   # frames (or detection arrays) waiting for their partner, per stream


class VisualizationNode(QVisionNodeMixin, Node):
    """Post-processing stage.  ``handover``: composed mode's in-memory source of raw frames."""

    kind = P.VISUALIZATION

    def __init__(self, node_name='qvision_visualization', *, handover=None, **kwargs):
        Node.__init__(self, node_name, **kwargs)
        v = self._setup()
        self.labels = P.read_labels(v['labels_path'])
        self.pairer = StampPairer(int(v['max_pair_delay_sec'] * 1e9), MAX_WAITING)
        self._pair_lock = threading.Lock()
        out_qos = output_qos(v)
        self.pub_detections = self.create_publisher(self.types.Detection2DArray, 'detections', out_qos)
        self.pub_annotated = self.create_publisher(self.types.Image, 'image_annotated', out_qos)
        self.pub_label_info = self.create_publisher(self.types.LabelInfo, 'label_info', LABEL_INFO_QOS)
        self.sub_detections = self.create_subscription(self.types.Detection2DArray, 'detections_raw',
                                                       self._on_detections, out_qos)
        self.handover = handover
        if handover is not None:
            handover.connect_raw(self._on_frame)
            self.sub_image = None
        else:
            self.sub_image = self.create_subscription(self.types.Image, 'image_raw', self._on_image, image_qos(v))
        self.timer = StageTimer()
        self.draw_timer = StageTimer()
        self.rate_in, self.rate_out = RateMeter(), RateMeter()
        self.counters = {'images_in': 0, 'detections_in': 0, 'frames_out': 0, 'annotated_out': 0,
                         'bad_frames': 0, 'bad_detections': 0}
        self.latency_ms = 0.0
        self.publish_label_info()

    def publish_label_info(self):
        header = self.types.Header(stamp=self.get_clock().now().to_msg(), frame_id='')
        self.pub_label_info.publish(label_info_msg(self.types, self.labels, header,
                                                   self.values['score_threshold']))

    def _on_parameters(self, params):
        QVisionNodeMixin._on_parameters(self, params)
        if any(p.name == 'score_threshold' for p in params):
            self.publish_label_info()

    # -- input -------------------------------------------------------------------------------------
    def _on_image(self, msg):
        frame = self.frame_of(msg, self.sub_image.topic_name)
        if frame is not None:
            self._on_frame(msg.header, frame, msg.encoding)

    def _on_frame(self, header, frame, encoding):
        self.counters['images_in'] += 1
        self._add('image', header, (header, frame, encoding))

    def _on_detections(self, msg):
        self.counters['detections_in'] += 1
        self.rate_in.tick()
        self._add('detections', msg.header, msg)

    def _add(self, kind, header, item):
        with self._pair_lock:
            pair = self.pairer.add(kind, header_key(header), item, time.monotonic_ns())
        if pair is not None:
            self.process(*pair)

    # -- work --------------------------------------------------------------------------------------
    def process(self, image_item, det_msg):
        """One camera frame and its network-frame detections -> detections (and image) in its pixels."""
        header, frame, encoding = image_item
        t0 = time.perf_counter()
        v = self.values
        h, w = frame.shape[:2]
        try:
            det = msg_to_detections(det_msg, self.labels)
        except QVisionError as exc:
            self.counters['bad_detections'] += 1
            self.get_logger().error('dropped detections that cannot be read: %s' % exc, throttle_duration_sec=1.0)
            return
        lb = Letterbox.compute(w, h, v['input_width'], v['input_height'], v['resize_mode'])
        det = Detections(lb.to_source(det.boxes.astype('float64')), det.scores, det.class_ids)
        mode = ClassIdMode.parse(v['class_id_mode'])
        out = detections_to_msg(self.types, det, header, image_size=(w, h), class_id_mode=mode,
                                labels=self.labels)
        self.pub_detections.publish(out)
        self.counters['frames_out'] += 1
        self.rate_out.tick()
        self.timer.add(time.perf_counter() - t0)
        stamp = header_key(header)[0]
        self.latency_ms = (self.now_ns() - stamp) / 1e6
        if self.pub_annotated.get_subscription_count() > 0:
            t1 = time.perf_counter()
            try:
                bgr = to_bgr(frame, encoding)
                drawn = draw_detections(bgr, det, labels=self.labels, thickness=v['line_thickness'])
                self.pub_annotated.publish(bgr_to_image_msg(self.types, drawn, header, v['annotated_encoding']))
                self.counters['annotated_out'] += 1
            except QVisionError as exc:
                self.counters['bad_frames'] += 1
                self.log_bad_frame('frame to annotate', exc)
            self.draw_timer.add(time.perf_counter() - t1)

    # -- diagnostics ---------------------------------------------------------------------------------
    def statuses(self):
        figures = [('postprocess_ms_mean', self.timer.mean_ms()), ('postprocess_ms_max', self.timer.max_ms()),
                   ('annotate_ms_mean', self.draw_timer.mean_ms())]
        self.timer.reset()
        self.draw_timer.reset()
        with self._pair_lock:
            unpaired = dict(self.pairer.unpaired)
        counters = dict(self.counters, unpaired_images=unpaired['image'],
                        unpaired_detections=unpaired['detections'], dropped_frames=unpaired['image'])
        return [latency_status('qvision_ros visualization', figures, counters, self.latency_ms,
                               self.rate_in.rate(), self.rate_out.rate(), warn_dropped=False)]


def main(args=None):
    return run_node(VisualizationNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
