"""Tests for scenario clips: truth schema and geometry, video decoding, byte-for-byte determinism, the
schedule of a long clip (planned, not rendered), and the local ↔ lon/lat conversion.

Clips here are tiny (18 s at 320x180, 2 fps) so the module stays well under a minute on busy cores."""
from __future__ import annotations

import json
import math
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.synth import scenario, video
from edge.synth.camera import PoleCamera
from edge.synth.scenario import INCIDENT_CLASSES, local_to_lonlat, lonlat_to_local, plan_scenario, write_scenario

SMALL = dict(minutes=0.3, fps=2.0, width=320, height=180)


def _render(out: Path, seed: int, cameras: int, progress=None) -> dict:
    path = write_scenario(out, seed, cameras=cameras, progress=progress, **SMALL)
    assert path == out / "truth.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[tuple[int, int]]]:
    out = tmp_path_factory.mktemp("clip")
    calls: list[tuple[int, int]] = []
    truth = _render(out, 11, 2, progress=lambda d, t: calls.append((d, t)))
    return out, truth, calls


def _camera(c: dict) -> PoleCamera:
    i, p = c["intrinsics"], c["pose"]
    return PoleCamera(i["width"], i["height"], i["fx"], i["fy"], i["cx"], i["cy"], p["height_m"], p["tilt_deg"],
                      p["heading_deg"], p["x_m"], p["y_m"])


def test_truth_has_the_schema(clip) -> None:
    _, truth, _ = clip
    assert truth["schema"] == 1 and truth["seed"] == 11 and truth["fps"] == 2.0
    assert truth["duration_s"] == pytest.approx(18.0)
    assert [c["id"] for c in truth["cameras"]] == ["cam1", "cam2"]
    for c in truth["cameras"]:
        assert c["video"] == f"{c['id']}.mp4"
        assert set(c["intrinsics"]) >= {"width", "height", "fx", "fy", "cx", "cy"}
        assert set(c["pose"]) >= {"x_m", "y_m", "height_m", "tilt_deg", "heading_deg"}
        assert set(c["geo_anchor"]) >= {"lon", "lat"}
    assert len(truth["incidents"]) >= 3
    for inc in truth["incidents"]:
        assert set(inc) >= {"id", "class", "appear_s", "disappear_s", "ground_xy_m", "lon", "lat", "visible_in"}
        assert inc["class"] in INCIDENT_CLASSES
        assert "cam1" in inc["visible_in"]
    assert len({i["id"] for i in truth["incidents"]}) == len(truth["incidents"])
    assert sum("missing_with" not in c for c in truth["covers"]) >= 2
    for c in truth["covers"]:
        assert set(c) >= {"id", "ground_xy_m", "lon", "lat"}
    for o in truth["occlusions"]:
        assert set(o) >= {"incident_id", "start_s", "end_s", "camera"}


def test_incident_points_project_inside_the_cameras_that_see_them(clip) -> None:
    _, truth, _ = clip
    cams = {c["id"]: _camera(c) for c in truth["cameras"]}
    for inc in truth["incidents"]:
        for cid in inc["visible_in"]:
            cam = cams[cid]
            uv, z = cam.project(np.array([[*inc["ground_xy_m"], 0.0]]))
            assert z[0] > 0
            assert 0 <= uv[0, 0] < cam.width and 0 <= uv[0, 1] < cam.height, (inc["id"], cid, uv)
        lon, lat = local_to_lonlat(*inc["ground_xy_m"], truth["cameras"][0]["geo_anchor"])
        assert (lon, lat) == pytest.approx((inc["lon"], inc["lat"]), abs=1e-7)


def test_times_are_frame_times_and_occlusions_lie_within_lifetimes(clip) -> None:
    _, truth, _ = clip
    fps, dur = truth["fps"], truth["duration_s"]
    life = {}
    for inc in truth["incidents"]:
        a, d = inc["appear_s"], inc["disappear_s"]
        end = dur if d is None else d
        assert 0 < a < end <= dur
        for t in (a, end):
            assert t * fps == pytest.approx(round(t * fps))
        life[inc["id"]] = (a, end)
    names = {c["id"] for c in truth["cameras"]}
    for o in truth["occlusions"]:
        a, end = life[o["incident_id"]]
        assert a <= o["start_s"] < o["end_s"] <= end
        assert o["camera"] in names and o["camera"] in next(i["visible_in"] for i in truth["incidents"]
                                                             if i["id"] == o["incident_id"])


def test_videos_decode_to_the_expected_frames(clip) -> None:
    out, truth, _ = clip
    for c in truth["cameras"]:
        cap = cv2.VideoCapture(str(out / c["video"]))
        n, shape = 0, None
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            n, shape = n + 1, frame.shape
        cap.release()
        assert n == truth["frames"] == round(SMALL["minutes"] * 60 * SMALL["fps"])
        assert shape == (SMALL["height"], SMALL["width"], 3)


