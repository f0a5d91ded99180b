"""`synth-dataset`: an ultralytics-layout detection dataset of rendered scenes, real bag photos and real
road frames with pasted objects. Every image comes from (seed, index) alone, so a dataset is reproducible
byte for byte and can be built by several processes."""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import yaml

from . import realdata
from .scene import (CLASSES, Scene, add_edge_vehicles, add_water_at_covers, render, sample_camera, sample_scene,
                    sample_things)

log = logging.getLogger(__name__)

# share of images by source; the rest are rendered streets
REAL_BAG_SHARE = 0.15
PHOTO_BG_SHARE = 0.08
NEGATIVE_ONLY_SHARE = 0.15
# share of rendered training streets offered one or two vehicles cut by the frame edge (about half of them have a
# carriageway that reaches the edge of the view and get one; test sets: none)
EDGE_VEHICLE_SHARE = 0.5
# share of covers, open manholes and drain grates in rendered training streets that stand in a puddle (test sets:
# none, so that they hold the same streets as before)
WATER_AT_COVER_SHARE = 0.35


@dataclass(frozen=True)
class Job:
    index: int
    seed: int
    split: str
    width: int
    out: str
    real_share: float = REAL_BAG_SHARE
    photo_share: float = PHOTO_BG_SHARE
    edge_vehicle_share: float = 0.0
    water_at_cover_share: float = 0.0


_STATE: dict = {}  # per worker process: cut-outs and frames, loaded once (not shared between processes)


def _init_worker(seed: int) -> None:
    root = realdata.data_dir()
    rng = np.random.default_rng(seed)
    if root is None:
        log.warning("shared data not found: no real bag cut-outs or road frames in this dataset")
        _STATE.update(cutouts=[], bag_photos=[], frames=[])
        return
    train_files, _ = realdata.trashbag_split(root)
    _STATE.update(cutouts=realdata.load_cutouts(train_files, 300, rng), bag_photos=train_files,
                  frames=realdata.road_frames(root, first_half=True))


def _pool(workers: int, seed: int) -> "mp.pool.Pool":
    """Worker processes started fresh ("spawn"), never forked: the caller may hold threads (OpenCV's and
    onnxruntime's pools, a GStreamer loop, a logging handler) whose locks a forked child inherits held, and
    then waits on forever. A fork-based pool hung that way in CI after the RTSP tests. Spawned workers import
    the caller's main module, so a script calling this with workers > 1 needs `if __name__ == "__main__":`."""
    return mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(seed,))


def _rng_for(job: Job) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([job.seed, job.index]))


