"""Tests for scenario clips: truth schema and geometry, video decoding, byte-for-byte determinism, the
schedule of a long clip (planned, not rendered), and the local ↔ lon/lat conversion.

Clips here are tiny (18 s at 320x180, 2 fps) so the module stays well under a minute on busy cores."""
from __future__ import annotations

import dataclasses
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


def test_no_two_covers_on_the_street_at_once_overlap() -> None:
    """An open manhole's cover lies on its spot before and after it, so two manholes open at different times
    must not share a spot: held-out scenario 873 had two covers overlapping for minutes, a scene no street
    has, which the detector read as a puddle; here seed 33 had two covers with rims 0.26 m apart."""
    plan = plan_scenario(33, 10.0, cameras=1, fps=5.0, width=320, height=180)
    covers = [i for i in plan.items if i.role == "cover"]
    assert sum(c.of_incident is not None for c in covers) >= 2
    for k, a in enumerate(covers):
        for b in covers[k + 1:]:
            together = any(a0 < b1 and b0 < a1 for a0, a1 in a.windows for b0, b1 in b.windows)
            apart = math.hypot(a.thing.x - b.thing.x, a.thing.y - b.thing.y)
            assert not together or apart >= scenario._radius(a.thing) + scenario._radius(b.thing), (a.name, b.name, apart)


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


# ----------------------------------------------------------------------------- the site beside the clip
def test_the_clip_comes_with_a_site_that_loads(clip) -> None:
    from edge.config import load_rules, load_site, rules_path

    out, truth, _ = clip
    site = load_site(out / "site.yaml")
    assert site.edge_id == "synth-11" and site.admin_code == "320582" and site.state_dir == "var"
    assert site.geo.grid_layer == "grids.geojson" and site.geo.inventory == "covers.geojson"
    # the inventory holds every cover, so a cover-less spot that looks open (a drain grate) needs a surer sighting
    assert site.geo.off_inventory_open_threshold == 0.8
    assert [c.id for c in site.cameras] == ["cam1", "cam2"]
    cams = {c["id"]: c for c in truth["cameras"]}
    for cam in site.cameras:
        assert (out / cam.url).is_file() and cam.scan_interval_s == 2.0
        rules = load_rules(rules_path(out / "site.yaml", cam))
        assert rules.camera == cam.id and rules.resolve_after_s == 30.0 and rules.persistence.window_s == 20.0
        # both halves of the frame, and the far ground (its upper 60 %) in near-square crops
        assert rules.tiles[:2] == [(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)]
        far = rules.tiles[2:]  # overlapping crops of the upper 60 %, so no far thing is cut by every crop's edge
        assert [t[3] for t in far] == [0.6] * 5 and far[0][0] == 0.0 and far[-1][2] == 1.0
        assert all(a[2] > b[0] for a, b in zip(far, far[1:]))
        a = cam.calibration.anchor
        assert {"lon": a.lon, "lat": a.lat} == cams[cam.id]["geo_anchor"]
    cal1, cal2 = site.cameras[0].calibration, site.cameras[1].calibration
    assert len(cal1.points) >= 8 and cal1.pose is None and cal1.image_size == (SMALL["width"], SMALL["height"])
    true1 = _camera(cams["cam1"])
    ground = np.array([p.ground for p in cal1.points])
    uv, _ = true1.project(np.column_stack([ground, np.zeros(len(ground))]))
    assert np.abs(uv - np.array([p.image for p in cal1.points])).max() < 4.0  # ~0.7 px picking, ~3 cm survey noise
    dist = true1.ground_distance(ground)
    assert dist.min() >= 7.8 and dist.max() <= 40.2
    assert (ground[:, 0] < 0).sum() >= 2 and (ground[:, 0] > 0).sum() >= 2  # both sides of the road's centre line
    assert cal2.pose is not None and not cal2.points
    p2 = cams["cam2"]["pose"]
    assert (cal2.pose.x_m, cal2.pose.y_m, cal2.pose.height_m) == pytest.approx((p2["x_m"], p2["y_m"], p2["height_m"]),
                                                                                abs=1e-3)
    assert cal2.pose.fx == pytest.approx(cams["cam2"]["intrinsics"]["fx"], rel=0.01)


def _local_bounds(feat: dict, anchor: dict) -> tuple[float, float, float, float]:
    ring = np.array(feat["geometry"]["coordinates"][0])
    x, y = lonlat_to_local(ring[:, 0], ring[:, 1], anchor)
    return float(x.min()), float(y.min()), float(x.max()), float(y.max())


