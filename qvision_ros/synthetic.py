"""Synthetic road scenes with exact boxes: the data of the embedded default detector and of the demo.

Everything here is deterministic: a scene is a small description (:class:`Scene` - background geometry,
objects, photometric settings, each with its own seed) drawn from ``numpy.random.default_rng``, and
:func:`render_scene` turns it into a BGR image and its annotations with OpenCV alone.  The same seed gives
the same bytes on the same NumPy/OpenCV versions.

Classes (0-based ids here, COCO category ids are ``class_id + 1``), each with a shape that tells it apart:

=============  ==================================================================
car            body with chamfered corners, cabin with windows, wheels (side view) or
               windscreen, lights and plate (front/rear view)
pedestrian     head, trapezoid torso, arms and striding legs
cyclist        rider bent over a frame on two spoked wheels
traffic_sign   round, triangular, octagonal or diamond plate on a grey pole
traffic_cone   orange cone with white bands on a base
=============  ==================================================================

Boxes.  Objects are drawn at 1, 2 or 4 times their size and area-resampled (anti-aliased edges); a pixel
belongs to an object when the object covers at least half of it.  Objects are composited far to near (by
their bottom edge, as on a road seen from a car), so nearer objects hide farther ones.  The box of an object
is the tight box ``[x, y, w, h]`` (continuous pixel coordinates, pixel ``i`` spans ``[i, i + 1)``) of its
*visible* pixels - inside the image and not hidden by a nearer object - and its visibility is the visible
pixel count over the pixel count of the whole object.  An object with visibility below
:data:`MIN_VISIBILITY` (or a visible box under 2 px) is *hidden*: :func:`render_scene` leaves it out of the
image altogether by default (so that every drawn object is annotated), or draws it and flags it
(``Annotation.hidden``; ``iscrowd`` = 1, an ignore region, in the COCO files) when asked - the video does
that, since objects cannot pop in and out of a clip.
"""
import json
import math
import os
import sys
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ConfigError, DataError

CLASSES = ('car', 'pedestrian', 'cyclist', 'traffic_sign', 'traffic_cone')
MIN_VISIBILITY = 0.3
MIN_OBJECT_SIZE = 12.0          # geometric mean of width and height, pixels
MAX_OBJECT_FRACTION = 0.5       # largest geometric-mean size as a fraction of min(width, height)
DEFAULT_SIZE = (320, 320)
IMAGE_FORMATS = ('png', 'jpg')
_COVERED = 0.5                  # coverage from which a pixel belongs to an object

# Width / height ranges of each class (a car has two views).
_ASPECTS = {
    0: ((1.5, 2.6), (1.0, 1.45)),   # car: side view, front/rear view
    1: ((0.28, 0.45),),             # pedestrian
    2: ((0.8, 1.3),),               # cyclist
    3: ((0.25, 0.5),),              # traffic sign (plate on a pole)
    4: ((0.5, 0.8),),               # traffic cone
}


# ---------------------------------------------------------------------------------------------- scenes

@dataclass(frozen=True)
class SceneObject:
    """One object: class, drawn box (left, top, width, height in image pixels, floats), and the seed of its
    look (colours, variant, orientation), so that the same object can be drawn again at another place or
    size (video)."""
    class_id: int
    x: float
    y: float
    width: float
    height: float
    style: int


@dataclass(frozen=True)
class Background:
    """Road geometry (pixels) and the seed of everything else (colours, lanes, scenery, texture)."""
    horizon: float
    vanish_x: float
    road_half_width: float      # half width of the road at the bottom row
    seed: int


@dataclass(frozen=True)
class Photometric:
    """Global lighting and sensor effects, applied after compositing:
    ``y = 255 * (clip(((x - 128) * contrast + 128 + brightness) * gain[c], 0, 255) / 255) ** gamma``, then a
    Gaussian blur of ``blur_sigma`` (0: none) and Gaussian noise of ``noise_sigma`` drawn from
    ``noise_seed``."""
    contrast: float = 1.0
    brightness: float = 0.0
    gamma: float = 1.0
    gains: tuple = (1.0, 1.0, 1.0)
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    noise_seed: int = 0


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: Background
    objects: tuple
    photometric: Photometric


@dataclass(frozen=True)
class Annotation:
    """Ground truth of one object: ``bbox`` = (x, y, w, h) pixels of the visible part, ``area`` = visible
    pixel count, ``visibility`` in [0, 1], ``hidden`` = visibility below MIN_VISIBILITY (only reported when
    hidden objects are drawn)."""
    class_id: int
    bbox: tuple
    area: int
    visibility: float
    hidden: bool = False

    @property
    def xyxy(self):
        x, y, w, h = self.bbox
        return (x, y, x + w, y + h)


