"""Calibration data and the streaming collection of statistics.

**The data-reader protocol.**  Calibration data is anything iterable that yields *batches*: a float32
array (for a single-input model: ``[N, C, H, W]`` or one ``[C, H, W]`` image) or a dict
``{input name: array}``.  A reader may define ``__len__`` (images, for the progress bar).  ONNX Runtime's
``CalibrationDataReader`` (``get_next()`` returning a dict or None) works as is.  :func:`open_reader`
turns what the user gives into such a reader:

* an array, a list / generator of arrays or dicts, a reader object;
* a ``.npy`` file of preprocessed float inputs (memory-mapped, read one image at a time) or a folder of
  them;
* any other path or spec string - image folder, video file, rosbag2 (with ``topic``), a uint8 ``.npy``
  of BGR images - through :func:`qvision_ros.sources.open_source`; its frames go through the same
  preprocessing as at run time, :class:`qvision_ros.vision.Preprocessor` (letterbox, pad 114, RGB,
  pixel / 255, NCHW).

**Collection.**  :func:`collect` runs the float model on our own engine with the tensors to observe added
as model outputs (the engine's passes never fuse a model output away), feeds each batch and updates one
observer per tensor.  Nothing but the observers' bounded state outlives a batch.
"""
import os
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from ..cli import Progress
from ..errors import ConfigError, DataError, InputError
from .observers import ChannelMeanObserver, MinMaxObserver, QParams, make_observer


@dataclass(frozen=True)
class ImagePreprocessing:
    """How image frames become network inputs (the run-time preprocessing; the size defaults to the
    model input's)."""
    width: Optional[int] = None
    height: Optional[int] = None
    resize_mode: str = 'letterbox'
    pad_value: int = 114
    channel_order: str = 'rgb'

    def preprocessor(self, model_width, model_height):
        from ..vision import Preprocessor
        return Preprocessor(self.width or model_width, self.height or model_height, resize_mode=self.resize_mode,
                            pad_value=self.pad_value, channel_order=self.channel_order, layout='nchw')


# ------------------------------------------------------------------------------------------------ readers

class _Reader:
    """Base of the readers made by :func:`open_reader`: ``__iter__`` yields dict batches."""

    def __init__(self, length=None):
        self._length = length

    def __len__(self):
        if self._length is None:
            raise TypeError('length unknown')
        return self._length


class IterableReader(_Reader):
    """Batches from an iterable of arrays / dicts, or from a ``get_next()`` reader."""

    def __init__(self, source, input_name, length=None):
        super().__init__(length)
        self.source = source
        self.input_name = input_name

    def __iter__(self):
        src = self.source
        if hasattr(src, 'get_next') and not hasattr(src, '__iter__'):
            def items():
                while True:
                    item = src.get_next()
                    if item is None:
                        return
                    yield item
            it = items()
        else:
            it = iter(src)
        for item in it:
            yield _as_feeds(item, self.input_name)


def load_npy(path):
    """A ``.npy`` file memory-mapped (never unpickled)."""
    try:
        return np.load(path, mmap_mode='r', allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError('cannot read the calibration array %s: %s' % (path, e)) from None


class NpyReader(_Reader):
    """One ``.npy`` file of preprocessed float inputs ([N, C, H, W] or [C, H, W]), memory-mapped: one
    image in memory at a time."""

    def __init__(self, path, input_name, array=None):
        self.array = load_npy(path) if array is None else array
        self.path = path
        self.input_name = input_name
        super().__init__(len(self.array) if self.array.ndim == 4 else 1)

    def __iter__(self):
        a = self.array
        if a.ndim != 4:
            yield _as_feeds(np.asarray(a), self.input_name, self.path)
            return
        for k in range(len(a)):
            yield _as_feeds(np.asarray(a[k:k + 1]), self.input_name, self.path)


class NpyFolderReader(_Reader):
    """Every ``*.npy`` file of a folder, in name order, each read as :class:`NpyReader` does."""

    def __init__(self, folder, input_name):
        self.files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith('.npy'))
        self.input_name = input_name
        super().__init__(None)

    def __iter__(self):
        for f in self.files:
            array = load_npy(f)
            if array.dtype == np.uint8:
                raise DataError('%s holds uint8 images; a folder of .npy files must hold preprocessed float '
                                'inputs (give a uint8 image array as a single .npy file)' % f)
            yield from NpyReader(f, self.input_name, array)


