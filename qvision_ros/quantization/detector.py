"""The shipped detector's data and accuracy, for quantising and evaluating it: calibration scenes, the
held-out split, mAP of a model file on our engine or on ONNX Runtime, and the SQNR of model outputs.

Calibration uses training scenes (``qvision_ros.training.data.training_sample``, un-augmented: scenes of
random aspect ratio letterboxed on a grey 114 canvas, like camera frames) of seed
:data:`CALIBRATION_SEED`; the held-out split is :func:`qvision_ros.training.data.validation_set` of seed
:data:`HELD_OUT_SEED` - the 500-image validation set of ``MODEL_CARD.md`` - which no calibration touches.
mAP is VOC-style all-points AP (:func:`qvision_ros.training.metrics.evaluate_map`) at IoU 0.5, and the
mean over IoU 0.50:0.05:0.95 for mAP@0.5:0.95; detections through ``Decoder(kind='yolov8')`` with score
threshold 0.001, NMS IoU 0.6, at most 100 per image (the model card's settings).
"""
import numpy as np

CALIBRATION_SEED = 100
HELD_OUT_SEED = 1
NUM_CLASSES = 5
IMAGE_SIZE = 320
IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


def to_input(rgb):
    """RGB uint8 [S, S, 3] -> the network input [1, 3, S, S] float32 (pixel / 255)."""
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def calibration_inputs(n, seed=CALIBRATION_SEED, size=IMAGE_SIZE):
    """A generator of ``n`` calibration inputs (rendered one at a time: bounded memory)."""
    from ..training.data import training_sample
    for i in range(n):
        rgb, _, _ = training_sample(seed, 0, i, size=size, augment=False, fresh=False)
        yield to_input(rgb)


class CalibrationScenes:
    """``n`` calibration inputs as a re-iterable reader with a length (for the progress bar)."""

    def __init__(self, n, seed=CALIBRATION_SEED, size=IMAGE_SIZE):
        self.n, self.seed, self.size = n, seed, size

    def __len__(self):
        return self.n

    def __iter__(self):
        return calibration_inputs(self.n, self.seed, self.size)


def held_out_set(n=500, seed=HELD_OUT_SEED, size=IMAGE_SIZE):
    """[(input [1, 3, S, S], boxes, labels)] of the held-out split."""
    from ..training.data import validation_set
    return [(to_input(rgb), boxes, labels) for rgb, boxes, labels in validation_set(n, seed, size)]


def runner(model, runtime='engine', num_threads=1):
    """``f(x) -> first output`` of ``model`` (path or bytes) on our engine or on ONNX Runtime."""
    if runtime == 'engine':
        from ..runtime import Engine
        engine = Engine(model, num_threads=num_threads)
        name = engine.inputs[0].name
        return lambda x: engine.run({name: x})[0]
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = num_threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, so, providers=['CPUExecutionProvider'])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def outputs_of(run, dataset):
    return [run(x) for x, _, _ in dataset]


def detection_map(outputs, dataset, iou_thresholds=IOU_THRESHOLDS):
    """{'map50': ..., 'map50_95': ...} of the model outputs (one per image of ``dataset``)."""
    from ..training.metrics import evaluate_map
    from ..vision import Decoder
    dec = Decoder(kind='yolov8', num_classes=NUM_CLASSES, score_threshold=0.001, nms_iou_threshold=0.6,
                  max_detections=100)
    dets = [dec(o)[0] for o in outputs]
    gts = [(boxes, labels) for _, boxes, labels in dataset]
    maps = [evaluate_map(dets, gts, NUM_CLASSES, t)['map'] for t in iou_thresholds]
    return {'map50': float(maps[0]), 'map50_95': float(np.mean(maps))}


def sqnr_db(outputs, reference):
    """Signal-to-quantisation-noise ratio in dB of ``outputs`` against ``reference`` (lists of arrays):
    ``10 log10(sum ref^2 / sum (out - ref)^2)`` over everything (inf when identical)."""
    num = sum(float(np.sum(np.asarray(r, np.float64) ** 2)) for r in reference)
    den = sum(float(np.sum((np.asarray(o, np.float64) - np.asarray(r, np.float64)) ** 2))
              for o, r in zip(outputs, reference))
    return float('inf') if den == 0 else 10.0 * np.log10(num / den)


def score_sqnr_db(outputs, reference, num_boxes=4):
    """SQNR of the class-score rows alone (rows ``num_boxes:`` of a [1, 4 + nc, A] output)."""
    return sqnr_db([o[:, num_boxes:] for o in outputs], [r[:, num_boxes:] for r in reference])