def _size(size):
    """``size`` (an int for a square, or (width, height)) -> (width, height), checked."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    try:
        w, h = size
    except (TypeError, ValueError):
        raise ConfigError('size must be an integer or (width, height), got %r' % (size,)) from None
    for v in (w, h):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 32 <= v <= 4096:
            raise ConfigError('image width and height must be integers in [32, 4096], got %r' % (size,))
    return int(w), int(h)


def _seed_rng(seed, *stream):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError('seed must be an integer >= 0, got %r' % (seed,))
    return np.random.default_rng([int(seed)] + [int(s) for s in stream])


def random_background(rng, width, height):
    horizon = height * rng.uniform(0.28, 0.55)
    return Background(horizon=float(horizon), vanish_x=float(width * rng.uniform(0.3, 0.7)),
                      road_half_width=float(width * rng.uniform(0.35, 0.9)), seed=int(rng.integers(2 ** 31)))


def random_photometric(rng):
    return Photometric(contrast=float(rng.uniform(0.65, 1.25)), brightness=float(rng.uniform(-45, 35)),
                       gamma=float(np.exp(rng.uniform(np.log(0.7), np.log(1.4)))),
                       gains=tuple(float(g) for g in rng.uniform(0.85, 1.15, 3)),
                       blur_sigma=float(rng.uniform(0.4, 1.2)) if rng.random() < 0.3 else 0.0,
                       noise_sigma=float(rng.uniform(0.0, 7.0)), noise_seed=int(rng.integers(2 ** 31)))


def random_object(rng, class_id, width, height, horizon):
    """An object of ``class_id`` with a random size (geometric mean of its sides log-uniform between
    MIN_OBJECT_SIZE and MAX_OBJECT_FRACTION of the image), aspect ratio and place (bottom edge below the
    horizon, at most a sixth of it outside the image)."""
    views = _ASPECTS[class_id]
    lo, hi = views[rng.integers(len(views))]
    aspect = rng.uniform(lo, hi)
    g = math.exp(rng.uniform(math.log(MIN_OBJECT_SIZE), math.log(MAX_OBJECT_FRACTION * min(width, height))))
    w, h = g * math.sqrt(aspect), g / math.sqrt(aspect)
    shrink = min(1.0, 0.95 * width / w, 0.95 * height / h)
    w, h = w * shrink, h * shrink
    bottom = rng.uniform(min(horizon + 0.1 * h, height - 1), height + h / 6)
    x = rng.uniform(-w / 6, width - w * 5 / 6)
    # The style seed also fixes the view: an aspect in the front-view range draws a front view.
    return SceneObject(int(class_id), float(x), float(bottom - h), float(w), float(h), int(rng.integers(2 ** 31)))


def random_scene(rng, width=DEFAULT_SIZE[0], height=DEFAULT_SIZE[1], max_objects=12, empty_probability=0.06):
    """A random scene: road background, 0 (with ``empty_probability``) or 1..``max_objects`` objects of
    uniformly drawn classes, random lighting."""
    width, height = _size((width, height))
    bg = random_background(rng, width, height)
    n = 0 if rng.random() < empty_probability else int(rng.integers(1, max_objects + 1))
    objects = tuple(random_object(rng, int(rng.integers(len(CLASSES))), width, height, bg.horizon)
                    for _ in range(n))
    return Scene(width, height, bg, objects, random_photometric(rng))


# ------------------------------------------------------------------------------------------ background

def _lerp(a, b, t):
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


def render_background(bg, width, height):
    """The road scene without objects: float32 BGR [height, width, 3] in 0..255."""
    rng = np.random.default_rng(bg.seed)
    img = np.empty((height, width, 3), np.float32)
    hz = int(round(min(max(bg.horizon, 1), height - 1)))
    # Sky: vertical gradient from a zenith to a horizon colour (day, overcast or dusk).
    kind = rng.integers(3)
    if kind == 0:
        top, low = (200, 140, 80), (235, 210, 180)
    elif kind == 1:
        top, low = (170, 165, 160), (215, 210, 205)
    else:
        top, low = (120, 80, 70), (110, 160, 230)
    top = np.array(top) + rng.uniform(-20, 20, 3)
    low = np.array(low) + rng.uniform(-20, 20, 3)
    t = np.linspace(0, 1, hz, dtype=np.float32)[:, None, None]
    img[:hz] = _lerp(top, low, t)
    # Ground: grass or dirt beside the road, darker towards the horizon.
    ground = np.array([(60, 120, 70), (70, 110, 130), (90, 100, 100)][rng.integers(3)]) + rng.uniform(-20, 20, 3)
    t = np.linspace(0, 1, height - hz, dtype=np.float32)[:, None, None]
    img[hz:] = _lerp(ground * 0.8, ground * 1.1, t)
    # Scenery on the horizon: buildings and trees (colours unlike the object classes), clouds.
    for _ in range(int(rng.integers(0, 9))):
        bw = rng.uniform(0.03, 0.15) * width
        bh = rng.uniform(0.02, 0.2) * height
        x0 = rng.uniform(-bw / 2, width)
        if rng.random() < 0.6:
            col = rng.uniform(90, 170) + rng.uniform(-15, 15, 3)
            cv2.rectangle(img, (int(x0), int(hz - bh)), (int(x0 + bw), hz), col.tolist(), -1)
            for wy in np.arange(hz - bh + 3, hz - 3, max(4.0, bh / 5)):
                for wx in np.arange(x0 + 2, x0 + bw - 3, max(4.0, bw / 6)):
                    cv2.rectangle(img, (int(wx), int(wy)), (int(wx + 2), int(wy + 2)), (col * 0.6).tolist(), -1)
        else:
            r = max(2, int(bh / 3))
            cx = int(x0 + bw / 2)
            cv2.line(img, (cx, hz), (cx, int(hz - bh + r)), (40, 60, 80), max(1, r // 4))
            cv2.circle(img, (cx, int(hz - bh + r)), r, (40 + rng.uniform(0, 30), 100 + rng.uniform(0, 40), 50), -1)
    for _ in range(int(rng.integers(0, 4))):
        c = (int(rng.uniform(0, width)), int(rng.uniform(0, hz * 0.7)))
        ax = (max(1, int(rng.uniform(0.05, 0.2) * width)), max(1, int(rng.uniform(0.01, 0.04) * height)))
        cv2.ellipse(img, c, ax, 0, 0, 360, (240, 240, 240), -1)
    # Road: a trapezoid from the vanishing point, asphalt colour with a gradient.
    asphalt = rng.uniform(70, 125) + rng.uniform(-8, 8, 3)
    vx, half = bg.vanish_x, bg.road_half_width
    far = 0.02 * half

    def road_x(u, y):
        s = (y - hz) / max(1.0, height - hz)
        return vx + u * (far + (half - far) * s)

    road = np.array([[road_x(-1, hz), hz], [road_x(1, hz), hz], [road_x(1, height), height],
                     [road_x(-1, height), height]])
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(road * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    t = np.linspace(0, 1, height - hz, dtype=np.float32)[:, None, None]
    shade = np.zeros_like(img)
    shade[hz:] = _lerp(asphalt * 1.1, asphalt * 0.85, t)
    m = (mask.astype(np.float32) / 255)[..., None]
    img = img * (1 - m) + shade * m
    # Lane markings: solid edge lines, dashed inner lines (white or yellow), spaced in perspective.
    n_lanes = int(rng.integers(1, 4))
    lane_col = (235, 235, 235) if rng.random() < 0.6 else (40, 200, 230)
    for edge in (-0.95, 0.95):
        _band(img, road_x, edge, hz + 1, height, 0.012, (225, 225, 225))
    period = rng.uniform(0.25, 0.4)
    for k in range(1, 2 * n_lanes):
        u = -1 + k / n_lanes
        if abs(u) > 0.9:
            continue
        s = rng.uniform(0.02, 0.06)
        while s < 1.2:
            s1 = s * (1 + period * 0.6)
            _band(img, road_x, u, hz + s * (height - hz), min(height, hz + s1 * (height - hz)), 0.01,
                  lane_col if abs(u) < 1e-6 else (230, 230, 230))
            s *= 1 + period * 1.5
    # Shadows / stains on the road.
    stains = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(0, 4))):
        y = rng.uniform(hz, height)
        c = (int(road_x(rng.uniform(-0.8, 0.8), y)), int(y))
        ax = (max(1, int(rng.uniform(0.02, 0.15) * width)), max(1, int(rng.uniform(0.005, 0.04) * height)))
        cv2.ellipse(stains, c, ax, 0, 0, 360, 0.4, -1)
    # Texture: low-frequency brightness variation and fine static grain.
    lo = rng.normal(0, 1, (height // 24 + 2, width // 24 + 2)).astype(np.float32)
    lo = cv2.resize(lo, (width, height), interpolation=cv2.INTER_CUBIC)
    img *= (1 + rng.uniform(0.03, 0.12) * lo - stains)[..., None]
    img += rng.uniform(1, 6) * rng.standard_normal((height, width, 1), dtype=np.float32)
    return np.clip(img, 0, 255)


def _band(img, road_x, u, y0, y1, width_frac, color):
    """A marking along road coordinate ``u`` between rows y0 and y1, its width a fraction of the road."""
    if y1 - y0 < 0.5:
        return
    du = width_frac * 2
    pts = np.array([[road_x(u - du, y0), y0], [road_x(u + du, y0), y0], [road_x(u + du, y1), y1],
                    [road_x(u - du, y1), y1]])
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], color, cv2.LINE_AA, 4)


# ------------------------------------------------------------------------------------------- objects

class _Painter:
    """Draws primitives in object units (pixels of the final size, origin at the object's top-left corner)
    into a colour patch drawn on black and a coverage mask, both ``ss`` times larger than the final patch;
    :meth:`finish` area-resamples them into a premultiplied colour patch and a coverage in [0, 1]."""

    def __init__(self, pw, ph, fx, fy, w, h, ss, mirror):
        self.ss, self.fx, self.fy, self.w, self.mirror = ss, fx, fy, w, mirror
        self.pw, self.ph = pw, ph
        self.color = np.zeros((ph * ss, pw * ss, 3), np.uint8)
        self.alpha = np.zeros((ph * ss, pw * ss), np.uint8)

    def _pts(self, pts):
        p = np.array(pts, np.float64).reshape(-1, 2)
        if self.mirror:
            p[:, 0] = self.w - p[:, 0]
        p[:, 0] += self.fx
        p[:, 1] += self.fy
        return np.round(p * self.ss * 16).astype(np.int32)

    def _len(self, v):
        return max(1, int(round(v * self.ss)))

    def poly(self, pts, color):
        p = self._pts(pts)
        cv2.fillPoly(self.color, [p], color, cv2.LINE_8, 4)
        cv2.fillPoly(self.alpha, [p], 255, cv2.LINE_8, 4)

    def rect(self, x0, y0, x1, y1, color):
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color)

    def circle(self, c, r, color, thickness=-1):
        p = tuple(int(v) for v in self._pts([c])[0])
        r16 = max(1, int(round(r * self.ss * 16)))
        t = -1 if thickness < 0 else self._len(thickness)
        cv2.circle(self.color, p, r16, color, t, cv2.LINE_8, 4)
        cv2.circle(self.alpha, p, r16, 255, t, cv2.LINE_8, 4)

    def ellipse(self, c, axes, color):
        p = tuple(int(v) for v in self._pts([c])[0])
        ax = tuple(max(1, int(round(a * self.ss * 16))) for a in axes)
        cv2.ellipse(self.color, p, ax, 0, 0, 360, color, -1, cv2.LINE_8, 4)
        cv2.ellipse(self.alpha, p, ax, 0, 0, 360, 255, -1, cv2.LINE_8, 4)

    def line(self, p0, p1, width, color):
        a, b = self._pts([p0, p1])
        t = self._len(width)
        cv2.line(self.color, tuple(int(v) for v in a), tuple(int(v) for v in b), color, t, cv2.LINE_8, 4)
        cv2.line(self.alpha, tuple(int(v) for v in a), tuple(int(v) for v in b), 255, t, cv2.LINE_8, 4)

    def finish(self):
        if self.ss == 1:
            return self.color.astype(np.float32) * (self.alpha[..., None] > 0), (self.alpha > 0).astype(np.float32)
        # Area resampling of colour-drawn-on-black is the premultiplied colour of each final pixel.
        size = (self.pw, self.ph)
        premult = cv2.resize((self.color * (self.alpha[..., None] > 0)).astype(np.float32), size,
                             interpolation=cv2.INTER_AREA)
        cover = cv2.resize((self.alpha > 0).astype(np.float32), size, interpolation=cv2.INTER_AREA)
        return premult, cover


def _jitter(rng, color, amount=20):
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in color)


_CAR_COLOURS = ((40, 40, 190), (170, 80, 30), (235, 235, 235), (175, 175, 170), (35, 35, 35), (40, 200, 230),
                (60, 130, 40), (30, 90, 150), (130, 40, 110))
_CLOTHES = ((50, 50, 180), (160, 90, 40), (40, 150, 60), (40, 180, 220), (140, 60, 140), (220, 220, 220),
            (60, 60, 60), (0, 120, 230))
_SKIN = ((120, 160, 220), (90, 130, 190), (60, 90, 140), (140, 180, 230))


def _draw_car(p, w, h, rng, view_front):
    body = _jitter(rng, _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))])
    glass = _jitter(rng, (90, 70, 50), 25)
    dark = (25, 25, 25)
    if not view_front:
        r = min(0.22 * h, 0.13 * w)
        top_body = h * rng.uniform(0.34, 0.44)
        bottom_body = h - 0.45 * r
        c = 0.12 * h
        p.poly([(0, top_body + c), (c, top_body), (w - c, top_body), (w, top_body + c), (w, bottom_body - c * 0.5),
                (w - c * 0.5, bottom_body), (c * 0.5, bottom_body), (0, bottom_body - c * 0.5)], body)
        a, b = rng.uniform(0.12, 0.25), rng.uniform(0.28, 0.4)
        e, f = rng.uniform(0.6, 0.72), rng.uniform(0.78, 0.9)
        p.poly([(a * w, top_body + 1e-3), (b * w, 0), (e * w, 0), (f * w, top_body + 1e-3)], body)
        inset = 0.1 * top_body
        mid = (b + e) / 2 * w
        p.poly([(a * w + 2.2 * inset, top_body), (b * w + inset, inset), (mid - 0.5 * inset, inset),
                (mid - 0.5 * inset, top_body)], glass)
        p.poly([(mid + 0.5 * inset, top_body), (mid + 0.5 * inset, inset), (e * w - inset, inset),
                (f * w - 2.2 * inset, top_body)], glass)
        for cx in (0.2 * w, 0.8 * w):
            p.circle((cx, h - r), r, dark)
            p.circle((cx, h - r), 0.45 * r, _jitter(rng, (170, 170, 170), 20))
        p.rect(w - 0.05 * w, top_body + 0.15 * h, w, top_body + 0.25 * h, (170, 230, 245))
        p.rect(0, top_body + 0.15 * h, 0.04 * w, top_body + 0.25 * h, (30, 30, 200))
    else:
        top_body = h * rng.uniform(0.38, 0.48)
        c = 0.1 * w
        p.rect(0.05 * w, 0.84 * h, 0.24 * w, h, dark)
        p.rect(0.76 * w, 0.84 * h, 0.95 * w, h, dark)
        p.poly([(0, top_body + c), (c, top_body), (w - c, top_body), (w, top_body + c), (w, 0.88 * h),
                (0, 0.88 * h)], body)
        p.poly([(0.1 * w, top_body + 1e-3), (0.2 * w, 0), (0.8 * w, 0), (0.9 * w, top_body + 1e-3)], body)
        p.poly([(0.16 * w, top_body - 0.04 * h), (0.24 * w, 0.06 * h), (0.76 * w, 0.06 * h),
                (0.84 * w, top_body - 0.04 * h)], glass)
        light = (170, 230, 245) if rng.random() < 0.5 else (40, 40, 210)
        ly = top_body + 0.14 * h
        p.ellipse((0.15 * w, ly), (0.08 * w, 0.05 * h), light)
        p.ellipse((0.85 * w, ly), (0.08 * w, 0.05 * h), light)
        p.rect(0.32 * w, ly - 0.04 * h, 0.68 * w, ly + 0.05 * h, (45, 45, 45))
        p.rect(0.38 * w, 0.7 * h, 0.62 * w, 0.8 * h, (235, 235, 235))


def _draw_pedestrian(p, w, h, rng):
    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 10)
    shirt = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))])
    pants = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 30)
    hip = rng.uniform(0.5, 0.56) * h
    lx, rx = rng.uniform(0.08, 0.4) * w, rng.uniform(0.6, 0.92) * w
    leg = max(0.16 * w, 0.04 * h)
    p.line((0.4 * w, hip), (lx, 0.96 * h), leg, pants)
    p.line((0.6 * w, hip), (rx, 0.96 * h), leg, pants)
    p.ellipse((lx, h - 0.025 * h), (0.1 * w, 0.025 * h), (30, 30, 30))
    p.ellipse((rx, h - 0.025 * h), (0.1 * w, 0.025 * h), (30, 30, 30))
    arm = max(0.11 * w, 0.03 * h)
    for sx, ex in ((0.2 * w, rng.uniform(0.06, 0.25) * w), (0.8 * w, rng.uniform(0.75, 0.94) * w)):
        hand = (ex, rng.uniform(0.42, 0.52) * h)
        p.line((sx, 0.22 * h), hand, arm, shirt)
        p.circle(hand, 0.5 * arm, skin)
    if rng.random() < 0.3:   # dress or coat
        p.poly([(0.18 * w, 0.19 * h), (0.82 * w, 0.19 * h), (0.95 * w, 0.68 * h), (0.05 * w, 0.68 * h)], shirt)
    else:
        p.poly([(0.15 * w, 0.19 * h), (0.85 * w, 0.19 * h), (0.76 * w, hip + 0.02 * h),
                (0.24 * w, hip + 0.02 * h)], shirt)
    r = min(0.085 * h, 0.42 * w)
    p.line((0.5 * w, r), (0.5 * w, 0.2 * h), 0.5 * r, skin)
    p.circle((0.5 * w, r), r, skin)
    if rng.random() < 0.5:  # hair or hat
        p.ellipse((0.5 * w, 0.6 * r), (r, 0.6 * r), _jitter(rng, (30, 40, 60), 25))


def _draw_cyclist(p, w, h, rng):
    frame = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 30)
    shirt = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))])
    pants = _jitter(rng, (60, 60, 60), 30)
    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 10)
    r = min(0.22 * w, 0.3 * h)
    back, front = (0.02 * w + r, h - r), (0.98 * w - r, h - r)
    ring = max(0.16 * r, 0.01 * h)
    for c in (back, front):
        p.circle(c, r - ring / 2, (30, 30, 30), thickness=ring)
        for k in range(3):
            a = k * math.pi / 3 + 0.3
            p.line((c[0] - 0.8 * r * math.cos(a), c[1] - 0.8 * r * math.sin(a)),
                   (c[0] + 0.8 * r * math.cos(a), c[1] + 0.8 * r * math.sin(a)), 0.04 * r, (150, 150, 150))
    seat = (0.4 * w, h - 2.05 * r)
    crank = (0.5 * w, h - r)
    head_tube = (0.72 * w, h - 2.15 * r)
    tube = max(0.05 * r, 0.025 * h)
    for a, b in ((back, seat), (seat, crank), (crank, back), (seat, head_tube), (head_tube, front),
                 (crank, head_tube)):
        p.line(a, b, tube, frame)
    bar = (0.76 * w, h - 2.35 * r)
    p.line(head_tube, bar, tube, (40, 40, 40))
    hip = (seat[0], seat[1] - 0.06 * h)
    head_r = min(0.09 * h, 0.1 * w)
    shoulder = (rng.uniform(0.55, 0.62) * w, 2.2 * head_r + 0.06 * h)
    knee = (0.58 * w, (hip[1] + crank[1]) / 2 - 0.05 * h)
    limb = max(0.05 * w, 0.035 * h)
    p.line(hip, knee, 1.2 * limb, pants)
    p.line(knee, (crank[0] + 0.3 * r * rng.uniform(-1, 1), crank[1]), limb, pants)
    p.line(hip, shoulder, 2.2 * limb, shirt)
    p.line(shoulder, bar, 0.9 * limb, shirt)
    p.circle(bar, 0.5 * limb, skin)
    p.circle((shoulder[0] + 0.6 * head_r, shoulder[1] - 1.3 * head_r), head_r, skin)
    p.ellipse((shoulder[0] + 0.6 * head_r, shoulder[1] - 1.7 * head_r), (1.1 * head_r, 0.6 * head_r),
              _jitter(rng, (40, 40, 40), 40))


def _regular(cx, cy, r, n, phase):
    return [(cx + r * math.cos(phase + 2 * math.pi * k / n), cy + r * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def _draw_sign(p, w, h, rng):
    d = w
    r = d / 2
    c = (w / 2, r)
    pole = _jitter(rng, (150, 150, 145), 20)
    pw = max(0.1 * w, 0.02 * h)
    p.rect(w / 2 - pw / 2, r, w / 2 + pw / 2, h, pole)
    p.rect(w / 2 - 1.5 * pw, h - 0.02 * h, w / 2 + 1.5 * pw, h, (70, 70, 70))
    red, white, blue, black = (35, 30, 200), (240, 240, 240), (170, 80, 20), (20, 20, 20)
    kind = rng.integers(6)
    if kind == 0:     # prohibition: red ring, white disc, optional bar
        p.circle(c, r, red)
        p.circle(c, 0.72 * r, white)
        if rng.random() < 0.5:
            p.rect(c[0] - 0.5 * r, c[1] - 0.12 * r, c[0] + 0.5 * r, c[1] + 0.12 * r, black)
    elif kind == 1:   # warning: triangle up
        p.poly(_regular(c[0], c[1] + 0.2 * r, 1.15 * r, 3, -math.pi / 2), red)
        p.poly(_regular(c[0], c[1] + 0.2 * r, 0.7 * r, 3, -math.pi / 2), white)
        p.rect(c[0] - 0.07 * r, c[1] - 0.05 * r, c[0] + 0.07 * r, c[1] + 0.35 * r, black)
    elif kind == 2:   # stop: octagon
        p.poly(_regular(c[0], c[1], r, 8, math.pi / 8), red)
        p.rect(c[0] - 0.6 * r, c[1] - 0.12 * r, c[0] + 0.6 * r, c[1] + 0.12 * r, white)
    elif kind == 3:   # mandatory: blue disc, white arrow
        p.circle(c, r, blue)
        p.poly([(c[0] - 0.15 * r, c[1] + 0.6 * r), (c[0] + 0.15 * r, c[1] + 0.6 * r), (c[0] + 0.15 * r, c[1]),
                (c[0] + 0.45 * r, c[1]), (c[0], c[1] - 0.6 * r), (c[0] - 0.45 * r, c[1]), (c[0] - 0.15 * r, c[1])],
               white)
    elif kind == 4:   # yield: triangle down
        p.poly(_regular(c[0], c[1] - 0.15 * r, 1.15 * r, 3, math.pi / 2), red)
        p.poly(_regular(c[0], c[1] - 0.15 * r, 0.7 * r, 3, math.pi / 2), white)
    else:             # priority: yellow diamond with a white border
        p.poly(_regular(c[0], c[1], r, 4, 0), white)
        p.poly(_regular(c[0], c[1], 0.7 * r, 4, 0), (20, 190, 240))


def _draw_cone(p, w, h, rng):
    orange = _jitter(rng, (20, 110, 245), 20)
    base = orange if rng.random() < 0.5 else (45, 45, 45)
    p.rect(0, 0.9 * h, w, h, base)
    top, bot = 0.07 * w, 0.4 * w
    cx = w / 2

    def half(y):
        return top + (bot - top) * y / (0.9 * h)

    p.poly([(cx - top, 0), (cx + top, 0), (cx + bot, 0.9 * h), (cx - bot, 0.9 * h)], orange)
    for a, b in ((0.28, 0.4), (0.56, 0.68)):
        y0, y1 = a * h, b * h
        p.poly([(cx - half(y0), y0), (cx + half(y0), y0), (cx + half(y1), y1), (cx - half(y1), y1)],
               (235, 235, 235))


def draw_object(obj):
    """The object as ``(origin, premultiplied colour [ph, pw, 3] float32, coverage [ph, pw] float32)``;
    ``origin`` = (x, y) integer image position of the patch's top-left pixel."""
    w, h = obj.width, obj.height
    ox, oy = math.floor(obj.x), math.floor(obj.y)
    pw = max(1, math.ceil(obj.x + w) - ox)
    ph = max(1, math.ceil(obj.y + h) - oy)
    big = max(w, h)
    ss = 4 if big < 48 else (2 if big < 160 else 1)
    rng = np.random.default_rng(obj.style)
    mirror = bool(rng.integers(2))
    p = _Painter(pw, ph, obj.x - ox, obj.y - oy, w, h, ss, mirror)
    if obj.class_id == 0:
        _draw_car(p, w, h, rng, view_front=w / h < 1.47)
    elif obj.class_id == 1:
        _draw_pedestrian(p, w, h, rng)
    elif obj.class_id == 2:
        _draw_cyclist(p, w, h, rng)
    elif obj.class_id == 3:
        _draw_sign(p, w, h, rng)
    elif obj.class_id == 4:
        _draw_cone(p, w, h, rng)
    else:
        raise ConfigError('class_id must be in [0, %d), got %r' % (len(CLASSES), obj.class_id))
    premult, cover = p.finish()
    return (ox, oy), premult, cover


# ------------------------------------------------------------------------------------------ rendering

def _window(origin, shape, width, height):
    """Intersection of a patch with the image: (image slice, patch slice) or None."""
    (ox, oy), (ph, pw) = origin, shape[:2]
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + pw, width), min(oy + ph, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))


