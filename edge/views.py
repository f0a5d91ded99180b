"""A camera's view of an incident's place: does a scan that misses the thing show it gone, or hidden?

An open incident resolves after `Rules.resolve_after_s` without a sighting. A lorry stopped at the lights over a
puddle for longer than that would resolve it, and the same puddle would open again as a second case once the lorry
drives on (held-out scenario 892: both cameras' views of a puddle hidden for most of 48 s). So each camera that sees
an incident keeps a small grey picture of its place and the ground around it (the *ring*). On a scan that misses
the thing, the ring is compared with it: where the ground around the place still looks as it did, the place was in
plain view and the thing is gone (or missed); where much of the ring changed, something stands in front of the
place, and that time does not count towards resolving it (up to `Rules.hidden_hold_s`). One camera with a clear
view of the empty place is enough to let the clock run.

The camera keeps the pictures of five sightings at least 10 s apart, and the place counts as hidden only when the
ground around it looks like none of them: a pedestrian lingering beside the thing or a lorry crossing in front of it
in some sightings does not make its empty place look hidden (with the five latest sightings, people on the pavement
beside a garbage pile in scenario 843 did, for minutes). Brightness is matched by one gain (clouds, dusk).
"""
from __future__ import annotations

import base64
import math
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from .detections import box_iou
from .types import Frame, Yuv420

VIEW_PX = 24  # the place's picture, VIEW_PX square: enough cells for a share, small enough to keep per scan
KEEP = 5  # pictures kept per camera and place
KEEP_EVERY_S = 10.0  # ... taken at least this far apart, so a pedestrian lingering beside the thing is not in most
MARGIN = 1.0  # the picture reaches this share of the box's width/height beyond each side of it
MIN_MARGIN_PX = 16.0
GAP = 0.25  # the ring leaves out the box grown by this share on each side (a puddle's wet edge, a pile's shadow)
CHANGED_LEVELS = 24.0  # a cell changed when its grey level differs by more than this after matching the gain
HIDDEN_SHARE = 0.4  # a place is hidden when more than this share of its ring changed
REGION_IOU = 0.5  # a box that moved this far from the picture's starts a new picture


@dataclass
class PlaceView:
    """One camera's picture of one incident's place: the image region it covers (pixels, x0 y0 x1 y1), which of
    its cells are ring, the box it was made around, and the latest sightings' pictures."""

    region: np.ndarray
    ring: np.ndarray
    box: np.ndarray
    crops: deque = field(default_factory=lambda: deque(maxlen=KEEP))
    kept_ts: float = -math.inf  # when the latest crop was taken


def _region(box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image region around a box, clipped to the frame."""
    w, h = size
    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = max(MARGIN * (x1 - x0), MIN_MARGIN_PX), max(MARGIN * (y1 - y0), MIN_MARGIN_PX)
    return np.array([max(0.0, x0 - mx), max(0.0, y0 - my), min(float(w), x1 + mx), min(float(h), y1 + my)])


def _ring(region: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Which cells of the region's picture are ground around the box, not the box itself."""
    x0, y0, x1, y1 = (float(v) for v in box)
    rw, rh = max(region[2] - region[0], 1.0), max(region[3] - region[1], 1.0)
    gx, gy = GAP * (x1 - x0), GAP * (y1 - y0)
    centres = (np.arange(VIEW_PX) + 0.5) / VIEW_PX
    cx, cy = region[0] + centres * rw, region[1] + centres * rh
    inner = ((cy[:, None] >= y0 - gy) & (cy[:, None] <= y1 + gy)) & ((cx[None, :] >= x0 - gx) & (cx[None, :] <= x1 + gx))
    return ~inner


def _grey(image: np.ndarray | Frame, region: np.ndarray) -> np.ndarray | None:
    """The region as a VIEW_PX square of grey levels; from a camera's planes, straight from the Y plane."""
    x0, y0 = int(region[0]), int(region[1])
    x1, y1 = max(int(np.ceil(region[2])), x0 + 1), max(int(np.ceil(region[3])), y0 + 1)
    pixels = image.pixels if isinstance(image, Frame) else image
    if isinstance(pixels, Yuv420):
        crop = pixels.y[y0:y1, x0:x1]
    else:
        crop = pixels[y0:y1, x0:x1]
        if crop.ndim == 3:
            crop = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_BGR2GRAY)
    if crop.size == 0:
        return None
    return cv2.resize(crop, (VIEW_PX, VIEW_PX), interpolation=cv2.INTER_AREA)


def remember(view: PlaceView | None, box: np.ndarray, image: np.ndarray | Frame, size: tuple[int, int],
             ts: float) -> PlaceView | None:
    """Add a sighting's picture of the place (at most one per KEEP_EVERY_S); a box that moved away from the
    picture's starts a new one."""
    if view is None or box_iou(view.box[None], np.asarray(box, np.float32)[None])[0, 0] < REGION_IOU:
        region = _region(box, size)
        ring = _ring(region, box)
        if not ring.any():
            return None
        view = PlaceView(region, ring, np.asarray(box, np.float32).copy())
    if ts - view.kept_ts < KEEP_EVERY_S:
        return view
    crop = _grey(image, view.region)
    if crop is not None:
        view.crops.append(crop)
        view.kept_ts = ts
    return view if view.crops else None


def changed_share(pictures: np.ndarray, current: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """For each earlier picture of a place (n, VIEW_PX, VIEW_PX): the share of the ring's cells that differ from the
    current one, after matching brightness."""
    ref = pictures.reshape(len(pictures), -1)[:, ring.ravel()].astype(np.float64)
    cur = current.ravel()[ring.ravel()].astype(np.float64)
    gain = cur.mean() / np.maximum(ref.mean(axis=1), 1.0)
    return np.mean(np.abs(cur[None] - gain[:, None] * ref) > CHANGED_LEVELS, axis=1)


def hidden(view: PlaceView, image: np.ndarray | Frame) -> bool:
    """Does something stand in front of the place in this picture? Only when the ground around it looks like none
    of the sightings' pictures: a lorry that crossed the ring in some of them must not make the empty place look
    hidden (872: a lane in front of a pile, busy in three of its five pictures)."""
    current = _grey(image, view.region)
    return current is not None and float(changed_share(np.stack(view.crops), current, view.ring).min()) > HIDDEN_SHARE


def view_state(view: PlaceView) -> dict:
    """The view as a restart needs it: region, box and pictures (VIEW_PX² bytes each)."""
    return {"region": [float(v) for v in view.region], "box": [float(v) for v in view.box], "kept_ts": view.kept_ts,
            "crops": base64.b64encode(b"".join(c.tobytes() for c in view.crops)).decode("ascii")}


def view_from(d: dict) -> PlaceView | None:
    box, region = np.array(d["box"], np.float32), np.array(d["region"], np.float64)
    raw = np.frombuffer(base64.b64decode(d.get("crops", "")), np.uint8)
    if raw.size == 0 or raw.size % (VIEW_PX * VIEW_PX):
        return None  # written with another picture size
    view = PlaceView(region, _ring(region, box), box, kept_ts=float(d.get("kept_ts", -math.inf)))
    view.crops.extend(raw.reshape(-1, VIEW_PX, VIEW_PX).copy())
    return view
