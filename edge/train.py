"""The training recipe: synthetic data → a small YOLO trained from scratch → ONNX + manifest + model card.

Needs the optional `train` extra (torch, ultralytics). Runs offline: every network attempt ultralytics
makes (DNS probe on import, font download, telemetry) is switched off before it is imported.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def offline_ultralytics(config_dir: Path) -> None:
    """Point ultralytics at a project-local config dir with a bundled font, telemetry off, offline mode on.
    Must run before `import ultralytics`."""
    config_dir = Path(config_dir).resolve()
    (config_dir / "Ultralytics").mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    font = None
    try:
        import matplotlib

        font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    except ImportError:  # matplotlib comes with ultralytics; fall back to a system font
        for cand in (Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),):
            font = cand if cand.exists() else None
    if font is not None and font.exists():
        for d in (config_dir, config_dir / "Ultralytics"):
            dst = d / "Arial.ttf"
            if not dst.exists():
                shutil.copy(font, dst)
    from ultralytics import settings  # noqa: E402  (after the environment is set)

    settings.update({"sync": False})


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def train_yolo(data_yaml: Path, out_dir: Path, epochs: int, imgsz: int, model_yaml: str = "yolov8n.yaml",
               batch: int = 16, threads: int = 2, device: str = "cpu", workers: int = 0,
               close_mosaic: int | None = None, seed: int = 0, hours: float | None = None,
               cache: bool | str = "ram", init_weights: Path | None = None, lr0: float | None = None,
               warmup_epochs: float = 3.0, name: str = "run") -> Path:
    """Train from the architecture yaml (no pretrained weights); returns the best checkpoint. `hours` caps the
    wall time (ultralytics then fits the epoch count and the learning-rate schedule to it), which keeps the
    recipe's cost predictable on a shared 2-core machine."""
    offline_ultralytics(out_dir / ".ultralytics")
    import ultralytics.utils.torch_utils as tu
    from ultralytics import YOLO

    if device == "cpu":
        tu.NUM_THREADS = threads  # ultralytics leaves one core idle; on 2 cores that halves the speed
        import torch

        torch.set_num_threads(threads)
    # a second stage continues from our own first-stage weights (never downloaded ones)
    model = YOLO(str(init_weights)) if init_weights else YOLO(model_yaml)
    model.train(data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, device=device, workers=workers,
                amp=False, plots=False,
                # pretrained=False would make ultralytics drop the weights of a model built from a checkpoint, so a
                # second stage names its own first-stage file (a local path: nothing is downloaded)
                pretrained=str(init_weights) if init_weights else False, project=str(out_dir.resolve()), name=name, exist_ok=True,
                # ultralytics' "auto" optimizer ignores lr0 (AdamW at 0.002*5/(4+nc) = 0.001 for 6 classes on
                # short runs), so an explicit learning rate must name the optimizer to take effect
                optimizer="AdamW" if lr0 is not None else "auto", lr0=lr0 if lr0 is not None else 0.01,
                warmup_epochs=warmup_epochs,
                close_mosaic=close_mosaic if close_mosaic is not None else max(1, epochs // 6), seed=seed,
                deterministic=False, verbose=True, patience=0, fliplr=0.5, degrees=0.0, mosaic=1.0, scale=0.5,
                translate=0.1, hsv_h=0.015, hsv_s=0.6, hsv_v=0.4, cache=cache, **({"time": hours} if hours else {}))
    best = out_dir / name / "weights" / "best.pt"
    return best if best.exists() else out_dir / name / "weights" / "last.pt"


def average_checkpoints(weights: list[Path], dst: Path, config_dir: Path) -> Path:
    """The uniform average of checkpoints of one architecture that descend from a common ancestor (a "model
    soup"). A short, hot stage learns more but also grows over-confident on the hard negatives that decide the
    alarm thresholds; averaging it with the stage it started from keeps most of the gain and damps that, at no
    inference cost. The last checkpoint supplies everything but the weights (training args, integer buffers)."""
    if len(weights) < 2:
        raise ValueError("average needs at least two checkpoints")
    offline_ultralytics(config_dir)  # unpickling a checkpoint imports ultralytics
    import torch

    ckpts = [torch.load(str(w), map_location="cpu", weights_only=False) for w in weights]
    states = [(c.get("ema") or c["model"]).state_dict() for c in ckpts]
    ref = states[0]
    for w, st in zip(weights[1:], states[1:]):
        if st.keys() != ref.keys() or any(st[k].shape != ref[k].shape for k in ref):
            raise ValueError(f"{w}: not the same architecture as {weights[0]}; only checkpoints of one model average")
    avg = {k: (sum(st[k].double() for st in states) / len(states)).to(ref[k].dtype) if ref[k].is_floating_point()
           else states[-1][k] for k in ref}
    out = ckpts[-1]
    model = out.get("ema") or out["model"]
    model.load_state_dict(avg)
    out.update({"model": model, "ema": None, "optimizer": None, "updates": None,
                "averaged_from": [Path(w).name for w in weights]})
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, dst)
    return dst


def export_onnx(weights: Path, input_hw: tuple[int, int], dst: Path, config_dir: Path) -> Path:
    """Export a checkpoint to ONNX (opset 17, fixed `input_hw` = (height, width), simplified) at `dst`.

    The network is fully convolutional, so it may be exported at another shape than it was trained at: a 16:9
    camera frame letterboxed into a square wastes 44 % of the input on grey bands, a 320x512 input spends the same
    compute as 416x416 on 1.5x the pixels of the frame. Whether that pays depends on the tiles the box
    scans too (measured: README, "Training your own")."""
    offline_ultralytics(config_dir)
    import tempfile

    from ultralytics import YOLO

    dst.parent.mkdir(parents=True, exist_ok=True)
    # ultralytics writes the export beside the checkpoint: from models/<name>.pt that would overwrite the
    # shipped models/<name>.onnx before the manifest's sha256 is renewed, so export from a private copy
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        src = Path(tmp) / Path(weights).name
        shutil.copyfile(weights, src)
        f = YOLO(str(src)).export(format="onnx", imgsz=list(input_hw), opset=17, dynamic=False, simplify=True,
                                  device="cpu")
        shutil.copy(f, dst)
    make_batch_dynamic(dst)
    return dst


