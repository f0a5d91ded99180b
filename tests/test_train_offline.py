"""The training recipe runs offline: a tiny end-to-end training makes no network attempt at all."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ultralytics", reason="needs the 'train' extra (CI installs it)")

GUARD = textwrap.dedent(
    """
    import json, socket, sys
    attempts = []
    def deny(kind):
        def f(*a, **k):
            attempts.append([kind, repr(a[:2])[:120]])
            raise OSError("network disabled by test")
        return f
    socket.getaddrinfo = deny("getaddrinfo")
    socket.gethostbyname = deny("gethostbyname")
    socket.create_connection = deny("create_connection")
    _connect = socket.socket.connect
    def connect(self, addr):
        if self.family == socket.AF_UNIX:
            return _connect(self, addr)
        attempts.append(["connect", repr(addr)[:120]])
        raise OSError("network disabled by test")
    socket.socket.connect = connect
    socket.socket.connect_ex = lambda self, addr: (attempts.append(["connect_ex", repr(addr)[:120]]) or 111)
    from pathlib import Path
    from edge.synth.dataset import write_dataset
    from edge.train import export_onnx, train_yolo, write_manifest
    out = Path(sys.argv[1])
    data = write_dataset(out / "data", 8, seed=3, imgsz=320, workers=1)
    best = train_yolo(data, out, epochs=1, imgsz=160, batch=4)
    beside = sorted(p.name for p in best.parent.iterdir())
    onnx = export_onnx(best, (128, 160), out / "m.onnx", out / ".ultralytics")
    assert sorted(p.name for p in best.parent.iterdir()) == beside, "the export wrote beside the checkpoint"
    write_manifest(onnx, "m", "0", (128, 160), {})
    print("ATTEMPTS " + json.dumps(attempts))
    """
)


@pytest.mark.slow
@pytest.mark.train
def test_training_and_export_make_no_network_attempt(tmp_path: Path):
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", GUARD, str(tmp_path)], cwd=root, capture_output=True, text=True,
                       timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr[-3000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("ATTEMPTS ")][-1]
    assert json.loads(line[len("ATTEMPTS "):]) == []
    # the exported model loads in the runtime's own detector
    from edge.detector import Detector

    det = Detector(tmp_path / "m.onnx")
    assert det.class_names[0] == "manhole_cover"
    # exported at another (rectangular) shape than trained at, and the manifest says so
    assert (det.manifest.input.height, det.manifest.input.width) == (128, 160)
    d = det.detect(np.zeros((360, 640, 3), np.uint8), conf=0.0)  # untrained: boxes anywhere, mapped back to the frame
    assert len(d) > 0 and (d.xyxy >= 0).all() and (d.xyxy[:, 0::2] <= 640).all() and (d.xyxy[:, 1::2] <= 360).all()
