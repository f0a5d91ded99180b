"""The shared detector: many camera threads, one inference call for the frames waiting together, and each camera
gets exactly the detections its own frame gives on its own."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.batcher import DetectorClosed, SharedDetector
from edge.detector import Detector
from edge.synth.scene import render, sample_scene
from tests.onnx_models import write_constant_model
from tests.test_detector import manifest_dict, write_manifest, yolo_output


def _frames(n: int) -> list[np.ndarray]:
    return [render(sample_scene(555_000 + s, 960, 540, n_incidents=4))[0] for s in range(n)]


def _same(a, b) -> bool:
    return (len(a) == len(b) and np.allclose(a.xyxy, b.xyxy, atol=1e-3) and np.allclose(a.confidence, b.confidence, atol=1e-5)
            and (a.class_id == b.class_id).all())


def _slow_first_call(shared: SharedDetector, hold: threading.Event) -> None:
    """The first inference call waits for `hold`, so the other cameras' frames pile up behind it and must go
    through together in the next call."""
    run, first = shared.detector.run, [True]

    def run_held(batch):
        if first[0]:
            first[0] = False
            hold.wait(10)
        return run(batch)

    shared.detector.run = run_held  # type: ignore[method-assign]


@pytest.mark.parametrize("flip", [False, True])
def test_each_camera_gets_its_own_frames_detections_in_a_shared_batch(shipped_model: Path, flip: bool) -> None:
    det = Detector(shipped_model, intra_op_num_threads=1, flip=flip)
    assert det.dynamic_batch, "the shipped model's batch dimension must be free (edge/train.py make_batch_dynamic)"
    frames = _frames(6)
    tiles = [(), [(0, 0, 480, 270)], (), [(480, 270, 960, 540), (0, 270, 480, 540)], (), ()]
    alone = [det.detect_tiled(f, t, conf=0.05) for f, t in zip(frames, tiles)]
    assert sum(len(d) for d in alone) > 6  # something to compare

    shared = SharedDetector(det, max_batch=16).start()
    hold = threading.Event()
    _slow_first_call(shared, hold)
    got: dict[int, object] = {}

    def camera(i: int) -> None:
        got[i] = shared.detect_tiled(frames[i], tiles[i], conf=0.05)

    threads = [threading.Thread(target=camera, args=(0,))]
    threads[0].start()
    time.sleep(0.3)  # camera 0's call is running; the other five queue up behind it
    threads += [threading.Thread(target=camera, args=(i,)) for i in range(1, 6)]
    for t in threads[1:]:
        t.start()
    time.sleep(0.3)
    hold.set()
    for t in threads:
        t.join(10)
    shared.close()
    for i in range(6):
        assert _same(got[i], alone[i]), f"camera {i} got another frame's detections"
    st = shared.stats()
    k = 2 if flip else 1  # a mirrored input beside each one
    assert st["calls"] == 2 and st["batch_sizes"] == {k: 1, 8 * k: 1}, st  # 5 frames + 3 tiles in one call


def test_a_model_with_a_fixed_batch_still_serves_every_camera(tmp_path: Path) -> None:
    raw = yolo_output(2, [(100, 100, 40, 40, 1, 0.9)], n=8)
    model = write_constant_model(tmp_path / "m.onnx", raw, height=320, width=320, batch=1)
    write_manifest(model, manifest_dict(model, height=320, width=320, classes=["a", "b"]))
    det = Detector(model)
    assert not det.dynamic_batch
    shared = SharedDetector(det).start()
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(shared.detect(np.zeros((320, 320, 3), np.uint8))))
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    shared.close()
    assert len(out) == 5 and all(len(d) == 1 and d.class_id[0] == 1 for d in out)


def test_a_failed_call_fails_its_frames_and_the_next_call_works(tmp_path: Path) -> None:
    raw = yolo_output(2, [(100, 100, 40, 40, 0, 0.9)], n=8)
    model = write_constant_model(tmp_path / "m.onnx", raw, height=320, width=320, batch="batch")
    write_manifest(model, manifest_dict(model, height=320, width=320, classes=["a", "b"]))
    shared = SharedDetector(Detector(model)).start()
    run, calls = shared.detector.run, [0]

    def flaky(batch):
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("onnxruntime: out of memory")
        return run(batch)

    shared.detector.run = flaky  # type: ignore[method-assign]
    frame = np.zeros((320, 320, 3), np.uint8)
    with pytest.raises(RuntimeError, match="out of memory"):
        shared.detect(frame)
    assert len(shared.detect(frame)) == 1
    shared.close()
    with pytest.raises(DetectorClosed):
        shared.detect(frame)


def test_close_wakes_a_camera_waiting_for_its_result(tmp_path: Path) -> None:
    raw = yolo_output(2, [(100, 100, 40, 40, 0, 0.9)], n=8)
    model = write_constant_model(tmp_path / "m.onnx", raw, height=320, width=320, batch="batch")
    write_manifest(model, manifest_dict(model, height=320, width=320, classes=["a", "b"]))
    shared = SharedDetector(Detector(model)).start()
    hold = threading.Event()
    _slow_first_call(shared, hold)
    errors: list[BaseException] = []

    def camera() -> None:
        try:
            shared.detect(np.zeros((320, 320, 3), np.uint8))
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            errors.append(e)

    first = threading.Thread(target=camera)
    first.start()
    time.sleep(0.2)
    waiting = threading.Thread(target=camera)
    waiting.start()
    time.sleep(0.2)
    threading.Timer(0.3, hold.set).start()
    shared.close()
    first.join(5)
    waiting.join(5)
    assert not waiting.is_alive() and any(isinstance(e, DetectorClosed) for e in errors)


def test_malloc_arenas_are_capped_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.app import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # the operator's setting wins
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    import platform

    if platform.libc_ver()[0] == "glibc":
        assert limit_malloc_arenas() is True