class SourceReader(_Reader):
    """Frames of an image folder, video or rosbag2 (:func:`qvision_ros.sources.open_source`), preprocessed
    as at run time."""

    def __init__(self, spec, input_name, preprocessor, topic=None, max_images=None):
        super().__init__(None)
        try:
            from ..sources import open_source
        except ImportError:
            raise DataError('calibration source %r is not an array or .npy file, and reading images, videos '
                            'and rosbags needs qvision_ros.sources, which this installation lacks' % (spec,)) \
                from None
        self.open_source = open_source
        self.spec, self.topic, self.max_images = spec, topic, max_images
        self.input_name = input_name
        self.preprocessor = preprocessor

    def __len__(self):
        with self.open_source(self.spec, topic=self.topic, max_frames=self.max_images) as source:
            count = source.count
        if count is None:
            raise TypeError('length unknown')
        return count

    def __iter__(self):
        source = self.open_source(self.spec, topic=self.topic, max_frames=self.max_images)
        try:
            for frame in source:
                tensor, _ = self.preprocessor(frame.image)
                yield {self.input_name: tensor}
        finally:
            close = getattr(source, 'close', None)
            if close is not None:
                close()


def _as_feeds(item, input_name, where='calibration data'):
    if isinstance(item, dict):
        feeds = dict(item)
    elif isinstance(item, np.ndarray):
        if input_name is None:
            raise InputError('the model has several inputs: calibration batches must be dicts {input name: array}')
        feeds = {input_name: item}
    else:
        raise InputError('%s must yield float32 arrays or dicts {input name: array}, got %s'
                         % (where, type(item).__name__))
    for k, v in feeds.items():
        v = np.asarray(v)
        if v.dtype.kind != 'f':
            raise InputError('calibration input %r must be a float array (preprocessed like the network input), '
                             'got %s' % (k, v.dtype))
        feeds[k] = v.astype(np.float32, copy=False)
    return feeds


def open_reader(calib, input_names, preprocessing=None, model_size=None, topic=None, max_images=None):
    """A reader (see the module docstring) of ``calib`` for a model with ``input_names``; ``model_size``
    is the (width, height) of its image input, for image sources."""
    single = input_names[0] if len(input_names) == 1 else None
    if calib is None:
        raise ConfigError('no calibration data given (an image folder, video, rosbag2, .npy file or arrays)')
    if isinstance(calib, np.ndarray):
        arr = calib if calib.ndim == 4 else calib[None]
        return IterableReader([arr[k:k + 1] for k in range(len(arr))], single, len(arr))
    if isinstance(calib, dict):
        return IterableReader([calib], single, 1)
    if isinstance(calib, (str, os.PathLike)):
        path = os.fspath(calib)
        if path.endswith('.npy'):
            if not os.path.isfile(path):
                raise DataError('calibration file %s does not exist' % path)
            array = load_npy(path)
            if array.dtype != np.uint8:
                return NpyReader(path, single, array)
            # uint8: BGR images (qvision_ros.sources' array format), preprocessed below
        if os.path.isdir(path) and any(f.endswith('.npy') for f in os.listdir(path)):
            return NpyFolderReader(path, single)
        if not os.path.exists(path) and '://' not in path and not path.startswith(('camera:', 'device:')) \
                and not path.isdigit():
            raise DataError('calibration source %s does not exist (give an image folder, a video, a rosbag2 '
                            'folder, a .npy file or a folder of .npy files)' % path)
        if single is None or model_size is None:
            raise ConfigError('image calibration sources need a model with one image input [1, 3, H, W]')
        pre = (preprocessing or ImagePreprocessing()).preprocessor(*model_size)
        return SourceReader(path, single, pre, topic, max_images)
    if hasattr(calib, '__iter__') or hasattr(calib, 'get_next'):
        try:
            length = len(calib)
        except TypeError:
            length = None
        return IterableReader(calib, single, length)
    raise ConfigError('calibration data must be arrays, a reader, a .npy file or folder, or an image/video/rosbag '
                      'path; got %s' % type(calib).__name__)


