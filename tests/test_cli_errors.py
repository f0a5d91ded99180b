"""Bad input a user can give gets one clear line naming file/key/camera and the right exit code; a dead
camera does not stop the others; a broker that refuses us is named, its password never shown."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixtures_mqtt import Mosquitto, Subscriber, free_port

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "cityops_det_n416.onnx"
CLIP = ROOT / "streams" / "demo" / "cam1.mp4"


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "run_edge.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=e)


def site(tmp: Path, cameras: list[dict], rules: dict | None = None, model: str | None = None, **broker) -> Path:
    d = {"edge_id": "t-edge", "model": model or str(MODEL), "state_dir": str(tmp / "state"), "cameras": cameras}
    if broker:
        d["broker"] = broker
    (tmp / "rules").mkdir(exist_ok=True)
    for c in cameras:
        (tmp / "rules" / f"{c['id']}.yaml").write_text(yaml.safe_dump(rules or {}))
    p = tmp / "site.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_wrong_model_path(tmp_path):
    p = site(tmp_path, [{"id": "c1", "url": str(CLIP)}], model=str(tmp_path / "nope.onnx"))
    r = cli("check", "--site", str(p))
    assert r.returncode == 2
    line = one_error_line(r)
    assert "nope" in line and "manifest" in line


@pytest.mark.parametrize("shape", ["300x500", "320", "320x0", "axb"])
def test_train_refuses_an_input_shape_the_network_cannot_take(shape):
    """The exported input must be HxW in multiples of the stride 32; caught before any rendering or training."""
    for cmd in (["train", "--input", shape], ["average-weights", "--weights", "a.pt", "b.pt", "--data", "d.yaml",
                                               "--input", shape]):
        r = cli(*cmd)
        assert r.returncode == 2
        assert "--input" in r.stderr and shape in r.stderr and "Traceback" not in r.stderr


def test_train_names_a_missing_or_bad_dataset_before_training(tmp_path):
    r = cli("train", "--data", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "nope.yaml" in one_error_line(r)
    r = cli("train", "--init-weights", str(tmp_path / "stage1.pt"), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "stage1.pt" in one_error_line(r)
    bad = tmp_path / "bad.yaml"
    bad.write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a]\n")  # no images there
    r = cli("train", "--data", str(bad), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "bad.yaml" in one_error_line(r) and "images/train" in r.stderr
    assert not (tmp_path / "run" / "run").exists()  # nothing was trained
    broken = tmp_path / "broken.yaml"
    broken.write_text("names: [a\n")
    for cmd in (["train", "--data", str(broken), "--out", str(tmp_path / "run")],
                ["eval-model", "--model", str(MODEL), "--data", str(broken)]):
        r = cli(*cmd)
        assert r.returncode == 2 and "broken.yaml:2: malformed YAML" in one_error_line(r)


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "site.yaml"
    p.write_text("edge_id: e1\ncameras:\n  - id: c1\n    url: [unclosed\n")
    r = cli("check", "--site", str(p))
    assert r.returncode == 2
    line = one_error_line(r)
    assert str(p) in line and "malformed YAML" in line


def test_zone_outside_image(tmp_path):
    rules = {"zones": [{"name": "road", "polygon": [[0, 0], [1.2, 0], [1, 1]]}]}
    p = site(tmp_path, [{"id": "c1", "url": str(CLIP)}], rules)
    r = cli("check", "--site", str(p))
    assert r.returncode == 2
    assert "rules/c1.yaml" in r.stderr and "zones[0].polygon" in r.stderr and "outside the image" in r.stderr


def test_unknown_class_in_rule(tmp_path):
    p = site(tmp_path, [{"id": "c1", "url": str(CLIP)}], {"classes": {"potholes": {"threshold": 0.5}}})
    r = cli("check", "--site", str(p))
    assert r.returncode == 2
    assert "rules/c1.yaml" in r.stderr and "potholes" in r.stderr and "ponding" in r.stderr


def test_check_accepts_the_demo_site():
    r = cli("check")
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


@pytest.mark.slow
def test_broker_refusing_login(tmp_path):
    with Mosquitto(tmp_path / "mq", {"t-edge": "right-password"}) as mq:
        p = site(tmp_path, [{"id": "c1", "url": str(CLIP)}], host="127.0.0.1", port=mq.port,
                 username_env="T_USER", password_env="T_PASS")
        r = cli("run", "--site", str(p), "--duration", "20",
                env={"T_USER": "t-edge", "T_PASS": "wrong-Pa55word"})
        assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
        assert f"127.0.0.1:{mq.port}" in r.stderr and "refused" in r.stderr
        assert "wrong-Pa55word" not in r.stderr + r.stdout


@pytest.mark.slow
def test_unreachable_camera_does_not_stop_the_others(tmp_path):
    dead = free_port()
    with Mosquitto(tmp_path / "mq", {"t-edge": "pw", "centre": "cpw"}) as mq:
        with Subscriber(mq.port, "cityops/t-edge/camera/+/status", username="centre", password="cpw") as sub:
            p = site(tmp_path, [{"id": "dead", "url": f"rtsp://admin:${{CAM_PW}}@127.0.0.1:{dead}/x",
                                 "open_timeout_s": 2, "read_timeout_s": 1},
                                {"id": "good", "url": str(CLIP), "scan_interval_s": 2.0}],
                     host="127.0.0.1", port=mq.port, username_env="T_USER", password_env="T_PASS")
            r = cli("run", "--site", str(p), "--duration", "25",
                    env={"T_USER": "t-edge", "T_PASS": "pw", "CAM_PW": "cam-Secret-9"}, timeout=120)
            assert r.returncode == 0, r.stderr[-3000:]
            # the file camera was scanned to its end while the dead one kept failing
            assert "scans" in r.stdout and " 0 scans" not in r.stdout, r.stdout
            assert sub.wait_for(lambda m: any(x.topic.endswith("/dead/status") and x.json()["state"] == "offline"
                                              for x in m), timeout=10)
            everything = r.stdout + r.stderr + "".join(x.payload.decode() for x in sub.snapshot())
            assert "cam-Secret-9" not in everything
