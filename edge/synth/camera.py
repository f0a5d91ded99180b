"""Pinhole camera on a pole looking down at a flat ground plane (z = 0, metres)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PoleCamera:
    """A camera at (x_m, y_m, height_m) looking along `heading_deg` (0 = +y, clockwise towards +x),
    tilted down by `tilt_deg`. Image x grows right, y grows down."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    height_m: float
    tilt_deg: float
    heading_deg: float = 0.0
    x_m: float = 0.0
    y_m: float = 0.0

    @classmethod
    def from_hfov(cls, width: int, height: int, hfov_deg: float, height_m: float, tilt_deg: float,
                  heading_deg: float = 0.0, x_m: float = 0.0, y_m: float = 0.0) -> "PoleCamera":
        f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
        return cls(width, height, f, f, width / 2, height / 2, height_m, tilt_deg, heading_deg, x_m, y_m)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    @property
    def R(self) -> np.ndarray:
        """World→camera rotation; rows are the camera's right, down and forward axes in world coordinates."""
        t, h = math.radians(self.tilt_deg), math.radians(self.heading_deg)
        fwd_h = np.array([math.sin(h), math.cos(h), 0.0])
        right = np.array([math.cos(h), -math.sin(h), 0.0])
        fwd = fwd_h * math.cos(t) + np.array([0, 0, -math.sin(t)])
        down = np.cross(fwd, right)
        return np.stack([right, down, fwd])

    @property
    def centre(self) -> np.ndarray:
        return np.array([self.x_m, self.y_m, self.height_m])

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,3) world points → (N,2) pixel coordinates and (N,) depth along the optical axis."""
        pc = (np.asarray(pts, dtype=np.float64) - self.centre) @ self.R.T
        z = pc[:, 2]
        zs = np.where(np.abs(z) < 1e-6, 1e-6, z)
        uv = np.stack([self.fx * pc[:, 0] / zs + self.cx, self.fy * pc[:, 1] / zs + self.cy], axis=1)
        return uv, z

    def ground_to_image_h(self) -> np.ndarray:
        """Homography mapping ground (x, y, 1) in metres to pixels."""
        R = self.R
        t = -R @ self.centre
        return self.K @ np.column_stack([R[:, 0], R[:, 1], t])

    def image_to_ground(self, uv: np.ndarray) -> np.ndarray:
        """(N,2) pixels → (N,2) ground metres; points above the horizon come back as NaN."""
        Hinv = np.linalg.inv(self.ground_to_image_h())
        p = np.column_stack([uv, np.ones(len(uv))]) @ Hinv.T
        w = p[:, 2:3]
        out = p[:, :2] / np.where(np.abs(w) < 1e-12, np.nan, w)
        ray = (np.column_stack([uv, np.ones(len(uv))]) @ np.linalg.inv(self.K).T) @ self.R
        out[ray[:, 2] >= 0] = np.nan
        return out

    def horizon_v(self) -> float:
        """Image row of the horizon (may lie outside the image)."""
        return self.cy - self.fy * math.tan(math.radians(self.tilt_deg))

    def ground_distance(self, xy: np.ndarray) -> np.ndarray:
        d = np.asarray(xy, dtype=np.float64) - np.array([self.x_m, self.y_m])
        return np.hypot(d[..., 0], d[..., 1])

    def metres_per_pixel(self, xy: np.ndarray) -> np.ndarray:
        """Approximate ground size of one pixel (the larger axis) at ground points — used for label sizes."""
        xy = np.atleast_2d(xy)
        H = self.ground_to_image_h()
        eps = 0.05
        pts = np.concatenate([xy, xy + [eps, 0], xy + [0, eps]])
        p = np.column_stack([pts, np.ones(len(pts))]) @ H.T
        uv = p[:, :2] / p[:, 2:3]
        n = len(xy)
        du = np.linalg.norm(uv[n:2 * n] - uv[:n], axis=1)
        dv = np.linalg.norm(uv[2 * n:] - uv[:n], axis=1)
        return eps / np.maximum(np.minimum(du, dv), 1e-9)

    def intrinsics_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}

    def pose_dict(self) -> dict:
        return {"x_m": self.x_m, "y_m": self.y_m, "height_m": self.height_m, "tilt_deg": self.tilt_deg,
                "heading_deg": self.heading_deg}

    def to_dict(self) -> dict:
        return asdict(self)