def apply_photometric(img, ph):
    """Lighting, blur and noise of :class:`Photometric` on a float32 BGR image -> uint8.

    Lighting runs on the image rounded to uint8, through one lookup table per channel.
    """
    v = np.arange(256, dtype=np.float64)[:, None]
    lut = np.clip(((v - 128.0) * ph.contrast + 128.0 + ph.brightness) * np.asarray(ph.gains), 0, 255)
    lut = np.round(255.0 * (lut / 255.0) ** ph.gamma).astype(np.uint8)        # [256, 3]
    base = np.clip(np.round(img), 0, 255).astype(np.uint8)
    out = cv2.LUT(base, lut.reshape(256, 1, 3))
    if ph.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), ph.blur_sigma)
    if ph.noise_sigma > 0:
        noise = np.random.default_rng(ph.noise_seed).standard_normal(out.shape, dtype=np.float32)
        out = np.clip(np.round(out + noise * np.float32(ph.noise_sigma)), 0, 255).astype(np.uint8)
    return out


def render_scene(scene, drop_hidden=True, background=None):
    """Scene -> (BGR uint8 image [height, width, 3], list of :class:`Annotation` in drawing order).

    ``drop_hidden``: hidden objects (visibility < MIN_VISIBILITY or visible box < 2 px) are not drawn
    (True) or drawn and annotated with ``hidden=True`` (False).  ``background``: a float32 image from
    :func:`render_background` to reuse (a video's static background).
    """
    W, H = scene.width, scene.height
    img = render_background(scene.background, W, H) if background is None else background.copy()
    # Far to near: a larger bottom edge is nearer to the camera.
    order = sorted(range(len(scene.objects)), key=lambda i: (scene.objects[i].y + scene.objects[i].height, i))
    drawn = [(i, draw_object(scene.objects[i])) for i in order]
    occluder = np.zeros((H, W), bool)
    keep = {}
    for i, (origin, premult, cover) in reversed(drawn):          # nearest first
        mask = cover >= _COVERED
        total = int(mask.sum())
        win = _window(origin, cover.shape, W, H)
        ann = None
        if total and win is not None:
            img_sl, patch_sl = win
            visible = mask[patch_sl] & ~occluder[img_sl]
            count = int(visible.sum())
            if count:
                ys, xs = np.nonzero(visible)
                x0, y0 = xs.min() + img_sl[1].start, ys.min() + img_sl[0].start
                x1, y1 = xs.max() + 1 + img_sl[1].start, ys.max() + 1 + img_sl[0].start
                vis = count / total
                hidden = vis < MIN_VISIBILITY or x1 - x0 < 2 or y1 - y0 < 2
                ann = Annotation(scene.objects[i].class_id, (float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
                                 count, float(vis), bool(hidden))
        if ann is None:
            ann = Annotation(scene.objects[i].class_id, (0.0, 0.0, 0.0, 0.0), 0, 0.0, True)
        if ann.hidden and drop_hidden:
            continue
        keep[i] = ann
        if win is not None:
            occluder[win[0]] |= mask[win[1]]
    annotations = []
    for i, (origin, premult, cover) in drawn:
        if i not in keep:
            continue
        win = _window(origin, cover.shape, W, H)
        if win is not None:
            img_sl, patch_sl = win
            a = cover[patch_sl][..., None]
            img[img_sl] = img[img_sl] * (1 - a) + premult[patch_sl]
        if keep[i].area > 0:
            annotations.append(keep[i])
    return apply_photometric(img, scene.photometric), annotations


def scene_for_index(seed, index, size=DEFAULT_SIZE):
    """The ``index``-th scene of the data set of ``seed`` (independent of how many images are made)."""
    w, h = _size(size)
    return random_scene(_seed_rng(seed, 0, index), w, h)


# ---------------------------------------------------------------------------------------------- COCO

def coco_categories():
    return [{'id': i + 1, 'name': name, 'supercategory': 'road'} for i, name in enumerate(CLASSES)]


def _coco_annotation(ann_id, image_id, ann):
    x, y, w, h = ann.bbox
    return {'id': ann_id, 'image_id': image_id, 'category_id': ann.class_id + 1, 'bbox': [x, y, w, h],
            'area': float(ann.area), 'iscrowd': int(ann.hidden), 'visibility': round(ann.visibility, 4)}


def generate_dataset(out_dir, n_images, seed=0, size=DEFAULT_SIZE, image_format='jpg', jpeg_quality=95):
    """Write ``n_images`` scenes of ``seed`` and their COCO annotations; returns the annotations path.

    Layout: ``out_dir/images/000000.<ext>`` ... and ``out_dir/annotations.json``, whose ``file_name``
    entries are relative to ``out_dir`` (``images/000000.jpg``).  Category ids are 1..5 in the order of
    :data:`CLASSES`; bbox = [x, y, w, h] pixels of the visible part; area = visible pixel count; every
    annotation has iscrowd 0 (hidden objects are not drawn) and an extra ``visibility`` field.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 0:
        raise ConfigError('n_images must be an integer >= 0, got %r' % (n_images,))
    if image_format not in IMAGE_FORMATS:
        raise ConfigError('image_format must be one of %s, got %r' % (IMAGE_FORMATS, image_format))
    w, h = _size(size)
    _seed_rng(seed)
    img_dir = os.path.join(out_dir, 'images')
    try:
        os.makedirs(img_dir, exist_ok=True)
    except OSError as e:
        raise DataError('cannot create the data set folder %s: %s' % (img_dir, e)) from None
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if image_format == 'jpg' else \
        [cv2.IMWRITE_PNG_COMPRESSION, 6]
    images, annotations = [], []
    for index in range(n_images):
        image, anns = render_scene(scene_for_index(seed, index, (w, h)))
        name = 'images/%06d.%s' % (index, image_format)
        ok, data = cv2.imencode('.' + image_format, image, params)
        if not ok:
            raise DataError('OpenCV could not encode image %d as %s' % (index, image_format))
        _write_bytes(os.path.join(out_dir, name), data.tobytes())
        images.append({'id': index + 1, 'file_name': name, 'width': w, 'height': h})
        for ann in anns:
            annotations.append(_coco_annotation(len(annotations) + 1, index + 1, ann))
    coco = {'info': {'description': 'qvision_ros synthetic road scenes', 'seed': int(seed), 'version': 1},
            'images': images, 'annotations': annotations, 'categories': coco_categories()}
    path = os.path.join(out_dir, 'annotations.json')
    _write_bytes(path, json.dumps(coco, indent=1).encode())
    return path


def _write_bytes(path, data):
    try:
        with open(path, 'wb') as f:
            f.write(data)
    except OSError as e:
        raise DataError('cannot write %s: %s' % (path, e)) from None


# ---------------------------------------------------------------------------------------------- video

@dataclass(frozen=True)
class _Track:
    """An object moving on the ground plane: road coordinate ``u`` (-1..1 across the road, beyond it on the
    verge) and nearness ``s`` (0 at the horizon, 1 at the bottom row), both linear in time; its pixel
    height is ``height_at_bottom * s``."""
    class_id: int
    style: int
    aspect: float
    height_at_bottom: float
    u0: float
    du: float
    s0: float
    ds: float
    start: int
    end: int


def _video_tracks(rng, n_frames, width, height):
    tracks = []
    heights = {0: 0.45, 1: 0.75, 2: 0.6, 3: 0.8, 4: 0.22}
    n = max(4, int(n_frames / 15))
    for _ in range(n):
        cid = int(rng.integers(len(CLASSES)))
        views = _ASPECTS[cid]
        lo, hi = views[rng.integers(len(views))]
        start = int(rng.integers(-n_frames // 3, n_frames))
        life = int(rng.integers(n_frames // 3, n_frames + 1))
        s0 = rng.uniform(0.12, 0.9)
        if cid in (3, 4):            # static street furniture on the verge or the lane edge
            u0, du, ds = rng.choice([-1, 1]) * rng.uniform(0.9, 1.6), 0.0, 0.0
        elif cid == 0:               # cars drive along the road, towards or away from the camera
            u0, du = rng.uniform(-0.7, 0.7), 0.0
            ds = rng.choice([-1, 1]) * rng.uniform(0.2, 0.8) / life
        else:                        # pedestrians and cyclists cross
            u0 = rng.choice([-1, 1]) * rng.uniform(1.0, 1.8)
            du = -np.sign(u0) * rng.uniform(1.5, 3.0) / life
            ds = rng.uniform(-0.1, 0.1) / life
        tracks.append(_Track(cid, int(rng.integers(2 ** 31)), float(rng.uniform(lo, hi)), heights[cid] * height,
                             float(u0), float(du), float(s0), float(ds), start, start + life))
    return tracks


def video_scene(seed, frame, n_frames, size):
    """The scene of frame ``frame`` of the clip of ``seed`` (static background and lighting, objects moving
    on the road in perspective, fresh sensor noise per frame)."""
    w, h = _size(size)
    rng = _seed_rng(seed, 1)
    bg = random_background(rng, w, h)
    photo = random_photometric(rng)
    photo = Photometric(photo.contrast, photo.brightness, photo.gamma, photo.gains, 0.0, min(photo.noise_sigma, 2.0),
                        int(_seed_rng(seed, 2, frame).integers(2 ** 31)))
    tracks = _video_tracks(rng, n_frames, w, h)
    objects = []
    hz = bg.horizon
    for t in tracks:
        if not t.start <= frame < t.end:
            continue
        k = frame - t.start
        s = t.s0 + t.ds * k
        if s < 0.05:
            continue
        oh = t.height_at_bottom * s
        ow = oh * t.aspect
        if math.sqrt(ow * oh) < MIN_OBJECT_SIZE * 0.75:
            continue
        bottom = hz + s * (h - hz)
        far = 0.02 * bg.road_half_width
        cx = bg.vanish_x + (t.u0 + t.du * k) * (far + (bg.road_half_width - far) * s)
        objects.append(SceneObject(t.class_id, float(cx - ow / 2), float(bottom - oh), float(ow), float(oh), t.style))
    return Scene(w, h, bg, tuple(objects), photo)


def write_video(path, n_frames=150, seed=0, size=(480, 360), fps=15.0, ground_truth=True):
    """Write a clip of moving objects on a road; returns ``(video path, ground-truth path or None)``.

    ``path`` ending in ``.mp4`` is written with the ``mp4v`` codec; when OpenCV cannot write that here (no
    encoder), an ``.avi`` with ``MJPG`` is written beside it instead, and that path is returned.  The ground
    truth is a COCO file ``<video stem>.json``: one image per frame (``frame_index``, ``file_name`` =
    ``<video name>#<frame>``), hidden objects flagged with ``iscrowd`` 1 (ignore regions).
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ConfigError('n_frames must be an integer >= 1, got %r' % (n_frames,))
    if not (isinstance(fps, (int, float)) and 0 < fps <= 240):
        raise ConfigError('fps must be a number in (0, 240], got %r' % (fps,))
    w, h = _size(size)
    _seed_rng(seed)
    root, ext = os.path.splitext(path)
    candidates = [(path, 'mp4v')] if ext.lower() == '.mp4' else []
    candidates.append((path if ext.lower() == '.avi' else root + '.avi', 'MJPG'))
    background = render_background(video_scene(seed, 0, n_frames, (w, h)).background, w, h)
    for out_path, codec in candidates:
        writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*codec), float(fps), (w, h))
        if writer.isOpened():
            break
        writer.release()
    else:
        raise DataError('OpenCV cannot write video here (tried %s); install an OpenCV build with a video '
                        'encoder' % ', '.join('%s (%s)' % c for c in candidates))
    images, annotations = [], []
    name = os.path.basename(out_path)
    try:
        for frame in range(n_frames):
            image, anns = render_scene(video_scene(seed, frame, n_frames, (w, h)), drop_hidden=False,
                                       background=background)
            writer.write(image)
            images.append({'id': frame + 1, 'file_name': '%s#%d' % (name, frame), 'frame_index': frame,
                           'width': w, 'height': h})
            for ann in anns:
                annotations.append(_coco_annotation(len(annotations) + 1, frame + 1, ann))
    finally:
        writer.release()
    gt_path = None
    if ground_truth:
        gt_path = os.path.splitext(out_path)[0] + '.json'
        coco = {'info': {'description': 'qvision_ros synthetic road video', 'seed': int(seed), 'fps': float(fps),
                         'video': name, 'version': 1},
                'images': images, 'annotations': annotations, 'categories': coco_categories()}
        _write_bytes(gt_path, json.dumps(coco, indent=1).encode())
    return out_path, gt_path


