"""The small values that travel between pipeline stages."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np

EventKind = Literal["opened", "updated", "resolved"]


@dataclass(frozen=True, eq=False)
class Yuv420:
    """A decoded picture still in the decoder's planar 4:2:0 layout (I420, video range): `data` is the Y plane
    of `height` rows followed by U and V, `(height * 3 // 2, width)` uint8. Cameras deliver this; the detector
    shrinks it to the model's size before converting colour, and only evidence or a tile needs the full BGR
    picture. Copying, converting and letterboxing a 1080p frame took 2.7 ms of CPU; copying the planes and
    shrinking them first, 1.2 ms (bench/README.md)."""

    data: np.ndarray

    def __post_init__(self) -> None:
        d = self.data
        if d.dtype != np.uint8 or d.ndim != 2 or d.shape[0] % 3 or d.shape[1] % 2 or not d.flags.c_contiguous:
            raise ValueError("I420 planes must be (h * 3 // 2, w) uint8 with h and w even, contiguous; "
                             f"got {d.shape} {d.dtype}")

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0] * 2 // 3)

    @property
    def y(self) -> np.ndarray:
        """The luma plane, `(height, width)`: a view, no copy (grey pictures need nothing else)."""
        return self.data[: self.height]

    def bgr(self) -> np.ndarray:
        """The whole picture as BGR (a new array)."""
        import cv2  # here: the message and intake code import this module and never convert pictures

        return cv2.cvtColor(self.data, cv2.COLOR_YUV2BGR_I420)

    def resized_bgr(self, width: int, height: int) -> np.ndarray:
        """The picture at `width` x `height` as BGR: each plane resized on its own (bilinear, as a BGR resize
        would), then one conversion of the small picture."""
        import cv2

        h, w = self.height, self.width
        ew, eh = width + width % 2, height + height % 2  # 4:2:0 wants even sizes; odd ones get one more resize
        # the chroma planes follow Y back to back; with h / 2 odd they do not start on a row of the array
        flat, c = self.data.reshape(-1), (h // 2) * (w // 2)
        u, v = flat[h * w : h * w + c].reshape(h // 2, w // 2), flat[h * w + c :].reshape(h // 2, w // 2)
        small = np.empty((eh * 3 // 2, ew), np.uint8)
        cv2.resize(self.y, (ew, eh), dst=small[:eh], interpolation=cv2.INTER_LINEAR)
        out, sc = small.reshape(-1), (eh // 2) * (ew // 2)
        out[eh * ew : eh * ew + sc] = cv2.resize(u, (ew // 2, eh // 2), interpolation=cv2.INTER_LINEAR).reshape(-1)
        out[eh * ew + sc :] = cv2.resize(v, (ew // 2, eh // 2), interpolation=cv2.INTER_LINEAR).reshape(-1)
        bgr = cv2.cvtColor(small, cv2.COLOR_YUV2BGR_I420)
        if (ew, eh) != (width, height):
            bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)
        return bgr


Pixels = Union[np.ndarray, Yuv420]


@dataclass(frozen=True, eq=False)
class Frame:
    """One scanned picture. `ts` is seconds: media time for a file, capture time (epoch) for a live stream —
    every stage takes its time from here, never from the wall clock. `pixels` is BGR `(h, w, 3)` or, from a
    live camera, the decoder's planes (`Yuv420`); `image` is always BGR, converted on first use and kept."""

    camera_id: str
    ts: float
    pixels: Pixels
    seq: int = 0
    _bgr: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) without converting anything."""
        p = self.pixels
        if isinstance(p, Yuv420):
            return p.width, p.height
        return int(p.shape[1]), int(p.shape[0])

    @property
    def image(self) -> np.ndarray:
        """The picture as BGR `(h, w, 3)` uint8."""
        p = self.pixels
        if not isinstance(p, Yuv420):
            return p
        if self._bgr is None:
            object.__setattr__(self, "_bgr", p.bgr())
        return self._bgr  # type: ignore[return-value]


@dataclass(frozen=True)
class IncidentEvent:
    """A change in an incident's life that the centre must hear about (exactly what gets published)."""

    message_id: str
    incident_id: str
    event: EventKind
    class_name: str
    camera_id: str
    ts: float
    discovered_ts: float
    confidence: float
    box_xyxy: tuple[float, float, float, float]
    image_size: tuple[int, int]
    zone: str | None = None
    ground_xy: tuple[float, float] | None = None
    lon: float | None = None
    lat: float | None = None
    accuracy_m: float | None = None
    evidence_jpeg: bytes | None = None
    extra: dict = field(default_factory=dict)
