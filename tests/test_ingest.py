"""PyAV ingest (edge/ingest.py) against the real gst-rtsp-server: keyframes only when the scan interval is at
least the GOP, every frame otherwise; reconnect after a kill, stall on a freeze, never a password shown."""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from edge import sources  # noqa: E402
from edge.config import Camera  # noqa: E402
from edge.ingest import PyAvSource, to_bgr  # noqa: E402
from edge.sources import RtspSource, SourceError, open_source  # noqa: E402
from fixtures_rtsp import RtspServer, ffmpeg_unavailable, make_clip, rtsp_unavailable  # noqa: E402
from test_sources import (  # noqa: E402
    SECRET, Run, check_frozen_server_is_a_stall, check_reconnects_after_the_server_comes_back,
    check_unreachable_camera, own_udp_sockets)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """short: 20 fps, keyframe every 10 frames (0.5 s); long: 10 fps, keyframe every 30 frames (3 s)."""
    if (why := ffmpeg_unavailable()) is not None:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("ingest")
    return {"short": make_clip(d / "short.mp4", seconds=3, fps=20, gop=10),
            "long": make_clip(d / "long.mp4", seconds=6, fps=10, gop=30),
            "cam": make_clip(d / "cam.mp4", seconds=4, fps=10, gop=10)}


@pytest.fixture(scope="module")
def rtsp_ok() -> None:
    if (why := rtsp_unavailable()) is not None:
        pytest.skip(why)


# ----------------------------------------------------------------------------- choosing the decoder
@pytest.mark.parametrize(("decoder", "installed", "kind"), [
    ("auto", True, PyAvSource),
    ("pyav", True, PyAvSource),
    ("opencv", True, RtspSource),
    ("auto", False, RtspSource),
])
def test_decoder_choice(monkeypatch: pytest.MonkeyPatch, decoder: str, installed: bool, kind: type) -> None:
    monkeypatch.setattr(sources, "pyav_available", lambda: installed)
    src = open_source(Camera(id="c1", url="rtsp://u:p@cam.local/s", scan_interval_s=2.0, decoder=decoder))
    assert type(src) is kind and (src.scan_interval_s, src.read_timeout_s) == (2.0, 2.0)


def test_pyav_asked_for_but_missing_is_a_source_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "pyav_available", lambda: False)
    with pytest.raises(SourceError, match="c1.*pip install av"):
        open_source(Camera(id="c1", url="rtsp://cam.local/s", decoder="pyav"))


def test_files_are_always_read_with_opencv(clips: dict[str, Path]) -> None:
    src = open_source(Camera(id="c1", url=str(clips["cam"]), decoder="pyav"))
    assert isinstance(src, sources.FileSource)


