"""Frame sources for running the pipeline without ROS: video files, image folders, cameras, arrays, bags.

:func:`open_source` turns what a user types (``road.mp4``, ``frames/``, ``0``, ``clip.npy``,
``recording/`` or ``recording.mcap``) into a :class:`FrameSource`: a context manager and an iterator of
:class:`Frame` objects, each a BGR uint8 ``H x W x 3`` image with the index, stamp and ``frame_id`` a ROS
header would carry.  Nothing here imports ROS; rosbag2 files are read with the ``rosbags`` library, which is
an optional dependency (``pip install qvision_ros[bag]``) imported only when a bag is opened.

====================  ==============================================================================
spec                  source
====================  ==============================================================================
``3``, ``'0'``        camera index (``cv2.VideoCapture``); *live*: frames keep coming while we work
video file            anything OpenCV's video backend opens (mp4, avi, mkv, ...)
image folder          every file with a common image extension, in natural order (``f2`` before ``f10``)
image file            that one image
``.npy``              a uint8 array ``N x H x W x C`` or one image ``H x W x C`` (C = 1, 3 or 4; BGR order)
rosbag2               a bag directory, or a ``.db3`` / ``.mcap`` file (a ROS 1 ``.bag`` also works):
                      ``sensor_msgs/Image`` (every encoding of :mod:`qvision_ros.vision.image`, row
                      ``step`` honoured) or ``sensor_msgs/CompressedImage``; the topic may be omitted
                      when the bag has exactly one image topic
====================  ==============================================================================

Stamps: bags keep each message's header stamp and ``frame_id``; cameras stamp with the wall clock when the
frame is read; files without timing (videos, folders, arrays) stamp frame ``i`` at ``i / fps`` seconds,
continuing across loops.

Corrupt frames: an image file that does not decode, a bag message that does not deserialize or convert, or a
video frame that fails in the middle of a file is skipped and counted in :attr:`FrameSource.skipped` (the
last reason in :attr:`FrameSource.last_error`); only when nothing can be read any more (a file that cannot be
opened, a bag truncated mid-message, :data:`MAX_CONSECUTIVE_FAILURES` bad frames in a row) is a
:class:`~qvision_ros.errors.DataError` raised - after the good frames before it were delivered.
"""
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ConfigError, DataError, ImageError
from .messages import header_stamp_ns, image_msg_to_bgr
from .vision.image import to_bgr

#: Extensions (lower case) that an image folder is scanned for.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pnm')

#: Suffixes of bag files (a rosbag2 directory is recognised by its ``metadata.yaml`` or storage files).
BAG_SUFFIXES = ('.db3', '.mcap', '.bag')

#: Stamp rate for sources without timing of their own (image folders, arrays) unless ``fps`` is given.
DEFAULT_FPS = 30.0

#: Bad frames in a row after which a source gives up with DataError instead of skipping on.
MAX_CONSECUTIVE_FAILURES = 50

IMAGE_MSGTYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')

_SPEC_HELP = ('give a video file, an image folder or file, a camera index (0, 1, ...), a .npy array, or a '
              'rosbag2 directory / .db3 / .mcap file')


@dataclass(frozen=True)
class Frame:
    """One frame: ``image`` is BGR uint8 ``H x W x 3``; ``stamp_ns`` and ``frame_id`` as a ROS header."""
    index: int
    stamp_ns: int
    frame_id: str
    image: np.ndarray

    @property
    def width(self):
        return int(self.image.shape[1])

    @property
    def height(self):
        return int(self.image.shape[0])


class _Corrupt(Exception):
    """One unreadable frame (raised by the converters below; a pass yields it as a :class:`_Bad`)."""


class _Bad:
    """Yielded by a pass in place of a frame it could not read; counted and skipped by FrameSource."""
    __slots__ = ('reason',)

    def __init__(self, reason):
        self.reason = str(reason)


