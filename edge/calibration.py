"""Ground-plane mapping of one camera: image pixels <-> local ground metres (x east, y north of the anchor).

Incidents are identified by class + ground position, so every camera with a calibration needs a mapping
that is right to a metre or so. It comes from surveyed control points (>= 4, preferred: a normalised DLT
least-squares homography whose per-point residuals say how good it is) or from the camera's pose (exactly
the pinhole model of `edge.synth.camera.PoleCamera`). A calibration that cannot be right — too few points,
points on one line, a mirrored or folded fit — is refused with a sentence saying what to fix, and
`calibrate` draws the result on a frame so an operator can see it sit on the street.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import yaml

from .config import Calibration, Camera, ConfigError, Site, expand_env, load_site, mask_url
from .synth.camera import PoleCamera

try:
    from .geo import local_to_lonlat, lonlat_to_local
except ImportError:  # edge/geo.py is being introduced; until then the scenario module has them
    from .synth.scenario import local_to_lonlat, lonlat_to_local

log = logging.getLogger(__name__)

POSE_SIGMA_M = 0.5
"""Ground error assumed for a pose-only calibration (and for exactly 4 points, whose residuals are always 0):
a measured height/tilt/heading is never exact, and there are no residuals to tell us how far off it is."""
MIN_POINTS = 4
COLLINEAR_RATIO = 0.03  # width of the points across their best line / their length along it
DUP_IMAGE_PX = 1.0
DUP_GROUND_M = 0.01
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_LIVE_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://")


class CalibrationError(ConfigError):
    """A calibration that cannot give a right ground mapping; the message names camera, key and the fix."""


def _xy(a: Any) -> np.ndarray:
    """(N,2) float64 view of points given as (2,), (N,2) or a list of pairs."""
    return np.atleast_2d(np.asarray(a, dtype=np.float64)).reshape(-1, 2)


def _apply(H: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous transform of (N,2) points: the dehomogenised (N,2) result and the (N,) third coordinate."""
    p = np.column_stack([pts, np.ones(len(pts))]) @ H.T
    w = p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return p[:, :2] / w[:, None], w


