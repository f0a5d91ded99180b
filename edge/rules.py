"""Per-camera rules: which detections count — zones, per-class thresholds, box size limits.

Pure and vectorised: a rule set turns a frame's Detections into the subset that counts, each tagged with the
zone it lies in. Filters are boolean masks that compose with `&`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Rules
from .detections import Detections


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(n,2) points, (k,2) polygon → (n,) bool, by even-odd ray casting over all edges at once."""
    if len(points) == 0:
        return np.zeros(0, bool)
    x, y = points[:, 0:1], points[:, 1:2]
    x1, y1 = polygon[:, 0][None, :], polygon[:, 1][None, :]
    x2, y2 = np.roll(polygon[:, 0], -1)[None, :], np.roll(polygon[:, 1], -1)[None, :]
    crosses = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    return (crosses & (x < xint)).sum(axis=1) % 2 == 1


def anchor_points(xyxy: np.ndarray) -> np.ndarray:
    """Bottom-centre of each box: where a thing touches the ground, the point zones are drawn around."""
    return np.column_stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, xyxy[:, 3]])


@dataclass(frozen=True)
class RuleSet:
    """Rules compiled against a model's class list, ready to apply to every frame."""

    rules: Rules
    class_names: tuple[str, ...]
    thresholds: np.ndarray  # (nc,)
    enabled: np.ndarray  # (nc,) bool
    min_area: np.ndarray
    max_area: np.ndarray
    zone_polys: tuple[np.ndarray, ...]
    zone_class_mask: np.ndarray  # (zones, nc) bool

    @classmethod
    def compile(cls, rules: Rules, class_names: list[str], default_thresholds: list[float]) -> "RuleSet":
        nc = len(class_names)
        thr = np.asarray(default_thresholds, np.float32).copy()
        en = np.ones(nc, bool)
        amin, amax = np.zeros(nc, np.float32), np.ones(nc, np.float32)
        unknown = sorted(set(rules.classes) - set(class_names))
        for z in rules.zones:
            unknown += sorted(set(z.classes or []) - set(class_names))
        if unknown:
            raise ValueError(f"unknown classes {sorted(set(unknown))}; the model knows {class_names}")
        for i, name in enumerate(class_names):
            r = rules.classes.get(name)
            if r is None:
                continue
            en[i] = r.enabled
            if r.threshold is not None:
                thr[i] = r.threshold
            amin[i], amax[i] = r.min_area, r.max_area
        polys = tuple(np.asarray(z.polygon, np.float64) for z in rules.zones)
        zmask = np.array([[z.classes is None or n in z.classes for n in class_names] for z in rules.zones], bool)
        return cls(rules, tuple(class_names), thr, en, amin, amax, polys, zmask.reshape(len(polys), nc))

    def tiles_px(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The rules' tiles in this frame's pixels."""
        return [(int(x0 * width), int(y0 * height), int(np.ceil(x1 * width)), int(np.ceil(y1 * height)))
                for x0, y0, x1, y1 in self.rules.tiles]

    @property
    def keep_alive(self) -> np.ndarray:
        """Per class, the confidence that keeps an open incident open (hysteresis below the threshold)."""
        return self.thresholds * np.float32(self.rules.persistence.keep_alive_ratio)

    @property
    def min_threshold(self) -> float:
        """The lowest confidence any enabled class needs, keep-alive included: ask the detector for no less."""
        return float(self.keep_alive[self.enabled].min()) if self.enabled.any() else 1.0

    def apply(self, dets: Detections, width: int, height: int) -> tuple[Detections, np.ndarray]:
        """The detections that count (at or above the threshold), and the zone index of each (-1: no zones)."""
        kept, zone, strong = self.apply_with_weak(dets, width, height)
        return kept[strong], zone[strong]

    def apply_with_weak(self, dets: Detections, width: int,
                        height: int) -> tuple[Detections, np.ndarray, np.ndarray]:
        """As :meth:`apply`, plus the weak sightings (keep-alive ≤ confidence < threshold) that may only keep an
        open incident open; the third array says which are strong."""
        if len(dets) == 0:
            return dets, np.zeros(0, np.int64), np.zeros(0, bool)
        c = dets.class_id
        area = (dets.xyxy[:, 2] - dets.xyxy[:, 0]) * (dets.xyxy[:, 3] - dets.xyxy[:, 1]) / float(width * height)
        keep = self.enabled[c] & (dets.confidence >= self.keep_alive[c]) & (area >= self.min_area[c]) & (area <= self.max_area[c])
        zone = np.full(len(dets), -1, np.int64)
        if self.zone_polys:
            pts = anchor_points(dets.xyxy) / np.array([width, height])
            zone[:] = len(self.zone_polys)
            for zi in range(len(self.zone_polys) - 1, -1, -1):  # first listed zone wins
                inside = points_in_polygon(pts, self.zone_polys[zi]) & self.zone_class_mask[zi][c]
                zone[inside] = zi
            keep &= zone < len(self.zone_polys)
        return dets[keep], zone[keep], (dets.confidence >= self.thresholds[c])[keep]

    def zone_name(self, index: int) -> str | None:
        return self.rules.zones[index].name if 0 <= index < len(self.rules.zones) else None
