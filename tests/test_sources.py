"""Sources: file replay on media time, and live RTSP against a real gst-rtsp-server (kill, restart, freeze)."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge import sources
from edge.config import Camera
from edge.sources import DEGRADED_FOR_S, FileSource, RtspSource, SourceError, link_state, open_source
from edge.types import Frame
from fixtures_rtsp import RtspServer, ffmpeg_unavailable, make_clip, rtsp_unavailable

SECRET = "s3cr3t-Pa55"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s, 10 fps, 320x180, keyframe every second."""
    if (why := ffmpeg_unavailable()) is not None:
        pytest.skip(why)
    return make_clip(tmp_path_factory.mktemp("clips") / "cam.mp4", seconds=4)


@pytest.fixture(scope="module")
def rtsp_ok() -> None:
    if (why := rtsp_unavailable()) is not None:
        pytest.skip(why)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    """Iterates a source's frames() on a thread, recording frames and status changes with their times."""

    def __init__(self, make: Callable[[Callable[[str, dict[str, Any]], None]], RtspSource]) -> None:
        self.stop = threading.Event()
        self.frames: list[tuple[float, Frame]] = []   # (monotonic arrival, frame)
        self.statuses: list[tuple[float, dict[str, Any]]] = []
        self.changed = threading.Condition()
        self.source = make(self._on_status)
        self.ended_at: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_status(self, camera_id: str, status: dict[str, Any]) -> None:
        with self.changed:
            self.statuses.append((time.monotonic(), status))
            self.changed.notify_all()

    def _run(self) -> None:
        for f in self.source.frames(self.stop):
            with self.changed:
                self.frames.append((time.monotonic(), f))
                self.changed.notify_all()
        self.ended_at = time.monotonic()

    def wait(self, what: str, pred: Callable[[], bool], timeout: float) -> None:
        with self.changed:
            if not self.changed.wait_for(pred, timeout=timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; statuses: "
                                     f"{[s for _, s in self.statuses]}, frames: {len(self.frames)}")

    def frames_after(self, t: float) -> list[Frame]:
        with self.changed:
            return [f for at, f in self.frames if at > t]

    def close(self) -> float:
        """Set stop; return how long frames() took to end."""
        t0 = time.monotonic()
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "frames() did not return after stop was set"
        assert self.ended_at is not None
        return self.ended_at - t0


