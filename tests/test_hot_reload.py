"""Cameras come and go while the box runs: the site file is watched, and a camera added, changed or removed in it
is applied within seconds without stopping the others; a site file that cannot be used changes nothing.

Real components: the GStreamer RTSP server serves the cameras; the runtime runs in this process (its broker is
away, so everything it would publish waits in its outbox)."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
import yaml

from edge.app import EdgeApp, load_everything
from fixtures_mqtt import free_port
from fixtures_rtsp import RtspServer, ffmpeg_unavailable, make_clip, rtsp_unavailable

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(rtsp_unavailable() or ffmpeg_unavailable()),
                                                   reason=str(rtsp_unavailable() or ffmpeg_unavailable()))]


def write_site(path: Path, cameras: list[dict], **extra) -> None:
    site = {"edge_id": "reload-edge", "model": str(ROOT / "models" / "cityops_det_n416.onnx"),
            "state_dir": str(path.parent / "state"), "broker": {"host": "127.0.0.1", "port": extra.pop("port")},
            "cameras": cameras, **extra}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(site))
    tmp.replace(path)  # as an editor or a deploy tool writes it: whole, never half


def scans(app: EdgeApp) -> dict[str, int]:
    return dict(app.summary.scans_by_camera)


def wait_until(what: str, cond, timeout: float) -> float:
    """Seconds until `cond()` held; fails naming `what` after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_cameras_added_changed_and_removed_without_a_restart(tmp_path: Path, caplog) -> None:
    clip = make_clip(tmp_path / "cam.mp4", seconds=4)
    port = free_port()  # no broker there: statuses wait in the outbox
    cam = lambda cid, mount, **kw: {"id": cid, "url": srv.url(mount), "scan_interval_s": 0.5,  # noqa: E731
                                    "open_timeout_s": 5, "read_timeout_s": 2, **kw}
    site = tmp_path / "site.yaml"
    with RtspServer({"a": clip, "b": clip, "c": clip}) as srv:
        write_site(site, [cam("cam1", "a")], port=port)
        app = EdgeApp(load_everything(site), state_dir=tmp_path / "state")
        runner = threading.Thread(target=app.run_live, kwargs=dict(duration_s=120, install_signals=False,
                                                                  startup_wait_s=0.2), daemon=True)
        runner.start()
        try:
            wait_until("cam1 scanning", lambda: scans(app).get("cam1", 0) >= 3, 30)

            # added: cam2 starts scanning, cam1 never stops
            write_site(site, [cam("cam1", "a"), cam("cam2", "b")], port=port)
            before = scans(app)["cam1"]
            wait_until("cam2 scanning", lambda: scans(app).get("cam2", 0) >= 3, 30)
            assert scans(app)["cam1"] >= before + 3

            # changed (another stream) and removed: cam2 goes on with its new URL, cam1 stops
            write_site(site, [cam("cam2", "c", scan_interval_s=0.25)], port=port)
            wait_until("the reload", lambda: app.summary.site_reloads >= 2, 10)
            wait_until("cam2 on its new stream", lambda: app._sources["cam2"].url.endswith("/c"), 10)
            time.sleep(1.5)  # cam1's thread ends within its read timeout
            gone, moving = scans(app)["cam1"], scans(app)["cam2"]
            time.sleep(3)
            assert scans(app)["cam1"] == gone, "a removed camera kept scanning"
            assert scans(app)["cam2"] >= moving + 6, "the changed camera did not resume at its new interval"
            assert [c.id for c in app.L.cameras] == ["cam2"] and set(app.L.rulesets) == {"cam2"}

            # unusable edits change nothing: broken YAML, then a new broker (restart-only)
            with caplog.at_level(logging.ERROR, logger="edge.app"):
                site.write_text("edge_id: reload-edge\ncameras: [ {id: cam9\n")
                wait_until("the YAML error", lambda: "site file changed but cannot be used" in caplog.text, 10)
                assert str(site) in caplog.text
                write_site(site, [cam("cam2", "c"), cam("cam3", "a")], port=port + 1)
                wait_until("the broker refusal", lambda: "broker changed" in caplog.text, 10)
            moving = scans(app)["cam2"]
            time.sleep(2)
            assert scans(app)["cam2"] > moving and "cam3" not in scans(app)
            assert app.summary.site_reloads == 2
        finally:
            app.stop_event.set()
            runner.join(30)
    assert not runner.is_alive()
