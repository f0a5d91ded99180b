"""`replay`: the same clip gives the same payloads, byte for byte, each a valid message; real incident-free
road footage gives none."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.messages import validate_message

ROOT = Path(__file__).resolve().parents[1]


def replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_edge.py", "replay", "-q", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_replay_is_deterministic_and_valid(tmp_path):
    rules = yaml.safe_load((ROOT / "rules" / "demo-cam1.yaml").read_text())
    # low thresholds: the point here is the pipeline's determinism, not the model's accuracy
    rules["classes"] = {c: {"threshold": 0.25} for c in ("manhole_open", "ponding", "garbage_pile", "material_pile",
                                                        "illegal_structure")}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(rules))
    outs = []
    for k in range(2):
        out = tmp_path / f"e{k}.jsonl"
        r = replay("--site", str(ROOT / "streams" / "demo.yaml"), "--rules", str(tmp_path / "r.yaml"),
                   "--start-time", "2026-07-01T09:00:00+08:00", "--events-out", str(out))
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    msgs = [json.loads(ln) for ln in outs[0].decode().splitlines()]
    assert msgs, "nothing reported at threshold 0.25"
    for m in msgs:
        validate_message(m)
        assert m["observed_at"].startswith("2026-07-01T09:") and m["observed_at"].endswith("+08:00")
        for key in ("message_id", "incident_id", "event", "class", "camera_id", "edge_id"):
            assert m[key]


@pytest.mark.parametrize("clip", ["car-detection.mp4", "road-overhead.avi"])
def test_incident_free_road_footage_reports_nothing(shared_data, clip, tmp_path):
    out = tmp_path / "e.jsonl"
    r = replay("--video", str(shared_data / "road-clips" / clip), "--events-out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.read_text() == ""
    assert "incidents opened 0" in r.stdout
