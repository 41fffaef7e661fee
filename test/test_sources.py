"""Frame sources (qvision_ros.sources): every kind of spec, built here in tmp_path, and how bad input fails.

The oracles are the arrays the tests write: images and arrays come back bit-exact, video frames within
codec error, bag messages through rosbags' own typestore and writer (an independent implementation of the
ROS 2 message definitions), with every image encoding of DESIGN.md section 2 and padded rows.
"""
import cv2
import numpy as np
import pytest

from qvision_ros.errors import ConfigError, DataError
from qvision_ros.sources import MAX_CONSECUTIVE_FAILURES, Frame, open_source
from qvision_ros.vision.image import from_bgr

from rosbags.rosbag2 import StoragePlugin, Writer  # a test dependency (the optional 'bag' extra)
from rosbags.typesys import Stores, get_typestore

TS = get_typestore(Stores.ROS2_HUMBLE)
Image = TS.types['sensor_msgs/msg/Image']
CompressedImage = TS.types['sensor_msgs/msg/CompressedImage']
Header = TS.types['std_msgs/msg/Header']
Time = TS.types['builtin_interfaces/msg/Time']
String = TS.types['std_msgs/msg/String']


def frames_bgr(n, h=48, w=64, seed=0):
    """n distinct BGR frames: smooth gradients (codec-friendly) plus a per-frame offset."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        base = rng.integers(0, 120, size=3)
        img = np.stack([(xx * 2 + base[0]) % 256, (yy * 3 + base[1]) % 256,
                        np.full_like(xx, 40 + 6 * i + base[2]) % 256], axis=2)
        out.append(img.astype(np.uint8))
    return out


# --- image folders, single images, arrays -------------------------------------------------------------

def test_image_folder_natural_order_exact_pixels(tmp_path):
    imgs = frames_bgr(12)
    for i, img in enumerate(imgs):
        cv2.imwrite(str(tmp_path / ('f%d.png' % i)), img)  # f10 must come after f9, not after f1
    (tmp_path / 'notes.txt').write_text('not an image')
    with open_source(tmp_path, frame_id='front') as src:
        assert src.kind == 'images' and src.count == 12 and len(src) == 12 and src.fps == 30.0
        got = list(src)
    assert [f.index for f in got] == list(range(12))
    for f, img in zip(got, imgs):
        assert isinstance(f, Frame) and f.frame_id == 'front'
        assert f.image.dtype == np.uint8 and f.image.shape == (48, 64, 3)
        np.testing.assert_array_equal(f.image, img)
    assert [f.stamp_ns for f in got[:3]] == [0, 33333333, 66666667]


def test_image_folder_corrupt_file_skipped_and_counted(tmp_path):
    imgs = frames_bgr(4)
    for i, img in enumerate(imgs):
        cv2.imwrite(str(tmp_path / ('%02d.jpg' % i)), img)
    (tmp_path / '02.jpg').write_bytes(b'\xff\xd8 garbage, not a jpeg')
    src = open_source(str(tmp_path))
    got = list(src)
    assert len(got) == 3 and src.skipped == 1 and '02.jpg' in src.last_error
    assert [f.index for f in got] == [0, 1, 2]  # indices count delivered frames


def test_all_corrupt_folder_raises(tmp_path):
    for i in range(MAX_CONSECUTIVE_FAILURES + 1):
        (tmp_path / ('%03d.png' % i)).write_bytes(b'nope')
    with pytest.raises(DataError, match='in a row'):
        list(open_source(tmp_path))


def test_single_image_grayscale_file(tmp_path):
    gray = (np.arange(30 * 40) % 256).astype(np.uint8).reshape(30, 40)
    p = tmp_path / 'g.png'
    cv2.imwrite(str(p), gray)
    (f,) = list(open_source(p))
    assert f.image.shape == (30, 40, 3)
    for c in range(3):
        np.testing.assert_array_equal(f.image[:, :, c], gray)


@pytest.mark.parametrize('shape', [(5, 20, 30, 3), (5, 20, 30), (5, 20, 30, 1), (5, 20, 30, 4), (20, 30, 3)])
def test_npy_shapes(tmp_path, shape):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
    p = tmp_path / 'a.npy'
    np.save(p, arr)
    got = list(open_source(p, fps=10))
    frames = arr[None] if len(shape) == 3 and shape[-1] == 3 else arr
    assert len(got) == frames.shape[0]
    assert got[1 % len(got)].stamp_ns == (1 % len(got)) * 100_000_000
    for f, a in zip(got, frames):
        if a.ndim == 2 or a.shape[-1] == 1:
            expect = np.repeat(a.reshape(20, 30, 1), 3, axis=2)
        elif a.shape[-1] == 4:
            expect = a[:, :, :3]
        else:
            expect = a
        np.testing.assert_array_equal(f.image, expect)


@pytest.mark.parametrize('arr, match', [(np.zeros((2, 4, 4, 3), np.float32), 'float32'),
                                        (np.zeros((2, 3, 4, 4, 3), np.uint8), 'shape'),
                                        (np.zeros((2, 4, 4, 2), np.uint8), 'shape')])
def test_npy_rejected(tmp_path, arr, match):
    p = tmp_path / 'bad.npy'
    np.save(p, arr)
    with pytest.raises(DataError, match=match):
        open_source(p)


def test_npy_not_an_array(tmp_path):
    p = tmp_path / 'x.npy'
    p.write_bytes(b'\x93NUMPY garbage')
    with pytest.raises(DataError, match='numpy.save'):
        open_source(p)


def test_loop_and_max_frames(tmp_path):
    np.save(tmp_path / 'a.npy', np.stack(frames_bgr(3)))
    src = open_source(tmp_path / 'a.npy', loop=True, max_frames=8)
    got = list(src)
    assert src.count == 8 and [f.index for f in got] == list(range(8))
    np.testing.assert_array_equal(got[3].image, got[0].image)
    assert got[7].stamp_ns > got[6].stamp_ns  # stamps keep increasing across loops
    assert len(list(open_source(tmp_path / 'a.npy', max_frames=2))) == 2
    assert open_source(tmp_path / 'a.npy', loop=True).count is None
    with pytest.raises(TypeError):
        len(open_source(tmp_path / 'a.npy', loop=True))


def test_close_stops_iteration(tmp_path):
    np.save(tmp_path / 'a.npy', np.stack(frames_bgr(5)))
    src = open_source(tmp_path / 'a.npy')
    it = iter(src)
    next(it)
    src.close()
    assert list(it) == []
    with pytest.raises(DataError, match='closed'):
        iter(src)


# --- video -------------------------------------------------------------------------------------------

def write_video(path, imgs, fps=25.0):
    h, w = imgs[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, (w, h))
    assert vw.isOpened()
    for img in imgs:
        vw.write(img)
    vw.release()


def test_video_frames_fps_and_count(tmp_path):
    imgs = frames_bgr(10, h=64, w=96)
    p = tmp_path / 'clip.avi'
    write_video(p, imgs, fps=25.0)
    with open_source(p) as src:
        assert src.kind == 'video' and src.fps == pytest.approx(25.0) and src.count == 10
        got = list(src)
    assert len(got) == 10 and src.skipped == 0
    assert got[4].stamp_ns == 4 * 40_000_000
    for f, img in zip(got, imgs):
        assert f.image.shape == (64, 96, 3)
        assert np.abs(f.image.astype(int) - img).mean() < 6  # MJPEG quality loss only
    # frames are in order: each one is closest to its own original
    d = [[np.abs(f.image.astype(int) - img).mean() for img in imgs] for f in got]
    assert list(np.argmin(d, axis=1)) == list(range(10))


def test_video_loop(tmp_path):
    p = tmp_path / 'clip.avi'
    write_video(p, frames_bgr(4))
    got = list(open_source(p, loop=True, max_frames=10))
    assert len(got) == 10
    assert np.abs(got[4].image.astype(int) - got[0].image).max() == 0


def test_not_a_video(tmp_path):
    p = tmp_path / 'clip.mp4'
    p.write_bytes(b'definitely not a video' * 10)
    with pytest.raises(DataError, match='clip.mp4'):
        open_source(p)


# --- bad specs -----------------------------------------------------------------------------------------

def test_bad_specs(tmp_path):
    with pytest.raises(DataError, match='no such file'):
        open_source(tmp_path / 'missing.mp4')
    with pytest.raises(DataError, match='no source'):
        open_source('')
    with pytest.raises(DataError, match='holds no images'):
        open_source(tmp_path)
    with pytest.raises(DataError, match='path or a camera index'):
        open_source(3.5)
    np.save(tmp_path / 'a.npy', np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(ConfigError, match='topic'):
        open_source(tmp_path / 'a.npy', topic='/x')
    with pytest.raises(ConfigError, match='max_frames'):
        open_source(tmp_path / 'a.npy', max_frames=0)
    with pytest.raises(ConfigError, match='fps'):
        open_source(tmp_path / 'a.npy', fps=-1)


def test_missing_camera_index():
    with pytest.raises(DataError, match='camera 97'):
        open_source('97')


# --- rosbag2 -------------------------------------------------------------------------------------------

def image_msg(bgr, encoding, i, pad=0, frame_id='cam_front'):
    """A sensor_msgs/Image of ``bgr`` in ``encoding`` with ``pad`` bytes of row padding."""
    if encoding in ('uyvy', 'yuv422', 'yuyv', 'yuv422_yuy2'):
        yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
        y, u, v = yuv[:, :, 0], yuv[:, 0::2, 1], yuv[:, 0::2, 2]
        pix = np.empty(bgr.shape[:2] + (2,), np.uint8)
        if encoding in ('uyvy', 'yuv422'):
            pix[:, 0::2, 0], pix[:, 1::2, 0], pix[:, :, 1] = u, v, y
        else:
            pix[:, :, 0], pix[:, 0::2, 1], pix[:, 1::2, 1] = y, u, v
    else:
        pix = from_bgr(bgr, encoding)
    h, w, c = pix.shape
    step = w * c + pad
    rows = np.zeros((h, step), np.uint8)
    rows[:, :w * c] = pix.reshape(h, w * c)
    rows[:, w * c:] = 0xAB  # padding must never leak into the image
    return Image(header=Header(stamp=Time(sec=1000 + i, nanosec=7 * i), frame_id=frame_id), height=h, width=w,
                 encoding=encoding, is_bigendian=0, step=step, data=rows.reshape(-1))


def write_bag(path, topics, plugin=StoragePlugin.SQLITE3):
    """topics: {name: (msgtype, [message or raw bytes])}."""
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {t: w.add_connection(t, mt, typestore=TS) for t, (mt, _) in topics.items()}
        stamp = 1
        for t, (mt, msgs) in topics.items():
            for m in msgs:
                raw = m if isinstance(m, bytes) else TS.serialize_cdr(m, mt)
                w.write(conns[t], stamp, raw)
                stamp += 1


ENCODINGS = ['bgr8', 'rgb8', 'bgra8', 'rgba8', 'mono8', 'uyvy', 'yuv422', 'yuyv', 'yuv422_yuy2']


@pytest.mark.parametrize('plugin', [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_bag_every_encoding_with_padding(tmp_path, plugin):
    imgs = frames_bgr(len(ENCODINGS), h=16, w=24)
    msgs = [image_msg(img, enc, i, pad=i % 3 * 4) for i, (img, enc) in enumerate(zip(imgs, ENCODINGS))]
    bag = tmp_path / 'bag'
    write_bag(bag, {'/cam/image_raw': (Image.__msgtype__, msgs), '/chatter': (String.__msgtype__,
                                                                                [String(data='hi')])}, plugin)
    storage = next(p for p in bag.iterdir() if p.suffix in ('.db3', '.mcap'))
    for spec in (bag, storage):  # the directory and the storage file alone
        with open_source(spec) as src:  # one image topic: no --topic needed
            assert src.kind == 'rosbag' and src.topic == '/cam/image_raw' and len(src) == len(ENCODINGS)
            got = list(src)
        assert len(got) == len(ENCODINGS) and src.skipped == 0
        for i, (f, img, enc) in enumerate(zip(got, imgs, ENCODINGS)):
            assert f.stamp_ns == (1000 + i) * 10**9 + 7 * i and f.frame_id == 'cam_front'
            assert f.image.shape == (16, 24, 3) and f.image.flags.c_contiguous
            if enc == 'mono8':
                np.testing.assert_array_equal(f.image[:, :, 0], cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
            elif enc in ('bgr8', 'rgb8', 'bgra8', 'rgba8'):
                np.testing.assert_array_equal(f.image, img)
            else:  # chroma subsampling and BT.601 rounding
                assert np.abs(f.image.astype(int) - img).mean() < 12, enc


def test_bag_compressed_and_topic_choice(tmp_path):
    imgs = frames_bgr(3)
    comp = [CompressedImage(header=Header(stamp=Time(sec=5, nanosec=i), frame_id='rear'), format='png',
                            data=np.frombuffer(cv2.imencode('.png', img)[1].tobytes(), np.uint8))
            for i, img in enumerate(imgs)]
    raw = [image_msg(img, 'bgr8', i) for i, img in enumerate(imgs[:2])]
    bag = tmp_path / 'two'
    write_bag(bag, {'/rear/image_raw/compressed': (CompressedImage.__msgtype__, comp),
                    '/front/image_raw': (Image.__msgtype__, raw)})
    with pytest.raises(DataError, match='2 image topics.*--topic'):
        open_source(bag)
    with pytest.raises(DataError, match='not in the bag'):
        open_source(bag, topic='/nope')
    src = open_source(bag, topic='/rear/image_raw/compressed')
    got = list(src)
    assert len(got) == 3 and got[2].frame_id == 'rear' and got[2].stamp_ns == 5 * 10**9 + 2
    for f, img in zip(got, imgs):
        np.testing.assert_array_equal(f.image, img)
    assert len(list(open_source(bag, topic='/front/image_raw'))) == 2


def test_bag_without_images(tmp_path):
    bag = tmp_path / 'b'
    write_bag(bag, {'/chatter': (String.__msgtype__, [String(data='x')])})
    with pytest.raises(DataError, match='no image topics.*chatter'):
        open_source(bag)
    with pytest.raises(DataError, match='not an image topic'):
        open_source(bag, topic='/chatter')


def test_bag_corrupt_messages_skipped(tmp_path):
    imgs = frames_bgr(5)
    msgs = [image_msg(img, 'bgr8', i) for i, img in enumerate(imgs)]
    good = bytes(TS.serialize_cdr(msgs[1], Image.__msgtype__))
    msgs[1] = good[:40]  # cut inside the message: does not deserialize
    bad_enc = image_msg(imgs[3], 'bgr8', 3)
    bad_enc.encoding = '32FC1'  # deserializes, but not an image we can convert
    msgs[3] = bad_enc
    bag = tmp_path / 'b'
    write_bag(bag, {'/cam': (Image.__msgtype__, msgs)})
    src = open_source(bag)
    got = list(src)
    assert src.skipped == 2 and '32FC1' in src.last_error
    assert [f.stamp_ns // 10**9 for f in got] == [1000, 1002, 1004]
    for f, k in zip(got, (0, 2, 4)):
        np.testing.assert_array_equal(f.image, imgs[k])


@pytest.mark.parametrize('plugin', [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
@pytest.mark.parametrize('fraction', [0.3, 0.8, 0.97])
def test_truncated_bag(tmp_path, plugin, fraction):
    msgs = [image_msg(img, 'bgr8', i) for i, img in enumerate(frames_bgr(6))]
    bag = tmp_path / 'b'
    write_bag(bag, {'/cam': (Image.__msgtype__, msgs)}, plugin)
    storage = next(p for p in bag.iterdir() if p.suffix in ('.db3', '.mcap'))
    cut = tmp_path / ('cut' + storage.suffix)
    data = storage.read_bytes()
    cut.write_bytes(data[:int(len(data) * fraction)])
    got = []
    with pytest.raises(DataError, match='truncated or damaged'):
        for f in open_source(cut):
            got.append(f)
    assert len(got) < 6


def test_missing_rosbags_says_which_extra(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith('rosbags'):
            raise ImportError('no rosbags')
        return real_import(name, *a, **k)

    bag = tmp_path / 'b'
    write_bag(bag, {'/cam': (Image.__msgtype__, [image_msg(frames_bgr(1)[0], 'bgr8', 0)])})
    monkeypatch.setattr(builtins, '__import__', fake_import)
    with pytest.raises(DataError, match=r'qvision_ros\[bag\]'):
        open_source(bag)
