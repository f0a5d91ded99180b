"""Procedural textures and noise, all drawn from a caller's seeded `np.random.Generator`."""
from __future__ import annotations

import cv2
import numpy as np


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Value noise in [-1, 1] with features about `cell` pixels wide; cheap because it is resized, not computed."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = max(cell / (2 ** o), 1.0)
        gh, gw = int(h / c) + 2, int(w / c) + 2
        g = rng.standard_normal((gh, gw)).astype(np.float32)
        out += amp * cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    return np.clip(out / (np.abs(out).max() + 1e-6), -1, 1)


def blob_mask(rng: np.random.Generator, h: int, w: int, roughness: float = 0.35, fill: float = 0.55) -> np.ndarray:
    """An irregular, single-piece blob filling roughly `fill` of an ellipse inscribed in (h, w): float mask 0..1."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2)
    n = smooth_noise(rng, h, w, max(h, w) / 3, octaves=3)
    field = 1.0 - r + roughness * n
    m = (field > (1.0 - fill)).astype(np.uint8)
    # keep the largest component so the blob is one thing
    num, lab, stats, _ = cv2.connectedComponentsWithStats(m, 8)
    if num > 2:
        keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        m = (lab == keep).astype(np.uint8)
    k = max(1, int(min(h, w) * 0.02)) | 1
    return cv2.GaussianBlur(m.astype(np.float32), (k, k), 0)


def asphalt(rng: np.random.Generator, h: int, w: int, base: float) -> np.ndarray:
    """Grey asphalt with patches and aggregate grain: (h, w, 3) float32 0..255."""
    low = smooth_noise(rng, h, w, max(h, w) / 4) * 10
    mid = smooth_noise(rng, h, w, 12, octaves=2) * 6
    grain = rng.standard_normal((h, w)).astype(np.float32) * 5
    g = base + low + mid + grain
    tint = rng.uniform(-4, 4, 3).astype(np.float32)
    return np.clip(g[..., None] + tint, 0, 255)


def tiles(rng: np.random.Generator, h: int, w: int, px_per_m: float) -> np.ndarray:
    """Pavement tiles (square or brick pattern) with grout lines."""
    size_m = rng.choice([0.2, 0.3, 0.4, 0.5, 0.6])
    s = max(3, int(size_m * px_per_m))
    colours = [(150, 150, 150), (120, 130, 160), (110, 110, 140), (170, 165, 160), (100, 120, 130), (90, 100, 150)]
    c = np.array(colours[rng.integers(len(colours))], np.float32) * rng.uniform(0.7, 1.1)
    img = np.zeros((h, w, 3), np.float32) + c
    yy, xx = np.mgrid[0:h, 0:w]
    brick = rng.random() < 0.5
    row = yy // s
    xoff = np.where((row % 2 == 1) & brick, s // 2, 0)
    cellx, celly = (xx + xoff) // (s * (2 if brick else 1)), row
    table = rng.random((int(celly.max()) + 1, int(cellx.max()) + 1)).astype(np.float32)
    img += ((table[celly, cellx] - 0.5) * 22)[..., None]
    grout = ((yy % s) < max(1, s // 12)) | (((xx + xoff) % (s * (2 if brick else 1))) < max(1, s // 12))
    img[grout] *= 0.72
    img += (smooth_noise(rng, h, w, max(h, w) / 5) * 10)[..., None]
    img += rng.standard_normal((h, w, 1)).astype(np.float32) * 4
    return np.clip(img, 0, 255)


def concrete(rng: np.random.Generator, h: int, w: int, px_per_m: float) -> np.ndarray:
    base = rng.uniform(120, 175)
    img = asphalt(rng, h, w, base) * np.array([1.0, 1.0, 0.97], np.float32)
    slab = max(4, int(rng.uniform(2.0, 4.0) * px_per_m))
    yy, xx = np.mgrid[0:h, 0:w]
    joints = ((yy % slab) < 2) | ((xx % slab) < 2)
    img[joints] *= 0.8
    return img


def metal_pattern(rng: np.random.Generator, n: int) -> np.ndarray:
    """Top view of a manhole cover's cast pattern, (n, n) float32 in [-1, 1]."""
    yy, xx = (np.mgrid[0:n, 0:n].astype(np.float32) - n / 2) / (n / 2)
    r, a = np.hypot(xx, yy), np.arctan2(yy, xx)
    kind = rng.integers(5)
    if kind == 0:
        p = np.sin(r * rng.uniform(18, 40))
    elif kind == 1:
        f = rng.uniform(10, 22)
        p = np.sign(np.sin(xx * f)) * np.sign(np.sin(yy * f))
    elif kind == 2:
        p = np.sin(a * rng.integers(6, 20)) * (r > 0.3)
    elif kind == 3:
        f = rng.uniform(12, 30)
        p = np.sin((xx + yy) * f) * np.sin((xx - yy) * f)
    else:
        p = (np.sin(r * 12) > 0.3).astype(np.float32) * 2 - 1
    return p.astype(np.float32)
