"""The README's first command: `python run_edge.py` runs the bundled demo site offline and prints a summary."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_offline_and_summarises():
    r = subprocess.run([sys.executable, "run_edge.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    summary = [ln for ln in r.stdout.splitlines() if ln.startswith("summary:")]
    assert summary and "1 camera(s), 90 scans" in summary[0], r.stdout[-2000:]
    # every incident event the edge produced reached the stand-in centre through the broker
    opened = r.stdout.count("edge: opened") + r.stdout.count("edge: resolved") + r.stdout.count("edge: updated")
    assert r.stdout.count("← centre received") == opened
    # what a user sees in the first minute: an incident, at a sensible media time, dated today (not 1970)
    edge_lines = [ln for ln in r.stdout.splitlines() if ln.startswith("edge: ")]
    assert any(ln.startswith("edge: opened") for ln in edge_lines), r.stdout[-2000:]
    media = [float(ln.rsplit("at media", 1)[1].strip().rstrip("s")) for ln in edge_lines]
    assert all(0.0 <= m <= 200.0 for m in media), media  # the clip is 3 minutes long
    received = [ln for ln in r.stdout.splitlines() if "← centre received" in ln]
    year = time.strftime("%Y")
    assert all(f" at {year}-" in ln or f" at {int(year) + 1}-" in ln for ln in received), received
