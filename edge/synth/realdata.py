"""The project's real data (../shared/data): garbage-bag photos and incident-free road clips.

The bag photos are split by file name: the first 80 % may be used for training (whole photos and bag
cut-outs), the last 20 % are held out for the real-photo figure in the model card. Road clips are split by
time: frames from the first half may serve as backgrounds, the second half stays unseen.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)
TRAIN_FRACTION = 0.8


def data_dir() -> Path | None:
    """Where the shared data lives: $CITYOPS_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("CITYOPS_DATA")
    cands = [Path(env)] if env else []
    root = Path(__file__).resolve().parents[2]
    cands += [root.parent / "shared" / "data", root / "shared" / "data"]
    for c in cands:
        if (c / "trashbags" / "images").is_dir():
            return c
    return None


def trashbag_split(root: Path) -> tuple[list[Path], list[Path]]:
    """(training images, held-out images), split at 80 % of the sorted file names."""
    files = sorted((root / "trashbags" / "images").glob("*.jpg"))
    k = int(len(files) * TRAIN_FRACTION)
    return files[:k], files[k:]


def label_path(img: Path) -> Path:
    return img.parent.parent / "labels" / (img.stem + ".txt")


def read_polygons(img: Path) -> list[np.ndarray]:
    """Normalised polygons (k,2) of one photo's bags."""
    lp = label_path(img)
    if not lp.exists():
        return []
    out = []
    for line in lp.read_text().splitlines():
        v = line.split()
        if len(v) >= 7:
            out.append(np.array(v[1:], np.float32).reshape(-1, 2))
    return out


def polygon_boxes(polys: list[np.ndarray]) -> np.ndarray:
    """(n,4) normalised xyxy of each polygon."""
    if not polys:
        return np.zeros((0, 4), np.float32)
    return np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in polys], np.float32)


def load_cutouts(files: list[Path], limit: int, rng: np.random.Generator) -> list[np.ndarray]:
    """RGBA cut-outs (float32, alpha 0..255) of single bags, cut with their polygons."""
    out: list[np.ndarray] = []
    order = rng.permutation(len(files))
    for i in order:
        img = cv2.imread(str(files[i]))
        if img is None:
            continue
        h, w = img.shape[:2]
        for p in read_polygons(files[i]):
            pts = (p * [w, h]).astype(np.int32)
            x0, y0 = pts.min(axis=0)
            x1, y1 = pts.max(axis=0)
            if x1 - x0 < 40 or y1 - y0 < 40 or (x1 - x0) * (y1 - y0) > 0.5 * w * h:
                continue
            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [pts], 255)
            crop = img[y0:y1, x0:x1].astype(np.float32)
            a = cv2.GaussianBlur(m[y0:y1, x0:x1], (3, 3), 0).astype(np.float32)
            s = 96 / max(crop.shape[:2])
            rgba = np.concatenate([crop, a[..., None]], axis=2)
            out.append(cv2.resize(rgba, (max(2, int(crop.shape[1] * s)), max(2, int(crop.shape[0] * s))), interpolation=cv2.INTER_AREA))
            if len(out) >= limit:
                return out
    return out


def road_frames(root: Path, first_half: bool = True, stride: int = 5) -> list[np.ndarray]:
    """Frames of the real road clips: the first half (for training backgrounds) or the second (unseen)."""
    frames = []
    for clip in sorted((root / "road-clips").glob("*")):
        if clip.suffix not in (".mp4", ".avi"):
            continue
        cap = cv2.VideoCapture(str(clip))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        lo, hi = (0, n // 2) if first_half else (n // 2, n)
        i = 0
        while True:
            ok, f = cap.read()
            if not ok:
                break
            if lo <= i < hi and (i - lo) % stride == 0:
                frames.append(f)
            i += 1
        cap.release()
    return frames
