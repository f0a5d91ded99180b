"""End to end with the real components, started here: a GStreamer RTSP server serving the demo scenario clip
(sped up 4x by retiming, no re-encode), Mosquitto with the project's config and a password, and the runtime as
a subprocess, killed with SIGKILL mid-run and started again.

What the runtime guarantees whatever the model sees: every message validates, no incident is opened twice
(not even across the SIGKILL and restart), every `resolved` belongs to an `opened`, and events found before the
kill still arrive. The rule file lowers the thresholds so the shipped model reports something to test with;
how well its reports match the truth is printed (the model's accuracy is measured in its model card)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edge.messages import validate_message
from fixtures_mqtt import Mosquitto, Subscriber
from fixtures_rtsp import RtspServer, rtsp_unavailable

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "streams" / "demo"
SPEED = 4.0

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(rtsp_unavailable()), reason=str(rtsp_unavailable()))]


def fast_clip(tmp: Path) -> Path:
    out = tmp / "fast.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-itsscale", str(1 / SPEED), "-i", str(DEMO / "cam1.mp4"),
                    "-c", "copy", str(out)], check=True)
    return out


def write_site(tmp: Path, url: str, port: int) -> Path:
    # the demo rules with every time scaled to the faster clip
    rules = yaml.safe_load((ROOT / "rules" / "demo-cam1.yaml").read_text())
    rules["camera"] = "cam1"
    rules["persistence"]["window_s"] /= SPEED
    rules["resolve_after_s"] /= SPEED
    rules["update_interval_s"] = 10_000
    rules["classes"] = {c: {"threshold": 0.2} for c in
                        ("manhole_open", "ponding", "garbage_pile", "material_pile", "illegal_structure")}
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "cam1.yaml").write_text(yaml.safe_dump(rules))
    site = {"edge_id": "e2e-edge", "model": str(ROOT / "models" / "cityops_det_n416.onnx"),
            "state_dir": str(tmp / "state"),
            "broker": {"host": "127.0.0.1", "port": port, "protocol": "5", "username_env": "E2E_USER",
                       "password_env": "E2E_PASS", "evidence": "inline", "camera_status_s": 5},
            "cameras": [{"id": "cam1", "url": url, "scan_interval_s": 2.0 / SPEED, "open_timeout_s": 5,
                         "read_timeout_s": 2}]}
    p = tmp / "site.yaml"
    p.write_text(yaml.safe_dump(site))
    return p


def start_runtime(site: Path, duration: float, log: Path) -> subprocess.Popen:
    env = {**os.environ, "E2E_USER": "e2e-edge", "E2E_PASS": "edge-pw"}
    with open(log, "w") as f:  # a file, not a pipe: a pipe nobody reads would block the runtime
        return subprocess.Popen([sys.executable, "run_edge.py", "run", "--site", str(site), "--duration",
                                 str(duration)], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)


def incident_messages(sub: Subscriber) -> list[dict]:
    seen, out = set(), []
    for m in sub.snapshot():
        d = m.json()
        if d["message_id"] not in seen:  # at-least-once: the centre drops duplicates by message_id
            seen.add(d["message_id"])
            out.append(d)
    return out


def expected(truth: dict, played_s: float) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Per class: incidents that must have opened (seen long enough), that may have (appeared at all), and that
    must have resolved (gone long enough before the end)."""
    must: dict[str, int] = {}
    may: dict[str, int] = {}
    resolved: dict[str, int] = {}
    for inc in truth["incidents"]:
        c = inc["class"]
        if inc["appear_s"] < played_s:
            may[c] = may.get(c, 0) + 1
        if inc["appear_s"] + 40 < played_s:
            must[c] = must.get(c, 0) + 1
            if inc["disappear_s"] is not None and inc["disappear_s"] + 60 < played_s:
                resolved[c] = resolved.get(c, 0) + 1
    return must, may, resolved


def count(msgs: list[dict], event: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in msgs:
        if m["event"] == event:
            out[m["class"]] = out.get(m["class"], 0) + 1
    return out


def test_rtsp_to_mqtt_survives_sigkill_without_repeats_or_losses(tmp_path):
    truth = json.loads((DEMO / "truth.json").read_text())
    clip_s = truth["duration_s"] / SPEED
    with Mosquitto(tmp_path / "mq", {"e2e-edge": "edge-pw", "centre": "centre-pw"}) as mq, \
            RtspServer({"cam1": fast_clip(tmp_path)}) as rtsp, \
            Subscriber(mq.port, "cityops/e2e-edge/incident/#", username="centre", password="centre-pw") as sub, \
            Subscriber(mq.port, "cityops/e2e-edge/camera/+/status", username="centre", password="centre-pw") as cams:
        site = write_site(tmp_path, rtsp.url("cam1"), mq.port)
        t0 = time.monotonic()
        first = start_runtime(site, clip_s + 30, tmp_path / "first.log")
        # kill it hard once the first incident has been reported, then start it again
        assert sub.wait_for(lambda m: any(x.json()["event"] == "opened" for x in m), timeout=clip_s), \
            (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(2)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = start_runtime(site, max(5.0, clip_s * 0.95 - (time.monotonic() - t0)), tmp_path / "second.log")
        second.wait(timeout=clip_s + 60)
        out = (tmp_path / "second.log").read_text()
        assert second.returncode == 0, out[-3000:]
        time.sleep(1)
        msgs = incident_messages(sub)
        statuses = [m.json() for m in cams.snapshot()]
    played = (time.monotonic() - t0) * SPEED  # media seconds the server played (it starts with the server)
    for m in msgs:
        validate_message(m)
    ids_opened = [m["incident_id"] for m in msgs if m["event"] == "opened"]
    assert len(ids_opened) == len(set(ids_opened)), "an incident was opened twice"
    for m in msgs:
        if m["event"] == "resolved":
            assert m["incident_id"] in ids_opened
    assert ids_opened, "nothing was reported at all"
    # the camera's retained status: republished every camera_status_s while all is well, with the link's health
    for m in statuses:
        validate_message(m, kind="camera_status")
    live = [m for m in statuses if m["state"] == "online"]
    assert len(live) >= 3, statuses
    scans = [m["health"]["scans_1h"] for m in live]
    assert max(scans) >= 10 and all(m["health"]["decode"] in ("keyframes", "all") for m in live), live
    assert all(m["health"]["last_frame_age_s"] is not None and m["health"]["last_frame_age_s"] < 2 for m in live)
    must, may, want_resolved = expected(truth, played)
    print(f"truth (played {played:.0f} s of media): must open {must}, may open {may}, must resolve {want_resolved}; "
          f"reported opened {count(msgs, 'opened')}, resolved {count(msgs, 'resolved')}")
