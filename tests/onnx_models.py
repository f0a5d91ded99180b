"""Tiny ONNX models for tests: a YOLOv8-shaped graph whose output is a given constant, so detector and
evaluator tests need no trained model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_constant_model(
    path: Path, raw: np.ndarray, *, height: int, width: int, batch: int | str = 1, names: list[str] | None = None
) -> Path:
    """Save an ONNX model whose output is ``raw`` (per batch item) whatever the input pixels."""
    c, n = raw.shape
    init = [
        numpy_helper.from_array(raw[None].astype(np.float32), "raw"),
        numpy_helper.from_array(np.array([0, 0, 0], dtype=np.int64), "starts"),
        numpy_helper.from_array(np.array([1, 1, 1], dtype=np.int64), "ends"),
        numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "shape"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Slice", ["images", "starts", "ends", "axes"], ["corner"]),
        helper.make_node("Reshape", ["corner", "shape"], ["corner3"]),
        helper.make_node("Mul", ["corner3", "zero"], ["nil"]),
        helper.make_node("Add", ["nil", "raw"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, c, n])],
        initializer=init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if names is not None:
        helper.set_model_props(model, {"names": repr(dict(enumerate(names)))})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