def _write(job: Job, img: np.ndarray, rows: list[tuple[int, float, float, float, float]], meta: dict) -> None:
    out = Path(job.out)
    name = f"{job.index:06d}"
    h, w = img.shape[:2]
    cv2.imwrite(str(out / "images" / job.split / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    lines = []
    for c, x0, y0, x1, y1 in rows:
        x0, x1 = np.clip([x0, x1], 0, w)
        y0, y1 = np.clip([y0, y1], 0, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        lines.append(f"{c} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
    (out / "labels" / job.split / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    (out / "meta" / job.split / f"{name}.json").write_text(json.dumps(meta, sort_keys=True))


def make_image(job: Job) -> int:
    """Render one dataset image and write it with its label and meta file; returns its label count."""
    rng = _rng_for(job)
    u = rng.random()
    cutouts = _STATE.get("cutouts", [])
    if u < job.real_share and _STATE.get("bag_photos"):
        f = _STATE["bag_photos"][int(rng.integers(len(_STATE["bag_photos"])))]
        img = cv2.imread(str(f))
        h, w = img.shape[:2]
        rows = [(CLASSES.index("garbage_pile"), b[0] * w, b[1] * h, b[2] * w, b[3] * h)
                for b in realdata.polygon_boxes(realdata.read_polygons(f))]
        _write(job, img, rows, {"source": "trashbags", "file": f.name})
        return len(rows)
    height = int(job.width * rng.choice([9 / 16, 0.6, 3 / 4]))
    height -= height % 2
    scene_seed = int(rng.integers(2**31))
    if u < job.real_share + job.photo_share and _STATE.get("frames"):
        bg = _STATE["frames"][int(rng.integers(len(_STATE["frames"])))]
        srng = np.random.default_rng(scene_seed)
        cam = sample_camera(srng, job.width, height)
        cam = type(cam).from_hfov(job.width, height, 60, float(srng.uniform(5, 10)), float(srng.uniform(35, 60)))
        scene = Scene(cam, "plaza", "overcast", scene_seed)
        scene.things = sample_things(srng, scene, int(srng.integers(0, 4)), int(srng.integers(0, 4)))
        img, labels = render(scene, cutouts, background=bg)
        source = "road-clip"
    else:
        n_inc = 0 if rng.random() < NEGATIVE_ONLY_SHARE / (1 - REAL_BAG_SHARE - PHOTO_BG_SHARE) else None
        scene = sample_scene(scene_seed, job.width, height, n_incidents=n_inc)
        if job.edge_vehicle_share > 0:  # its own generator: images without them are unchanged
            erng = np.random.default_rng(np.random.SeedSequence([job.seed, job.index, 1]))
            if erng.random() < job.edge_vehicle_share:
                add_edge_vehicles(scene, erng, int(erng.integers(1, 3)))
        if job.water_at_cover_share > 0:  # likewise
            add_water_at_covers(scene, np.random.default_rng(np.random.SeedSequence([job.seed, job.index, 2])),
                                job.water_at_cover_share)
        img, labels = render(scene, cutouts)
        source = "synthetic"
    rows = [(CLASSES.index(lb.cls), *lb.xyxy) for lb in labels]
    meta = {"source": source, "scene_seed": scene_seed, "layout": scene.layout, "lighting": scene.lighting,
            "camera": scene.camera.to_dict(),
            "labels": [{"class": lb.cls, "xyxy": list(lb.xyxy), "ground_xy_m": list(lb.ground_xy), "visible": lb.visible}
                       for lb in labels],
            "things": [{"kind": t.kind, "class": t.cls, "ground_xy_m": [t.x, t.y], "size_m": t.size} for t in scene.things]}
    _write(job, img, rows, meta)
    return len(rows)


def write_dataset(out: Path, images: int, seed: int, imgsz: int = 640, val_fraction: float = 0.1,
                  workers: int = 2, progress: Callable[[int, int], None] | None = None,
                  real_bag_share: float = REAL_BAG_SHARE, photo_bg_share: float = PHOTO_BG_SHARE,
                  edge_vehicle_share: float = EDGE_VEHICLE_SHARE,
                  water_at_cover_share: float = WATER_AT_COVER_SHARE) -> Path:
    """Write `images` images (the last `val_fraction` as the val split) and `out/data.yaml`. Test sets pass
    zero shares so that they hold rendered streets only (real photos and frames belong to training), and the
    same streets as before edge vehicles existed."""
    out = Path(out).resolve()
    n_val = min(images, max(1, int(round(images * val_fraction)))) if images > 1 else 0
    jobs = [Job(i, seed, "val" if i >= images - n_val else "train", imgsz, str(out), real_bag_share, photo_bg_share,
                edge_vehicle_share, water_at_cover_share) for i in range(images)]
    for split in ("train", "val"):
        for sub in ("images", "labels", "meta"):
            (out / sub / split).mkdir(parents=True, exist_ok=True)
    counts = 0
    if workers <= 1:
        _init_worker(seed)
        for k, j in enumerate(jobs, 1):
            counts += make_image(j)
            if progress:
                progress(k, len(jobs))
    else:
        with _pool(workers, seed) as pool:
            for k, c in enumerate(pool.imap(make_image, jobs, chunksize=4), 1):
                counts += c
                if progress:
                    progress(k, len(jobs))
    data = {"path": str(out), "train": "images/train", "val": "images/val", "names": dict(enumerate(CLASSES)),
            "cityops": {"seed": seed, "images": images, "imgsz": imgsz, "labels": counts,
                        "real_bag_share": real_bag_share, "photo_bg_share": photo_bg_share,
                        "negative_only_share": NEGATIVE_ONLY_SHARE, "edge_vehicle_share": edge_vehicle_share,
                        "water_at_cover_share": water_at_cover_share}}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    log.info("dataset %s: %d images, %d labels", out, images, counts)
    return out / "data.yaml"


def write_holdout_bags(out: Path) -> Path:
    """The held-out 20 % of the real bag photos as a one-class `garbage_pile` dataset (bags → boxes)."""
    root = realdata.data_dir()
    if root is None:
        raise FileNotFoundError("shared data (trashbags) not found: set CITYOPS_DATA")
    _, hold = realdata.trashbag_split(root)
    out = Path(out).resolve()
    (out / "images" / "val").mkdir(parents=True, exist_ok=True)
    (out / "labels" / "val").mkdir(parents=True, exist_ok=True)
    for f in hold:
        img_dst = out / "images" / "val" / f.name
        if not img_dst.exists():
            img_dst.write_bytes(f.read_bytes())
        boxes = realdata.polygon_boxes(realdata.read_polygons(f))
        lines = [f"0 {(b[0] + b[2]) / 2:.6f} {(b[1] + b[3]) / 2:.6f} {b[2] - b[0]:.6f} {b[3] - b[1]:.6f}" for b in boxes]
        (out / "labels" / "val" / (f.stem + ".txt")).write_text("\n".join(lines) + "\n")
    data = {"path": str(out), "train": "images/val", "val": "images/val", "names": {0: "garbage_pile"}}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out / "data.yaml"


def negatives_dataset(out: Path, images: int, seed: int, imgsz: int = 640, workers: int = 2,
                      progress: Callable[[int, int], None] | None = None) -> Path:
    """Rendered streets holding only hard negatives (no incident at all): the false-alarm test set."""
    out = Path(out).resolve()
    for sub in ("images", "labels", "meta"):
        (out / sub / "val").mkdir(parents=True, exist_ok=True)
    jobs = [Job(i, seed, "val", imgsz, str(out)) for i in range(images)]
    with _pool(max(1, workers), seed) as pool:
        for k, _ in enumerate(pool.imap(_make_negative, jobs, chunksize=4), 1):
            if progress:
                progress(k, len(jobs))
    data = {"path": str(out), "train": "images/val", "val": "images/val", "names": dict(enumerate(CLASSES))}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out / "data.yaml"


def _make_negative(job: Job) -> int:
    rng = _rng_for(job)
    height = int(job.width * rng.choice([9 / 16, 0.6, 3 / 4]))
    scene = sample_scene(int(rng.integers(2**31)), job.width, height - height % 2, n_incidents=0,
                         n_negatives=int(rng.integers(4, 12)))
    img, _ = render(scene, _STATE.get("cutouts", []))
    meta = {"source": "negatives", "camera": scene.camera.to_dict(), "labels": [],
            "things": [{"kind": t.kind, "ground_xy_m": [t.x, t.y]} for t in scene.things]}
    _write(job, img, [], meta)
    return 0