def own_udp_sockets() -> int:
    """UDP sockets this process holds (RTP over UDP would open some)."""
    inodes = set()
    for name in ("udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        inodes |= {ln.split()[9] for ln in lines}
    mine = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            mine += 1
    return mine


# ------------------------------------------------------------------------------------------ file
@pytest.mark.parametrize(("scan_s", "expected_ts"), [
    (1.0, [0.0, 1.0, 2.0, 3.0]),
    (1.5, [0.0, 1.5, 3.0]),
    (0.5, [0.5 * i for i in range(8)]),
    (0.05, [0.1 * i for i in range(40)]),  # faster than the clip: every frame, once
])
def test_file_scans_on_media_time(clip: Path, scan_s: float, expected_ts: list[float]) -> None:
    frames = list(FileSource("cam1", clip, scan_s).frames(threading.Event()))
    ts = [f.ts for f in frames]
    assert len(ts) == len(expected_ts), ts
    assert np.allclose(ts, expected_ts, atol=0.1 + 1e-9), ts  # ±1 frame at 10 fps
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert all(f.camera_id == "cam1" and f.image.shape == (180, 320, 3) for f in frames)


def test_file_replays_faster_than_real_time(clip: Path) -> None:
    t0 = time.monotonic()
    n = sum(1 for _ in FileSource("cam1", clip, 1.0).frames(threading.Event()))
    assert n == 4 and time.monotonic() - t0 < 3.0  # paced in real time, ts 0..3 would take 3 s


def test_file_stops_on_stop_event(clip: Path) -> None:
    stop = threading.Event()
    got = []
    for f in FileSource("cam1", clip, 0.5).frames(stop):
        got.append(f)
        stop.set()
    assert len(got) == 1


@pytest.mark.parametrize("kind", ["missing", "not a video"])
def test_file_that_cannot_open_names_camera_and_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "cam7.mp4"
    if kind == "not a video":
        path.write_text("hello")
    with pytest.raises(SourceError) as e:
        list(FileSource("cam7", path, 1.0).frames(threading.Event()))
    msg = str(e.value)
    assert "cam7" in msg and str(path) in msg and "\n" not in msg


# ----------------------------------------------------------------------------------- open_source
@pytest.mark.parametrize(("url", "kind"), [
    ("rtsp://cam.local/stream1", RtspSource),
    ("RTSPS://u:p@cam.local:322/s", RtspSource),
    ("${CAM_URL}", RtspSource),
    ("rtsp://viewer:${CAM_PW}@10.0.0.7/s", RtspSource),
    ("__CLIP__", FileSource),
])
def test_open_source_picks_by_scheme(monkeypatch: pytest.MonkeyPatch, clip: Path, url: str, kind: type) -> None:
    monkeypatch.setenv("CAM_URL", f"rtsp://viewer:{SECRET}@10.0.0.7/s")
    monkeypatch.setenv("CAM_PW", SECRET)
    cam = Camera(id="c1", url=url.replace("__CLIP__", str(clip)), scan_interval_s=3.0, read_timeout_s=1.5)
    src = open_source(cam)
    assert isinstance(src, kind) and src.camera_id == "c1"
    if isinstance(src, RtspSource):
        assert (src.scan_interval_s, src.read_timeout_s) == (3.0, 1.5)
        assert SECRET not in src.url and SECRET not in repr(vars(src))


# ------------------------------------------------------------------- stall logic, fake capture
class FakeCapture:
    """Scripted grab() results: (seconds the grab takes, ok, pixel value of the frame it leaves)."""

    def __init__(self, script: list[tuple[float, bool, int]]) -> None:
        self.script = list(script)
        self.value = 0
        self.released = threading.Event()

    def get(self, prop: int) -> float:
        return 10.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def grab(self) -> bool:
        delay, ok, self.value = self.script.pop(0) if self.script else (0.05, False, 0)
        time.sleep(delay)
        return ok

    def retrieve(self) -> tuple[bool, np.ndarray]:
        return True, np.full((4, 4, 3), self.value, np.uint8)

    def release(self) -> None:
        self.released.set()


def fake_source(monkeypatch: pytest.MonkeyPatch, caps: list[FakeCapture | None], read_timeout_s: float = 0.3
                ) -> Callable[[Callable[[str, dict[str, Any]], None]], RtspSource]:
    pending = list(caps)
    monkeypatch.setattr(sources, "_open_capture", lambda url, o, r: pending.pop(0) if pending else None)
    return lambda on_status: RtspSource("cam1", "rtsp://u:p@h/s", 0.05, open_timeout_s=1,
                                        read_timeout_s=read_timeout_s, backoff=(0.05, 0.1), on_status=on_status)


@pytest.mark.parametrize(("stale_grab", "what"), [
    ((0.35, True, 255), "a read that waits the read timeout returns a stale frame"),
    ((1.2, True, 255), "a read that hangs past 2x the read timeout (OpenCV's timeout failed)"),
])
def test_stall_never_hands_out_the_stale_frame(monkeypatch: pytest.MonkeyPatch, stale_grab: tuple[float, bool, int],
                                               what: str) -> None:
    first = FakeCapture([(0.06, True, 10)] * 8 + [stale_grab] + [(0.06, True, 255)] * 3)
    second = FakeCapture([(0.06, True, 20)] * 100)
    run = Run(fake_source(monkeypatch, [first, second]))
    try:
        run.wait("frames after the reconnect", lambda: any(f.image[0, 0, 0] == 20 for _, f in run.frames), 10)
        values = [int(f.image[0, 0, 0]) for _, f in run.frames]
        assert 255 not in values, what
        assert values[0] == 10 and values[-1] == 20
        stall = next(s for _, s in run.statuses if s["stalls"])
        assert stall["state"] == "offline" and stall["stalls"] == 1 and "stalled" in stall["error"]
        assert stall["last_frame_age_s"] < 2 * 0.3 + 0.3
        assert run.source.status()["reconnects"] == 1 and first.released.is_set()
    finally:
        run.close()


# --------------------------------------------------------------------------- live, real server
def test_unreachable_camera_goes_offline_masked_and_stops_promptly(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    check_unreachable_camera(RtspSource, monkeypatch, caplog, capfd)


def check_unreachable_camera(source_cls: type[RtspSource], monkeypatch: pytest.MonkeyPatch,
                             caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    """Any live source class (OpenCV's, PyAV's): offline with the URL masked, a prompt stop, no password anywhere."""
    monkeypatch.setenv("CAM_PW", SECRET)
    url = f"rtsp://viewer:${{CAM_PW}}@127.0.0.1:{closed_port()}/cam1"
    caplog.set_level(logging.DEBUG, logger="edge")
    run = Run(lambda cb: source_cls("cam1", url, 0.5, open_timeout_s=1, read_timeout_s=1, backoff=(0.2, 0.4),
                                    on_status=cb))
    run.wait("two failed opens", lambda: sum(s["state"] == "offline" for _, s in run.statuses) >= 2, 10)
    took = run.close()
    assert took < 0.5, f"frames() took {took:.2f} s to return after stop"
    assert not run.frames
    offline = [s for _, s in run.statuses if s["state"] == "offline"]
    assert "rtsp://viewer:***@127.0.0.1" in offline[0]["error"]
    assert offline[0]["last_frame_age_s"] is None and run.source.status()["reconnects"] >= 1
    assert {s["state"] for _, s in run.statuses} <= {"connecting", "offline"}
    leaks = [where for where, text in [("status", repr(run.statuses)), ("log", caplog.text),
                                       ("stderr (FFmpeg)", capfd.readouterr().err)] if SECRET in text]
    assert not leaks, f"password shown in {leaks}"


@pytest.mark.slow
def test_rtsp_frames_arrive_over_tcp_at_the_scan_cadence(
        rtsp_ok: None, clip: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CAM_PW", SECRET)
    caplog.set_level(logging.DEBUG, logger="edge.sources")
    with RtspServer({"cam1": clip}) as srv:
        run = Run(lambda cb: RtspSource("cam1", srv.url("cam1", auth="viewer:${CAM_PW}"), 0.5, on_status=cb))
        try:
            run.wait("5 scans", lambda: len(run.frames) >= 5, 20)
            udp = own_udp_sockets()
            ts = [f.ts for _, f in run.frames[:5]]
            status = run.source.status()
        finally:
            run.close()
    gaps = np.diff(ts)
    assert np.all((gaps > 0.3) & (gaps < 0.9)), gaps  # 0.5 s ± scheduling on a loaded machine
    assert abs(ts[-1] - time.time()) < 30  # capture time, epoch
    assert all(f.image.shape == (180, 320, 3) for _, f in run.frames)
    assert [f.seq for _, f in run.frames[:5]] == list(range(5))
    assert status["state"] == "online" and status["reconnects"] == 0 and status["stalls"] == 0
    assert udp == 0, "RTP should come interleaved over the RTSP TCP connection, not UDP"
    assert SECRET not in caplog.text and "viewer:***@" in caplog.text


@pytest.mark.slow
def test_rtsp_reconnects_after_the_server_comes_back(rtsp_ok: None, clip: Path) -> None:
    check_reconnects_after_the_server_comes_back(RtspSource, clip)


def check_reconnects_after_the_server_comes_back(source_cls: type[RtspSource], clip: Path) -> None:
    with RtspServer({"cam1": clip}) as srv:
        run = Run(lambda cb: source_cls("cam1", srv.url("cam1"), 0.25, open_timeout_s=4, read_timeout_s=1,
                                        backoff=(0.2, 1.0), on_status=cb))
        try:
            run.wait("first frame", lambda: len(run.frames) >= 1, 20)
            killed = time.monotonic()
            srv.kill()
            run.wait("offline", lambda: any(at > killed and s["state"] == "offline" for at, s in run.statuses), 5)
            srv.restart()
            assert srv.port == int(srv.url("cam1").rsplit(":", 1)[1].split("/")[0])
            back = time.monotonic()
            run.wait("frames after the restart", lambda: len(run.frames_after(back)) >= 2, 20)
            status = run.source.status()
        finally:
            run.close()
    assert status["state"] == "online" and status["reconnects"] >= 1 and status["stalls"] == 0
    offline = next(s for at, s in run.statuses if at > killed and s["state"] == "offline")
    assert "connection broke" in offline["error"]
    # frames flow again, but the centre hears that this link broke within the last minutes
    assert status["reconnects_1h"] == status["reconnects"] and status["last_break_age_s"] < 30
    assert link_state(status, read_timeout_s=1) == "degraded"


@pytest.mark.slow
def test_rtsp_frozen_server_is_a_stall_and_no_stale_frame_follows(rtsp_ok: None, clip: Path) -> None:
    # OpenCV: two stale reads may come out of its decoder before a read blocks the full timeout
    check_frozen_server_is_a_stall(RtspSource, clip, max_frame_age_s=2 * 1.0 + 0.5)


def check_frozen_server_is_a_stall(source_cls: type[RtspSource], clip: Path, max_frame_age_s: float) -> None:
    """Frozen mid-stream (read timeout 1 s): a stall, reported within `max_frame_age_s`, and no frame after it."""
    read_timeout = 1.0
    with RtspServer({"cam1": clip}, freeze_after=2.5) as srv:
        run = Run(lambda cb: source_cls("cam1", srv.url("cam1"), 0.2, open_timeout_s=2.5,
                                        read_timeout_s=read_timeout, backoff=(0.3, 0.6), on_status=cb))
        try:
            run.wait("a stall", lambda: any(s["stalls"] for _, s in run.statuses), 20)
            stalled_at, stall = next((at, s) for at, s in run.statuses if s["stalls"])
            time.sleep(4.0)  # still frozen: a reopen attempt times out, nothing may come out
            late = run.frames_after(stalled_at)
            status = run.source.status()
        finally:
            run.close()
    assert run.frames, "no frame before the freeze"
    assert stall["state"] == "offline" and "stalled" in stall["error"]
    assert stall["last_frame_age_s"] <= max_frame_age_s
    assert not late, f"{len(late)} frames handed out after the stall"
    assert status["state"] in ("offline", "connecting") and status["reconnects"] >= 1
    assert status["stalls_1h"] >= 1 and link_state(status, read_timeout) == "offline"


@pytest.mark.parametrize("status, state", [
    (dict(state="online", last_break_age_s=None, last_frame_age_s=0.05), "online"),
    (dict(state="online", last_break_age_s=DEGRADED_FOR_S - 1, last_frame_age_s=0.05), "degraded"),
    (dict(state="online", last_break_age_s=DEGRADED_FOR_S + 1, last_frame_age_s=0.05), "online"),
    (dict(state="online", last_break_age_s=None, last_frame_age_s=1.5), "degraded"),  # half the read timeout
    (dict(state="connecting", last_break_age_s=1.0, last_frame_age_s=None), "offline"),
    (dict(state="offline", last_break_age_s=None, last_frame_age_s=None), "offline"),
])
def test_link_state_for_the_centre(status: dict, state: str) -> None:
    assert link_state(status, read_timeout_s=2.0) == state

