"""The small values that travel between pipeline stages."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

EventKind = Literal["opened", "updated", "resolved"]


@dataclass(frozen=True)
class Frame:
    """One scanned picture. `ts` is seconds: media time for a file, capture time (epoch) for a live stream —
    every stage takes its time from here, never from the wall clock."""

    camera_id: str
    ts: float
    image: np.ndarray
    seq: int = 0


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