def test_the_grid_layer_holds_each_incident_in_its_truth_cell(clip) -> None:
    shapely_geometry = pytest.importorskip("shapely.geometry")
    out, truth, _ = clip
    anchor = truth["cameras"][0]["geo_anchor"]
    feats = json.loads((out / "grids.geojson").read_text(encoding="utf-8"))["features"]
    codes = [f["properties"]["grid_code"] for f in feats]
    assert len(set(codes)) == len(codes) >= 36
    for f in feats:
        p = f["properties"]
        assert len(p["grid_code"]) == 15 and p["grid_code"].isdigit() and p["grid_code"].startswith("320582")
        assert p["street_code"] == p["grid_code"][:9] and p["community_code"] == p["grid_code"][:12]
        x0, y0, x1, y1 = _local_bounds(f, anchor)
        assert (x1 - x0) * (y1 - y0) == pytest.approx(10_000.0, abs=1.0)  # a 万米单元网格
    boxes = np.array([_local_bounds(f, anchor) for f in feats])
    assert boxes[:, 0].min() <= -300 and boxes[:, 1].min() <= -300 and boxes[:, 2].max() >= 300 and boxes[:, 3].max() >= 300
    site = truth["site"]
    assert site["grid_cell_m"] == 100.0 and site["grid_origin_m"] != [0.0, 0.0]
    cam1_y = truth["cameras"][0]["pose"]["y_m"]
    borders = site["grid_origin_m"][1] + 100.0 * np.arange(-5, 6)
    assert (np.abs(np.abs(borders - cam1_y) - 21.0) <= 9.0).any()  # a cell border crosses the watched street
    polys = [(c, shapely_geometry.shape(f["geometry"])) for c, f in zip(codes, feats)]
    for inc in truth["incidents"]:
        pt = shapely_geometry.Point(inc["lon"], inc["lat"])
        assert inc["grid_code"] in [c for c, g in polys if g.covers(pt)], inc["id"]
    from edge.geo import GridLayer  # the runtime's own reader agrees

    layer = GridLayer.load(out / "grids.geojson")
    found = layer.lookup([i["lon"] for i in truth["incidents"]], [i["lat"] for i in truth["incidents"]])
    assert [c.grid_code for c in found] == [i["grid_code"] for i in truth["incidents"]]


def test_the_inventory_holds_every_cover_and_the_open_manholes_ids(clip) -> None:
    from edge.geo import COVER_KINDS, Inventory

    out, truth, _ = clip
    feats = json.loads((out / "covers.geojson").read_text(encoding="utf-8"))["features"]
    ids = [f["properties"]["component_id"] for f in feats]
    assert len(set(ids)) == len(ids) == len(truth["covers"]) + len(truth["site"]["inventory_outside_view"])
    kinds = {legacy: name for name, legacy, _ in COVER_KINDS if legacy}
    for f, cid in zip(feats, ids):
        assert len(cid) == 16 and cid.isdigit() and cid.startswith("32058201") and 1 <= int(cid[8:10]) <= 12
        assert f["properties"]["kind"] == kinds[cid[6:10]] and f["geometry"]["type"] == "Point"
    at = {f["properties"]["component_id"]: f["geometry"]["coordinates"] for f in feats}
    for c in truth["covers"]:
        assert at[c["component_id"]] == [c["lon"], c["lat"]]
    assert len(truth["site"]["inventory_outside_view"]) >= 4
    for c in truth["site"]["inventory_outside_view"]:
        assert min(math.hypot(c["ground_xy_m"][0] - cam["pose"]["x_m"], c["ground_xy_m"][1] - cam["pose"]["y_m"])
                   for cam in truth["cameras"]) > 60.0
    replaced = {c["missing_with"]: c["component_id"] for c in truth["covers"] if "missing_with" in c}
    opens = [i for i in truth["incidents"] if i["class"] == "manhole_open"]
    assert opens, "seed 11 plans an open manhole"
    for inc in opens:
        assert inc["component_id"] == replaced[inc["id"]] and inc["component_id"] in ids
    assert all("component_id" not in i for i in truth["incidents"] if i["class"] != "manhole_open")
    assert len(Inventory.load(out / "covers.geojson")) == len(ids)


def test_the_site_files_depend_on_the_plan_only(clip, tmp_path: Path) -> None:
    out, _, _ = clip
    plan = plan_scenario(11, SMALL["minutes"], cameras=2, fps=SMALL["fps"], width=SMALL["width"],
                         height=SMALL["height"])
    assert scenario.write_site(tmp_path, plan) == tmp_path / "site.yaml"
    for name in ("site.yaml", "grids.geojson", "covers.geojson", "rules/cam1.yaml", "rules/cam2.yaml"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    other = dataclasses.replace(plan, seed=12, views=plan.views[:1])  # another seed's layers, one camera
    scenario.write_site(tmp_path / "other", other)
    assert (tmp_path / "other" / "grids.geojson").read_bytes() != (out / "grids.geojson").read_bytes()
    assert not (tmp_path / "other" / "rules" / "cam2.yaml").exists()