@dataclass(frozen=True, eq=False)
class GroundMap:
    """The ground mapping of one camera at one image resolution.

    `H` maps image pixels (u right, v down) to local ground metres (x east, y north of `anchor`); its sign is
    fixed so that the third coordinate is positive for pixels that see the ground in front of the camera, so
    the horizon (w = 0) separates what maps from what does not.
    """

    H: np.ndarray
    anchor: dict[str, float]
    image_size: tuple[int, int] | None
    source: str  # "points" | "pose"
    residuals_m: np.ndarray | None = None
    rms_m: float | None = None
    point_names: tuple[str, ...] = ()
    image_points: np.ndarray | None = None  # (N,2) pixels at image_size
    ground_points: np.ndarray | None = None  # (N,2) local metres
    G: np.ndarray = field(init=False, repr=False)  # inverse: ground -> image

    def __post_init__(self) -> None:
        object.__setattr__(self, "G", np.linalg.inv(self.H))

    # --------------------------------------------------------------------------------- mapping
    def to_ground(self, uv: Any) -> np.ndarray:
        """(N,2) pixels -> (N,2) ground metres; NaN for pixels on or above the horizon (they see no ground)."""
        xy, w = _apply(self.H, _xy(uv))
        xy[~(w > 1e-12 * np.abs(self.H[2]).sum())] = np.nan
        return xy

    def to_image(self, xy: Any) -> np.ndarray:
        """(N,2) ground metres -> (N,2) pixels; NaN for ground behind the camera (it projects to nowhere)."""
        uv, w = _apply(self.G, _xy(xy))
        uv[~(w > 0)] = np.nan
        return uv

    def to_lonlat(self, uv: Any) -> np.ndarray:
        """(N,2) pixels -> (N,2) lon/lat degrees (NaN above the horizon), for messages and maps."""
        xy = self.to_ground(uv)
        lon, lat = local_to_lonlat(xy[:, 0], xy[:, 1], self.anchor)
        return np.column_stack([lon, lat])

    def metres_per_pixel(self, uv: Any) -> np.ndarray:
        """Ground length of one pixel's longer side at these pixels: how coarse the ground is seen there."""
        uv = _xy(uv)
        xy, w = _apply(self.H, uv)
        h = self.H
        # Jacobian of (u, v) -> (x, y): column j = (H[:2, j] - xy * H[2, j]) / w
        du = (h[:2, 0][None, :] - xy * h[2, 0]) / w[:, None]
        dv = (h[:2, 1][None, :] - xy * h[2, 1]) / w[:, None]
        out = np.maximum(np.linalg.norm(du, axis=1), np.linalg.norm(dv, axis=1))
        out[~(w > 0)] = np.nan
        return out

    def in_view(self, xy: Any) -> np.ndarray:
        """(N,) bool: the ground point lies in front of the camera and inside the image."""
        uv = self.to_image(xy)
        ok = np.isfinite(uv).all(axis=1)
        if self.image_size is not None:
            w, h = self.image_size
            with np.errstate(invalid="ignore"):
                ok &= (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        return ok

    # ------------------------------------------------------------------------------- accuracy
    @property
    def sigma_m(self) -> float:
        """Ground error of the calibration itself. From points: the residual RMS corrected for the 8 degrees of
        freedom the fit used up (N residual pairs, so x sqrt(N / (N - 4))); with exactly 4 points (residuals are
        always 0) and for a pose: POSE_SIGMA_M."""
        n = 0 if self.residuals_m is None else len(self.residuals_m)
        if self.rms_m is None or n <= MIN_POINTS:
            return POSE_SIGMA_M
        return float(self.rms_m) * math.sqrt(n / (n - MIN_POINTS))

    def accuracy_m(self, uv: Any, px_sigma: float = 4.0) -> np.ndarray:
        """Uncertainty (metres) of the ground point of these pixels: calibration error and the ground footprint
        of `px_sigma` pixels (how far a box's foot point may be off) added in quadrature. NaN above the horizon."""
        mpp = self.metres_per_pixel(uv)
        return np.sqrt(self.sigma_m ** 2 + (mpp * px_sigma) ** 2)

    @property
    def max_residual_m(self) -> float | None:
        return None if self.residuals_m is None or not len(self.residuals_m) else float(np.max(self.residuals_m))

    # --------------------------------------------------------------------------------- scaling
    def scaled(self, frame_w: int, frame_h: int) -> "GroundMap":
        """The same mapping for frames of another resolution (a sub-stream, a resized frame). A calibration
        without `image_size` is taken to refer to the frames it is used on."""
        if self.image_size is None:
            return _replace(self, image_size=(int(frame_w), int(frame_h)))
        w, h = self.image_size
        if (w, h) == (frame_w, frame_h):
            return self
        s = np.diag([frame_w / w, frame_h / h, 1.0])
        pts = None if self.image_points is None else self.image_points @ s[:2, :2]
        return _replace(self, H=self.H @ np.linalg.inv(s), image_size=(int(frame_w), int(frame_h)), image_points=pts)

    def horizon(self) -> np.ndarray:
        """(a, b, c) of the image line a*u + b*v + c = 0 where the ground recedes to infinity."""
        return self.H[2].copy()


def _replace(gm: GroundMap, **kw: Any) -> GroundMap:
    d = {k: getattr(gm, k) for k in ("H", "anchor", "image_size", "source", "residuals_m", "rms_m", "point_names",
                                     "image_points", "ground_points")}
    d.update(kw)
    return GroundMap(**d)


# ------------------------------------------------------------------------------------ fitting
def _normaliser(p: np.ndarray) -> np.ndarray:
    """Hartley normalisation: centroid to the origin, mean distance sqrt(2). Keeps the DLT well conditioned
    when pixels are in the hundreds and metres in the tens."""
    c = p.mean(axis=0)
    d = np.linalg.norm(p - c, axis=1).mean()
    s = math.sqrt(2) / d if d > 0 else 1.0
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1]])


