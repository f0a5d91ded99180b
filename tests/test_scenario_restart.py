"""A restart in the middle of a scenario changes no score: the same incidents open at the same scans, with the
same ids and places, whether or not the box was stopped and started again half-way."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edge.app import EdgeApp, load_everything
from edge.score import parse_time, score

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "streams" / "demo.yaml"
TRUTH = ROOT / "streams" / "demo" / "truth.json"


def run(tmp: Path, rules: Path, state: Path, lo: float | None = None, hi: float | None = None) -> list[dict]:
    app = EdgeApp(load_everything(SITE, rules_override=rules), replay=True, state_dir=state, min_media_s=lo,
                  max_media_s=hi)
    app.run_replay()
    return app.jsonl.messages


@pytest.mark.slow
def test_a_restart_during_the_scenario_changes_no_score(tmp_path):
    rules = yaml.safe_load((ROOT / "rules" / "demo-cam1.yaml").read_text())
    # low thresholds: the shipped model must report something for a restart to have something to disturb
    rules["classes"] = {c: {"threshold": 0.2} for c in
                        ("manhole_open", "ponding", "garbage_pile", "material_pile", "illegal_structure")}
    rp = tmp_path / "rules.yaml"
    rp.write_text(yaml.safe_dump(rules))
    whole = run(tmp_path, rp, tmp_path / "a")
    opened = [m for m in whole if m["event"] == "opened"]
    assert opened, "nothing reported: the restart would be tested on nothing"
    assert all(m["lon"] is not None and m.get("grid_code") for m in opened)  # the demo camera is calibrated
    # stop at a moment when an incident is open and another may be mid-vote, then start again on the same state
    t_cut = parse_time(opened[0]["observed_at"]) + 4.0
    first = run(tmp_path, rp, tmp_path / "b", hi=t_cut)
    second = run(tmp_path, rp, tmp_path / "b", lo=t_cut)
    both = first + second
    assert [m["message_id"] for m in both] == [m["message_id"] for m in whole]
    assert [(m["lon"], m["lat"], m.get("grid_code")) for m in both] == [(m["lon"], m["lat"], m.get("grid_code")) for m in whole]
    truth = json.loads(TRUTH.read_text())
    assert score(truth, both) == score(truth, whole)