def _to_bgr3(image, what):
    """A uint8 H x W (x 1/3/4) array as C-contiguous BGR H x W x 3; _Corrupt otherwise."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise _Corrupt('%s is not a uint8 image' % what)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.shape[0] < 1 or image.shape[1] < 1:
        raise _Corrupt('%s has shape %s; expected H x W x 1, 3 or 4' % (what, image.shape))
    encoding = {1: 'mono8', 3: 'bgr8', 4: 'bgra8'}[image.shape[2]]
    return np.ascontiguousarray(to_bgr(image, encoding))


def _checked(stamp, frame_id, image, what):
    """``(stamp, frame_id, bgr)`` for a readable frame, a :class:`_Bad` otherwise."""
    try:
        return stamp, frame_id, _to_bgr3(image, what)
    except _Corrupt as exc:
        return _Bad(exc)


class FrameSource:
    """Base of every source: iteration with indices, looping, ``max_frames`` and corrupt-frame skipping.

    Subclasses implement ``_pass()`` (one pass over the data, yielding ``(stamp_ns or None, frame_id or
    None, bgr_image)``, or a :class:`_Bad` for a frame it could not read but can step over) and
    ``_pass_count()`` (frames in one pass, or None when unknown).

    Attributes: ``kind`` ('video', 'images', 'camera', 'npy', 'rosbag'), ``name`` (what was opened),
    ``fps`` (frames per second, or None when unknown), ``live`` (True for a camera: frames arrive whether or
    not we keep up, so the pipeline applies its latest-frame policy), ``skipped`` (corrupt frames skipped),
    ``last_error`` (the reason for the last skip).
    """
    kind = 'source'
    live = False

    def __init__(self, name, *, loop=False, max_frames=None, frame_id='camera', fps=None):
        self.name = str(name)
        self.loop = bool(loop)
        self.max_frames = max_frames
        self.frame_id = frame_id
        self.fps = fps
        self.skipped = 0
        self.last_error = None
        self._closed = False
        self._iterators = []

    # --- subclass hooks -------------------------------------------------------------------------
    def _pass(self):
        raise NotImplementedError

    def _pass_count(self):
        return None

    def _release(self):
        """Free what the source keeps open between passes (a camera)."""

    # --- public API -----------------------------------------------------------------------------
    @property
    def count(self):
        """Frames this source will deliver, when known (for progress bars): None when unknown or endless."""
        per_pass = self._pass_count()
        if self.loop:
            return self.max_frames if (self.max_frames is not None and per_pass) else None
        if per_pass is None:
            return None
        return per_pass if self.max_frames is None else min(per_pass, self.max_frames)

    def __len__(self):
        n = self.count
        if n is None:
            raise TypeError('the number of frames of %s is not known in advance' % self.name)
        return n

    def __iter__(self):
        if self._closed:
            raise DataError('%s was closed; open the source again to read it' % self.name)
        it = self._frames()
        self._iterators.append(it)
        return it

    def _frames(self):
        index = 0
        rate = self.fps or DEFAULT_FPS
        while True:
            delivered = 0
            failures = 0
            gen = self._pass()
            try:
                while self.max_frames is None or index < self.max_frames:
                    item = next(gen, None)
                    if item is None:
                        break
                    if isinstance(item, _Bad):
                        self.skipped += 1
                        self.last_error = item.reason
                        failures += 1
                        if failures >= MAX_CONSECUTIVE_FAILURES:
                            raise DataError('%s: %d frames in a row could not be read (last: %s); check the '
                                            'source, or convert it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)'
                                            % (self.name, failures, item.reason))
                        continue
                    stamp, frame_id, image = item
                    failures = 0
                    delivered += 1
                    yield Frame(index, int(round(index * 1e9 / rate)) if stamp is None else int(stamp),
                                self.frame_id if frame_id is None else frame_id, image)
                    index += 1
            finally:
                gen.close()
            if not self.loop or delivered == 0 or (self.max_frames is not None and index >= self.max_frames):
                return

    def close(self):
        """Stop every running iteration and free the device or files; idempotent."""
        if self._closed:
            return
        self._closed = True
        for it in self._iterators:
            it.close()
        self._iterators = []
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return '<%s %s %r fps=%s count=%s>' % (type(self).__name__, self.kind, self.name, self.fps, self.count)


class VideoSource(FrameSource):
    """A video file read with ``cv2.VideoCapture``; a frame that fails mid-file is skipped and counted."""
    kind = 'video'

    def __init__(self, path, **kw):
        super().__init__(path, **kw)
        self.path = str(path)
        cap = self._open()
        try:
            ok, first = cap.read()
            if not ok or first is None:
                raise DataError('%s opens as a video but no frame can be decoded from it; check the file (or '
                                'convert it: ffmpeg -i IN -c:v libx264 OUT.mp4)' % self.path)
            fps = cap.get(cv2.CAP_PROP_FPS)
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        if self.fps is None:
            self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else None
        self._n = n if n > 0 else None

    def _open(self):
        cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            cap.release()
            raise DataError('cannot open %s as a video (OpenCV has no reader for it, or the file is not a '
                            'video); %s' % (self.path, _SPEC_HELP))
        return cap

    def _pass_count(self):
        return self._n

    def _pass(self):
        cap = self._open()
        try:
            read = 0
            failed_in_a_row = 0
            while True:
                ok, image = cap.read()
                if ok and image is not None:
                    read += 1
                    failed_in_a_row = 0
                    yield _checked(None, None, image, 'frame %d of %s' % (read - 1, self.path))
                    continue
                # End of stream, or a bad frame in the middle: only the frame count tells them apart.
                if self._n is None or read + failed_in_a_row >= self._n - 1:
                    return
                failed_in_a_row += 1
                if failed_in_a_row > MAX_CONSECUTIVE_FAILURES:
                    return  # the frame count in the header was too optimistic
                yield _Bad('frame %d of %s could not be decoded' % (read + failed_in_a_row - 1, self.path))
        finally:
            cap.release()


class CameraSource(FrameSource):
    """A camera by index: live (frames do not wait for us), stamped with the wall clock at capture."""
    kind = 'camera'
    live = True

    def __init__(self, index, **kw):
        super().__init__('camera %d' % index, **kw)
        if self.loop:
            raise ConfigError('loop does not apply to a camera (it never ends); leave it off')
        self.index = index
        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise DataError('cannot open camera %d: no such device, or it is busy; list the cameras with '
                            '`ls /dev/video*` (Linux) and give its number' % index)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        if self.fps is None:
            self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else None

    def _pass(self):
        failed = 0
        while True:
            ok, image = self._cap.read()
            stamp = time.time_ns()
            if not ok or image is None:
                failed += 1
                yield _Bad('camera %d returned no frame (%d in a row)' % (self.index, failed))
                continue
            failed = 0
            yield _checked(stamp, None, image, 'camera %d frame' % self.index)

    def _release(self):
        self._cap.release()


def _natural_key(path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r'(\d+)', path.name)]


class ImageFolderSource(FrameSource):
    """Image files (a folder's images in natural order, or one file); undecodable files are skipped."""
    kind = 'images'

    def __init__(self, paths, name, **kw):
        super().__init__(name, **kw)
        self.paths = list(paths)
        if self.fps is None:
            self.fps = DEFAULT_FPS

    def _pass_count(self):
        return len(self.paths)

    def _pass(self):
        for p in self.paths:
            image = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if image is None:
                yield _Bad('%s could not be decoded as an image' % p)
                continue
            yield _checked(None, None, image, str(p))


class ArraySource(FrameSource):
    """Frames from a ``.npy`` file (memory-mapped, so a large file is not loaded at once)."""
    kind = 'npy'

    def __init__(self, path, **kw):
        super().__init__(path, **kw)
        try:
            arr = np.load(str(path), mmap_mode='r', allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError('cannot read %s as a NumPy .npy array (%s); save frames with '
                            'numpy.save(path, frames) where frames is uint8 N x H x W x 3 (BGR)'
                            % (path, exc)) from None
        if arr.dtype != np.uint8:
            raise DataError('%s holds %s data; frames must be uint8 (N x H x W x 3 BGR, or N x H x W mono); '
                            'convert with frames.astype(numpy.uint8) after scaling to 0..255' % (path, arr.dtype))
        if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
            arr = arr[None]
        elif arr.ndim == 2:
            arr = arr[None, :, :, None]
        elif arr.ndim == 3:
            arr = arr[:, :, :, None]
        if arr.ndim != 4 or arr.shape[3] not in (1, 3, 4) or 0 in arr.shape[1:3]:
            raise DataError('%s has shape %s; expected N x H x W x C frames with C = 1, 3 or 4 (or one image '
                            'H x W x C)' % (path, tuple(arr.shape)))
        self._arr = arr
        if self.fps is None:
            self.fps = DEFAULT_FPS

    def _pass_count(self):
        return int(self._arr.shape[0])

    def _pass(self):
        for i in range(self._arr.shape[0]):
            yield _checked(None, None, np.asarray(self._arr[i]), 'frame %d' % i)


def _import_rosbags():
    try:
        from rosbags.highlevel import AnyReader, AnyReaderError
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise DataError('reading rosbag2 files needs the rosbags library: pip install "qvision_ros[bag]" '
                        '(or pip install rosbags)') from None
    return AnyReader, AnyReaderError, Stores, get_typestore


def _bag_paths(path):
    """The path list AnyReader takes for a bag directory or a single storage file."""
    return [Path(path)]


def _bag_error(path, exc, after=None):
    where = '' if after is None else ' after %d messages' % after
    return DataError('cannot read the bag %s%s: %s; the file may be truncated or damaged (a rosbag2 that was '
                     'not closed cleanly can be repaired with `ros2 bag reindex`), or it is not a bag'
                     % (path, where, str(exc) or type(exc).__name__))


def _image_message_to_bgr(msg, msgtype):
    """A deserialized Image or CompressedImage as a BGR array; _Corrupt when it cannot be converted."""
    if msgtype.endswith('CompressedImage'):
        data = np.asarray(msg.data, dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            raise _Corrupt('a CompressedImage (format %r) does not decode' % (msg.format,))
        return _to_bgr3(image, 'CompressedImage')
    try:
        return np.ascontiguousarray(image_msg_to_bgr(msg))
    except ImageError as exc:
        raise _Corrupt(str(exc)) from None


class RosbagSource(FrameSource):
    """The image messages of one topic of a rosbag2 (directory, .db3 or .mcap) or ROS 1 bag."""
    kind = 'rosbag'

    def __init__(self, path, topic=None, **kw):
        super().__init__(path, **kw)
        self.path = Path(path)
        self._any_reader, self._reader_error, stores, get_typestore = _import_rosbags()
        self._typestore = get_typestore(stores.ROS2_HUMBLE)  # for bags without embedded definitions
        try:
            with self._reader() as reader:
                images = {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_MSGTYPES}
                if topic is None:
                    if len(images) != 1:
                        listing = ', '.join('%s (%s)' % kv for kv in sorted(images.items())) or 'none'
                        others = sorted({c.topic for c in reader.connections} - set(images))
                        raise DataError('%s has %s image topics (%s)%s; %s'
                                        % (path, len(images) or 'no', listing,
                                           '; other topics: %s' % ', '.join(others) if others else '',
                                           'choose one with --topic' if images else
                                           'it needs sensor_msgs/Image or sensor_msgs/CompressedImage messages'))
                    topic = next(iter(images))
                elif topic not in images:
                    known = {c.topic: c.msgtype for c in reader.connections}
                    why = ('is %s, not an image topic' % known[topic]) if topic in known else 'is not in the bag'
                    raise DataError('topic %r %s; image topics in %s: %s' % (topic, why, path,
                                                                             ', '.join(sorted(images)) or 'none'))
                self.topic = topic
                self.msgtype = images[topic]
                self._n = sum(c.msgcount for c in reader.connections if c.topic == topic)
        except DataError:
            raise
        except (self._reader_error, OSError, ValueError, KeyError, IndexError) as exc:
            raise _bag_error(path, exc) from None
        self.name = '%s:%s' % (path, self.topic)

    def _reader(self):
        try:
            return self._any_reader(_bag_paths(self.path), default_typestore=self._typestore)
        except FileNotFoundError as exc:
            raise DataError('%s does not exist; %s' % (self.path, _SPEC_HELP)) from exc

    def _pass_count(self):
        return self._n

    def _pass(self):
        read = 0
        try:
            reader = self._reader()
            reader.open()
        except DataError:
            raise
        except Exception as exc:  # rosbags raises several unrelated types for damaged storage
            raise _bag_error(self.path, exc) from None
        try:
            conns = [c for c in reader.connections if c.topic == self.topic]
            messages = reader.messages(connections=conns)
            while True:
                try:
                    conn, timestamp, raw = next(messages)
                except StopIteration:
                    return
                except Exception as exc:  # truncated chunk, malformed sqlite page, bad record...
                    raise _bag_error(self.path, exc, after=read) from None
                read += 1
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as exc:  # noqa: BLE001 - any failure to parse one message is that frame's
                    yield _Bad('message %d on %s does not deserialize (%s)'
                               % (read - 1, self.topic, str(exc) or type(exc).__name__))
                    continue
                try:
                    image = _image_message_to_bgr(msg, conn.msgtype)
                except _Corrupt as exc:
                    yield _Bad('message %d on %s: %s' % (read - 1, self.topic, exc))
                    continue
                yield header_stamp_ns(msg.header), str(msg.header.frame_id), image
        finally:
            try:
                reader.close()
            except Exception:  # noqa: BLE001 - closing a damaged bag may fail again; nothing left to do
                pass


def _is_bag_dir(path):
    return (path / 'metadata.yaml').is_file() or any(
        p.suffix in ('.db3', '.mcap') for p in path.iterdir() if p.is_file())


def _image_files(folder):
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=_natural_key)


def _camera_index(spec):
    if isinstance(spec, (bool, np.bool_)):
        return None
    if isinstance(spec, (int, np.integer)):
        return int(spec)
    if isinstance(spec, str) and spec.strip().isdigit():
        return int(spec.strip())
    return None


def open_source(spec, *, topic=None, loop=False, max_frames=None, frame_id='camera', fps=None):
    """Open ``spec`` as a :class:`FrameSource` (see the module docstring for what ``spec`` may be).

    ``topic``: the image topic of a bag (optional when it has exactly one).  ``loop``: start again at the
    end (files only).  ``max_frames``: stop after this many frames.  ``frame_id``: the ``frame_id`` of
    frames from sources that have none (everything but bags).  ``fps``: the rate of sources without timing
    (image folders, arrays; default :data:`DEFAULT_FPS`), or an override of a video's rate.

    Raises :class:`DataError` when ``spec`` cannot be opened and :class:`ConfigError` for bad options.
    """
    if max_frames is not None:
        if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)) or max_frames < 1:
            raise ConfigError('max_frames must be a positive integer or None, got %r' % (max_frames,))
        max_frames = int(max_frames)
    if fps is not None:
        try:
            fps = float(fps)
        except (TypeError, ValueError):
            fps = float('nan')
        if not (np.isfinite(fps) and fps > 0):
            raise ConfigError('fps must be a positive number, got %r' % (fps,))
    if not isinstance(frame_id, str):
        raise ConfigError('frame_id must be a string, got %r' % (frame_id,))
    kw = dict(loop=loop, max_frames=max_frames, frame_id=frame_id, fps=fps)

    cam = _camera_index(spec)
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        raise DataError('no source given; %s' % _SPEC_HELP)
    if cam is None and not isinstance(spec, (str, os.PathLike)):
        raise DataError('source must be a path or a camera index, got %r; %s' % (spec, _SPEC_HELP))
    is_bag = False
    path = None
    if cam is None:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError('%s: no such file or directory; %s' % (path, _SPEC_HELP))
        is_bag = path.suffix.lower() in BAG_SUFFIXES if path.is_file() else _is_bag_dir(path)
    if topic is not None and not is_bag:
        raise ConfigError('a topic (%r) only applies to a rosbag2 source; %s is not a bag' % (topic, spec))
    if cam is not None:
        return CameraSource(cam, **kw)
    if is_bag:
        return RosbagSource(path, topic=topic, **kw)
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise DataError('%s holds no images (looked for %s) and is not a rosbag2 directory; %s'
                            % (path, ' '.join(IMAGE_EXTENSIONS), _SPEC_HELP))
        return ImageFolderSource(files, str(path), **kw)
    suffix = path.suffix.lower()
    if suffix == '.npy':
        return ArraySource(path, **kw)
    if suffix in IMAGE_EXTENSIONS:
        return ImageFolderSource([path], str(path), **kw)
    return VideoSource(path, **kw)