# -------------------------------------------------------------------------------------------- collection

@dataclass
class Calibration:
    """Statistics of one calibration run: per tensor the uint8 parameters and the observed range, per
    weighted-layer input the channel means (bias correction)."""
    params: Dict[str, QParams]
    ranges: Dict[str, tuple]
    channel_means: Dict[str, np.ndarray] = field(default_factory=dict)
    num_images: int = 0
    observer: str = ''
    seconds: float = 0.0
    samples: list = field(default_factory=list)      # the first inputs seen, when asked for (keep_samples)


def with_outputs(proto, names):
    """A copy of ``proto`` whose outputs also list ``names`` (values the engine must then keep)."""
    import onnx
    from onnx import helper
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    present = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
    for name in names:
        if name not in present:
            m.graph.output.append(helper.make_empty_tensor_value_info(name))
            present.add(name)
    return m


def collect(proto, tensors, mean_tensors, reader, observer='minmax', minmax_tensors=(), percentile=99.99,
            bins=2048, num_threads=None, input_shapes=None, max_images=None, progress=True, keep_samples=0):
    """Run the float model over ``reader`` on the engine and observe ``tensors`` (activation observer of
    kind ``observer``, min-max for ``minmax_tensors``) and the channel means of ``mean_tensors``; keep a
    copy of the first ``keep_samples`` inputs.  Returns a :class:`Calibration`."""
    from ..runtime import Engine
    kind_name = getattr(observer, 'value', observer)
    wanted = list(dict.fromkeys(list(tensors) + list(mean_tensors)))
    engine = Engine(with_outputs(proto, wanted).SerializeToString(), num_threads=num_threads,
                    input_shapes=input_shapes)
    out_names = [o.name for o in engine.outputs]
    minmax_tensors = set(minmax_tensors)
    observers = {t: (MinMaxObserver() if t in minmax_tensors else make_observer(observer, percentile, bins))
                 for t in tensors}
    means = {t: ChannelMeanObserver() for t in mean_tensors}
    try:
        total = len(reader)
        if max_images:
            total = min(total, max_images)
    except TypeError:
        total = max_images
    bar = Progress('calibrating', total, enabled=progress)
    count = 0
    t0 = time.monotonic()
    samples = []
    ranks = {i.name: len(i.shape) for i in engine.inputs}
    dynamic = dynamic_batch(proto)
    try:
        for feeds in reader:
            for part in _split_batch(feeds, ranks, dynamic):
                if max_images and count >= max_images:
                    break
                if len(samples) < keep_samples:
                    samples.append({k: np.array(v) for k, v in part.items()})
                outs = engine.run(part)
                values = dict(part)
                values.update(zip(out_names, outs))
                for t, o in observers.items():
                    o.update(values[t])
                for t, o in means.items():
                    o.update(values[t])
                del outs, values
                count += len(next(iter(part.values())))
                bar.update(count)
            if max_images and count >= max_images:
                break
    finally:
        if count:
            bar.close()
    if not count:
        raise DataError('the calibration data gave no images: nothing to calibrate from')
    params, ranges = {}, {}
    for t, o in observers.items():
        ranges[t] = o.range()
        params[t] = o.compute()
    return Calibration(params, ranges, {t: o.compute() for t, o in means.items()}, count, str(kind_name),
                       time.monotonic() - t0, samples)


def _split_batch(feeds, ranks, dynamic):
    """A batch as the engine takes it: an image without its batch axis gets one; a batch runs whole when
    the model's batch dimension is dynamic, else one image at a time."""
    feeds = {k: (v[None] if k in ranks and v.ndim == ranks[k] - 1 else v) for k, v in feeds.items()}
    n = min(len(v) for v in feeds.values())
    if dynamic or n <= 1:
        yield feeds
        return
    for i in range(n):
        yield {k: v[i:i + 1] for k, v in feeds.items()}


def dynamic_batch(proto):
    """True when every model input declares a symbolic (or unknown) first dimension."""
    inits = {t.name for t in proto.graph.initializer}
    dims = [vi.type.tensor_type.shape.dim for vi in proto.graph.input if vi.name not in inits]
    return all(len(d) and not d[0].dim_value for d in dims)
