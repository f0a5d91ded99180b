"""Builders for tests that run the whole app on known detections: a constant ONNX model with the shipped classes
(and their incident codes) that sees one ponding box in every frame, and a short still clip for a file camera."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from edge.codes import CLASS_DEFAULTS, default_class_entries
from edge.manifest import file_sha256
from onnx_models import write_constant_model

NAMES = [c["name"] for c in CLASS_DEFAULTS]
PONDING = NAMES.index("ponding")
IMG = np.full((320, 320, 3), 96, np.uint8)  # a frame the size of the model input: boxes map 1:1


def write_model(d: Path, score: float = 0.6, box: tuple[float, float, float, float] = (160, 200, 80, 40),
                class_id: int = PONDING) -> Path:
    """`d/const.onnx` (+ manifest, manifest thresholds 0.4): one box of `class_id` (default ponding), `box` =
    centre x, y, width, height (default (160, 200), 80x40), at `score`."""
    raw = np.zeros((4 + len(NAMES), 8), np.float32)
    raw[:4, 0] = box
    raw[4 + class_id, 0] = score
    model = write_constant_model(d / "const.onnx", raw, height=320, width=320, names=NAMES)
    manifest = {"name": "const", "version": "0.0.1", "model_file": "const.onnx", "sha256": file_sha256(model),
                "input": {"width": 320, "height": 320}, "classes": default_class_entries({}), "training": {}}
    (d / "const.manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    return model


def write_clip(path: Path, seconds: float = 10.0, fps: float = 4.0) -> Path:
    """A still 320x320 clip (MPEG-4 part 2: any OpenCV build writes it)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 320))
    for _ in range(int(seconds * fps)):
        w.write(IMG)
    w.release()
    return path
