"""The shipped model: its manifest, the eval-model contract, and agreement with ultralytics' own inference."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.detections import box_iou
from edge.detector import Detector
from edge.manifest import load_manifest, manifest_path_for
from edge.synth.scene import CLASSES, render, sample_scene

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_is_complete(shipped_model):
    man = load_manifest(manifest_path_for(shipped_model))  # sha256 verified too
    assert man.class_names == CLASSES
    assert shipped_model.stat().st_size <= 15 * 1024 * 1024
    by = {c.name: c for c in man.classes}
    assert by["manhole_cover"].incident_type is None
    for name in CLASSES[1:]:
        assert by[name].incident_type and by[name].codes is not None, name
        assert 0.0 < by[name].threshold < 1.0


def test_card_tells_the_whole_lineage(shipped_model):
    """The card is how a user learns what the weights went through: every earlier stage appears, a weight
    average as an average of named checkpoints, a training stage with its epochs and command."""
    card = shipped_model.with_suffix(".md").read_text()
    stage = json.loads(manifest_path_for(shipped_model).read_text())["training"]["recipe"].get("previous_stage")
    seen = 0
    while stage:
        if stage.get("averaged_from"):
            assert f"uniform average of the weights of `{stage['averaged_from'][0]}`" in card
        else:
            assert f"{stage['epochs']} epochs" in card and stage["command"].splitlines()[0] in card
        seen += 1
        stage = stage.get("previous_stage")
    assert seen >= 1 and "None epochs" not in card and "data: None" not in card


def _frames(n: int) -> list[np.ndarray]:
    out = []
    for s in range(n):
        img, _ = render(sample_scene(777_000 + s, 800, 450, n_incidents=4))
        out.append(img)
    return out


@pytest.mark.slow
def test_eval_model_json_contract(shipped_model, tmp_path):
    from edge.synth.dataset import write_dataset

    data = write_dataset(tmp_path / "d", 12, seed=31337, imgsz=640, val_fraction=1.0, workers=1,
                         real_bag_share=0.0, photo_bg_share=0.0)
    for flip in ([], ["--flip"]):  # --flip: as a site with inference.flip runs the model
        r = subprocess.run([sys.executable, "run_edge.py", "eval-model", "--model", str(shipped_model), "--data",
                            str(data), "--json", *flip], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)  # exactly one JSON object on stdout
        assert set(res) == {"images", "classes", "skipped_classes"}
        assert res["images"] == 12 and res["skipped_classes"] == []
        for m in res["classes"].values():
            assert set(m) == {"ap50", "ap50_95", "precision", "recall", "instances"}


@pytest.mark.slow
@pytest.mark.train
def test_our_inference_agrees_with_ultralytics(shipped_model):
    YOLO = pytest.importorskip("ultralytics", reason="needs the 'train' extra (CI installs it)").YOLO
    ours = Detector(shipped_model)
    theirs = YOLO(str(shipped_model), task="detect")
    compared = 0
    for img in _frames(6):
        a = ours.detect(img, conf=0.25)
        # rect=False: the batch dimension is free, so ultralytics takes the model for a dynamic-shape one and would
        # feed it a minimal-padding input; height and width are fixed at the manifest's
        r = theirs.predict(img, imgsz=(ours.manifest.input.height, ours.manifest.input.width), conf=0.25,
                           iou=ours.manifest.nms_iou, verbose=False, device="cpu", rect=False)[0]
        b_xyxy = r.boxes.xyxy.cpu().numpy()
        b_cls = r.boxes.cls.cpu().numpy().astype(int)
        b_conf = r.boxes.conf.cpu().numpy()
        # every confident box of one side has a twin of the same class on the other, IoU >= 0.95
        for (xa, ca, sa), (xb, cb) in (((a.xyxy, a.class_id, a.confidence), (b_xyxy, b_cls)),
                                       ((b_xyxy, b_cls, b_conf), (a.xyxy, a.class_id))):
            keep = sa >= 0.3
            if not keep.any():
                continue
            iou = box_iou(xa[keep], xb) * (ca[keep][:, None] == cb[None, :])
            assert (iou.max(axis=1) >= 0.95).all(), (iou.max(axis=1), ca[keep])
            compared += int(keep.sum())
    assert compared >= 5, "too few detections to compare: is the model trained?"


def test_model_not_matching_manifest_is_refused(shipped_model, tmp_path):
    """A manifest that claims other classes than the model has: one clear error naming the model file."""
    from edge.detector import ModelMismatchError

    man = json.loads(manifest_path_for(shipped_model).read_text())
    man["classes"] = man["classes"][:5]
    (tmp_path / shipped_model.name).write_bytes(shipped_model.read_bytes())
    (tmp_path / (shipped_model.stem + ".manifest.json")).write_text(json.dumps(man))
    with pytest.raises(ModelMismatchError) as e:
        Detector(tmp_path / shipped_model.name)
    assert shipped_model.name in str(e.value)


def test_the_int8_model_is_a_copy_of_the_shipped_one_and_sees_the_same(shipped_model):
    """models/*_int8.onnx (for boxes with many cameras) must be quantized from the float model as shipped now, and
    find what it finds: a retrained float model without a new `quantize` fails here."""
    int8 = shipped_model.with_name(shipped_model.stem + "_int8.onnx")
    man = load_manifest(manifest_path_for(int8))
    src = load_manifest(manifest_path_for(shipped_model))
    origin = json.loads(manifest_path_for(int8).read_text())["training"]["quantized_from"]
    assert origin["sha256"] == src.sha256 and man.version == src.version
    assert man.class_names == src.class_names and man.thresholds == src.thresholds
    assert int8.stat().st_size < shipped_model.stat().st_size / 2
    f32, q8 = Detector(shipped_model), Detector(int8)
    assert q8.dynamic_batch
    matched = total = 0
    for img in _frames(6):
        a, b = f32.detect(img, conf=0.3), q8.detect(img, conf=0.3)
        if len(a):
            iou = box_iou(a.xyxy, b.xyxy) * (a.class_id[:, None] == b.class_id[None, :]) if len(b) else np.zeros((len(a), 1))
            matched += int((iou.max(axis=1) >= 0.8).sum())
            total += len(a)
    assert total >= 5 and matched >= 0.8 * total, (matched, total)


def test_a_camera_frame_in_planes_is_seen_as_its_bgr(shipped_model):
    """Live cameras hand the detector the decoder's I420 planes, shrunk before the colour conversion; replays and
    tests hand it BGR. Both must find the same things."""
    import cv2

    from edge.types import Yuv420

    det = Detector(shipped_model)
    matched = total = 0
    for img in _frames(6):
        i420 = cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420)
        a, b = det.detect(cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420), conf=0.3), det.detect(Yuv420(i420), conf=0.3)
        if len(a):
            iou = box_iou(a.xyxy, b.xyxy) * (a.class_id[:, None] == b.class_id[None, :]) if len(b) else np.zeros((len(a), 1))
            matched += int((iou.max(axis=1) >= 0.8).sum())
            total += len(a)
    assert total >= 5 and matched >= 0.9 * total, (matched, total)
