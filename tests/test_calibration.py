"""Ground calibration: exact control points from a known pole camera give back its mapping; a pose gives the same;
lon/lat points are the same as local metres; a calibration that cannot be right is refused with a sentence naming
the camera and the problem; `calibrate` prints residuals, draws a picture and never shows a password."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from edge.calibration import (CalibrationError, GroundMap, POSE_SIGMA_M, add_calibrate_parser, draw_calibration,
                              format_report, ground_map, ground_maps)
from edge.config import Calibration, Site
from edge.synth.camera import PoleCamera

try:
    from edge.geo import local_to_lonlat
except ImportError:
    from edge.synth.scenario import local_to_lonlat

ANCHOR = {"lon": 120.15, "lat": 30.28}
CAM = PoleCamera.from_hfov(1280, 720, 70.0, height_m=8.0, tilt_deg=25.0, heading_deg=30.0, x_m=2.0, y_m=-3.0)
# surveyed pixels spread over the frame (the whole frame sees ground: the horizon is above it at this tilt)
PIX = np.array([[90, 690], [1190, 700], [640, 520], [220, 380], [1080, 350], [600, 240], [330, 120], [1000, 90]],
               dtype=float)


def ground_of(cam: PoleCamera, uv: np.ndarray) -> np.ndarray:
    return cam.image_to_ground(np.asarray(uv, dtype=float))


def cal_dict(uv: Any, xy: Any = None, lonlat: Any = None, names: bool = True, **extra: Any) -> dict:
    pts = []
    for i, p in enumerate(np.asarray(uv, dtype=float)):
        d: dict[str, Any] = {"image": [float(p[0]), float(p[1])]}
        if xy is not None:
            d["ground"] = [float(v) for v in xy[i]]
        else:
            d["lonlat"] = [float(v) for v in lonlat[i]]
        if names:
            d["name"] = f"m{i + 1}"
        pts.append(d)
    return {"anchor": dict(ANCHOR), "points": pts, **extra}


def make_cal(uv: Any, xy: Any = None, **kw: Any) -> Calibration:
    return Calibration.model_validate(cal_dict(uv, xy, **kw))


def pose_dict(cam: PoleCamera) -> dict:
    return {k: v for k, v in cam.to_dict().items()}


def view_pixels(cam: PoleCamera, n: int = 25) -> np.ndarray:
    us, vs = np.meshgrid(np.linspace(0, cam.width - 1, n), np.linspace(0, cam.height - 1, n))
    return np.column_stack([us.ravel(), vs.ravel()])


@pytest.fixture(scope="module")
def gm() -> GroundMap:
    return ground_map(make_cal(PIX, ground_of(CAM, PIX), image_size=[1280, 720]), "cam1")


# ------------------------------------------------------------------------------------------ fit
def test_exact_points_reproduce_the_camera(gm: GroundMap) -> None:
    assert gm.source == "points" and gm.image_size == (1280, 720)
    assert gm.point_names == tuple(f"m{i + 1}" for i in range(len(PIX)))
    assert gm.residuals_m is not None and np.max(gm.residuals_m) < 1e-6 and gm.rms_m < 1e-6
    px = view_pixels(CAM)
    err = np.linalg.norm(gm.to_ground(px) - ground_of(CAM, px), axis=1)
    assert np.max(err) < 0.01
    # and back: ground -> image is the inverse, and agrees with the camera's projection
    xy = gm.to_ground(px)
    assert np.allclose(gm.to_image(xy), px, atol=1e-3)
    uv_cam, _ = CAM.project(np.column_stack([xy, np.zeros(len(xy))]))
    assert np.allclose(gm.to_image(xy), uv_cam, atol=1e-3)


def test_pose_map_agrees_with_points_map(gm: GroundMap) -> None:
    pose = ground_map(Calibration.model_validate({"anchor": ANCHOR, "pose": pose_dict(CAM)}), "cam1")
    assert pose.source == "pose" and pose.residuals_m is None and pose.rms_m is None
    assert pose.image_size == (1280, 720)
    px = view_pixels(CAM)
    assert np.max(np.linalg.norm(pose.to_ground(px) - gm.to_ground(px), axis=1)) < 0.05
    assert pose.sigma_m == POSE_SIGMA_M
    assert np.all(pose.accuracy_m(px) >= POSE_SIGMA_M)


def test_lonlat_points_give_the_same_mapping(gm: GroundMap) -> None:
    xy = ground_of(CAM, PIX)
    lon, lat = local_to_lonlat(xy[:, 0], xy[:, 1], ANCHOR)
    ll = ground_map(make_cal(PIX, lonlat=np.column_stack([lon, lat])), "cam1")
    px = view_pixels(CAM)
    assert np.max(np.linalg.norm(ll.to_ground(px) - gm.to_ground(px), axis=1)) < 0.01
    back = ll.to_lonlat(px[:3])
    g = gm.to_ground(px[:3])
    assert np.allclose(back, np.column_stack(local_to_lonlat(g[:, 0], g[:, 1], ANCHOR)), atol=1e-7)


def test_noisy_points_have_residuals_in_the_report() -> None:
    rng = np.random.default_rng(4)
    noisy = PIX + rng.normal(0, 1.0, PIX.shape)
    g = ground_map(make_cal(noisy, ground_of(CAM, PIX)), "cam1")
    assert g.residuals_m is not None and len(g.residuals_m) == len(PIX)
    assert 0.001 < g.rms_m < 1.0 and g.sigma_m > g.rms_m
    rep = format_report(g, "cam1")
    for name, r in zip(g.point_names, g.residuals_m):
        line = next(ln for ln in rep.splitlines() if ln.startswith(name + " "))
        assert f"{r:.3f}" in line
    assert f"RMS {g.rms_m:.3f} m" in rep


def test_four_points_fit_exactly_and_assume_the_pose_error() -> None:
    g = ground_map(make_cal(PIX[[0, 1, 4, 6]], ground_of(CAM, PIX[[0, 1, 4, 6]])), "cam1")
    assert g.rms_m < 1e-6 and g.sigma_m == POSE_SIGMA_M
    assert "4 points always fit exactly" in format_report(g, "cam1")


def test_accuracy_grows_with_distance(gm: GroundMap) -> None:
    column = np.column_stack([np.full(12, 640.0), np.linspace(715, 5, 12)])  # bottom (near) to top (far)
    acc = gm.accuracy_m(column)
    assert np.all(np.diff(acc) > 0)
    mpp = gm.metres_per_pixel(column)
    assert np.all(np.diff(mpp) > 0)
    assert np.allclose(acc, np.sqrt(gm.sigma_m ** 2 + (4.0 * mpp) ** 2))
    # metres_per_pixel is the longer side of the pixel's ground footprint
    uv = np.array([[640.0, 400.0]])
    g0, gu, gv = gm.to_ground(uv), gm.to_ground(uv + [1, 0]), gm.to_ground(uv + [0, 1])
    fd = max(np.linalg.norm(gu - g0), np.linalg.norm(gv - g0))
    assert gm.metres_per_pixel(uv)[0] == pytest.approx(fd, rel=0.02)


def test_in_view(gm: GroundMap) -> None:
    inside = gm.to_ground(np.array([[640.0, 360.0], [100.0, 650.0]]))
    h = np.radians(CAM.heading_deg)
    fwd = np.array([np.sin(h), np.cos(h)])
    right = np.array([np.cos(h), -np.sin(h)])
    behind = np.array([CAM.x_m, CAM.y_m]) - 20 * fwd
    aside = np.array([CAM.x_m, CAM.y_m]) + 5 * fwd + 60 * right  # in front, far outside the frame's left/right
    assert gm.in_view(np.vstack([inside, behind, aside])).tolist() == [True, True, False, False]
    assert np.isnan(gm.to_image(behind)).all()


def test_pixels_above_the_horizon_map_to_nan() -> None:
    cam = PoleCamera.from_hfov(1280, 720, 70.0, height_m=8.0, tilt_deg=8.0, heading_deg=0.0)
    hv = cam.horizon_v()
    assert 0 < hv < 720
    pix = np.array([[100, 700], [1180, 700], [640, hv + 120], [200, hv + 60], [1100, hv + 40]])
    for g in (ground_map(make_cal(pix, ground_of(cam, pix)), "c"),
              ground_map(Calibration.model_validate({"anchor": ANCHOR, "pose": pose_dict(cam)}), "c")):
        out = g.to_ground(np.array([[640, hv - 30], [10, 5], [640, hv + 200]]))
        assert np.isnan(out[:2]).all() and np.isfinite(out[2]).all()
        assert np.isnan(g.metres_per_pixel(np.array([[640, hv - 30]]))).all()


def test_scaled_to_a_substream(gm: GroundMap) -> None:
    half = gm.scaled(640, 360)
    assert half.image_size == (640, 360)
    px = view_pixels(CAM, 9)
    assert np.max(np.linalg.norm(half.to_ground(px / 2) - gm.to_ground(px), axis=1)) < 1e-6
    assert np.allclose(half.image_points, gm.image_points / 2)
    assert np.allclose(half.metres_per_pixel(px / 2), 2 * gm.metres_per_pixel(px))
    assert gm.scaled(1280, 720) is gm
    loose = ground_map(make_cal(PIX, ground_of(CAM, PIX)), "cam1")  # no image_size: the frames it is used on
    assert loose.image_size is None and loose.scaled(1280, 720).image_size == (1280, 720)


def test_ground_maps_of_a_site(tmp_path: Path) -> None:
    site = Site.model_validate({"edge_id": "e", "cameras": [
        {"id": "a", "url": "a.mp4", "calibration": cal_dict(PIX, ground_of(CAM, PIX))},
        {"id": "b", "url": "b.mp4", "calibration": {"anchor": ANCHOR, "pose": pose_dict(CAM)}},
        {"id": "c", "url": "c.mp4"}]})
    maps = ground_maps(site, tmp_path / "site.yaml")
    assert sorted(maps) == ["a", "b"] and maps["a"].source == "points" and maps["b"].source == "pose"


# --------------------------------------------------------------------------------- degenerate
def refused(uv: Any, xy: Any, *fragments: str, site_path: Path | None = None, **kw: Any) -> str:
    with pytest.raises(CalibrationError) as ei:
        ground_map(make_cal(uv, xy, **kw), "cam7", site_path)
    msg = str(ei.value)
    assert "cam7" in msg, msg
    for f in fragments:
        assert f in msg, msg
    assert "\n" not in msg
    return msg


def test_three_points_are_refused(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("edge_id: e\n")
    msg = refused(PIX[:3], ground_of(CAM, PIX[:3]), "3 control points", "at least 4", site_path=site)
    assert msg.startswith(f"{site}: cameras[cam7].calibration.points:")


def test_duplicate_points_are_refused() -> None:
    uv, xy = PIX[:5].copy(), ground_of(CAM, PIX[:5])
    uv[3] = uv[1]
    refused(uv, xy, "m2 and m4", "same image position")
    uv, xy = PIX[:5].copy(), ground_of(CAM, PIX[:5])
    xy[4] = xy[0]
    refused(uv, xy, "m1 and m5", "same ground position")


def test_collinear_image_points_are_refused() -> None:
    uv = np.column_stack([np.linspace(100, 1100, 5), np.linspace(650, 200, 5)])
    xy = np.array([[0, 5], [6, 9], [-3, 14], [4, 22], [-5, 30]], dtype=float)
    refused(uv, xy, "all 5 points lie on one line in the image")


def test_collinear_ground_points_are_refused() -> None:
    xy = np.column_stack([np.linspace(-5, 5, 5), np.linspace(5, 30, 5)])
    refused(PIX[:5], xy, "all 5 points lie on one line in the ground")


def test_three_of_four_collinear_are_refused() -> None:
    uv = np.array([[100, 650], [640, 650], [1180, 650], [640, 200]], dtype=float)  # three on one image row
    refused(uv, ground_of(CAM, uv), "m1, m2, m3 lie on one line", "3 of the 4")


def test_mirrored_ground_is_refused() -> None:
    xy = ground_of(CAM, PIX) * [-1, 1]
    refused(PIX, xy, "mirrors the ground")


def test_points_on_both_sides_of_the_horizon_are_refused() -> None:
    # ground behind the camera projects (through the same homography) above the horizon: an exact fit that folds
    h = np.radians(CAM.heading_deg)
    fwd, right = np.array([np.sin(h), np.cos(h)]), np.array([np.cos(h), -np.sin(h)])
    c = np.array([CAM.x_m, CAM.y_m])
    behind = np.array([c - 15 * fwd - 6 * right, c - 25 * fwd + 9 * right])
    uv_b, z = CAM.project(np.column_stack([behind, np.zeros(2)]))
    assert np.all(z < 0)
    uv = np.vstack([PIX[:4], uv_b])
    xy = np.vstack([ground_of(CAM, PIX[:4]), behind])
    refused(uv, xy, "folds", "horizon")


def test_points_outside_the_frame_are_refused() -> None:
    uv = PIX[:5].copy()
    uv[2] = [1400, 300]
    refused(uv, ground_of(CAM, PIX[:5]), "m3", "outside the 1280x720 frame", image_size=[1280, 720])


# ------------------------------------------------------------------------------------ drawing
def road_frame(w: int = 1280, h: int = 720) -> np.ndarray:
    img = np.full((h, w, 3), 90, np.uint8)
    img[: h // 5] = (200, 170, 140)
    return img


def test_draw_calibration_marks_grid_points_and_legend(gm: GroundMap) -> None:
    cal = make_cal(PIX, ground_of(CAM, PIX), image_size=[1280, 720])
    frame = road_frame()
    pic = draw_calibration(frame, gm, cal)
    assert pic.shape == frame.shape and not np.array_equal(pic, frame)
    changed = np.any(pic != frame, axis=2)
    assert changed.mean() > 0.02  # grid lines everywhere, not just a legend
    assert changed[600:720, 400:900].any()  # grid in the near field
    u, v = PIX[2].astype(int)
    assert tuple(pic[v + 2, u + 2]) == (0, 255, 0)  # the control point's dot (its exact cross is on the centre)
    assert pic[v, u, 2] > 200 and pic[v, u, 1] < 60  # the red cross of its reprojection
    small = draw_calibration(road_frame(640, 360), gm, cal)  # a sub-stream frame: drawn at its own scale
    assert small.shape == (360, 640, 3) and tuple(small[v // 2 + 2, u // 2 + 2]) == (0, 255, 0)
    pose_cal = Calibration.model_validate({"anchor": ANCHOR, "pose": pose_dict(CAM)})
    pic2 = draw_calibration(frame, ground_map(pose_cal, "cam1"), pose_cal, grid_m=10.0)
    assert np.any(pic2 != frame)


# ---------------------------------------------------------------------------------------- cli
def run_calibrate(argv: list[str]) -> int:
    """Through edge.cli.main once the lead has wired `calibrate`; until then through our own parser."""
    from edge import cli

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "calibrate" in sub.choices:
        return cli.main(["calibrate", *argv])
    p = argparse.ArgumentParser()
    add_calibrate_parser(p.add_subparsers())
    args = p.parse_args(["calibrate", *argv])
    return args.func(args)


def write_site(tmp: Path, calibration: dict | None, url: str = "cam1.png", **cam: Any) -> Path:
    c: dict[str, Any] = {"id": "cam1", "url": url, **cam}
    if calibration is not None:
        c["calibration"] = calibration
    p = tmp / "site.yaml"
    p.write_text(yaml.safe_dump({"edge_id": "t", "cameras": [c, {"id": "cam2", "url": "x.mp4"}]}))
    return p


def test_cli_prints_residuals_and_draws(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    cal = cal_dict(PIX + rng.normal(0, 1.0, PIX.shape), ground_of(CAM, PIX), image_size=[1280, 720])
    frame = road_frame()
    cv2.imwrite(str(tmp_path / "cam1.png"), frame)  # the camera's url: a picture relative to the site file
    site = write_site(tmp_path, cal)
    assert run_calibrate(["--site", str(site), "--camera", "cam1"]) == 0
    out = capsys.readouterr().out
    pic = tmp_path / "calib-cam1.png"
    assert pic.exists() and f"wrote {pic}" in out
    drawn = cv2.imread(str(pic))
    assert drawn.shape == frame.shape and not np.array_equal(drawn, frame)
    g = ground_map(Calibration.model_validate(cal), "cam1")
    for name, r in zip(g.point_names, g.residuals_m):
        assert any(ln.startswith(name + " ") and f"{r:.3f}" in ln for ln in out.splitlines()), out
    assert "RMS" in out
    # an explicit frame (half size) and output
    cv2.imwrite(str(tmp_path / "small.jpg"), road_frame(640, 360))
    assert run_calibrate(["--site", str(site), "--camera", "cam1", "--frame", str(tmp_path / "small.jpg"),
                          "--out", str(tmp_path / "o.png")]) == 0
    assert cv2.imread(str(tmp_path / "o.png")).shape == (360, 640, 3)


def test_cli_refuses_a_degenerate_calibration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cv2.imwrite(str(tmp_path / "cam1.png"), road_frame())
    site = write_site(tmp_path, cal_dict(PIX[:3], ground_of(CAM, PIX[:3])))
    assert run_calibrate(["--site", str(site), "--camera", "cam1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cam1" in err and "at least 4" in err
    assert not (tmp_path / "calib-cam1.png").exists()


def test_cli_user_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = write_site(tmp_path, cal_dict(PIX, ground_of(CAM, PIX)))
    assert run_calibrate(["--site", str(site), "--camera", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "cam1, cam2" in err
    assert run_calibrate(["--site", str(site), "--camera", "cam2"]) == 2
    assert "cam2 has no calibration" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    assert run_calibrate(["--site", str(site), "--camera", "cam1", "--frame", str(tmp_path / "bad.png")]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert run_calibrate(["--site", str(site), "--camera", "cam1"]) == 2  # url file cam1.png does not exist
    assert "--frame" in capsys.readouterr().err
    assert run_calibrate(["--site", str(tmp_path / "missing.yaml"), "--camera", "cam1"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_never_shows_the_stream_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    secret = "Pa55-calib-s3cret"
    monkeypatch.setenv("CALIB_TEST_PW", secret)
    site = write_site(tmp_path, cal_dict(PIX, ground_of(CAM, PIX)), url="rtsp://user:${CALIB_TEST_PW}@127.0.0.1:1/x",
                      open_timeout_s=1.0, read_timeout_s=1.0)
    assert run_calibrate(["--site", str(site), "--camera", "cam1"]) == 2
    out, err = capfd.readouterr()
    assert secret not in out + err
    assert "cam1" in err and "rtsp://user:***@127.0.0.1:1/x" in err
