"""The project's own evaluator (``eval-model``): COCO-style AP of a shipped ONNX model on a dataset.

It runs the model exactly as the edge node does (through :class:`edge.detector.Detector`, with
the manifest's letterbox, NMS and thresholds), so the numbers describe what is deployed rather
than what a training framework would report. Any ultralytics-format dataset works; classes are
matched by *name*, so a dataset with more or differently ordered classes can be used as is.

The metric core (:func:`match_detections`, :func:`average_precision`) is pure numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import cv2
import numpy as np

from edge.config import read_yaml
from edge.detections import Detections, box_iou
from edge.detector import Detector

__all__ = [
    "ClassMetrics",
    "DatasetSplit",
    "EvalResult",
    "IOU_THRESHOLDS",
    "average_precision",
    "evaluate",
    "format_table",
    "label_path_for",
    "load_dataset_split",
    "match_detections",
    "read_labels",
]

logger = logging.getLogger(__name__)

IOU_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
RECALL_POINTS = 101
IMAGE_SUFFIXES = frozenset({".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm"})


class ClassMetrics(TypedDict):
    """Metrics of one class; a value is None where it is undefined: AP and recall when the split
    has no instance of the class, precision when the model made no detection at the threshold."""

    ap50: float | None
    ap50_95: float | None
    precision: float | None
    recall: float | None
    instances: int


class EvalResult(TypedDict):
    """What :func:`evaluate` returns (JSON-serialisable)."""

    images: int
    classes: dict[str, ClassMetrics]
    skipped_classes: list[str]


# --------------------------------------------------------------------------- metric core


def match_detections(
    det_xyxy: np.ndarray,
    det_scores: np.ndarray,
    gt_xyxy: np.ndarray,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> np.ndarray:
    """COCO greedy matching of one image and one class, at every IoU threshold at once.

    Detections are taken by descending score; each takes the unmatched ground-truth box with the
    highest IoU, if that IoU is at least the threshold. Detections that overlap no ground truth
    by the lowest threshold are false positives without entering the loop.

    Returns:
        ``(n_det, n_thresholds)`` bool, True where the detection is a true positive; rows in the
        order of the inputs.
    """
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    n_det, n_gt = len(det_scores), len(gt_xyxy)
    tp = np.zeros((n_det, len(thresholds)), dtype=bool)
    if n_det == 0 or n_gt == 0:
        return tp
    iou = box_iou(det_xyxy, gt_xyxy)  # (n_det, n_gt)
    order = np.argsort(-np.asarray(det_scores), kind="stable")
    candidates = order[iou[order].max(axis=1) >= thresholds.min()]
    matched = np.zeros((len(thresholds), n_gt), dtype=bool)
    for d in candidates:
        avail = np.where(matched, -1.0, iou[d][None, :])  # (T, n_gt)
        best = avail.argmax(axis=1)
        hit = avail[np.arange(len(thresholds)), best] >= thresholds
        matched[np.flatnonzero(hit), best[hit]] = True
        tp[d] = hit
    return tp


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> np.ndarray:
    """COCO 101-point interpolated AP per IoU threshold.

    Args:
        tp: ``(n_det, T)`` true-positive flags of all detections of one class over the dataset.
        scores: ``(n_det,)`` their scores.
        n_gt: number of ground-truth boxes of the class.

    Returns:
        ``(T,)`` AP; NaN where ``n_gt == 0`` (undefined, as in COCO).
    """
    tp = np.asarray(tp, dtype=bool)
    tp = tp.reshape(-1, 1) if tp.ndim == 1 else tp
    if tp.ndim != 2 or tp.shape[0] != len(scores):
        raise ValueError(f"tp must have shape ({len(scores)}, T) to match scores, got {tp.shape}")
    n_thr = tp.shape[1]
    if n_gt == 0:
        return np.full(n_thr, np.nan)
    if len(scores) == 0:
        return np.zeros(n_thr)
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    tp = tp[order]
    tp_cum = np.cumsum(tp, axis=0, dtype=np.float64)
    fp_cum = np.cumsum(~tp, axis=0, dtype=np.float64)
    recall = tp_cum / n_gt
    precision = tp_cum / (tp_cum + fp_cum)
    precision = np.maximum.accumulate(precision[::-1], axis=0)[::-1]  # precision envelope
    recall_points = np.linspace(0.0, 1.0, RECALL_POINTS)
    ap = np.empty(n_thr)
    for t in range(n_thr):
        idx = np.searchsorted(recall[:, t], recall_points, side="left")
        valid = idx < len(order)
        ap[t] = precision[idx[valid], t].sum() / RECALL_POINTS
    return ap


# --------------------------------------------------------------------------- dataset I/O


@dataclass(frozen=True)
class DatasetSplit:
    """Images of one split and the dataset's class names (id -> name)."""

    images: tuple[Path, ...]
    names: dict[int, str] = field(default_factory=dict)