def fit_homography(uv: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Normalised DLT least-squares homography mapping (N,2) pixels to (N,2) ground points (N >= 4)."""
    Ti, Tg = _normaliser(uv), _normaliser(xy)
    a, _ = _apply(Ti, uv)
    b, _ = _apply(Tg, xy)
    n = len(a)
    A = np.zeros((2 * n, 9))
    A[0::2, 0:2], A[0::2, 2] = a, 1
    A[0::2, 6:8], A[0::2, 8] = -b[:, :1] * a, -b[:, 0]
    A[1::2, 3:5], A[1::2, 5] = a, 1
    A[1::2, 6:8], A[1::2, 8] = -b[:, 1:] * a, -b[:, 1]
    Hn = np.linalg.svd(A)[2][-1].reshape(3, 3)
    H = np.linalg.inv(Tg) @ Hn @ Ti
    return H / np.linalg.norm(H)


def _thin(p: np.ndarray) -> bool:
    """Do these points lie near one line: their width across the best line is tiny next to their length."""
    s = np.linalg.svd(p - p.mean(axis=0), compute_uv=False)
    return bool(s[0] == 0 or s[1] / s[0] < COLLINEAR_RATIO)


def _site_line(site_path: Path | None, camera_id: str, index: int | None) -> int | None:
    """Best-effort line number of cameras[<id>].calibration.points[index] in the site file."""
    if site_path is None:
        return None
    try:
        node = yaml.compose(Path(site_path).read_text(encoding="utf-8"))
        cams = next(v for k, v in node.value if k.value == "cameras")
        cam = next(c for c in cams.value if any(k.value == "id" and v.value == camera_id for k, v in c.value))
        cal = next(v for k, v in cam.value if k.value == "calibration")
        line = cal.start_mark.line + 1
        pts = next((v for k, v in cal.value if k.value == "points"), None)
        if pts is not None:
            line = pts.start_mark.line + 1
            if index is not None and index < len(pts.value):
                line = pts.value[index].start_mark.line + 1
        return line
    except Exception:  # noqa: BLE001 - a line number is a courtesy, never a reason to fail
        return None


def _error(site_path: Path | None, camera_id: str, key: str, msg: str, index: int | None = None) -> CalibrationError:
    if site_path is None:
        return CalibrationError(f"camera {camera_id}: calibration{key}: {msg}")
    ln = _site_line(site_path, camera_id, index)
    return CalibrationError(f"{site_path}{f':{ln}' if ln else ''}: cameras[{camera_id}].calibration{key}: {msg}")


def _check_points(uv: np.ndarray, xy: np.ndarray, names: Sequence[str], image_size: tuple[int, int] | None,
                  err: Any, has_pose: bool) -> None:
    """Refuse point sets that cannot pin down a mapping, before fitting anything."""
    n = len(uv)
    if n < MIN_POINTS:
        alt = "; or remove `points` to use the camera's pose" if has_pose else ""
        raise err(f"{n} control point{'s' if n != 1 else ''}; a ground mapping needs at least {MIN_POINTS}, spread "
                  f"over the ground the camera watches{alt}")
    if image_size is not None:
        w, h = image_size
        out = [i for i in range(n) if not (-0.5 <= uv[i, 0] <= w + 0.5 and -0.5 <= uv[i, 1] <= h + 0.5)]
        if out:
            i = out[0]
            raise err(f"point {names[i]} image ({uv[i, 0]:g}, {uv[i, 1]:g}) lies outside the {w}x{h} frame of "
                      f"image_size; image positions are pixels of that frame", i)
    for side, p, tol, unit in (("image", uv, DUP_IMAGE_PX, "px"), ("ground", xy, DUP_GROUND_M, "m")):
        d = np.linalg.norm(p[:, None, :] - p[None, :, :], axis=2)
        i, j = np.nonzero(np.triu(d < tol, k=1))
        if len(i):
            a, b = int(i[0]), int(j[0])
            raise err(f"points {names[a]} and {names[b]} have the same {side} position ({p[a, 0]:g}, {p[a, 1]:g}) "
                      f"(closer than {tol:g} {unit}); each control point must be a different place on the ground", b)
    for side, p in (("image", uv), ("ground", xy)):
        if _thin(p):
            raise err(f"all {n} points lie on one line in the {side}; a line cannot fix a plane: add points "
                      f"away from it, spread over the ground the camera watches")
        for k in range(n):
            rest = np.delete(p, k, axis=0)
            if _thin(rest):
                which = ", ".join(names[i] for i in range(n) if i != k)
                raise err(f"{which} lie on one line in the {side} ({n - 1} of the {n} points), so the points do not "
                          f"fix a plane: move or add points off that line")


def _fit_points(cal: Calibration, camera_id: str, site_path: Path | None) -> GroundMap:
    anchor = {"lon": cal.anchor.lon, "lat": cal.anchor.lat}

    def err(msg: str, index: int | None = None) -> CalibrationError:
        return _error(site_path, camera_id, ".points", msg, index)

    names = tuple(p.name or f"p{i + 1}" for i, p in enumerate(cal.points))
    uv = np.array([p.image for p in cal.points], dtype=np.float64).reshape(-1, 2)
    xy = np.empty_like(uv)
    for i, p in enumerate(cal.points):
        if p.ground is not None:
            xy[i] = p.ground
        else:
            x, y = lonlat_to_local(p.lonlat[0], p.lonlat[1], anchor)
            xy[i] = float(x), float(y)
            if math.hypot(xy[i, 0], xy[i, 1]) > 20_000:
                raise err(f"point {names[i]} lonlat ({p.lonlat[0]:g}, {p.lonlat[1]:g}) is "
                          f"{math.hypot(*xy[i]) / 1000:.0f} km from the anchor; give [lon, lat] (longitude first) "
                          f"near the camera, and an anchor near it too", i)
    image_size = tuple(cal.image_size) if cal.image_size else None
    _check_points(uv, xy, names, image_size, err, cal.pose is not None)

    H = fit_homography(uv, xy)
    _, w = _apply(H, uv)
    if np.all(w < 0):
        H, w = -H, -w
    if not np.all(w > 0):
        front, back = [names[i] for i in np.nonzero(w > 0)[0]], [names[i] for i in np.nonzero(w <= 0)[0]]
        a, b = (front, back) if len(front) <= len(back) else (back, front)
        raise err(f"the fitted mapping folds: its horizon passes between the points ({', '.join(a)} on the other "
                  f"side from {', '.join(b)}), but a camera sees every control point in front of it; check that each "
                  f"point's image and ground positions belong together")
    # Jacobian determinant of image -> ground at each point: det(H) / w^3. A real camera (v down, y north) maps
    # with a negative determinant everywhere; positive means the ground comes out mirror-imaged.
    det = np.linalg.det(H) / w ** 3
    if np.any(det >= 0):
        raise err("the fitted mapping mirrors the ground (east and west, or north and south, come out swapped); check "
                  "that ground x is east and y north (or lonlat is [lon, lat]) and the sign of every coordinate")
    fit, _ = _apply(H, uv)
    res = np.linalg.norm(fit - xy, axis=1)
    rms = float(np.sqrt(np.mean(res ** 2)))
    spread = float(np.linalg.norm(xy.max(axis=0) - xy.min(axis=0)))
    worst = int(np.argmax(res))
    if res[worst] > max(1.0, 0.05 * spread):
        log.warning("camera %s: control point %s is %.2f m off the fitted mapping; check its image and ground "
                    "positions", camera_id, names[worst], res[worst])
    return GroundMap(H=H, anchor=anchor, image_size=image_size, source="points", residuals_m=res, rms_m=rms,
                     point_names=names, image_points=uv, ground_points=xy)


def pose_camera(cal: Calibration) -> PoleCamera:
    """The pinhole camera a pose describes (same model the synthetic scenes are rendered with)."""
    p = cal.pose
    if p is None:
        raise ValueError("calibration has no pose")
    return PoleCamera(p.width, p.height, p.fx, p.fy, p.cx, p.cy, p.height_m, p.tilt_deg, p.heading_deg, p.x_m, p.y_m)


def ground_map(cal: Calibration, camera_id: str, site_path: Path | None = None) -> GroundMap:
    """The ground mapping of one camera: from its control points when it has any (>= 4), else from its pose.
    Raises CalibrationError, naming camera and site file, for a calibration that cannot be right."""
    if cal.points:
        return _fit_points(cal, camera_id, site_path)
    if cal.pose is None:
        raise _error(site_path, camera_id, "", "no `points` and no `pose`; give >= 4 control points or a pose")
    cam = pose_camera(cal)
    # ground -> image is K [r1 r2 t]; its inverse has w = 1 / depth, positive in front of the camera.
    H = np.linalg.inv(cam.ground_to_image_h())
    return GroundMap(H=H, anchor={"lon": cal.anchor.lon, "lat": cal.anchor.lat},
                     image_size=(cal.pose.width, cal.pose.height), source="pose")


def ground_maps(site: Site, site_path: Path) -> dict[str, GroundMap]:
    """Ground maps of every camera that has a calibration, by camera id (cameras without one map nothing)."""
    return {c.id: ground_map(c.calibration, c.id, site_path) for c in site.cameras if c.calibration is not None}


# ------------------------------------------------------------------------------------ drawing
def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int],
          thick: int = 1) -> None:
    """Text with a dark outline so it reads on sky and asphalt alike."""
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def _grid(img: np.ndarray, gm: GroundMap, grid_m: float, scale: float) -> None:
    h, w = img.shape[:2]
    min_cell_px = 4.0
    # what part of the ground is in view, where a grid cell is still a few pixels wide
    us, vs = np.meshgrid(np.linspace(0, w - 1, 48), np.linspace(0, h - 1, 48))
    px = np.column_stack([us.ravel(), vs.ravel()])
    g = gm.to_ground(px)
    ok = np.isfinite(g).all(axis=1) & (gm.metres_per_pixel(px) < grid_m / min_cell_px)
    if not ok.any():
        return
    lo, hi = g[ok].min(axis=0), g[ok].max(axis=0)
    step = grid_m
    while max(hi - lo) / step > 60:
        step *= 2
    lo, hi = np.floor(lo / step) * step - step, np.ceil(hi / step) * step + step
    colours = {0: (255, 255, 0), 1: (0, 220, 255)}  # x = const: cyan, y = const: yellow (BGR)
    margin = 0.05 * max(w, h)
    for axis in (0, 1):
        values = np.arange(lo[axis], hi[axis] + step / 2, step)
        label_every = max(1, math.ceil(len(values) / 8))
        other = np.linspace(lo[1 - axis], hi[1 - axis], 800)
        for k, val in enumerate(values):
            pts = np.empty((len(other), 2))
            pts[:, axis], pts[:, 1 - axis] = val, other
            uv = gm.to_image(pts)
            fin = np.isfinite(uv).all(axis=1)
            good = fin.copy()
            good[fin] &= ((uv[fin, 0] > -margin) & (uv[fin, 0] < w + margin) & (uv[fin, 1] > -margin)
                          & (uv[fin, 1] < h + margin))
            good[good] &= gm.metres_per_pixel(uv[good]) < grid_m / min_cell_px
            if not good.any():
                continue
            # split into runs of consecutive valid samples
            edges = np.flatnonzero(np.diff(np.concatenate([[0], good.view(np.int8), [0]])))
            for a, b in zip(edges[0::2], edges[1::2]):
                if b - a >= 2:
                    cv2.polylines(img, [np.round(uv[a:b]).astype(np.int32)], False, colours[axis], 1, cv2.LINE_AA)
            if round(val / step) % label_every == 0:
                inside = good & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
                if inside.any():
                    i = int(np.argmax(np.where(inside, uv[:, 1], -np.inf)))  # nearest the camera: lowest in image
                    u, v = uv[i]
                    s = f"{'xy'[axis]}={val:g}m"
                    (tw, th), _ = cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, 1)
                    org = (int(min(max(u + 3, 0), w - tw - 2)), int(min(max(v - 4, th + 2), h - 3)))
                    _text(img, s, org, scale * 0.8, colours[axis])


def _horizon(img: np.ndarray, gm: GroundMap, scale: float) -> None:
    a, b, c = gm.horizon()
    h, w = img.shape[:2]
    if abs(b) < 1e-12 * (abs(a) + abs(b)):
        return
    v0, v1 = -c / b, -(a * (w - 1) + c) / b
    if max(v0, v1) < 0 or min(v0, v1) > h - 1:
        return
    n = 24  # dashed
    us = np.linspace(0, w - 1, 2 * n + 1)
    vs = -(a * us + c) / b
    for i in range(0, 2 * n, 2):
        cv2.line(img, (int(us[i]), int(vs[i])), (int(us[i + 1]), int(vs[i + 1])), (0, 0, 255), 1, cv2.LINE_AA)
    _text(img, "horizon", (4, int(min(max(v0 - 5, 12), h - 4))), scale * 0.8, (0, 0, 255))


def draw_calibration(frame: np.ndarray, gm: GroundMap, cal: Calibration, grid_m: float = 5.0) -> np.ndarray:
    """The picture an operator checks a calibration by: a ground grid every `grid_m` metres, each control point
    (dot + name), where its surveyed ground position lands (cross) and the residual, and a legend. A grid that
    does not lie flat on the street, or crosses far from their dots, means the calibration is wrong."""
    img = frame.copy()
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    g = gm.scaled(w, h)
    scale = max(0.4, min(w, h) / 720 * 0.55)
    _grid(img, g, grid_m, scale)
    _horizon(img, g, scale)
    r = max(3, int(round(4 * scale / 0.55)))
    if g.image_points is not None and g.ground_points is not None:
        proj = g.to_image(g.ground_points)
        res = g.residuals_m if g.residuals_m is not None else np.zeros(len(g.image_points))
        for name, p, q, e in zip(g.point_names, g.image_points, proj, res):
            pi = (int(round(p[0])), int(round(p[1])))
            cv2.circle(img, pi, r + 1, (0, 0, 0), -1, cv2.LINE_AA)
            cv2.circle(img, pi, r, (0, 255, 0), -1, cv2.LINE_AA)
            if np.isfinite(q).all() and np.abs(q).max() < 1e6:  # on top: a small residual shows as a cross on the dot
                qi = (int(round(q[0])), int(round(q[1])))
                cv2.line(img, pi, qi, (0, 0, 255), 1, cv2.LINE_AA)
                cv2.drawMarker(img, qi, (0, 0, 255), cv2.MARKER_CROSS, 3 * r, 1, cv2.LINE_AA)
            _text(img, name, (pi[0] + r + 3, pi[1] - r - 2), scale, (0, 255, 0))
            _text(img, f"{e:.2f} m", (pi[0] + r + 3, pi[1] + r + int(14 * scale / 0.55)), scale * 0.85, (255, 255, 255))
    if g.source == "points":
        n = 0 if g.residuals_m is None else len(g.residuals_m)
        worst = int(np.argmax(g.residuals_m)) if n else 0
        lines = [f"calibration: {n} control points",
                 f"RMS {g.rms_m or 0.0:.3f} m, max {g.max_residual_m or 0.0:.3f} m ({g.point_names[worst] if n else '-'})",
                 "dot: surveyed pixel; cross: its ground point mapped back"]
    else:
        p = cal.pose
        lines = ["calibration: camera pose (no control points)",
                 (f"height {p.height_m:.2f} m, tilt {p.tilt_deg:.1f} deg, heading {p.heading_deg:.1f} deg" if p else ""),
                 f"assumed ground error {POSE_SIGMA_M:g} m"]
    lines.append(f"grid {grid_m:g} m: x east (cyan), y north (yellow)")
    fs = scale * 0.9
    sizes = [cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)[0] for s in lines]
    lh = max(s[1] for s in sizes) + int(8 * scale / 0.55)
    bw, bh = max(s[0] for s in sizes) + 16, lh * len(lines) + 10
    x0, y0 = 8, 8
    roi = img[y0:min(h, y0 + bh), x0:min(w, x0 + bw)]
    roi[:] = (roi * 0.35).astype(img.dtype)
    cv2.rectangle(img, (x0, y0), (min(w - 1, x0 + bw), min(h - 1, y0 + bh)), (255, 255, 255), 1)
    for i, s in enumerate(lines):
        cv2.putText(img, s, (x0 + 8, y0 + lh * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA)
    return img


# ---------------------------------------------------------------------------------- reporting
def format_report(gm: GroundMap, camera_id: str, px_sigma: float = 4.0) -> str:
    """The calibration as a table an operator can check point by point (the `calibrate` command prints it)."""
    size = f"{gm.image_size[0]}x{gm.image_size[1]}" if gm.image_size else "full-resolution"
    head = f"camera {camera_id}: {gm.source} calibration, {size} frames, anchor {gm.anchor['lon']:.6f}, {gm.anchor['lat']:.6f}"
    if gm.source != "points" or gm.image_points is None or gm.ground_points is None or gm.residuals_m is None:
        return head + f"\nno control points: ground error assumed {POSE_SIGMA_M:g} m"
    out = [head, f"{'point':<12} {'u':>8} {'v':>8} {'x m':>10} {'y m':>10} {'residual m':>11} {'accuracy m':>11}"]
    acc = gm.accuracy_m(gm.image_points, px_sigma)
    for name, p, q, e, a in zip(gm.point_names, gm.image_points, gm.ground_points, gm.residuals_m, acc):
        out.append(f"{name:<12} {p[0]:8.1f} {p[1]:8.1f} {q[0]:10.2f} {q[1]:10.2f} {e:11.3f} {a:11.2f}")
    worst = int(np.argmax(gm.residuals_m))
    out.append(f"RMS {gm.rms_m:.3f} m, max {gm.residuals_m[worst]:.3f} m ({gm.point_names[worst]}); accuracy = "
               f"calibration error {gm.sigma_m:.2f} m and {px_sigma:g} px of ground footprint")
    if len(gm.residuals_m) == MIN_POINTS:
        out.append("4 points always fit exactly: residuals say nothing; add more points to measure the error")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------- cli
def grab_frame(cam: Camera, site_path: Path) -> np.ndarray:
    """The first frame of a camera's url (an image or video file relative to the site file, or a live stream
    opened with a bounded timeout). The URL is shown only masked, as written in the site file."""
    shown = mask_url(cam.url)
    url = expand_env(cam.url, f"{site_path}: cameras[{cam.id}].url")
    hint = "; give a picture from this camera with --frame"
    if url.lower().startswith(_LIVE_SCHEMES):
        ms = int(cam.open_timeout_s * 1000)
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # OpenCV warnings may echo the URL
        try:
            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
                                                          cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(cam.read_timeout_s * 1000)])
            try:
                ok, img = cap.read() if cap.isOpened() else (False, None)
            finally:
                cap.release()
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not ok or img is None:
            raise ConfigError(f"camera {cam.id}: cannot read a frame from {shown} within {cam.open_timeout_s:g} s{hint}")
        return img
    path = Path(url)
    if not path.is_absolute():
        path = Path(site_path).resolve().parent / path
    if not path.is_file():
        raise ConfigError(f"camera {cam.id}: url file {path} not found{hint}")
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    else:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        try:
            ok, img = cap.read()
        finally:
            cap.release()
        img = img if ok else None
    if img is None:
        raise ConfigError(f"camera {cam.id}: cannot read a frame from {path}{hint}")
    return img


def add_calibrate_parser(sub: Any) -> None:
    """Register `calibrate` on the CLI's subparsers."""
    s = sub.add_parser("calibrate", help="check a camera's ground calibration: residual table and a picture of the "
                       "ground grid and control points on a frame")
    s.add_argument("--site", required=True, help="streams/<site>.yaml")
    s.add_argument("--camera", required=True, help="camera id in the site")
    s.add_argument("--frame", help="a picture from that camera; default: the first frame of its url")
    s.add_argument("--out", help="PNG to write; default calib-<camera>.png beside the site file")
    s.add_argument("--grid", type=float, default=5.0, help="ground grid spacing in metres")
    s.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Print the calibration's residuals and draw it on a frame; exit 2 for anything the user must fix."""
    site_path = Path(args.site)
    try:
        site = load_site(site_path)
        cam = next((c for c in site.cameras if c.id == args.camera), None)
        if cam is None:
            raise ConfigError(f"{site_path}: no camera {args.camera!r}; cameras: "
                              f"{', '.join(c.id for c in site.cameras)}")
        if cam.calibration is None:
            raise ConfigError(f"{site_path}: camera {cam.id} has no calibration; add cameras[{cam.id}].calibration "
                              "with an anchor {lon, lat} and >= 4 points (image [u, v] with ground [x, y] metres or "
                              "lonlat [lon, lat]), or a pose")
        gm = ground_map(cam.calibration, cam.id, site_path)
        if args.frame:
            frame = cv2.imread(str(args.frame), cv2.IMREAD_COLOR)
            if frame is None:
                raise ConfigError(f"--frame {args.frame}: cannot read it as an image (PNG or JPEG)")
        else:
            frame = grab_frame(cam, site_path)
        grid = float(getattr(args, "grid", 5.0) or 5.0)
        if grid <= 0:
            raise ConfigError(f"--grid {grid:g}: must be a positive number of metres")
        out = Path(args.out) if getattr(args, "out", None) else site_path.resolve().parent / f"calib-{cam.id}.png"
        picture = draw_calibration(frame, gm, cam.calibration, grid)
        try:
            written = cv2.imwrite(str(out), picture)
        except cv2.error:
            written = False
        if not written:
            raise ConfigError(f"--out {out}: cannot write the picture there (is the folder there, the name a .png?)")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(gm, cam.id))
    fh, fw = frame.shape[:2]
    if gm.image_size is not None and abs(fw / fh - gm.image_size[0] / gm.image_size[1]) > 0.01:
        print(f"warning: the frame is {fw}x{fh} but the calibration is for {gm.image_size[0]}x{gm.image_size[1]} "
              "(another aspect ratio): is it from this camera's stream?", file=sys.stderr)
    print(f"wrote {out}")
    return 0
