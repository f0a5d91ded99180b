"""End to end with the real components, started here: a GStreamer RTSP server serving a scenario clip (rendered
by `synth-scenario`, sped up 4x by retiming, no re-encode), Mosquitto with the project's config and a password,
and the runtime as a subprocess, killed with SIGKILL mid-run and started again.

The centre must get exactly one `opened` per true incident, at its place, its `resolved` after it is gone, and
nothing else: not across the SIGKILL and restart either, and every message validates. The clip (seed 43, four
minutes: a garbage pile that is cleared, an open manhole, a makeshift structure that is removed, a material
pile) is one whose incidents the shipped model sees at its manifest thresholds, so that this test checks the runtime's guarantees
rather than the model's accuracy (measured in its model card and by `score` on 10-minute scenarios)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edge.geo import lonlat_to_local
from edge.messages import validate_message
from fixtures_mqtt import Mosquitto, Subscriber
from fixtures_rtsp import RtspServer, rtsp_unavailable

ROOT = Path(__file__).resolve().parents[1]
SEED = 43
RESOLVE_DUE_S = 45.0  # media seconds after an incident is gone by which its `resolved` is due (resolve-after 30)
SPEED = 4.0
MATCH_M = 5.0  # a report within this ground distance of a true incident of its class is about that incident

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(rtsp_unavailable()), reason=str(rtsp_unavailable()))]


def scenario(tmp: Path) -> Path:
    out = tmp / "scen"
    subprocess.run([sys.executable, "run_edge.py", "synth-scenario", "--out", str(out), "--seed", str(SEED),
                    "--cameras", "1", "--minutes", "4"], cwd=ROOT, check=True, capture_output=True)
    return out


def fast_clip(scen: Path) -> Path:
    out = scen / "fast.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-itsscale", str(1 / SPEED), "-i", str(scen / "cam1.mp4"),
                    "-c", "copy", str(out)], check=True)
    return out


def write_site(scen: Path, url: str, port: int) -> Path:
    """The scenario's own site (calibration, grid layer, inventory) and rules, every time in them scaled to the
    faster clip, the camera's url pointing at the RTSP server, and the real broker with a password."""
    rules = yaml.safe_load((scen / "rules" / "cam1.yaml").read_text())
    rules["persistence"]["window_s"] /= SPEED
    rules["resolve_after_s"] /= SPEED
    rules["update_interval_s"] = 10_000
    (scen / "rules" / "cam1_fast.yaml").write_text(yaml.safe_dump(rules))
    site = yaml.safe_load((scen / "site.yaml").read_text())
    cam = site["cameras"][0]
    cam.update({"url": url, "rules": "rules/cam1_fast.yaml", "scan_interval_s": 2.0 / SPEED, "open_timeout_s": 5,
                "read_timeout_s": 2})
    site.update({"edge_id": "e2e-edge", "model": str(ROOT / "models" / "cityops_det_n416.onnx"),
                 "state_dir": str(scen / "state"),
                 "broker": {"host": "127.0.0.1", "port": port, "protocol": "5", "username_env": "E2E_USER",
                            "password_env": "E2E_PASS", "evidence": "inline", "camera_status_s": 5}})
    p = scen / "site_e2e.yaml"
    p.write_text(yaml.safe_dump(site, allow_unicode=True))
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


def truth_of(msg: dict, truth: dict) -> list[str]:
    """The true incidents a report is about: same class, within MATCH_M on the ground (the project's own
    lon/lat → local metres step, anchored at the true incident)."""
    return [t["id"] for t in truth["incidents"]
            if t["class"] == msg["class"] and math.hypot(*lonlat_to_local(msg["lon"], msg["lat"], t)) <= MATCH_M]


def test_rtsp_to_mqtt_survives_sigkill_without_repeats_or_losses(tmp_path):
    scen = scenario(tmp_path)
    truth = json.loads((scen / "truth.json").read_text())
    clip_s = truth["duration_s"] / SPEED
    with Mosquitto(tmp_path / "mq", {"e2e-edge": "edge-pw", "centre": "centre-pw"}) as mq, \
            RtspServer({"cam1": fast_clip(scen)}) as rtsp, \
            Subscriber(mq.port, "cityops/e2e-edge/incident/#", username="centre", password="centre-pw") as sub, \
            Subscriber(mq.port, "cityops/e2e-edge/camera/+/status", username="centre", password="centre-pw") as cams:
        site = write_site(scen, rtsp.url("cam1"), mq.port)
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
    # exactly one `opened` per true incident, at its place; nothing else
    opened = [m for m in msgs if m["event"] == "opened"]
    about = {m["incident_id"]: truth_of(m, truth) for m in opened}
    report = (f"played {played:.0f} s of media; truth {[(t['id'], t['class'], t['appear_s'], t['disappear_s']) for t in truth['incidents']]}; "
              f"opened {[(m['class'], round(m['lon'], 6), round(m['lat'], 6), about[m['incident_id']]) for m in opened]}")
    print(report)
    assert sum(t["disappear_s"] is not None and t["disappear_s"] + RESOLVE_DUE_S < played for t in truth["incidents"]) >= 1
    assert all(len(ids) == 1 for ids in about.values()), "a report that is no true incident: " + report
    for t in truth["incidents"]:
        n = sum(ids == [t["id"]] for ids in about.values())
        assert n <= 1, f"{t['id']} ({t['class']}) opened {n} times: " + report
        if t["appear_s"] + 40 < played:  # seen long enough to be reported
            assert n == 1, f"{t['id']} ({t['class']}) opened {n} times: " + report
        # its `resolved` once it has been gone long enough, and never while it is there
        res = [m for m in msgs if m["event"] == "resolved" and about.get(m["incident_id"]) == [t["id"]]]
        if t["disappear_s"] is None:
            assert not res, f"{t['id']} is still there but was resolved: " + report
        elif t["disappear_s"] + RESOLVE_DUE_S < played:
            assert len(res) == 1, f"{t['id']} ({t['class']}) resolved {len(res)} times: " + report