def test_progress_is_reported_per_frame(clip) -> None:
    _, truth, calls = clip
    total = truth["frames"] * len(truth["cameras"])
    assert calls == [(k, total) for k in range(1, total + 1)]


def test_same_seed_gives_identical_files_and_camera_1_ignores_camera_2(clip, tmp_path: Path) -> None:
    out, _, _ = clip
    _render(tmp_path / "again", 11, 2)
    for name in ("truth.json", "cam1.mp4", "cam2.mp4"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    _render(tmp_path / "one", 11, 1)
    assert (tmp_path / "one" / "cam1.mp4").read_bytes() == (out / "cam1.mp4").read_bytes()


def test_different_seeds_differ(clip, tmp_path: Path) -> None:
    out, truth, _ = clip
    other = _render(tmp_path, 12, 1)
    assert other["incidents"] != truth["incidents"]
    assert (tmp_path / "cam1.mp4").read_bytes() != (out / "cam1.mp4").read_bytes()


def test_a_ten_minute_plan_has_the_promised_incidents_and_occlusions() -> None:
    plan = plan_scenario(5, 10.0, cameras=1, fps=5.0, width=320, height=180)
    incs = plan.incidents
    assert len(incs) >= 8
    assert {i.thing.cls for i in incs} == set(INCIDENT_CLASSES)
    dur = plan.duration_s
    for i in incs:
        end = i.disappear_s
        assert i.appear_s >= scenario.EDGE_GAP_S
        assert (dur if end is None else end) - i.appear_s >= scenario.MIN_LIFETIME_S
        assert end is None or end <= dur - scenario.EDGE_GAP_S
    assert any(i.disappear_s is None for i in incs) and any(i.disappear_s is not None for i in incs)
    xy = np.array([i.thing.xy for i in incs])
    gaps = np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1)) + np.eye(len(incs)) * 1e9
    assert gaps.min() > 1.0  # no two incidents on one spot
    stops = [m for m in plan.movers if m.stop_for is not None]
    incident_minutes = sum(((dur if i.disappear_s is None else i.disappear_s) - i.appear_s) / 60 for i in incs)
    assert len(stops) >= 1.0 * incident_minutes
    speeds = {kind: [(m.s[-1] - m.s[0]) / (m.t[-1] - m.t[0]) for m in plan.movers if m.stop_for is None
                     and (m.kind == "pedestrian") == (kind == "walk")] for kind in ("drive", "walk")}
    assert 5.0 <= min(speeds["drive"]) and max(speeds["drive"]) <= 15.0
    assert 1.2 <= min(speeds["walk"]) and max(speeds["walk"]) <= 1.6


def test_local_to_lonlat_scale_and_round_trip() -> None:
    anchor = {"lon": 120.55, "lat": 31.87}
    lon, lat = local_to_lonlat(1.0, 0.0, anchor)
    assert lat == anchor["lat"]
    assert lon - anchor["lon"] == pytest.approx(1 / (111320 * math.cos(math.radians(31.87))), rel=2e-3)
    _, lat = local_to_lonlat(0.0, 1.0, anchor)
    assert lat - anchor["lat"] == pytest.approx(1 / 110900, rel=2e-3)  # a degree of latitude near 32° N
    x, y = np.array([-35.2, 0.0, 12.5, 480.0]), np.array([7.0, -250.0, 0.0, 3.3])
    bx, by = lonlat_to_local(*local_to_lonlat(x, y, anchor), anchor)
    np.testing.assert_allclose(bx, x, atol=1e-6)
    np.testing.assert_allclose(by, y, atol=1e-6)


def test_missing_ffmpeg_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(video.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="install ffmpeg"):
        write_scenario(tmp_path, 1, **SMALL)
    assert not (tmp_path / "truth.json").exists()


class _Planned(Exception):
    """Raised by a stand-in planner: the arguments got past the checks."""


def _planned(*args, **kwargs):
    raise _Planned


@pytest.mark.parametrize("kwargs, expectation", [
    ({"cameras": 3}, pytest.raises(ValueError, match="cameras")),
    ({"width": 321}, pytest.raises(ValueError, match="even")),
    ({"minutes": 0}, pytest.raises(ValueError, match="positive")),
    ({"fps": -1}, pytest.raises(ValueError, match="positive")),
    ({}, does_not_raise()),
])
def test_arguments_are_checked_before_any_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kwargs: dict,
                                               expectation) -> None:
    monkeypatch.setattr(scenario, "plan_scenario", _planned)
    with expectation:
        try:
            write_scenario(tmp_path, 1, **{**SMALL, **kwargs})
        except _Planned:
            pass