def _images_in(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if source.suffix == ".txt" and source.is_file():
        out = []
        for line in source.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                p = Path(line)
                out.append(p if p.is_absolute() else source.parent / p)
        return out
    if source.suffix.lower() in IMAGE_SUFFIXES and source.is_file():
        return [source]
    raise FileNotFoundError(f"dataset source {source} is neither a folder of images, a .txt list nor an image")


def load_dataset_split(data_yaml: str | Path, split: str = "val") -> DatasetSplit:
    """Read an ultralytics dataset yaml and list the images of one split.

    ``path`` (the root) is taken relative to the yaml's folder when relative (ultralytics resolves
    it against its datasets dir instead; a project-relative root is what our yamls mean); split
    entries are relative to the root; ``.txt`` lists hold one image per line, relative lines
    resolved against the list's folder.
    """
    data_yaml = Path(data_yaml)
    cfg = read_yaml(data_yaml)[1] or {}  # a missing or malformed yaml: one error naming file:line
    if not isinstance(cfg, dict):
        raise ValueError(f"{data_yaml}: expected a mapping at the top level")
    root = Path(cfg.get("path") or ".")
    if not root.is_absolute():
        root = data_yaml.parent / root
    if split not in cfg or cfg[split] in (None, ""):
        raise ValueError(f"{data_yaml}: no '{split}' split (keys: {sorted(cfg)})")
    raw_names = cfg.get("names")
    if isinstance(raw_names, dict):
        names = {int(k): str(v) for k, v in raw_names.items()}
    elif isinstance(raw_names, list):
        names = {i: str(v) for i, v in enumerate(raw_names)}
    else:
        raise ValueError(f"{data_yaml}: 'names' must be a list or a mapping of id -> name")

    sources = cfg[split] if isinstance(cfg[split], list) else [cfg[split]]
    images: list[Path] = []
    for source in sources:
        p = Path(str(source))
        images += _images_in(p if p.is_absolute() else root / p)
    return DatasetSplit(images=tuple(images), names=names)


def label_path_for(image_path: Path) -> Path:
    """The label file of an image: last ``/images/`` -> ``/labels/``, suffix -> ``.txt`` (as ultralytics)."""
    parts = list(image_path.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_labels(label_path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a YOLO label file into ``(class_id (k,), xyxy (k, 4))`` in pixels.

    Lines are boxes ``cls cx cy w h`` or polygons ``cls x1 y1 x2 y2 ...`` (box = min/max of the
    points), normalised 0..1. A missing file means an image with no objects. Exact duplicate
    lines are dropped, as ultralytics does.
    """
    if not label_path.is_file():
        return np.empty(0, dtype=np.int64), np.empty((0, 4))
    classes: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    seen: set[tuple[str, ...]] = set()
    for n, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = tuple(line.split())
        if not fields or fields in seen:
            continue
        seen.add(fields)
        try:
            cls, values = int(float(fields[0])), np.asarray(fields[1:], dtype=np.float64)
        except ValueError:
            logger.warning("%s:%d: not numbers, line skipped", label_path, n)
            continue
        if len(values) == 4:
            cx, cy, w, h = values
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        elif len(values) >= 6 and len(values) % 2 == 0:
            pts = values.reshape(-1, 2)
            box = (*pts.min(axis=0), *pts.max(axis=0))
        else:
            logger.warning("%s:%d: %d values is neither a box nor a polygon, line skipped", label_path, n, len(values))
            continue
        classes.append(cls)
        boxes.append(box)
    if not boxes:
        return np.empty(0, dtype=np.int64), np.empty((0, 4))
    xyxy = np.clip(np.asarray(boxes), 0.0, 1.0) * np.array([width, height, width, height], dtype=np.float64)
    return np.asarray(classes, dtype=np.int64), xyxy


@dataclass(frozen=True)
class _Sample:
    path: Path
    image: np.ndarray | None
    gt_class: np.ndarray
    gt_xyxy: np.ndarray


def _load_sample(path: Path) -> _Sample:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return _Sample(path, None, np.empty(0, dtype=np.int64), np.empty((0, 4)))
    gt_class, gt_xyxy = read_labels(label_path_for(path), image.shape[1], image.shape[0])
    return _Sample(path, image, gt_class, gt_xyxy)


def _prefetched(paths: Sequence[Path], batch_size: int, pool: ThreadPoolExecutor) -> Iterator[list[_Sample]]:
    """Yield batches of decoded samples while the next batch decodes (at most two batches in memory)."""
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    pending: list[Future[_Sample]] = [pool.submit(_load_sample, p) for p in chunks[0]] if chunks else []
    for k in range(len(chunks)):
        current = [f.result() for f in pending]
        pending = [pool.submit(_load_sample, p) for p in chunks[k + 1]] if k + 1 < len(chunks) else []
        yield current


# --------------------------------------------------------------------------- evaluation


@dataclass
class _ClassTally:
    """Running per-class evidence over the dataset (local to one evaluate call)."""

    tp: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    n_gt: int = 0
    tp_at_threshold: int = 0
    det_at_threshold: int = 0


def evaluate(
    model_path: str | Path,
    data_yaml: str | Path,
    split: str = "val",
    conf_for_ap: float = 0.001,
    progress: Callable[[int, int], None] | None = None,
    *,
    batch_size: int = 8,
    flip: bool = False,
) -> EvalResult:
    """Evaluate a model (``.onnx`` or ``.manifest.json``) on one split of a dataset.

    AP uses every detection down to ``conf_for_ap`` (a very low value traces the whole
    precision/recall curve); precision and recall are at IoU 0.5 and the manifest's per-class
    thresholds, i.e. what the deployed node would report.

    Args:
        progress: called as ``progress(images_done, images_total)`` after each batch.
        batch_size: images decoded (in a background thread) and inferred per step.
        flip: run the model as a site with `inference.flip` does (each image also mirrored, scores averaged).

    Raises:
        ValueError: bad dataset yaml or a split with no images.
    """
    detector = Detector(model_path, flip=flip)
    dataset = load_dataset_split(data_yaml, split)
    if not dataset.images:
        raise ValueError(f"{data_yaml}: split '{split}' has no images")

    model_id = {name: i for i, name in enumerate(detector.class_names)}
    skipped = [name for _, name in sorted(dataset.names.items()) if name not in model_id]
    # dataset class id -> model class id, -1 where the model lacks the class
    max_ds_id = max(dataset.names) if dataset.names else -1
    ds_to_model = np.full(max_ds_id + 2, -1, dtype=np.int64)
    for ds_id, name in dataset.names.items():
        ds_to_model[ds_id] = model_id.get(name, -1)
    evaluated = sorted({int(m) for m in ds_to_model if m >= 0})
    is_evaluated = np.zeros(len(detector.class_names), dtype=bool)
    is_evaluated[evaluated] = True
    thresholds = np.asarray(detector.manifest.thresholds, dtype=np.float32)
    tallies = {c: _ClassTally() for c in evaluated}

    n_images, done, total = 0, 0, len(dataset.images)
    with ThreadPoolExecutor(max_workers=1) as pool:
        for samples in _prefetched(dataset.images, batch_size, pool):
            good = [s for s in samples if s.image is not None]
            for s in samples:
                if s.image is None:
                    logger.warning("cannot read image %s: skipped", s.path)
            for s, dets in zip(good, detector.detect_batch([s.image for s in good], conf=conf_for_ap)):
                gt_ids = s.gt_class
                unknown = (gt_ids < 0) | (gt_ids > max_ds_id)
                if unknown.any():
                    logger.warning("%s: class ids %s not in dataset names, ignored", s.path, sorted(set(gt_ids[unknown])))
                gt_model = np.where(unknown, -1, ds_to_model[np.clip(gt_ids, 0, max_ds_id + 1)])
                _tally_image(dets, gt_model, s.gt_xyxy, is_evaluated, thresholds, tallies)
            n_images += len(good)
            done += len(samples)
            if progress is not None:
                progress(done, total)

    classes: dict[str, ClassMetrics] = {}
    for c in evaluated:
        t = tallies[c]
        tp = np.concatenate(t.tp) if t.tp else np.zeros((0, len(IOU_THRESHOLDS)), dtype=bool)
        scores = np.concatenate(t.scores) if t.scores else np.zeros(0)
        ap = average_precision(tp, scores, t.n_gt)
        has_gt = t.n_gt > 0
        classes[detector.class_names[c]] = ClassMetrics(
            ap50=float(ap[0]) if has_gt else None,
            ap50_95=float(ap.mean()) if has_gt else None,
            precision=t.tp_at_threshold / t.det_at_threshold if t.det_at_threshold else None,
            recall=t.tp_at_threshold / t.n_gt if has_gt else None,
            instances=t.n_gt,
        )
    return EvalResult(images=n_images, classes=classes, skipped_classes=skipped)


def _tally_image(
    dets: Detections,
    gt_model: np.ndarray,
    gt_xyxy: np.ndarray,
    is_evaluated: np.ndarray,
    thresholds: np.ndarray,
    tallies: dict[int, _ClassTally],
) -> None:
    """Match one image's detections to its ground truth, per evaluated class, into the tallies."""
    present = np.union1d(dets.class_id, gt_model[gt_model >= 0])
    for c in present[is_evaluated[present]]:
        c = int(c)
        d = dets.class_id == c
        g = gt_model == c
        scores = dets.confidence[d]
        tp = match_detections(dets.xyxy[d], scores, gt_xyxy[g], IOU_THRESHOLDS)
        above = scores >= thresholds[c]
        tally = tallies[c]
        tally.tp.append(tp)
        tally.scores.append(scores)
        tally.n_gt += int(g.sum())
        # Greedy matching goes by descending score, so the detections above the threshold are a
        # prefix of the matching order and their flags equal matching them alone.
        tally.tp_at_threshold += int(tp[above, 0].sum())
        tally.det_at_threshold += int(above.sum())


def format_table(result: EvalResult) -> str:
    """Human-readable table of an :func:`evaluate` result, with a mean row over classes with instances."""

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    rows = [("class", "instances", "P", "R", "AP50", "AP50-95")]
    for name, m in result["classes"].items():
        rows.append((name, str(m["instances"]), num(m["precision"]), num(m["recall"]), num(m["ap50"]), num(m["ap50_95"])))
    scored = [m for m in result["classes"].values() if m["instances"] > 0]
    if scored:
        # Over classes with instances; a class with no detection counts as precision 0 here.
        means = [float(np.mean([m[k] or 0.0 for m in scored])) for k in ("precision", "recall", "ap50", "ap50_95")]
        rows.append((f"all ({len(scored)} classes)", str(sum(m["instances"] for m in scored)), *map(num, means)))
    width0 = max(len(r[0]) for r in rows)
    widths = [max(len(r[i]) for r in rows) for i in range(1, 6)]
    lines = [r[0].ljust(width0) + "  " + "  ".join(v.rjust(w) for v, w in zip(r[1:], widths)) for r in rows]
    lines.append(f"images: {result['images']}")
    if result["skipped_classes"]:
        lines.append("skipped (dataset classes the model lacks): " + ", ".join(result["skipped_classes"]))
    return "\n".join(lines)
