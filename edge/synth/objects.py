"""What things look like: incidents, hard negatives and street furniture, each drawn from a seed.

Flat things return a top-down RGBA patch (float32, alpha 0..255) and its metres per pixel; upright things
return a `Layer` rendered through the camera. Hard negatives are drawn with the same care as incidents, so
the detector has to learn what a thing is, not how sharply it was rendered.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .camera import PoleCamera
from .render import Face, Layer, billboard, box_faces, render_faces, solid
from .textures import blob_mask, metal_pattern, smooth_noise

RES = 0.01  # metres per pixel of flat patches


def _rgba(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.concatenate([np.clip(rgb, 0, 255), np.clip(alpha, 0, 1)[..., None] * 255], axis=2).astype(np.float32)


def _disc(n: int, r_frac: float = 1.0, soft: float = 1.5) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) - (n - 1) / 2
    r = np.hypot(xx, yy)
    return np.clip((r_frac * n / 2 - r) / soft + 0.5, 0, 1)


# ---------------------------------------------------------------- manholes and look-alikes (flat)
def manhole_cover(rng: np.random.Generator, diameter: float) -> tuple[np.ndarray, float]:
    """An intact cover: cast-iron or concrete disc (sometimes square) with a pattern and a frame."""
    n = int(diameter * 1.25 / RES)
    square = rng.random() < 0.2
    if square:
        outer = np.zeros((n, n), np.float32)
        m = int(n * 0.1)
        outer[m:n - m, m:n - m] = 1
        inner = np.zeros((n, n), np.float32)
        m2 = int(n * 0.16)
        inner[m2:n - m2, m2:n - m2] = 1
    else:
        outer = _disc(n, 0.98)
        inner = _disc(n, 0.80)
    iron = rng.random() < 0.75
    base = np.array([rng.uniform(40, 95)] * 3, np.float32) if iron else np.array([rng.uniform(110, 160)] * 3, np.float32)
    if iron and rng.random() < 0.3:
        base *= np.array([0.8, 0.9, 1.15], np.float32)  # rust (BGR)
    pat = metal_pattern(rng, n)
    rgb = np.zeros((n, n, 3), np.float32) + base
    rgb += (pat * rng.uniform(8, 25))[..., None]
    rgb += (smooth_noise(rng, n, n, n / 4) * 12)[..., None]
    frame_col = np.array([rng.uniform(70, 150)] * 3, np.float32)
    ring = np.clip(outer - inner, 0, 1)[..., None]
    rgb = rgb * (1 - ring) + frame_col * ring
    gap = np.clip(_disc(n, 0.82) - inner, 0, 1)[..., None] if not square else 0
    rgb = rgb * (1 - 0.6 * gap)
    return _rgba(rgb, outer), RES


def manhole_open(rng: np.random.Generator, diameter: float, to_camera: float) -> tuple[np.ndarray, float]:
    """A missing or displaced cover: a dark shaft inside a frame, its far inner wall lit, sometimes the
    cover lying half off. `to_camera` is the angle (rad, patch frame) pointing at the camera. Five channels:
    RGBA, then the label's mask (the frame and the displaced cover, without the rubble around them)."""
    n = int(diameter * 1.9 / RES)
    c = n // 2
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) - (n - 1) / 2
    r_shaft = diameter / 2 / RES * 0.82
    r_frame = diameter / 2 / RES
    r = np.hypot(xx, yy)
    shaft = np.clip(r_shaft - r + 0.5, 0, 1)
    frame = np.clip(r_frame - r + 0.5, 0, 1)
    rgb = np.zeros((n, n, 3), np.float32)
    # far wall: the half of the shaft away from the camera shows the lit concrete wall, fading down
    ux, uy = math.cos(to_camera), -math.sin(to_camera)
    along = (xx * ux + yy * uy) / r_shaft  # +1 towards the camera
    wall_depth = rng.uniform(0.25, 0.6)
    wall = np.clip((-along - (1 - wall_depth * 2)) / (wall_depth * 2), 0, 1) * (r < r_shaft)
    dark = rng.uniform(5, 25)
    wall_col = np.array([rng.uniform(60, 110)] * 3, np.float32)
    rgb[:] = dark
    rgb += wall[..., None] * (wall_col - dark) * (0.4 + 0.6 * (1 - np.clip(-along, 0, 1)))[..., None]
    rgb += (smooth_noise(rng, n, n, n / 6) * 6)[..., None]
    if rng.random() < 0.5:  # ladder rungs on the wall
        for k in range(3):
            t = 0.35 + 0.2 * k
            py, px = int(c - uy * r_shaft * t), int(c - ux * r_shaft * t)
            cv2.line(rgb, (px - int(n * 0.06), py), (px + int(n * 0.06), py), (90, 90, 95), max(1, n // 80))
    frame_col = np.array([rng.uniform(60, 150)] * 3, np.float32)
    rim = np.clip(frame - shaft, 0, 1)[..., None]
    rgb = rgb * (1 - rim) + frame_col * rim
    alpha = frame.copy()
    # broken pavement around the hole: painted, but not part of the label (a person boxes the hole and its cover,
    # not faint grey rubble the colour of the road; with it the boxes were up to twice the hole's size)
    if rng.random() < 0.5:
        debris = np.clip(blob_mask(rng, n, n, 0.5, 0.9) - frame, 0, 1) * rng.uniform(0.3, 0.8)
        rgb = rgb * (1 - debris[..., None]) + rng.uniform(70, 130) * debris[..., None]
        alpha = np.maximum(alpha, debris)
    patch = np.concatenate([_rgba(rgb, alpha), frame[..., None] * 255], axis=2)
    if rng.random() < 0.35:  # the displaced cover lies next to the hole, partly over it
        cov, _ = manhole_cover(rng, diameter * 0.95)
        cn = cov.shape[0]
        ang = rng.uniform(0, 2 * math.pi)
        off = rng.uniform(0.55, 0.8) * diameter / RES
        ox, oy = int(c + math.cos(ang) * off - cn / 2), int(c + math.sin(ang) * off - cn / 2)
        big = np.zeros((n + 2 * cn, n + 2 * cn, 5), np.float32)
        big[cn:cn + n, cn:cn + n] = patch
        sl = big[cn + oy:cn + oy + cn, cn + ox:cn + ox + cn]
        a = cov[..., 3:4] / 255
        sl[..., :3] = sl[..., :3] * (1 - a) + cov[..., :3] * a
        sl[..., 3:5] = np.maximum(sl[..., 3:5], cov[..., 3:4])
        patch = big
    return patch, RES


def drain_grate(rng: np.random.Generator, size: float) -> tuple[np.ndarray, float]:
    """Rain grate (round or rectangular) with slots: a hard negative for an open manhole."""
    n = int(size / RES)
    round_ = rng.random() < 0.5
    h = n if round_ else int(n * rng.uniform(0.4, 0.7))
    rgb = np.zeros((h, n, 3), np.float32) + rng.uniform(50, 110)
    slots = max(4, int(rng.uniform(6, 14)))
    period = n / slots
    xx = np.arange(n)
    slot = ((xx % period) < period * rng.uniform(0.35, 0.55)).astype(np.float32)
    body = _disc(n, 0.9)[:h] if round_ else np.pad(np.ones((h - 2 * (h // 8), n - 2 * (n // 10))), ((h // 8, h // 8), (n // 10, n // 10)))
    dark = slot[None, :] * body
    rgb = rgb * (1 - 0.85 * dark[..., None])
    alpha = _disc(n, 1.0)[:h] if round_ else np.ones((h, n), np.float32)
    return _rgba(rgb, alpha), RES


def painted_circle(rng: np.random.Generator, size: float) -> tuple[np.ndarray, float]:
    """A painted ring, disc or symbol on the road."""
    n = int(size / RES)
    col = np.array([235, 235, 235] if rng.random() < 0.6 else [40, 200, 230], np.float32) * rng.uniform(0.7, 1.0)
    if rng.random() < 0.5:
        m = _disc(n, 0.98) - _disc(n, rng.uniform(0.6, 0.85))
    else:
        m = _disc(n, 0.98)
        if rng.random() < 0.5:
            m = m - _disc(n, 0.7) * 0.0  # a filled disc, e.g. a painted dark-blue or white spot
            col = np.array([rng.uniform(20, 120)] * 3, np.float32) if rng.random() < 0.4 else col
    wear = np.clip(0.8 + smooth_noise(rng, n, n, n / 8) * 0.4, 0, 1)
    rgb = np.zeros((n, n, 3), np.float32) + col
    return _rgba(rgb, np.clip(m, 0, 1) * wear * rng.uniform(0.6, 0.95)), RES


def stain(rng: np.random.Generator, size: float, kind: str) -> tuple[np.ndarray, float]:
    """Oil stain, dark repair patch, wet patch or a tree shadow: darker ground that is not water."""
    res = max(RES, size / 400)
    n = max(8, int(size / res))
    h = max(8, int(n * rng.uniform(0.4, 1.0)))
    if kind == "repair":
        m = np.zeros((h, n), np.float32)
        m[h // 10:h - h // 10, n // 10:n - n // 10] = 1
        m = cv2.GaussianBlur(m, (5, 5), 0)
        rgb = np.zeros((h, n, 3), np.float32) + rng.uniform(25, 60)
        rgb += rng.standard_normal((h, n, 1)).astype(np.float32) * 6
        return _rgba(rgb, m * rng.uniform(0.7, 1.0)), res
    if kind == "shadow_tree":
        base = smooth_noise(rng, h, n, n / 10, octaves=3)
        m = np.clip((base + 0.1) * 3, 0, 1) * blob_mask(rng, h, n, 0.5, 0.8)
        rgb = np.zeros((h, n, 3), np.float32)
        return _rgba(rgb, m * rng.uniform(0.3, 0.55)), res
    m = blob_mask(rng, h, n, 0.5, rng.uniform(0.5, 0.8))
    inner = smooth_noise(rng, h, n, n / 6) * 0.25 + 0.75
    if kind == "oil":
        rgb = np.zeros((h, n, 3), np.float32) + rng.uniform(10, 35)
        return _rgba(rgb, m * inner * rng.uniform(0.35, 0.7)), res
    # wet patch: darkened ground with a soft edge, no reflection
    m = cv2.GaussianBlur(m, (0, 0), max(1.0, n / 30))
    rgb = np.zeros((h, n, 3), np.float32) + rng.uniform(15, 40)
    return _rgba(rgb, m * rng.uniform(0.25, 0.5)), res


def ponding(rng: np.random.Generator, size: float, sky: tuple[np.ndarray, np.ndarray], night: bool,
            elevation_deg: float) -> tuple[np.ndarray, float]:
    """Standing water: a sharp-edged sheet over darkened ground that mirrors the sky more the flatter it is
    seen (Fresnel), with a wet rim, ripples, and street lights mirrored at night."""
    res = max(RES, size / 500)
    n = max(16, int(size / res))
    h = max(12, int(n * rng.uniform(0.35, 0.9)))
    m = blob_mask(rng, h, n, rng.uniform(0.3, 0.6), rng.uniform(0.55, 0.8))
    hard = np.clip((m - 0.5) * 6 + 0.5, 0, 1)
    rim = np.clip(cv2.GaussianBlur(m, (0, 0), max(1.5, n / 60)) * 1.3, 0, 1)
    # mirror of the sky: from the horizon colour (far edge) to the zenith colour (near edge)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    refl = sky[1] * (1 - yy) + sky[0] * yy
    refl = refl * rng.uniform(0.7, 1.0) + (smooth_noise(rng, h, n, n / 5) * 20)[..., None]
    if rng.random() < 0.5:  # ripples / wind streaks
        xx = np.arange(n, dtype=np.float32)[None, :]
        refl += (np.sin(xx / rng.uniform(3, 9) + smooth_noise(rng, h, n, n / 8) * 4) * 10)[..., None]
    if rng.random() < 0.4:  # dark reflections of buildings and trees along the far edge
        band = np.clip(smooth_noise(rng, h, n, n / 4) + 0.2, 0, 1) * (yy[..., 0] < rng.uniform(0.3, 0.7))
        refl = refl * (1 - 0.6 * band[..., None])
    fres = float(np.clip(1.1 - elevation_deg / 70.0, 0.35, 0.95)) * rng.uniform(0.85, 1.05)
    if night:
        refl = refl * 0.35
        yy2, xx2 = np.mgrid[0:h, 0:n].astype(np.float32)
        for _ in range(int(rng.integers(1, 4))):  # mirrored street lights
            cx_, cy_ = rng.uniform(0.2, 0.8) * n, rng.uniform(0.2, 0.8) * h
            g = np.exp(-(((xx2 - cx_) / (n * 0.04)) ** 2 + ((yy2 - cy_) / (h * 0.2)) ** 2))
            refl += g[..., None] * np.array([120, 210, 255], np.float32)
        fres = max(fres, 0.6)
    if rng.random() < 0.25:  # muddy water
        refl = refl * 0.55 + np.array([70, 100, 120], np.float32) * 0.45
    dark = 0.5  # wet ground under the water, seen through it
    a = fres + dark * (1 - fres)
    rgb = refl * (fres / a)
    alpha = np.maximum(hard * a, rim * rng.uniform(0.3, 0.5))
    rgb = rgb * hard[..., None]  # the rim is dark wet ground, not mirror
    return _rgba(rgb, alpha), res


# ---------------------------------------------------------------- upright things
def _bag_sprite(rng: np.random.Generator, n: int = 64) -> np.ndarray:
    h = int(n * rng.uniform(0.7, 1.2))
    m = blob_mask(rng, h, n, 0.25, 0.8)
    palettes = [(25, 25, 25), (40, 40, 45), (230, 230, 230), (180, 120, 40), (60, 150, 60), (40, 180, 220),
                (150, 90, 180), (200, 200, 200), (50, 60, 160)]
    col = np.array(palettes[rng.integers(len(palettes))], np.float32) * rng.uniform(0.7, 1.1)
    yy = np.linspace(1.15, 0.7, h, dtype=np.float32)[:, None, None]
    xx = np.linspace(0.9, 1.1, n, dtype=np.float32)[None, :, None]
    rgb = col * yy * xx + (smooth_noise(rng, h, n, n / 6, 2) * 35)[..., None]
    wr = smooth_noise(rng, h, n, n / 12, 2)
    rgb += (np.clip(wr, 0.6, 1) - 0.6)[..., None] * 200  # glossy creases
    if rng.random() < 0.5:  # tied neck
        cv2.ellipse(m, (n // 2, int(h * 0.08)), (max(2, n // 12), max(2, h // 8)), 0, 0, 360, 1.0, -1)
    return _rgba(rgb, m)


def garbage_pile(rng: np.random.Generator, cam: PoleCamera, xy: tuple[float, float], size: float,
                 cutouts: list[np.ndarray]) -> list[tuple[tuple[float, float], Layer]]:
    """A roadside heap of bags (real cut-outs where available) and loose rubbish; returns sub-layers with
    their own ground positions so the scene can paint them far to near."""
    out = []
    k = int(rng.integers(3, 13))
    pts = rng.normal(0, size / 6, (k, 2))
    for i in np.argsort(-pts[:, 1] * np.sign(xy[1] - cam.y_m + 1e-9)):
        p = (xy[0] + pts[i, 0], xy[1] + pts[i, 1])
        bag_h = rng.uniform(0.45, 1.0)
        if cutouts and rng.random() < 0.6:
            sp = cutouts[rng.integers(len(cutouts))]
            sp = sp * np.array([*rng.uniform(0.75, 1.2, 3), 1.0], np.float32)
        else:
            sp = _bag_sprite(rng)
        aspect = sp.shape[1] / sp.shape[0]
        lay = billboard(cam, sp, p, bag_h * aspect, bag_h)
        if lay is not None:
            out.append((p, lay))
    for _ in range(int(rng.integers(0, 4))):  # loose rubbish: cardboard, foam, crates
        p = (xy[0] + rng.normal(0, size / 5), xy[1] + rng.normal(0, size / 5))
        s = rng.uniform(0.25, 0.6)
        col = [(60, 110, 150), (220, 220, 220), (90, 140, 180), (50, 50, 50), (40, 60, 160)][rng.integers(5)]
        col = tuple(float(v) * rng.uniform(0.8, 1.1) for v in col)
        faces = [Face(f, solid(col, rng), sh) for f, sh in zip(box_faces(p, (s, s * rng.uniform(0.6, 1.4), s * rng.uniform(0.3, 0.9)), rng.uniform(0, 3)), (0.8, 0.9, 0.7, 0.85, 1.05))]
        lay = render_faces(cam, faces)
        if lay is not None:
            out.append((p, lay))
    return out


def _brick_tex(rng: np.random.Generator, w: int = 96, h: int = 64) -> np.ndarray:
    base = np.array([60, 80, 170] if rng.random() < 0.6 else [150, 150, 150], np.float32) * rng.uniform(0.7, 1.1)
    t = np.zeros((h, w, 3), np.float32) + base
    bh, bw = max(3, h // 8), max(6, w // 6)
    for r in range(0, h, bh):
        t[r:r + 1] *= 0.6
        off = (r // bh % 2) * bw // 2
        for c in range(off, w, bw):
            t[r:r + bh, c:c + 1] *= 0.6
    return np.clip(t + rng.standard_normal((h, w, 1)).astype(np.float32) * 10, 0, 255)


def _stripes(rng: np.random.Generator, col, w: int = 64, h: int = 64, period: int = 6, vertical: bool = True, depth: float = 0.25) -> np.ndarray:
    t = np.zeros((h, w, 3), np.float32) + np.array(col, np.float32)
    idx = np.arange(w if vertical else h)
    s = 1 - depth * (np.sin(idx * 2 * math.pi / period) > 0)
    t *= s[None, :, None] if vertical else s[:, None, None]
    return np.clip(t + rng.standard_normal((h, w, 1)).astype(np.float32) * 6, 0, 255)


def _mound_sprite(rng: np.random.Generator, colour, n: int = 96) -> np.ndarray:
    h = n // 2
    yy, xx = np.mgrid[0:h, 0:n].astype(np.float32)
    xn = (xx - n / 2) / (n / 2)
    prof = (1 - xn ** 2) ** rng.uniform(0.6, 1.2) * h * rng.uniform(0.7, 1.0)
    prof = prof + smooth_noise(rng, 1, n, n / 8)[0] * h * 0.08
    m = np.clip((yy - (h - prof)) + 0.5, 0, 1)
    light = 1.0 + 0.25 * xn * (1 if rng.random() < 0.5 else -1)
    rgb = np.array(colour, np.float32) * light[..., None] * np.linspace(1.05, 0.85, h, dtype=np.float32)[:, None, None]
    grain = rng.standard_normal((h, n, 1)).astype(np.float32) * rng.uniform(8, 22)
    return _rgba(rgb + grain, m)


def material_pile(rng: np.random.Generator, cam: PoleCamera, xy: tuple[float, float], size: float) -> list[tuple[tuple[float, float], Layer]]:
    """Bricks, sand, gravel, pipes or boards piled on the road or pavement."""
    kind = rng.choice(["bricks", "sand", "gravel", "pipes", "boards"])
    yaw = rng.uniform(0, math.pi)
    out = []
    if kind in ("sand", "gravel"):
        col = (90, 160, 200) if kind == "sand" else (130, 130, 125)
        col = tuple(np.array(col) * rng.uniform(0.75, 1.1))
        sp = _mound_sprite(rng, col)
        lay = billboard(cam, sp, xy, size, size * 0.5 * rng.uniform(0.5, 0.9))
        if lay is not None:
            out.append((xy, lay))
        return out
    if kind == "bricks":
        for i in range(int(rng.integers(1, 4))):
            p = (xy[0] + rng.normal(0, size / 4), xy[1] + rng.normal(0, size / 4))
            s = (rng.uniform(0.6, 1.2), rng.uniform(0.5, 1.0), rng.uniform(0.4, 1.1))
            tex = _brick_tex(rng)
            faces = [Face(f, tex, sh) for f, sh in zip(box_faces(p, s, yaw + rng.normal(0, 0.2)), (0.8, 0.95, 0.7, 0.85, 1.1))]
            lay = render_faces(cam, faces)
            if lay is not None:
                out.append((p, lay))
        return out
    if kind == "pipes":
        col = [(60, 130, 60), (200, 200, 200), (40, 40, 40), (40, 110, 200), (120, 120, 130)][rng.integers(5)]
        L, D = rng.uniform(1.5, 4.0), rng.uniform(0.3, 0.8)
        end = np.zeros((48, 48, 3), np.float32) + np.array(col, np.float32) * 0.8
        k = int(rng.integers(2, 5))
        for i in range(k):
            for j in range(k - i):
                c = (int(48 * (j + 0.5 + i / 2) / k), int(48 - 48 * (i + 0.5) / k))
                cv2.circle(end, c, max(2, int(20 / k)), tuple(float(v) for v in np.array(col) * 1.1), -1)
                cv2.circle(end, c, max(1, int(12 / k)), (20, 20, 20), -1)
        side = _stripes(rng, col, period=int(rng.integers(5, 12)), vertical=False)
        faces = [Face(f, t, sh) for f, t, sh in zip(box_faces(xy, (L, D, D * 0.8), yaw), (side, end, side, end, side), (0.85, 0.95, 0.75, 0.9, 1.1))]
        lay = render_faces(cam, faces)
        if lay is not None:
            out.append((xy, lay))
        return out
    col = (60, 120, 170) if rng.random() < 0.7 else (180, 180, 170)
    wood = _stripes(rng, tuple(np.array(col) * rng.uniform(0.8, 1.1)), period=int(rng.integers(4, 9)), vertical=False, depth=0.35)
    L, W, H = rng.uniform(1.5, 3.5), rng.uniform(0.6, 1.3), rng.uniform(0.2, 0.7)
    faces = [Face(f, wood, sh) for f, sh in zip(box_faces(xy, (L, W, H), yaw), (0.85, 0.95, 0.75, 0.9, 1.1))]
    lay = render_faces(cam, faces)
    if lay is not None:
        out.append((xy, lay))
    return out


def illegal_structure(rng: np.random.Generator, cam: PoleCamera, xy: tuple[float, float], size: float) -> Layer | None:
    """Makeshift shed, tent, hut or a fenced temporary building on the pavement or road side."""
    kind = rng.choice(["shed", "tent", "hut", "fenced"])
    yaw = rng.uniform(-0.3, 0.3) + (math.pi / 2 if rng.random() < 0.5 else 0)
    w, d = size * rng.uniform(0.8, 1.2), size * rng.uniform(0.5, 0.9)
    if kind == "tent":
        h = rng.uniform(1.6, 2.6)
        col = [(180, 90, 30), (60, 140, 60), (40, 110, 230), (220, 220, 220), (40, 40, 180)][rng.integers(5)]
        tex = _stripes(rng, col, period=int(rng.integers(8, 20)), depth=0.15)
        c, s = math.cos(yaw), math.sin(yaw)
        ex, ey = np.array([c, s, 0]) * w / 2, np.array([-s, c, 0]) * d / 2
        b = np.array([xy[0], xy[1], 0.0])
        top = np.array([0, 0, h])
        p0, p1, p2, p3 = b - ex - ey, b + ex - ey, b + ex + ey, b - ex + ey
        r0, r1 = b - ex + top, b + ex + top
        faces = [Face(np.array([r0, r1, p1, p0]), tex, 0.95), Face(np.array([r1, r0, p3, p2]), tex, 0.75),
                 Face(np.array([r0, r0, p0, p3]), tex, 0.85), Face(np.array([r1, r1, p2, p1]), tex, 0.85)]
        for f in faces:  # doors / the triangle ends
            pass
        return render_faces(cam, faces, cull=False)
    if kind == "fenced":
        h = rng.uniform(1.8, 2.5)
        col = [(200, 120, 40), (60, 150, 60), (230, 230, 230), (40, 40, 40)][rng.integers(4)]
        panel = _stripes(rng, col, period=int(rng.integers(16, 40)), depth=0.2)
        if rng.random() < 0.5:
            cv2.rectangle(panel, (0, 44), (63, 52), (255, 255, 255), -1)
        faces = [Face(f, panel, sh) for f, sh in zip(box_faces(xy, (w, d, h), yaw)[:4], (0.9, 0.8, 0.95, 0.85))]
        roof = box_faces(xy, (w * 0.7, d * 0.7, h + 0.8), yaw)
        faces += [Face(f, solid((200, 200, 200), rng), 1.05) for f in roof[4:]]
        return render_faces(cam, faces)
    h = rng.uniform(2.0, 3.0)
    if kind == "shed":
        col = [(170, 90, 20), (200, 200, 200), (60, 60, 170), (170, 170, 170)][rng.integers(4)]
        wall = _stripes(rng, col, period=int(rng.integers(5, 10)), depth=0.3)
    else:
        wall = _brick_tex(rng) if rng.random() < 0.5 else _stripes(rng, (60, 100, 140), period=12, depth=0.3)
    door = wall.copy()
    cv2.rectangle(door, (20, 18), (44, 63), tuple(float(v) for v in rng.uniform(20, 80, 3)), -1)
    if rng.random() < 0.5:
        cv2.rectangle(wall, (10, 15), (30, 32), (40, 40, 40), -1)
    side = box_faces(xy, (w, d, h), yaw)
    faces = [Face(side[0], door, 0.95), Face(side[1], wall, 0.8), Face(side[2], wall, 0.75), Face(side[3], wall, 0.85)]
    roof_col = [(170, 90, 20), (200, 200, 200), (40, 40, 140), (90, 90, 90)][rng.integers(4)]
    roof_tex = _stripes(rng, roof_col, period=6, depth=0.3)
    rt = side[4].copy()
    rt[:2, 2] += rng.uniform(0.1, 0.5)  # sloped roof
    faces.append(Face(rt, roof_tex, 1.1))
    return render_faces(cam, faces, cull=True)


def car(rng: np.random.Generator, cam: PoleCamera, xy: tuple[float, float], yaw: float) -> Layer | None:
    col = [(30, 30, 30), (230, 230, 230), (180, 180, 180), (40, 40, 160), (150, 80, 30), (60, 60, 60), (40, 120, 200)][rng.integers(7)]
    L, W = rng.uniform(3.8, 5.0), rng.uniform(1.7, 1.9)
    body = solid(col, rng, noise=4)
    glass = solid((40, 35, 30), rng, noise=4)
    side_tex = body.copy()
    faces = [Face(f, t, sh) for f, t, sh in zip(box_faces(xy, (W, L, 0.8), yaw, 0.25), (body, side_tex, body, side_tex, body), (0.85, 0.75, 0.8, 0.7, 1.1))]
    faces += [Face(f, glass, sh) for f, sh in zip(box_faces(xy, (W * 0.9, L * 0.55, 0.55), yaw, 1.05)[:4], (0.9, 0.8, 0.9, 0.8))]
    faces += [Face(box_faces(xy, (W * 0.9, L * 0.55, 0.55), yaw, 1.05)[4], body, 1.1)]
    faces += [Face(f, solid((15, 15, 15), rng), 0.7) for f in box_faces(xy, (W * 0.95, L * 0.9, 0.3), yaw, 0.0)[:4]]
    return render_faces(cam, faces)


def van(rng: np.random.Generator, cam: PoleCamera, xy: tuple[float, float], yaw: float) -> Layer | None:
    """A tall box van: taller than a car, so it hides more of what stands behind it."""
    col = [(235, 235, 235), (200, 200, 205), (120, 60, 30), (90, 90, 90), (40, 180, 230)][rng.integers(5)]
    L, W, H = rng.uniform(4.8, 5.6), rng.uniform(1.9, 2.1), rng.uniform(1.9, 2.4)
    body = solid(col, rng, noise=4)
    front = body.copy()
    front[:7] = solid((45, 40, 35), rng, noise=4)[:7]  # windscreen on the upper part of the front
    side = body.copy()
    side[3:6] = side[3:6] * 0.55  # a dark window band
    tex = (body, side, front, side, body)
    faces = [Face(f, t, sh) for f, t, sh in zip(box_faces(xy, (W, L, H - 0.3), yaw, 0.3), tex, (0.85, 0.75, 0.8, 0.7, 1.1))]
    faces += [Face(f, solid((15, 15, 15), rng), 0.7) for f in box_faces(xy, (W * 0.95, L * 0.9, 0.3), yaw, 0.0)[:4]]
    return render_faces(cam, faces)


def truck(rng: np.random.Generator, cam: PoleCamera, xy: tuple[float, float], yaw: float) -> Layer | None:
    """A small box truck: a cab and a cargo box up to 3.4 m high, the one vehicle that hides a roadside shed."""
    col = [(235, 235, 235), (150, 90, 40), (40, 40, 160), (60, 140, 60)][rng.integers(4)]
    L, W, H = rng.uniform(6.4, 7.2), rng.uniform(2.2, 2.4), rng.uniform(3.0, 3.4)
    c, s = math.cos(yaw), math.sin(yaw)
    fwd = np.array([-s, c])  # the +y end is the front at yaw 0
    box_xy = tuple(np.array(xy) - fwd * L * 0.14)
    cab_xy = tuple(np.array(xy) + fwd * L * 0.36)
    box = solid(col, rng, noise=5)
    cab = solid((200, 200, 205), rng, noise=4)
    cab_front = cab.copy()
    cab_front[:7] = solid((45, 40, 35), rng, noise=4)[:7]
    faces = [Face(f, box, sh) for f, sh in zip(box_faces(box_xy, (W, L * 0.72, H - 0.5), yaw, 0.5), (0.85, 0.75, 0.8, 0.7, 1.1))]
    faces += [Face(f, t, sh) for f, t, sh in zip(box_faces(cab_xy, (W * 0.95, L * 0.26, 1.9), yaw, 0.5),
                                                  (cab, cab, cab_front, cab, cab), (0.85, 0.75, 0.8, 0.7, 1.1))]
    faces += [Face(f, solid((15, 15, 15), rng), 0.7) for f in box_faces(xy, (W * 0.95, L * 0.9, 0.5), yaw, 0.0)[:4]]
    return render_faces(cam, faces)


def pedestrian(rng: np.random.Generator, cam: PoleCamera, xy: tuple[float, float]) -> Layer | None:
    n, h = 32, 96
    sp = np.zeros((h, n, 4), np.float32)
    top_c = tuple(float(v) for v in rng.uniform(20, 240, 3))
    leg_c = tuple(float(v) for v in rng.uniform(20, 120, 3))
    cv2.circle(sp, (n // 2, 9), 7, (120, 150, 190, 255), -1)
    cv2.rectangle(sp, (7, 17), (25, 55), (*top_c, 255), -1)
    cv2.rectangle(sp, (9, 55), (15, 95), (*leg_c, 255), -1)
    cv2.rectangle(sp, (17, 55), (23, 95), (*leg_c, 255), -1)
    hgt = rng.uniform(1.5, 1.85)
    return billboard(cam, sp, xy, hgt / 3, hgt)


def bin_(rng: np.random.Generator, cam: PoleCamera, xy: tuple[float, float]) -> Layer | None:
    """A wheelie bin or a pair of them: a hard negative for a garbage pile."""
    col = [(60, 130, 40), (160, 90, 30), (120, 120, 120), (40, 40, 170), (40, 160, 200)][rng.integers(5)]
    yaw = rng.uniform(0, math.pi)
    faces = []
    for i in range(int(rng.integers(1, 3))):
        p = (xy[0] + i * 0.75 * math.cos(yaw), xy[1] + i * 0.75 * math.sin(yaw))
        tex = solid(col, rng, noise=5)
        cv2.rectangle(tex, (0, 0), (15, 2), tuple(float(v) * 0.7 for v in col), -1)
        faces += [Face(f, tex, sh) for f, sh in zip(box_faces(p, (0.6, 0.7, 1.0), yaw), (0.9, 0.8, 0.85, 0.75, 1.1))]
    return render_faces(cam, faces)


def cart(rng: np.random.Generator, cam: PoleCamera, xy: tuple[float, float]) -> Layer | None:
    """A parked tricycle cart or hand cart: a hard negative for a material pile."""
    yaw = rng.uniform(0, math.pi)
    col = tuple(float(v) for v in rng.uniform(40, 200, 3))
    faces = [Face(f, solid(col, rng), sh) for f, sh in zip(box_faces(xy, (1.2, 0.9, 0.45), yaw, 0.45), (0.9, 0.8, 0.85, 0.75, 1.0))]
    faces += [Face(f, solid((25, 25, 25), rng), 0.7) for f in box_faces(xy, (1.0, 0.8, 0.45), yaw, 0.0)[:4]]
    if rng.random() < 0.5:
        faces += [Face(f, solid((90, 140, 180), rng), sh) for f, sh in zip(box_faces(xy, (0.6, 0.5, 0.4), yaw, 0.9), (0.9, 0.8, 0.85, 0.75, 1.1))]
    return render_faces(cam, faces)


def tree(rng: np.random.Generator, cam: PoleCamera, xy: tuple[float, float]) -> Layer | None:
    n = 96
    sp = np.zeros((n * 2, n, 4), np.float32)
    cv2.rectangle(sp, (n // 2 - 4, n), (n // 2 + 4, 2 * n), (40, 60, 80, 255), -1)
    m = blob_mask(rng, int(n * 1.1), n, 0.5, 0.85)
    g = np.array([40, 110, 50], np.float32) * rng.uniform(0.6, 1.1)
    crown = (g + (smooth_noise(rng, m.shape[0], n, 6, 2) * 40)[..., None])
    a = m[..., None]
    sp[:m.shape[0], :, :3] = crown * a
    sp[:m.shape[0], :, 3] = m * 255
    hgt = rng.uniform(4, 8)
    return billboard(cam, sp, xy, hgt / 2, hgt)
