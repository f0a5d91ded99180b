"""Columnar container for the detections of one frame.

Parallel numpy arrays (one row per detection) so that every filter is a boolean mask
(``dets[dets.confidence > 0.5]``), rules compose with ``&`` and counts are ``mask.sum()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Detections", "box_iou"]


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one frame as parallel arrays; indexing returns a new object.

    Attributes:
        xyxy: ``(n, 4)`` float32 boxes ``x1, y1, x2, y2`` in image pixels.
        confidence: ``(n,)`` float32 scores.
        class_id: ``(n,)`` int64 model class ids.
        data: extra per-row columns (e.g. ``class_name``), each with first dimension ``n``.

    The dataclass is frozen (fields cannot be rebound) but the arrays themselves are plain
    numpy arrays; treat them as read-only and build new objects instead of mutating.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    data: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32)
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must have shape (n, 4), got {xyxy.shape}")
        n = xyxy.shape[0]

        confidence = np.asarray(self.confidence, dtype=np.float32)
        if confidence.shape != (n,):
            raise ValueError(f"confidence must have shape ({n},) to match xyxy, got {confidence.shape}")

        raw_class_id = np.asarray(self.class_id)
        if raw_class_id.dtype.kind == "f" and raw_class_id.size and not np.all(raw_class_id == np.round(raw_class_id)):
            raise ValueError("class_id must hold whole numbers, got non-integral floats")
        class_id = raw_class_id.astype(np.int64, copy=False)
        if class_id.shape != (n,):
            raise ValueError(f"class_id must have shape ({n},) to match xyxy, got {class_id.shape}")

        data: dict[str, np.ndarray] = {}
        for key, value in dict(self.data).items():
            column = np.asarray(value)
            if column.ndim == 0 or column.shape[0] != n:
                raise ValueError(f"data[{key!r}] must have first dimension {n} to match xyxy, got shape {column.shape}")
            data[key] = column

        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "class_id", class_id)
        object.__setattr__(self, "data", data)

    @classmethod
    def empty(cls) -> Detections:
        """A zero-row Detections, so 'nothing found' needs no special case downstream."""
        return cls(
            xyxy=np.empty((0, 4), dtype=np.float32),
            confidence=np.empty(0, dtype=np.float32),
            class_id=np.empty(0, dtype=np.int64),
        )

    @classmethod
    def merge(cls, detections: Iterable[Detections]) -> Detections:
        """Concatenate rows of several Detections (e.g. tiles or cameras).

        Zero-row items are ignored; the others must carry the same ``data`` keys, otherwise a
        column would be silently missing for some rows.
        """
        items = list(detections)
        rows = [d for d in items if len(d)]
        if not rows:
            return items[0] if items else cls.empty()
        keys = set(rows[0].data)
        for d in rows[1:]:
            if set(d.data) != keys:
                raise ValueError(f"cannot merge Detections with different data keys: {sorted(keys)} vs {sorted(d.data)}")
        return cls(
            xyxy=np.concatenate([d.xyxy for d in rows]),
            confidence=np.concatenate([d.confidence for d in rows]),
            class_id=np.concatenate([d.class_id for d in rows]),
            data={k: np.concatenate([d.data[k] for d in rows]) for k in keys},
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Any) -> Detections:
        """Select rows by boolean mask, index array, slice or single int (always a Detections)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        if isinstance(index, np.ndarray) and index.dtype == bool and index.shape != (len(self),):
            raise IndexError(f"boolean mask must have shape ({len(self)},), got {index.shape}")
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            data={k: v[index] for k, v in self.data.items()},
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        return (
            np.array_equal(self.xyxy, other.xyxy)
            and np.array_equal(self.confidence, other.confidence)
            and np.array_equal(self.class_id, other.class_id)
            and set(self.data) == set(other.data)
            and all(np.array_equal(v, other.data[k]) for k, v in self.data.items())
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays: not hashable

    @property
    def area(self) -> np.ndarray:
        """``(n,)`` box areas in square pixels (zero for degenerate boxes)."""
        w = np.clip(self.xyxy[:, 2] - self.xyxy[:, 0], 0, None)
        h = np.clip(self.xyxy[:, 3] - self.xyxy[:, 1], 0, None)
        return w * h


def _areas_and_intersections(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    return area_a, area_b, wh[..., 0] * wh[..., 1]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(n, 4)`` and ``(m, 4)`` xyxy boxes -> ``(n, m)`` float64.

    Zero-area pairs give 0 rather than NaN, so a degenerate box never matches anything.
    """
    area_a, area_b, inter = _areas_and_intersections(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_inside_share(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise share of each ``a`` box's area that lies inside each ``b`` box -> ``(n, m)`` float64 (0 for a
    degenerate ``a``): is a box part of a bigger one, whatever their sizes."""
    area_a, _, inter = _areas_and_intersections(a, b)
    return np.divide(inter, area_a[:, None], out=np.zeros_like(inter), where=area_a[:, None] > 0)
