"""Tests for the Detections container and box IoU."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise

import numpy as np
import pytest

from edge.detections import Detections, box_iou


def make(n: int = 3) -> Detections:
    xyxy = np.array([[0, 0, 10, 10], [5, 5, 25, 15], [100, 100, 101, 102]], dtype=np.float32)[:n]
    return Detections(
        xyxy=xyxy,
        confidence=np.array([0.9, 0.5, 0.2])[:n],
        class_id=np.array([0, 1, 0])[:n],
        data={"class_name": np.array(["a", "b", "a"])[:n]},
    )


def test_dtypes_are_coerced() -> None:
    d = make()
    assert d.xyxy.dtype == np.float32
    assert d.confidence.dtype == np.float32
    assert d.class_id.dtype == np.int64
    assert len(d) == 3


@pytest.mark.parametrize(
    ("kwargs", "expectation", "message"),
    [
        ({}, does_not_raise(), None),
        ({"xyxy": np.zeros((3, 5))}, pytest.raises(ValueError), r"xyxy must have shape \(n, 4\), got \(3, 5\)"),
        ({"confidence": np.zeros(2)}, pytest.raises(ValueError), r"confidence must have shape \(3,\).*got \(2,\)"),
        ({"class_id": np.zeros((3, 1))}, pytest.raises(ValueError), r"class_id must have shape \(3,\).*got \(3, 1\)"),
        ({"class_id": np.array([0.0, 1.5, 2.0])}, pytest.raises(ValueError), "whole numbers"),
        ({"data": {"track_id": np.zeros(4)}}, pytest.raises(ValueError), r"data\['track_id'\].*dimension 3.*\(4,\)"),
    ],
)
def test_validation_states_expected_and_actual(kwargs: dict, expectation, message: str | None) -> None:
    base = {
        "xyxy": np.zeros((3, 4)),
        "confidence": np.zeros(3),
        "class_id": np.zeros(3, dtype=int),
    }
    base.update(kwargs)
    with expectation as info:
        Detections(**base)
    if message is not None:
        assert info.match(message)


def test_mask_and_index_return_new_detections() -> None:
    d = make()
    high = d[d.confidence > 0.4]
    assert isinstance(high, Detections)
    assert len(high) == 2
    assert high.data["class_name"].tolist() == ["a", "b"]
    assert len(d) == 3  # original untouched
    picked = d[np.array([2, 0])]
    assert picked.class_id.tolist() == [0, 0]
    assert picked.confidence.tolist() == pytest.approx([0.2, 0.9])
    single = d[1]
    assert len(single) == 1 and single.class_id.tolist() == [1]
    assert len(d[(d.class_id == 0) & (d.confidence > 0.5)]) == 1


def test_wrong_mask_length_raises() -> None:
    with pytest.raises(IndexError, match=r"shape \(3,\)"):
        make()[np.array([True, False])]


def test_empty_and_area() -> None:
    e = Detections.empty()
    assert len(e) == 0 and e.xyxy.shape == (0, 4) and e.area.shape == (0,)
    assert make().area.tolist() == pytest.approx([100.0, 200.0, 2.0])


def test_merge() -> None:
    d = make()
    merged = Detections.merge([d[np.array([0])], Detections.empty(), d[np.array([1, 2])]])
    assert merged == d
    assert len(Detections.merge([])) == 0
    with pytest.raises(ValueError, match="different data keys"):
        Detections.merge([d, Detections(d.xyxy, d.confidence, d.class_id)])


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0])
    assert iou[1].tolist() == [0.0, 0.0, 0.0]  # degenerate box: 0, not NaN
