"""Where frames come from: a recorded file (replay, on media time) or a live RTSP camera (on capture time).

Both yield one `Frame` per scan interval, never every frame: incidents are static, so a look every few
seconds is enough and the rest of the pipeline only ever sees the scans.

A live camera is read by its own thread that `grab()`s every frame (so the decoder and the TCP window never
back up and the frame handed out is the newest) and decodes to BGR (`retrieve()`) only when a scan is due.
A broken or frozen stream is dropped, released and reopened with bounded exponential backoff, forever,
until the caller's stop event is set; a frame that could be stale is never handed out. The URL is expanded
from the environment at each open and only ever shown masked.
"""
from __future__ import annotations

import collections
import logging
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import cv2

from edge.config import Camera, ConfigError, expand_env, mask_url
from edge.types import Frame

log = logging.getLogger(__name__)

State = Literal["online", "offline", "connecting"]
StatusCallback = Callable[[str, dict[str, Any]], None]

_RTSP_SCHEMES = ("rtsp://", "rtsps://")
# OpenCV reads OPENCV_FFMPEG_CAPTURE_OPTIONS at each open ("key;value|key;value"). TCP: UDP loses packets
# (smeared frames) on busy links and NAT. fpsprobesize 1: by default FFmpeg probes 20 frames to guess the
# frame rate, which holds the open ~2 s longer at 10 fps and then delivers those frames as a stale burst.
_CAPTURE_OPTIONS = (("rtsp_transport", "tcp"), ("fpsprobesize", "1"))
# After an open, the frames buffered while probing come out of grab() at decode speed. The stream is live
# once a grab has to wait for the network (half a frame interval); after this long we stop waiting for that.
_CATCH_UP_MAX_S = 1.0
_HOUR_S = 3600.0
_POLL_S = 0.1  # how often the consumer and the backoff sleep look at the stop event


class SourceError(RuntimeError):
    """A source that cannot work at all (a missing or undecodable file): the message names camera and path."""


class Source(Protocol):
    """Anything that yields scans of one camera until `stop` is set or the media ends."""

    camera_id: str

    def frames(self, stop: threading.Event) -> Iterator[Frame]: ...


# --------------------------------------------------------------------------------------------- file
class FileSource:
    """A recorded clip, replayed as fast as the CPU allows with `ts` on media time, so a replay gives exactly
    the results the live camera would have, minutes of video in seconds."""

    def __init__(self, camera_id: str, path: str | Path, scan_interval_s: float) -> None:
        if scan_interval_s <= 0:
            raise ValueError(f"camera {camera_id}: scan_interval_s must be > 0, got {scan_interval_s}")
        self.camera_id = camera_id
        self.path = str(path)
        self.scan_interval_s = float(scan_interval_s)
        if not Path(self.path).is_file():  # fail at startup, not at the first scan
            raise SourceError(f"camera {camera_id}: video file {mask_url(self.path)} does not exist")

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """One frame per scan interval of media time (the frame nearest at or after each due time); the frames
        in between are only grabbed, never converted. Ends at the end of the file."""
        cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        try:
            if not cap.isOpened():
                raise SourceError(f"camera {self.camera_id}: cannot open video file {mask_url(self.path)} "
                                  "(not a video OpenCV/FFmpeg can decode)")
            fps = cap.get(cv2.CAP_PROP_FPS)
            fps_ok = math.isfinite(fps) and fps > 0
            half = 0.5 / fps if fps_ok else 0.0
            log.debug("camera %s: replaying %s at %.3g fps", self.camera_id, mask_url(self.path), fps)
            index, seq, due = -1, 0, 0.0
            while not stop.is_set():
                if not cap.grab():
                    break
                index += 1
                ts = index / fps if fps_ok else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if ts + half < due:
                    continue
                ok, image = cap.retrieve()
                if not ok or image is None:
                    log.warning("camera %s: frame %d of %s does not decode; skipped",
                                self.camera_id, index, mask_url(self.path))
                    continue
                yield Frame(self.camera_id, ts, image, seq)
                seq += 1
                due = (math.floor((ts + half) / self.scan_interval_s) + 1) * self.scan_interval_s
        finally:
            cap.release()


# --------------------------------------------------------------------------------------------- rtsp
def _capture_options(current: str | None) -> str:
    """OpenCV's FFmpeg capture options with ours added; keys the operator already set are kept as they are."""
    opts = [o for o in (current or "").split("|") if o]
    keys = {o.split(";", 1)[0] for o in opts}
    opts += [f"{k};{v}" for k, v in _CAPTURE_OPTIONS if k not in keys]
    return "|".join(opts)