def _parse_size(text):
    try:
        w, _, h = text.lower().partition('x')
        return (int(w), int(h)) if h else int(w)
    except ValueError:
        raise ConfigError('size must be N or WxH, got %r' % (text,)) from None


def main(argv=None):
    """``python -m qvision_ros.synthetic dataset OUT_DIR ...`` or ``... video PATH ...``."""
    import argparse
    p = argparse.ArgumentParser(prog='qvision-synthetic', description='Synthetic road scenes with exact boxes.')
    sub = p.add_subparsers(dest='what', required=True)
    d = sub.add_parser('dataset', help='images + COCO annotations.json')
    d.add_argument('out_dir')
    d.add_argument('--images', type=int, default=500)
    d.add_argument('--seed', type=int, default=1)
    d.add_argument('--size', default='320', help='N or WxH')
    d.add_argument('--format', choices=IMAGE_FORMATS, default='jpg')
    v = sub.add_parser('video', help='a clip of moving objects + COCO ground truth per frame')
    v.add_argument('path', help='.mp4 (mp4v, falls back to .avi MJPG) or .avi')
    v.add_argument('--frames', type=int, default=150)
    v.add_argument('--seed', type=int, default=0)
    v.add_argument('--size', default='640x480', help='N or WxH')
    v.add_argument('--fps', type=float, default=15.0)
    args = p.parse_args(argv)
    try:
        if args.what == 'dataset':
            print(generate_dataset(args.out_dir, args.images, args.seed, _parse_size(args.size), args.format))
        else:
            print(*write_video(args.path, args.frames, args.seed, _parse_size(args.size), args.fps))
    except (ConfigError, DataError) as e:
        sys.exit('error: %s' % e)
    return 0


if __name__ == '__main__':
    sys.exit(main())


__all__ = ['CLASSES', 'MIN_VISIBILITY', 'Annotation', 'Background', 'Photometric', 'Scene', 'SceneObject',
           'apply_photometric', 'coco_categories', 'draw_object', 'generate_dataset', 'random_background',
           'random_object', 'random_photometric', 'random_scene', 'render_background', 'render_scene',
           'scene_for_index', 'video_scene', 'write_video', 'main']