def make_batch_dynamic(path: Path, check_batch: int = 3) -> None:
    """Give a fixed-size export a free batch dimension, in place, keeping its fixed height and width.

    A box with many cameras runs one inference call for the frames of several cameras (edge/batcher.py), which
    costs ~20 % less CPU per frame than one call each. ultralytics' `dynamic=True` would free height and width
    too; instead the batch-1 export's Reshape targets get 0 ("copy the input's dim") in place of their leading
    1, and the result is checked: a batch of `check_batch` random images must give exactly what one call per
    image gives, else ValueError and the file is left as exported."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(path))
    tensors = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = node.attribute[0].t
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        target = tensors.get(node.input[1])
        if target is None:
            raise ValueError(f"{path}: Reshape {node.name} has a computed shape; cannot free the batch dimension")
        shape = numpy_helper.to_array(target).copy()
        if shape.size and shape[0] == 1:
            shape[0] = 0
            target.CopyFrom(numpy_helper.from_array(shape, target.name))
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]  # inferred batch-1 shapes; onnxruntime infers them anew
    data = model.SerializeToString()

    def session(blob: bytes) -> Any:
        return ort.InferenceSession(blob, providers=["CPUExecutionProvider"])

    fixed, free = session(path.read_bytes()), session(data)
    name = fixed.get_inputs()[0].name
    x = np.random.default_rng(0).random((check_batch, *fixed.get_inputs()[0].shape[1:]), dtype=np.float32)
    one_by_one = np.concatenate([fixed.run(None, {name: x[i:i + 1]})[0] for i in range(check_batch)])
    together = free.run(None, {name: x})[0]
    if together.shape != one_by_one.shape or not np.allclose(together, one_by_one, atol=1e-3, rtol=1e-4):
        raise ValueError(f"{path}: the batch-free graph does not reproduce per-image results; keeping batch 1")
    path.write_bytes(data)


def write_manifest(onnx_path: Path, name: str, version: str, input_hw: tuple[int, int], training: dict[str, Any],
                   thresholds: dict[str, float] | None = None) -> Path:
    """The manifest beside the model: classes, input, thresholds, incident codes, sha256, training summary."""
    from .codes import default_class_entries

    classes = default_class_entries(thresholds or {})
    manifest = {
        "name": name, "version": version, "model_file": onnx_path.name, "sha256": sha256_file(onnx_path),
        "input": {"width": input_hw[1], "height": input_hw[0], "color": "RGB", "scale": 1 / 255, "pad_value": 114},
        "output": {"format": "yolov8"}, "nms_iou": 0.5, "max_detections": 100,
        "classes": classes, "training": training,
    }
    path = onnx_path.with_name(onnx_path.stem + ".manifest.json")
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return path


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# head ops kept in float: its output mixes box coordinates (0..input width) and class scores (0..1) in one tensor, which
# one 8-bit scale cannot hold (quantizing it turns every score into 0); its convolutions are quantized like the rest
_FLOAT_HEAD_PREFIX = "/model.22/"


def quantize_int8(src: Path, dst: Path, images: list[Any]) -> Path:
    """An 8-bit copy of a float model (QDQ, per-channel weights, MinMax calibration on `images`, BGR frames), with
    its manifest: same classes and thresholds, its own sha256, and where it came from.

    On an x86 CPU with VNNI it runs in ~60 % of the float model's CPU time; what it costs in accuracy is measured
    on the same test sets as the float model and written to its own card (`measure-model`)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .detector import Detector

    det = Detector(src)
    name = det._session.get_inputs()[0].name  # noqa: SLF001 - the input the calibration feeds

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(images)

        def get_next(self) -> dict[str, Any] | None:
            img = next(self.it, None)
            return None if img is None else {name: det.preprocess([img])[0]}

    dst.parent.mkdir(parents=True, exist_ok=True)
    pre = dst.with_suffix(".pre.onnx")
    try:
        # onnx shape inference only: the symbolic pass gives up on the free batch dimension (Reshape to 0)
        quant_pre_process(str(det.model_path), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        keep_float = [n.name for n in model.graph.node if n.name.startswith(_FLOAT_HEAD_PREFIX) and n.op_type != "Conv"]
        quantize_static(str(pre), str(dst), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float)
    finally:
        pre.unlink(missing_ok=True)
    source = json.loads(det.manifest_path.read_text())
    training = dict(source.get("training", {}))
    training.pop("measured", None)
    recipe = dict(training.get("recipe", {}))
    recipe["note"] = (f"INT8 (QDQ, per-channel, MinMax on {len(images)} calibration frames) of {src.name} "
                      f"{source['version']} (sha256 {source['sha256'][:12]}…), its convolutions in 8 bits and the "
                      f"box/score decoding of its head in float; thresholds as the float model's. Made with `python run_edge.py "
                      f"quantize --model {src.name}`.")
    training["recipe"] = recipe
    training["quantized_from"] = {"model": src.name, "version": source["version"], "sha256": source["sha256"],
                                  "calibration_frames": len(images)}
    thresholds = {c["name"]: c["threshold"] for c in source["classes"]}
    write_manifest(dst, dst.stem, source["version"], (source["input"]["height"], source["input"]["width"]), training,
                   thresholds)
    return dst