def _open_capture(url: str, open_timeout_s: float, read_timeout_s: float) -> Any:
    """An opened cv2.VideoCapture, or None. Every wait is bounded: without the timeouts a dead camera blocks
    the open 30 s and a frozen one blocks each read 30 s, returning stale frames first."""
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = _capture_options(os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS"))
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
    ])
    if cap.isOpened():
        return cap
    cap.release()
    return None


def _scrub(text: str, url: str) -> str:
    """`text` with the URL's password masked wherever it appears (FFmpeg and OpenCV may echo the URL)."""
    text = text.replace(url, mask_url(url))
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


class RtspSource:
    """A live camera over RTSP (TCP). `frames()` yields the newest frame once per scan interval, with `ts` the
    capture time from `clock`, and keeps reconnecting until `stop` is set.

    read_timeout_s: a read that waits this long is a stall. Lower notices a frozen camera sooner, but
    risks dropping a healthy stream on a congested link (each drop costs a reopen, about 1-3 s).
    backoff: (first, longest) wait in seconds between reopen attempts; doubles per failed attempt, with
    jitter so many cameras behind one failed switch do not reconnect in lockstep.
    on_status(camera_id, status) is called on every state change (from a worker thread: keep it quick) with
    state, reconnects (reopen attempts after the first open), stalls, last_frame_age_s and error; and, for the
    centre's view of a flaky link, reconnects_1h and stalls_1h (in the last hour) and last_break_age_s (seconds
    since the last stall or reopen).
    """

    def __init__(self, camera_id: str, url: str, scan_interval_s: float, open_timeout_s: float = 5.0,
                 read_timeout_s: float = 2.0, backoff: tuple[float, float] = (1.0, 30.0),
                 clock: Callable[[], float] = time.time, on_status: StatusCallback | None = None) -> None:
        if scan_interval_s <= 0 or open_timeout_s <= 0 or read_timeout_s <= 0:
            raise ValueError(f"camera {camera_id}: scan interval and timeouts must be > 0")
        if not 0 < backoff[0] <= backoff[1]:
            raise ValueError(f"camera {camera_id}: backoff must be (first, longest) with 0 < first <= longest, "
                             f"got {backoff}")
        self.camera_id = camera_id
        self._url = url  # as configured: ${VAR} is expanded at each open, never kept expanded
        self.scan_interval_s = float(scan_interval_s)
        self.open_timeout_s = float(open_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.clock = clock
        self.on_status = on_status
        self._reader: _Reader | None = None

    # the reading thread's class: edge/ingest.py's PyAV source brings its own
    _reader_class: type["_Reader"]

    @property
    def url(self) -> str:
        """The URL as it may be shown: masked."""
        return mask_url(self._url)

    def status(self) -> dict[str, Any]:
        """The current status (same shape as the on_status payload)."""
        if self._reader is None:
            return dict(state="offline", reconnects=0, stalls=0, last_frame_age_s=None, error=None, reconnects_1h=0,
                        stalls_1h=0, last_break_age_s=None)
        return self._reader.status()

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Scans until `stop` is set (checked every 0.1 s, whatever the camera does)."""
        reader = self._reader_class(self, stop)
        self._reader = reader
        reader.thread.start()
        try:
            while not stop.is_set():
                reader.watchdog()
                try:
                    frame, gen = reader.slot.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if reader.is_current(gen):
                    yield frame
        finally:
            reader.halt.set()  # the thread ends within the open/read timeout and releases the capture


class _Reader:
    """One run of an RtspSource: the grabbing thread and the state it shares with the consumer."""

    def __init__(self, src: RtspSource, stop: threading.Event) -> None:
        self.src = src
        self.stop = stop
        self.halt = threading.Event()
        self.slot: queue.Queue[tuple[Frame, int]] = queue.Queue(maxsize=1)  # the newest scan only
        self.lock = threading.Lock()
        self.state: State = "offline"
        self.reconnects = 0
        self.stalls = 0
        self.breaks: collections.deque[tuple[float, bool]] = collections.deque()  # (monotonic, stall?) of the last hour
        self.error: str | None = None
        self.shown = src.url  # the URL as expanded at the last open, masked
        self.last_frame: float | None = None  # time.monotonic() of the last good grab
        self.gen = 0  # bumped at every drop: frames of an older generation are never handed out
        self.next_due = 0.0
        self.seq = 0
        self.rng = random.Random()
        self.thread = threading.Thread(target=self.run, name=f"rtsp-{src.camera_id}", daemon=True)

    # ---------------------------------------------------------------- state shared with the consumer
    def stopped(self) -> bool:
        return self.halt.is_set() or self.stop.is_set()

    def _snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        while self.breaks and now - self.breaks[0][0] > _HOUR_S:
            self.breaks.popleft()
        age = None if self.last_frame is None else round(now - self.last_frame, 3)
        stalls_1h = sum(1 for _, stall in self.breaks if stall)
        return dict(state=self.state, reconnects=self.reconnects, stalls=self.stalls, last_frame_age_s=age,
                    error=self.error, reconnects_1h=len(self.breaks) - stalls_1h, stalls_1h=stalls_1h,
                    last_break_age_s=round(now - self.breaks[-1][0], 3) if self.breaks else None)

    def status(self) -> dict[str, Any]:
        with self.lock:
            return self._snapshot()

    def set_state(self, state: State, error: str | None = None) -> None:
        with self.lock:
            changed = state != self.state
            self.state, self.error = state, error
            snap = self._snapshot()
        if changed and self.src.on_status is not None:
            try:
                self.src.on_status(self.src.camera_id, snap)
            except Exception:  # a broken callback must not stop the camera
                log.exception("camera %s: on_status callback failed", self.src.camera_id)

    def is_current(self, gen: int) -> bool:
        with self.lock:
            return gen == self.gen

    def drop(self, reason: str, stall: bool, gen: int) -> None:
        """Leave the current connection: nothing captured on it is handed out any more."""
        with self.lock:
            if gen != self.gen:  # already dropped (the watchdog got there first)
                return
            self.gen += 1
            self.stalls += stall
            if stall:
                self.breaks.append((time.monotonic(), True))
            while not self.slot.empty():
                self.slot.get_nowait()
        log.warning("camera %s: %s (%s); reconnecting", self.src.camera_id, reason, self.shown)
        self.set_state("offline", error=f"{reason} ({self.shown})")

    def stall_after_s(self) -> float:
        """No frame for this long while online is a stall (the watchdog's limit)."""
        return 2 * self.src.read_timeout_s

    def watchdog(self) -> None:
        """Called by the consumer: a grab that hangs past twice the read timeout (OpenCV's own timeout
        failed) is a stall too. The grabbing thread notices the new generation when the grab returns."""
        limit = self.stall_after_s()
        with self.lock:
            hung = (self.state == "online" and self.last_frame is not None
                    and time.monotonic() - self.last_frame >= limit)
            gen = self.gen
        if hung:
            self.drop(f"stalled: no frame for {limit:g} s", stall=True, gen=gen)

    # ---------------------------------------------------------------------------- the grabbing thread
    def run(self) -> None:
        failures = 0
        first = True
        try:
            while not self.stopped():
                if not first:
                    with self.lock:
                        self.reconnects += 1
                        self.breaks.append((time.monotonic(), False))
                first = False
                self.set_state("connecting", error=self.error)
                if self.session(failures):
                    failures = 0
                failures += 1
                self.sleep(self.backoff_s(failures))
        except Exception:  # never let the thread die silently: the camera would just go quiet
            log.exception("camera %s: reader crashed (%s)", self.src.camera_id, self.shown)
            self.set_state("offline", error="reader crashed; see the log")
            raise
        self.set_state("offline", error="stopped")

    def backoff_s(self, attempt: int) -> float:
        first, longest = self.src.backoff
        return min(longest, first * 2 ** min(attempt - 1, 30)) * self.rng.uniform(0.5, 1.0)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopped() and (left := end - time.monotonic()) > 0:
            self.halt.wait(min(_POLL_S, left))

    def open_url(self, say: Callable[..., None]) -> str | None:
        """The camera's URL with its ${VARIABLES} filled in at this open (`shown` becomes its masked form); None,
        reported, when a variable is unset."""
        src = self.src
        try:
            url = expand_env(src._url, f"camera {src.camera_id} url")
        except ConfigError as e:  # names the variable, never a value
            self.open_failed(say, str(e))
            return None
        self.shown = mask_url(url)
        return url

    def open_failed(self, say: Callable[..., None], why: str) -> bool:
        """Report an open that gave nothing (the caller backs off and retries); always False."""
        say("camera %s: %s", self.src.camera_id, why)
        self.set_state("offline", error=why)
        return False

    def begin(self, failures: int) -> tuple[int, Callable[..., None], str] | None:
        """What every session starts with: its generation, how loud to log (a dead camera: not a warning every
        second; `failures` counts opens in a row that gave nothing) and the URL with its secrets filled in, or
        None when that URL cannot be made (already reported)."""
        with self.lock:
            gen = self.gen
        say = log.warning if failures % 10 == 0 else log.debug
        url = self.open_url(say)
        return None if url is None else (gen, say, url)

    def session(self, failures: int) -> bool:
        """Open, pump frames until the stream breaks or stalls, release. True when frames flowed."""
        src = self.src
        if (started := self.begin(failures)) is None:
            return False
        gen, say, url = started
        shown = self.shown
        try:
            cap = _open_capture(url, src.open_timeout_s, src.read_timeout_s)
        except Exception as e:  # cv2.error and the like: report, back off, retry
            return self.open_failed(say, f"cannot open {shown}: {_scrub(str(e), url)}")
        if cap is None:
            return self.open_failed(say, f"cannot open {shown}: refused, unreachable, or no video within "
                                         f"{src.open_timeout_s:g} s")
        try:
            log.info("camera %s: opened %s", src.camera_id, shown)
            return self.pump(cap, gen)
        finally:
            cap.release()

    def pump(self, cap: Any, gen: int) -> bool:
        src = self.src
        fps = cap.get(cv2.CAP_PROP_FPS)
        live_wait = 0.5 / fps if math.isfinite(fps) and 1 <= fps <= 240 else 0.02
        live, first, got, skipped = False, None, False, 0
        while not self.stopped():
            t0 = time.monotonic()
            ok = cap.grab()
            now = time.monotonic()
            waited = now - t0
            if not self.is_current(gen):
                return got
            if not ok:
                self.drop("the stream ended or the connection broke", stall=False, gen=gen)
                return got
            if waited >= src.read_timeout_s:  # OpenCV returns stale decoder frames here: drop this one
                self.drop(f"stalled: a read waited {waited:.1f} s", stall=True, gen=gen)
                return got
            first = now if first is None else first
            with self.lock:
                self.last_frame = now
            if not got:
                self.set_state("online")
            got = True
            skipped += not live
            if not live and (waited >= live_wait or now - first >= _CATCH_UP_MAX_S):
                live = True
                log.debug("camera %s: live after %d buffered frames", src.camera_id, skipped - 1)
            if live and now >= self.next_due:
                due = self.next_due + src.scan_interval_s  # keep the grid; restart it after a gap
                self.next_due = due if due > now else now + src.scan_interval_s
                ok, image = cap.retrieve()
                if ok and image is not None:
                    self.offer(Frame(src.camera_id, src.clock(), image, self.seq), gen)
                    self.seq += 1
        return got

    def offer(self, frame: Frame, gen: int) -> None:
        """Put the newest scan in the slot, replacing one the consumer has not taken yet."""
        with self.lock:
            if gen != self.gen:
                return
            try:
                self.slot.get_nowait()
                log.debug("camera %s: consumer is slower than the scan interval; older scan dropped",
                          self.src.camera_id)
            except queue.Empty:
                pass
            self.slot.put_nowait((frame, gen))


RtspSource._reader_class = _Reader


DEGRADED_FOR_S = 600.0  # a camera whose link broke (stall or reopen) this recently is reported degraded


def link_state(status: dict[str, Any], read_timeout_s: float) -> Literal["online", "degraded", "offline"]:
    """What the centre sees of a live camera: online; degraded (frames flow, but the link broke in the last
    DEGRADED_FOR_S, or no frame for longer than half the read timeout: about to stall); offline otherwise."""
    if status.get("state") != "online":
        return "offline"
    last_break = status.get("last_break_age_s")
    age = status.get("last_frame_age_s")
    if (last_break is not None and last_break < DEGRADED_FOR_S) or (age is not None and age > 0.5 * read_timeout_s):
        return "degraded"
    return "online"


def pyav_available() -> bool:
    """Whether PyAV (`av`) imports here: `decoder: auto` uses it for live cameras when it does."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def open_source(camera: Camera) -> Source:
    """rtsp:// and rtsps:// are live cameras; anything else is a video file path (the replay path).

    A live camera is read with PyAV (keyframes only when the scan interval allows, edge/ingest.py) or OpenCV,
    as its `decoder` says; `auto` means PyAV where it is installed. A replay always reads files with OpenCV,
    so the same clip gives the same scans whatever the live decoder."""
    where = f"camera {camera.id} url"
    url = camera.url
    live = url.lower().startswith(_RTSP_SCHEMES) or (
        "${" in url and expand_env(url, where).lower().startswith(_RTSP_SCHEMES))
    if live:
        kwargs = dict(open_timeout_s=camera.open_timeout_s, read_timeout_s=camera.read_timeout_s)
        decoder = camera.decoder
        if decoder == "pyav" or (decoder == "auto" and pyav_available()):
            if not pyav_available():
                raise SourceError(f"camera {camera.id}: decoder: pyav, but PyAV is not installed (pip install av)")
            from edge.ingest import PyAvSource

            return PyAvSource(camera.id, url, camera.scan_interval_s,
                              rtsp_client=camera.rtsp_client, **kwargs)
        return RtspSource(camera.id, url, camera.scan_interval_s, **kwargs)
    return FileSource(camera.id, expand_env(url, where), camera.scan_interval_s)
