"""Test helpers for sources: tiny H.264 clips and a real RTSP server in a child process.

A plain module (tests import from it) rather than conftest fixtures, so a test states what it starts.
The server is `tests/rtsp_server.py` run by Debian's /usr/bin/python3 (the only interpreter with `gi`).
"""
from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().parent / "rtsp_server.py"
READY_TIMEOUT_S = 20.0


def ffmpeg_unavailable() -> str | None:
    """Why test clips cannot be made here (for pytest.skip), or None when they can."""
    return None if shutil.which("ffmpeg") else "ffmpeg is not installed"


def rtsp_unavailable() -> str | None:
    """Why the real RTSP server cannot run here (for pytest.skip), or None when it can. Looks for the files
    instead of importing `gi` in a child: that import takes seconds on a loaded machine."""
    if (why := ffmpeg_unavailable()) is not None:
        return why
    if not Path(SYSTEM_PYTHON).exists() or not Path("/usr/lib/python3/dist-packages/gi").is_dir():
        return f"{SYSTEM_PYTHON} with python3-gi is not installed"
    typelibs = {p.name for p in Path("/usr/lib").glob("*/girepository-1.0/Gst*.typelib")}
    missing = {"GstApp-1.0.typelib", "GstRtspServer-1.0.typelib"} - typelibs
    if missing:
        return f"GStreamer typelibs missing: {sorted(missing)} (apt: gir1.2-gst-rtsp-server-1.0)"
    return None


def encoder_args(codec: str, gop: int) -> list[str]:
    """ffmpeg's encoder options for a camera-like clip: x264, or x265 with the same closed GOP (IDR keyframes, no
    B-frames, no scene cuts). The caller adds the rate control, `-g` and `-bf 0`."""
    if codec == "h264":
        return ["-c:v", "libx264", "-preset", "veryfast"]
    return ["-c:v", "libx265", "-preset", "veryfast", "-tag:v", "hvc1",
            "-x265-params", f"log-level=error:keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:bframes=0"]


def make_clip(path: str | Path, seconds: float, fps: int = 10, size: tuple[int, int] = (320, 180),
              gop: int = 10, codec: str = "h264") -> Path:
    """Encode a small H.264 (or, codec="h265", HEVC) MP4: a moving test pattern with temporal noise (so frames
    differ, like a real camera). A short GOP (keyframe every `gop` frames) keeps the wait for the first frame
    short."""
    path = Path(path)
    w, h = size
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}:duration={seconds}",
        "-vf", "noise=alls=10:allf=t",
        *encoder_args(codec, gop), "-crf", "30",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", "0",
        "-pix_fmt", "yuv420p", "-an", str(path),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or not path.is_file():
        raise RuntimeError(f"ffmpeg could not make {path}: {r.stderr.strip()}")
    return path


class RtspServer:
    """`with RtspServer({"cam1": clip}) as srv: srv.url("cam1")` — a live, looping camera per mount.

    `kill()` kills it the hard way (like a crashed camera); `restart()` brings it back on the same port.
    """

    def __init__(self, clips: dict[str, str | Path], port: int = 0, freeze_after: float | None = None,
                 auth: str | None = None) -> None:
        self.clips = {m: Path(p) for m, p in clips.items()}
        self.port = port
        self.freeze_after = freeze_after
        self.auth = auth  # "user:pass": the server demands Digest authentication
        self.proc: subprocess.Popen[str] | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+")

    def __enter__(self) -> "RtspServer":
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        self._stderr.close()

    def url(self, mount: str, auth: str | None = None) -> str:
        """rtsp://[auth@]127.0.0.1:PORT/MOUNT (without `auth=` at start the server ignores credentials)."""
        return f"rtsp://{auth + '@' if auth else ''}127.0.0.1:{self.port}/{mount.strip('/')}"

    def start(self) -> None:
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port)]
        for mount, path in self.clips.items():
            cmd += ["--clip", f"{mount}={path}"]
        if self.freeze_after is not None:
            cmd += ["--freeze-after", str(self.freeze_after)]
        if self.auth is not None:
            cmd += ["--auth", self.auth]
        self._stderr.seek(0)
        self._stderr.truncate()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     start_new_session=True)
        line = self._wait_ready()
        if not line.startswith("READY "):
            self._signal(signal.SIGKILL)
            code = self.proc.wait(timeout=10)
            self._stderr.seek(0)
            raise RuntimeError(f"RTSP server did not report READY within {READY_TIMEOUT_S:g} s (exit code {code}, "
                               f"stdout {line!r}); its stderr:\n{self._stderr.read()}")
        self.port = int(line.split()[1])

    def _wait_ready(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if sel.select(timeout=min(left, 0.2)):
                    return self.proc.stdout.readline().strip()  # "" when it exited
                if self.proc.poll() is not None:
                    return ""
        return ""

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the server's process group: connections reset at once, like a camera losing power."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)
            self._close_stdout()

    def restart(self) -> None:
        """Start again on the same port (the server binds with SO_REUSEADDR, so this works at once)."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self._close_stdout()
        self.proc = None

    def _close_stdout(self) -> None:
        if self.proc is not None and self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
