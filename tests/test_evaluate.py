"""Tests for the evaluator: the numpy metric core on hand-computed cases, label parsing, and
``evaluate`` end to end on a two-image dataset with a constant-output ONNX model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge.evaluate import (
    average_precision,
    evaluate,
    format_table,
    label_path_for,
    load_dataset_split,
    match_detections,
    read_labels,
)
from edge.manifest import file_sha256
from onnx_models import write_constant_model

# --------------------------------------------------------------------------- metric core


def test_match_detections_per_iou_threshold() -> None:
    gt = np.array([[0, 0, 10, 10]], dtype=np.float64)
    det = np.array([[0, 0, 10, 6.2]], dtype=np.float64)  # IoU 0.62
    tp = match_detections(det, np.array([0.9]), gt)
    assert tp.shape == (1, 10)
    assert tp[0].tolist() == [True, True, True] + [False] * 7
    assert average_precision(tp, np.array([0.9]), 1).mean() == pytest.approx(0.3)


def test_match_detections_is_greedy_by_score_not_input_order() -> None:
    gt = np.array([[0, 0, 10, 10]], dtype=np.float64)
    dets = np.array([[0, 0, 10, 10], [0, 0, 10, 9]], dtype=np.float64)
    tp = match_detections(dets, np.array([0.3, 0.8]), gt, [0.5])
    assert tp[:, 0].tolist() == [False, True]  # the 0.8 one takes the only ground truth


def test_match_detections_takes_best_unmatched_ground_truth() -> None:
    gts = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], dtype=np.float64)
    dets = np.array([[2, 0, 12, 10], [0, 0, 10, 10]], dtype=np.float64)
    # first det overlaps gt0 (IoU 0.67) and gt1 (IoU 1.0): takes gt1, leaving gt0 for the second
    tp = match_detections(dets, np.array([0.9, 0.8]), gts, [0.5, 0.9])
    assert tp.tolist() == [[True, True], [True, True]]
    assert match_detections(dets[:0], np.zeros(0), gts).shape == (0, 10)
    assert not match_detections(dets, np.array([0.9, 0.8]), gts[:0]).any()


@pytest.mark.parametrize(
    ("tp", "scores", "n_gt", "expected"),
    [
        ([True, True], [0.9, 0.8], 2, 1.0),
        # TP then FP, one of two ground truths found: precision 1 up to recall 0.5 -> 51 of 101 points
        ([True, False], [0.9, 0.8], 2, 51 / 101),
        # FP ranked first: precision 0.5 at recall 1 -> 0.5 at all 101 points
        ([False, True], [0.9, 0.8], 1, 0.5),
        ([], [], 3, 0.0),
    ],
)
def test_average_precision_hand_computed(tp: list[bool], scores: list[float], n_gt: int, expected: float) -> None:
    ap = average_precision(np.array(tp, dtype=bool).reshape(-1, 1), np.array(scores), n_gt)
    assert ap.shape == (1,)
    assert ap[0] == pytest.approx(expected)


def test_average_precision_undefined_without_ground_truth() -> None:
    assert np.isnan(average_precision(np.ones((1, 10), bool), np.array([0.5]), 0)).all()


# --------------------------------------------------------------------------- labels and dataset


def test_label_path_swaps_last_images_folder() -> None:
    assert label_path_for(Path("/d/images/x/images/val/a.jpg")) == Path("/d/images/x/labels/val/a.txt")
    assert label_path_for(Path("/d/flat/a.png")) == Path("/d/flat/a.txt")


def test_read_labels_boxes_polygons_and_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text(
        "0 0.5 0.5 0.2 0.4\n"
        "0 0.5 0.5 0.2 0.4\n"  # exact duplicate: dropped
        "3 0.1 0.2 0.3 0.2 0.3 0.6 0.15 0.5\n"  # polygon
        "1 0.5 0.5\n"  # malformed: skipped
        "\n",
        encoding="utf-8",
    )
    cls, xyxy = read_labels(f, width=200, height=100)
    assert cls.tolist() == [0, 3]
    np.testing.assert_allclose(xyxy, [[80, 30, 120, 70], [20, 20, 60, 60]])
    cls, xyxy = read_labels(tmp_path / "missing.txt", 10, 10)
    assert cls.shape == (0,) and xyxy.shape == (0, 4)


# --------------------------------------------------------------------------- end to end

# Frames are 640x480; the model input is 320x320, so frame -> input is x/2, y/2 + 40.
BOX_A = (100, 100, 200, 200)  # car, detected with 0.9
BOX_B = (400, 300, 500, 400)  # car detection with 0.6, no ground truth there
BOX_C = (300, 50, 350, 90)  # car ground truth in image b, never detected


def _input_cxcywh(box: Sequence[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box[0] / 2, box[1] / 2 + 40, box[2] / 2, box[3] / 2 + 40
    return ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)


def _write_model(tmp_path: Path, classes: list[str], thresholds: list[float], anchors: list[tuple]) -> Path:
    """Constant-output ONNX model (batch follows the input) and its manifest."""
    nc, n = len(classes), 8
    raw = np.zeros((1, 4 + nc, n), dtype=np.float32)
    for j, (box, cls, score) in enumerate(anchors):
        raw[0, :4, j] = _input_cxcywh(box)
        raw[0, 4 + cls, j] = score
    model_path = tmp_path / "models" / "street.onnx"
    model_path.parent.mkdir()
    write_constant_model(model_path, raw[0], height=320, width=320, batch="batch")
    manifest = {
        "name": "street",
        "version": "1",
        "model_file": "street.onnx",
        "sha256": file_sha256(model_path),
        "input": {"width": 320, "height": 320},
        "classes": [{"id": i, "name": c, "threshold": t} for i, (c, t) in enumerate(zip(classes, thresholds))],
    }
    (tmp_path / "models" / "street.manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return model_path


def _norm_box(box: Sequence[float], w: int = 640, h: int = 480) -> str:
    x1, y1, x2, y2 = box
    return f"{(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"


def _write_dataset(tmp_path: Path, variant: str) -> Path:
    """Two 640x480 images. Dataset classes: car, tree (not in the model), person (no instances).

    a: car at A (box line) and a tree.  b: car at A (as a segmentation polygon), car at C.
    """
    ds = tmp_path / "ds"
    (ds / "images" / "val").mkdir(parents=True)
    (ds / "labels" / "val").mkdir(parents=True)
    for name in ("a", "b"):
        cv2.imwrite(str(ds / "images" / "val" / f"{name}.png"), np.full((480, 640, 3), 90, np.uint8))
    x1, y1, x2, y2 = (v / s for v, s in zip(BOX_A, (640, 480, 640, 480)))
    polygon = f"{x1} {y1} {(x1 + x2) / 2} {y1} {x2} {y1} {x2} {y2} {x1} {y2}"
    (ds / "labels" / "val" / "a.txt").write_text(f"0 {_norm_box(BOX_A)}\n1 0.5 0.5 0.1 0.1\n", encoding="utf-8")
    (ds / "labels" / "val" / "b.txt").write_text(f"0 {polygon}\n0 {_norm_box(BOX_C)}\n", encoding="utf-8")

    if variant == "folder, names dict":
        cfg = {"path": "ds", "train": "images/train", "val": "images/val", "names": {0: "car", 1: "tree", 2: "person"}}
    else:
        (ds / "val.txt").write_text(f"./images/val/a.png\n{(ds / 'images' / 'val' / 'b.png').resolve()}\n", encoding="utf-8")
        cfg = {"path": str(ds.resolve()), "val": "val.txt", "names": ["car", "tree", "person"]}
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return data_yaml


@pytest.mark.parametrize("variant", ["folder, names dict", "txt list, names list"])
def test_load_dataset_split(tmp_path: Path, variant: str) -> None:
    split = load_dataset_split(_write_dataset(tmp_path, variant), "val")
    assert [p.name for p in split.images] == ["a.png", "b.png"]
    assert split.names == {0: "car", 1: "tree", 2: "person"}
    with pytest.raises(ValueError, match="no 'test' split"):
        load_dataset_split(tmp_path / "data.yaml", "test")


@pytest.mark.parametrize("variant", ["folder, names dict", "txt list, names list"])
@pytest.mark.parametrize(
    ("car_threshold", "precision"),
    [
        (0.5, 2 / 4),  # all four car detections count: 2 TP (A in a, A in b), 2 FP (B in a and b)
        (0.7, 2 / 2),  # only the two A detections
    ],
)
def test_evaluate_hand_computed(tmp_path: Path, variant: str, car_threshold: float, precision: float) -> None:
    # model classes in another order than the dataset, plus one (bus) the dataset lacks
    model = _write_model(
        tmp_path,
        ["person", "car", "bus"],
        [0.5, car_threshold, 0.5],
        [(BOX_A, 1, 0.9), (BOX_B, 1, 0.6), (BOX_C, 2, 0.8)],
    )
    calls: list[tuple[int, int]] = []
    result = evaluate(model, _write_dataset(tmp_path, variant), progress=lambda done, total: calls.append((done, total)))

    assert set(result) == {"images", "classes", "skipped_classes"}
    assert result["images"] == 2
    assert result["skipped_classes"] == ["tree"]
    assert list(result["classes"]) == ["person", "car"]  # bus is not in the dataset: not reported
    car = result["classes"]["car"]
    # ranked: 0.9 TP, 0.9 TP, 0.6 FP, 0.6 FP with 3 ground truths: precision 1 up to recall 2/3,
    # i.e. recall points 0.00..0.66 -> 67 of 101; boxes are exact, so the same at every IoU
    assert car["instances"] == 3
    assert car["ap50"] == pytest.approx(67 / 101)
    assert car["ap50_95"] == pytest.approx(67 / 101)
    assert car["precision"] == pytest.approx(precision)
    assert car["recall"] == pytest.approx(2 / 3)
    assert result["classes"]["person"] == {"ap50": None, "ap50_95": None, "precision": None, "recall": None, "instances": 0}
    assert calls[-1] == (2, 2)
    json.dumps(result)  # JSON-serialisable as is

    table = format_table(result)
    assert "car" in table and "tree" in table and "images: 2" in table
    assert f"{67 / 101:.3f}" in table


def test_evaluate_slightly_off_box_lowers_ap50_95(tmp_path: Path) -> None:
    # detection shares the left 62 % of the ground truth (IoU 0.62): TP at 0.50/0.55/0.60 only
    off = (BOX_A[0], BOX_A[1], BOX_A[0] + 62, BOX_A[3])
    model = _write_model(tmp_path, ["car"], [0.5], [(off, 0, 0.9)])
    data_yaml = _write_dataset(tmp_path, "folder, names dict")
    (tmp_path / "ds" / "labels" / "val" / "b.txt").write_text(f"0 {_norm_box(BOX_A)}\n", encoding="utf-8")
    car = evaluate(model, data_yaml)["classes"]["car"]
    assert car["instances"] == 2
    assert car["ap50"] == pytest.approx(1.0)
    assert car["ap50_95"] == pytest.approx(0.3)
    assert (car["precision"], car["recall"]) == pytest.approx((1.0, 1.0))
