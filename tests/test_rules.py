"""Per-camera rules: which detections count (threshold, area, zones) and which only keep an incident open."""
from __future__ import annotations

import numpy as np
import pytest

from edge.config import Rules
from edge.detections import Detections
from edge.rules import RuleSet

NAMES = ["manhole_cover", "manhole_open", "ponding"]


def rs(**rules) -> RuleSet:
    return RuleSet.compile(Rules.model_validate(rules), NAMES, [0.5, 0.5, 0.5])


def dets(rows) -> Detections:
    a = np.array(rows, np.float32)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int64))


def test_threshold_area_and_keep_alive_band() -> None:
    r = rs(classes={"ponding": {"threshold": 0.7, "max_area": 0.5}}, persistence={"keep_alive_ratio": 0.5})
    d = dets([[0, 0, 10, 10, 0.80, 2],   # strong ponding
              [0, 0, 10, 10, 0.40, 2],   # weak: 0.35 <= 0.40 < 0.7
              [0, 0, 10, 10, 0.30, 2],   # below the keep-alive band
              [0, 0, 90, 90, 0.90, 2],   # too big (81 % of the image)
              [0, 0, 10, 10, 0.55, 1]])  # manhole_open at the default 0.5
    kept, zone, strong = r.apply_with_weak(d, 100, 100)
    assert kept.confidence.tolist() == pytest.approx([0.8, 0.4, 0.55])
    assert strong.tolist() == [True, False, True] and zone.tolist() == [-1, -1, -1]
    only, _ = r.apply(d, 100, 100)
    assert only.confidence.tolist() == pytest.approx([0.8, 0.55])  # apply(): what may open an incident
    assert r.min_threshold == pytest.approx(0.25)  # the detector is asked down to the lowest keep-alive


def test_keep_alive_ratio_1_is_no_hysteresis() -> None:
    r = rs(persistence={"keep_alive_ratio": 1.0})
    kept, _, strong = r.apply_with_weak(dets([[0, 0, 10, 10, 0.45, 2], [0, 0, 10, 10, 0.6, 2]]), 100, 100)
    assert kept.confidence.tolist() == pytest.approx([0.6]) and strong.all()


def test_zones_first_listed_wins_and_outside_is_dropped() -> None:
    r = rs(zones=[{"name": "road", "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]], "classes": ["ponding"]},
                  {"name": "all", "polygon": [[0, 0], [1, 0], [1, 0.5], [0, 0.5]]}])
    d = dets([[10, 10, 20, 20, 0.9, 2],   # bottom-centre (15, 20): in both → road
              [60, 10, 70, 20, 0.9, 2],   # (65, 20): only in "all"
              [60, 70, 70, 80, 0.9, 2],   # (65, 80): in none → dropped
              [10, 10, 20, 20, 0.9, 1]])  # manhole_open in "road" (ponding only) → falls to "all"
    kept, zone = r.apply(d, 100, 100)
    assert [r.zone_name(int(z)) for z in zone] == ["road", "all", "all"]
    assert kept.class_id.tolist() == [2, 2, 1]


def test_unknown_class_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="potholes"):
        rs(classes={"potholes": {"threshold": 0.5}})
