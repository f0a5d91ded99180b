"""bench/cameras.py keeps its contract: other tools read the last line of `--json` by these keys (issue 6). A
smoke run with 2 cameras and a few seconds per phase, all three sides (ours, the bare loop, ultralytics); the
figures themselves are for the bench to print, never for a test to judge (shared machines are noisy)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_rtsp import rtsp_unavailable

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(rtsp_unavailable()), reason=str(rtsp_unavailable()))]


def test_the_bench_json_line_has_every_key_its_users_read() -> None:
    pytest.importorskip("ultralytics")  # the baseline side (the `train` extra)
    r = subprocess.run([sys.executable, "bench/cameras.py", "--cameras", "2", "--seconds", "6", "--warmup", "2",
                        "--bare", "--baseline", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["cameras"] == 2 and out["scan_interval_s"] == 2.0 and out["cameras_scanning"] == 2
    assert out["codec"] == "h264" and out["rtsp_client"] == "auto"
    for side in ("", "baseline_", "bare_"):
        assert out[f"{side}cpu_s_per_camera_hour"] > 0, side
        assert 0 <= out[f"{side}scan_lag_p95_s"] <= 2.0, side  # 2 cameras: every side keeps up
    # resident memory is sampled while each child is still alive (a child sampled after exiting reads as 0)
    assert out["rss_mb_per_camera"] > 0 and out["baseline_rss_mb_per_camera"] > 0
    assert out["held"] and out["baseline_held"] and out["scans_ratio"] >= 0.9
    assert out["cpu_ratio_baseline_over_ours"] == pytest.approx(
        out["baseline_cpu_s_per_camera_hour"] / out["cpu_s_per_camera_hour"], rel=0.02)
    assert out["cpu_ratio_ours_over_bare"] == pytest.approx(
        out["cpu_s_per_camera_hour"] / out["bare_cpu_s_per_camera_hour"], rel=0.02)
    assert sum(out["shares"].values()) == pytest.approx(1.0, abs=0.02)
