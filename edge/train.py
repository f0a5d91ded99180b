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


def export_onnx(weights: Path, imgsz: int, dst: Path, config_dir: Path) -> Path:
    """Export a checkpoint to ONNX (opset 17, fixed input, simplified) at `dst`."""
    offline_ultralytics(config_dir)
    from ultralytics import YOLO

    model = YOLO(str(weights))
    f = model.export(format="onnx", imgsz=imgsz, opset=17, dynamic=False, simplify=True, device="cpu")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(f, dst)
    return dst


def write_manifest(onnx_path: Path, name: str, version: str, imgsz: int, training: dict[str, Any],
                   thresholds: dict[str, float] | None = None) -> Path:
    """The manifest beside the model: classes, input, thresholds, incident codes, sha256, training summary."""
    from .codes import default_class_entries

    classes = default_class_entries(thresholds or {})
    manifest = {
        "name": name, "version": version, "model_file": onnx_path.name, "sha256": sha256_file(onnx_path),
        "input": {"width": imgsz, "height": imgsz, "color": "RGB", "scale": 1 / 255, "pad_value": 114},
        "output": {"format": "yolov8"}, "nms_iou": 0.5, "max_detections": 100,
        "classes": classes, "training": training,
    }
    path = onnx_path.with_name(onnx_path.stem + ".manifest.json")
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return path


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
