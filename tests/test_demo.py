"""The README's first command: `python run_edge.py` runs the bundled demo site offline and prints a summary."""
from __future__ import annotations

import subprocess
import sys
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
