"""Drawing primitives: ground patches and upright 3-D shapes projected through a `PoleCamera`.

Every primitive draws into a region of interest (ROI) layer: colour, alpha, and where it sits in the
image, so the scene can composite it and know exactly which pixels each object owns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .camera import PoleCamera


@dataclass
class Layer:
    """An object's pixels: premultiplied colour (h,w,3) float32, alpha (h,w) float32 0..1, and the
    top-left corner of the layer in the image; `label_alpha`, where the object's label covers less than it
    paints (the rubble around an open manhole), else None."""

    rgb: np.ndarray
    alpha: np.ndarray
    x0: int
    y0: int
    label_alpha: np.ndarray | None = None


def _roi(uv: np.ndarray, cam: PoleCamera, margin: int = 2) -> tuple[int, int, int, int] | None:
    x0 = max(int(math.floor(uv[:, 0].min())) - margin, 0)
    y0 = max(int(math.floor(uv[:, 1].min())) - margin, 0)
    x1 = min(int(math.ceil(uv[:, 0].max())) + margin, cam.width)
    y1 = min(int(math.ceil(uv[:, 1].max())) + margin, cam.height)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return x0, y0, x1, y1


def ground_patch(cam: PoleCamera, rgba: np.ndarray, xy: tuple[float, float], res_m: float, yaw: float = 0.0) -> Layer | None:
    """Lay a top-down RGBA picture (`res_m` metres per pixel, centred at ground `xy`, rotated by `yaw` rad)
    onto the ground as seen by `cam`. A fifth channel, if there is one, is the label's mask (`label_alpha`)."""
    label = rgba[..., 4] if rgba.shape[2] > 4 else None
    rgba = rgba[..., :4]
    ph, pw = rgba.shape[:2]
    # avoid aliasing: shrink the patch to about the footprint of an image pixel there
    mpp = float(cam.metres_per_pixel(np.array([xy]))[0])
    if res_m < mpp / 1.5:
        k = res_m * 1.5 / mpp
        nw, nh = max(2, int(pw * k)), max(2, int(ph * k))
        rgba = cv2.resize(rgba, (nw, nh), interpolation=cv2.INTER_AREA)
        if label is not None:
            label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_AREA)
        res_m = res_m * pw / nw
        ph, pw = rgba.shape[:2]
    c, s = math.cos(yaw), math.sin(yaw)
    A = np.array([[c * res_m, s * res_m, xy[0] - c * res_m * pw / 2 - s * res_m * ph / 2],
                  [s * res_m, -c * res_m, xy[1] - s * res_m * pw / 2 + c * res_m * ph / 2],
                  [0, 0, 1]])
    corners_px = np.array([[0, 0, 1], [pw, 0, 1], [pw, ph, 1], [0, ph, 1]], np.float64)
    g = corners_px @ A.T
    uv, z = cam.project(np.column_stack([g[:, :2], np.zeros(4)]))
    if (z <= 0.3).any():
        return None
    roi = _roi(uv, cam)
    if roi is None:
        return None
    x0, y0, x1, y1 = roi
    T = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    M = T @ cam.ground_to_image_h() @ A
    out = cv2.warpPerspective(rgba, M, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
    a = out[..., 3].astype(np.float32) / 255.0
    lab = None
    if label is not None:
        lab = cv2.warpPerspective(label, M, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32) / 255.0
    return Layer(out[..., :3].astype(np.float32) * a[..., None], a, x0, y0, lab)


def warp_to_quad(tex: np.ndarray, quad: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, shade: float = 1.0) -> None:
    """Paint a texture (RGB or RGBA) onto a convex quad (4,2) of an ROI layer, in place (painter's order)."""
    th, tw = tex.shape[:2]
    src = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float32)
    M = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
    h, w = alpha.shape
    x0 = max(int(quad[:, 0].min()) - 1, 0)
    y0 = max(int(quad[:, 1].min()) - 1, 0)
    x1 = min(int(quad[:, 0].max()) + 2, w)
    y1 = min(int(quad[:, 1].max()) + 2, h)
    if x1 <= x0 or y1 <= y0:
        return
    T = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    if tex.shape[2] == 3:
        tex = np.concatenate([tex, np.full((th, tw, 1), 255, tex.dtype)], axis=2)
    warped = cv2.warpPerspective(tex.astype(np.float32), T @ M, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = warped[..., 3:4] / 255.0
    rgb[y0:y1, x0:x1] = rgb[y0:y1, x0:x1] * (1 - a) + warped[..., :3] * shade * a
    alpha[y0:y1, x0:x1] = a[..., 0] + alpha[y0:y1, x0:x1] * (1 - a[..., 0])


@dataclass
class Face:
    """A planar polygon in world metres with a texture to stretch over its first four corners."""

    pts: np.ndarray  # (4,3)
    tex: np.ndarray  # (h,w,3|4) float32 0..255
    shade: float = 1.0


def solid(tex_colour: tuple[float, float, float], rng: np.random.Generator, n: int = 16, noise: float = 8.0) -> np.ndarray:
    t = np.zeros((n, n, 3), np.float32) + np.array(tex_colour, np.float32)
    return np.clip(t + rng.standard_normal((n, n, 1)).astype(np.float32) * noise, 0, 255)


def box_faces(centre: tuple[float, float], size: tuple[float, float, float], yaw: float, z0: float = 0.0) -> list[np.ndarray]:
    """The 5 visible-candidate faces (4 sides + top) of a box as (4,3) corner arrays, ordered for texturing
    (top-left, top-right, bottom-right, bottom-left as seen from outside)."""
    w, d, h = size
    c, s = math.cos(yaw), math.sin(yaw)
    ex, ey = np.array([c, s, 0.0]) * w / 2, np.array([-s, c, 0.0]) * d / 2
    base = np.array([centre[0], centre[1], z0])
    up = np.array([0, 0, h])
    p = [base - ex - ey, base + ex - ey, base + ex + ey, base - ex + ey]  # ccw from above
    faces = []
    for i in range(4):
        a, b = p[i], p[(i + 1) % 4]
        faces.append(np.array([a + up, b + up, b, a]))
    faces.append(np.array([p[3] + up, p[2] + up, p[1] + up, p[0] + up]))
    return faces


def face_visible(cam: PoleCamera, pts: np.ndarray) -> bool:
    n = np.cross(pts[3] - pts[0], pts[1] - pts[0])
    return float(np.dot(n, cam.centre - pts.mean(axis=0))) > 0


def render_faces(cam: PoleCamera, faces: list[Face], cull: bool = True, margin: int = 2) -> Layer | None:
    """Project and paint faces far-to-near into one ROI layer."""
    if not faces:
        return None
    allpts = np.concatenate([f.pts for f in faces])
    uv, z = cam.project(allpts)
    if (z <= 0.3).any():
        return None
    roi = _roi(uv, cam, margin)
    if roi is None:
        return None
    x0, y0, x1, y1 = roi
    rgb = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
    order = sorted(faces, key=lambda f: -np.linalg.norm(f.pts.mean(axis=0) - cam.centre))
    for f in order:
        if cull and not face_visible(cam, f.pts):
            continue
        q, _ = cam.project(f.pts)
        warp_to_quad(f.tex, q - [x0, y0], rgb, alpha, f.shade)
    if alpha.max() <= 0:
        return None
    return Layer(rgb, alpha, x0, y0)


def billboard(cam: PoleCamera, rgba: np.ndarray, xy: tuple[float, float], width_m: float, height_m: float,
              z0: float = 0.0) -> Layer | None:
    """A vertical picture standing on the ground at `xy`, turned to face the camera."""
    d = np.array([xy[0] - cam.x_m, xy[1] - cam.y_m])
    n = np.linalg.norm(d)
    if n < 0.5:
        return None
    right = np.array([d[1], -d[0], 0.0]) / n
    base = np.array([xy[0], xy[1], z0])
    up = np.array([0, 0, height_m])
    pts = np.array([base - right * width_m / 2 + up, base + right * width_m / 2 + up,
                    base + right * width_m / 2, base - right * width_m / 2])
    return render_faces(cam, [Face(pts, rgba)], cull=False)


def composite(img: np.ndarray, layer: Layer) -> None:
    """Alpha-blend a layer into the float image in place."""
    h, w = layer.alpha.shape
    sl = (slice(layer.y0, layer.y0 + h), slice(layer.x0, layer.x0 + w))
    a = layer.alpha[..., None]
    img[sl] = img[sl] * (1 - a) + layer.rgb