# ------------------------------------------------------------------------------------ real server
def test_pyav_unreachable_camera_is_offline_masked_and_stops_promptly(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    check_unreachable_camera(PyAvSource, monkeypatch, caplog, capfd)


# both RTSP clients: the built-in one (the default for H.264 over rtsp://) and FFmpeg's (its fallback)
CLIENTS = pytest.mark.parametrize("client", ["builtin", "ffmpeg"])


@pytest.mark.slow
@CLIENTS
def test_pyav_keyframes_only_when_the_gop_is_shorter_than_the_scan(
        rtsp_ok: None, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, client: str) -> None:
    monkeypatch.setenv("CAM_PW", SECRET)
    caplog.set_level(logging.DEBUG, logger="edge")
    with RtspServer({"cam1": clips["short"]}) as srv:
        run = Run(lambda cb: PyAvSource("cam1", srv.url("cam1", auth="viewer:${CAM_PW}"), 1.0, on_status=cb,
                                        rtsp_client=client))
        try:
            run.wait("5 scans", lambda: len(run.frames) >= 5, 25)
            udp = own_udp_sockets()
            ingest = run.source.ingest()
            scans_then = len(run.frames)
            status = run.source.status()
        finally:
            run.close()
    ts = [f.ts for _, f in run.frames[:5]]
    gaps = np.diff(ts)
    assert np.all((gaps > 0.6) & (gaps < 1.5)), gaps  # 1 s, taken from keyframes 0.5 s apart
    assert abs(ts[-1] - time.time()) < 30  # capture time, epoch
    assert all(f.image.shape == (180, 320, 3) and f.image.dtype == np.uint8 for _, f in run.frames)
    assert [f.seq for _, f in run.frames[:5]] == list(range(5))
    assert ingest["client"] == client and ingest["damaged"] == (0 if client == "builtin" else None)
    assert ingest["mode"] == "keyframes" and ingest["gop_s"] == pytest.approx(0.5, abs=0.03), ingest
    # one picture decoded per scan: not every frame, nor every keyframe (two per scan here)
    assert ingest["packets"] >= 60 and ingest["decoded"] <= ingest["packets"] / 20 + 2, ingest
    assert ingest["decoded"] <= scans_then + 2, (ingest, scans_then)
    assert status["state"] == "online" and status["reconnects"] == 0 and status["stalls"] == 0
    assert udp == 0, "RTP should come interleaved over the RTSP TCP connection, not UDP"
    assert SECRET not in caplog.text and "viewer:***@" in caplog.text
    assert "decoding keyframes only" not in caplog.text  # never switched away and back


@pytest.mark.slow
@CLIENTS
def test_pyav_decodes_every_frame_when_the_gop_is_longer_than_the_scan(
        rtsp_ok: None, clips: dict[str, Path], caplog: pytest.LogCaptureFixture, client: str) -> None:
    caplog.set_level(logging.INFO, logger="edge.ingest")
    with RtspServer({"cam1": clips["long"]}) as srv:
        run = Run(lambda cb: PyAvSource("cam1", srv.url("cam1"), 0.5, on_status=cb, rtsp_client=client))
        try:
            run.wait("decode-all mode", lambda: run.source.ingest()["mode"] == "all", 25)
            switched = time.monotonic()
            before = run.source.ingest()
            run.wait("5 scans after the switch", lambda: len(run.frames_after(switched)) >= 5, 15)
            after = run.source.ingest()
            late = run.frames_after(switched)
        finally:
            run.close()
    assert before["gop_s"] == pytest.approx(3.0, abs=0.1) and before["client"] == client, before
    assert "GOP 3.00 s, scan every 0.50 s: decoding every frame" in caplog.text
    gaps = np.diff([f.ts for f in late[:5]])
    assert np.all((gaps > 0.3) & (gaps < 0.8)), gaps  # the scan cadence, not the 3 s keyframe cadence
    # every packet since the switch was decoded
    assert after["decoded"] - before["decoded"] >= after["packets"] - before["packets"] - 1, (before, after)


@pytest.mark.slow
@CLIENTS
def test_pyav_reconnects_after_the_server_comes_back(rtsp_ok: None, clips: dict[str, Path], client: str) -> None:
    check_reconnects_after_the_server_comes_back(functools.partial(PyAvSource, rtsp_client=client), clips["cam"])


@pytest.mark.slow
@CLIENTS
def test_pyav_frozen_server_is_a_stall_and_no_stale_frame_follows(rtsp_ok: None, clips: dict[str, Path],
                                                                 client: str) -> None:
    check_frozen_server_is_a_stall(functools.partial(PyAvSource, rtsp_client=client), clips["cam"],
                                   max_frame_age_s=1.0 + 0.5)  # PyAV: no stale reads


def test_stop_event_unused_thread_free() -> None:
    """A source that was never started reports offline and holds no thread."""
    # its own camera id: another test's "cam1" reader may still be winding down when this one runs
    src = PyAvSource("cam-never-started", "rtsp://127.0.0.1:1/x", 2.0)
    assert src.status()["state"] == "offline" and src.ingest()["mode"] is None
    assert not any(t.name == "pyav-cam-never-started" for t in threading.enumerate())


def test_frames_convert_to_the_same_bgr_as_swscale(clips: dict[str, Path]) -> None:
    """OpenCV's plane conversion (the fast path) gives the picture swscale's bgr24 gives, within rounding."""
    import av

    with av.open(str(next(iter(clips.values())))) as c:
        vf = next(c.decode(video=0))
        assert vf.format.name == "yuv420p"
        ours, ref = to_bgr(vf).astype(np.int16), vf.to_ndarray(format="bgr24").astype(np.int16)
        full = vf.reformat(format="yuvj420p")  # a full-range camera: the swscale path, its own range
        assert to_bgr(full).shape == ref.shape
    assert ours.shape == ref.shape and np.abs(ours - ref).mean() < 2.0 and np.percentile(np.abs(ours - ref), 99) <= 6



class SlowProxy:
    """A TCP proxy in front of the RTSP server that holds the server's first answer back `delay_s`: a camera (or
    NVR) slow to answer the RTSP handshake, then streaming normally."""

    def __init__(self, port: int, delay_s: float) -> None:
        import socket

        self.target, self.delay_s = port, delay_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self.closing.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self.delay_s), daemon=True).start()

    def _pipe(self, src: Any, dst: Any, delay_s: float) -> None:
        first = True
        try:
            while data := src.recv(65536):
                if first and delay_s:
                    time.sleep(delay_s)
                first = False
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.closing.set()
        self.sock.close()


@pytest.mark.slow
def test_pyav_a_camera_slower_to_answer_than_the_read_timeout_but_within_the_open_timeout_opens(
        rtsp_ok: None, clips: dict[str, Path]) -> None:
    """The read timeout bounds reads of a flowing stream; the open (handshake and probing) has the open timeout."""
    with RtspServer({"cam1": clips["cam"]}) as srv:
        proxy = SlowProxy(srv.port, delay_s=2.5)
        run = Run(lambda cb: PyAvSource("cam1", f"rtsp://127.0.0.1:{proxy.port}/cam1", 0.5, open_timeout_s=6.0,
                                        read_timeout_s=1.0, on_status=cb))
        try:
            run.wait("a frame through the slow handshake", lambda: len(run.frames) >= 2, 20)
        finally:
            run.close()
            proxy.close()
    first_frame = run.frames[0][0]
    assert not [s for t, s in run.statuses if t < first_frame and s["state"] == "offline"], run.statuses
