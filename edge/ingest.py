"""Live cameras read with PyAV: keyframes only whenever the scan interval allows it, so one box holds dozens.

A scan every couple of seconds needs one picture every couple of seconds, but H.264 can only be decoded from a
keyframe on. So the reader measures the camera's keyframe interval (its GOP, in seconds, from the timestamps
of the keyframes it receives) and:

- **scan interval >= GOP**: `skip_frame = "NONKEY"`: the decoder decodes keyframes only and each scan takes
  the keyframe nearest its due time; keyframes no scan wants are not decoded at all (a 1 s GOP scanned every
  5 s decodes one keyframe in five). Decoding 1080p25 this way costs a tenth of decoding every frame
  (shared/INFRA.md: 0.018 vs 0.120 of a core on a noisy 4 Mbit/s stream).
- **scan interval < GOP** (a long or irregular GOP, or a profile that scans faster): every frame is decoded
  (P-frames need the frames before them) and only the one due for the scan is converted to BGR.

Until the GOP is known (the first two keyframes after each open) only keyframes are decoded; the mode is
re-checked at every keyframe (the GOP and the scan interval may change) and changes only at a keyframe, where
the decoder can start afresh. Everything else is `RtspSource`'s: RTSP over TCP with bounded waits, stall and
reconnect with backoff and jitter, capture-time stamps, URLs expanded at each open and only ever shown masked.

Who receives: for H.264/H.265 over rtsp:// the built-in client (edge/rtsp.py), which costs about a third of
FFmpeg's RTSP demuxer per camera and hands over only the access units that will be decoded; for anything it
cannot read (another codec, rtsps, ...) FFmpeg's, through `av.open`. Both feed the same `pump`.
"""
from __future__ import annotations

import collections
import logging
import math
import time
from fractions import Fraction
from types import SimpleNamespace
from typing import Any, Iterator

import av
import av.error
import numpy as np

from edge.rtsp import AccessUnit, RtspClient, RtspError, RtspTimeout, RtspUnsupported
from edge.sources import _CATCH_UP_MAX_S, RtspSource, _Reader, _scrub
from edge.types import Frame, Pixels, Yuv420

log = logging.getLogger(__name__)

# FFmpeg options of the RTSP demuxer. TCP: UDP loses packets (smeared frames) on busy links and NAT.
# fpsprobesize 1: don't hold the open to guess the frame rate from 20 frames (they come out as a stale burst).
_OPEN_OPTIONS = {"rtsp_transport": "tcp", "fpsprobesize": "1"}
_GOP_SAMPLES = 3          # the GOP is the longest of the last few keyframe intervals (irregular GOPs: the worst)
_GOP_MAX_S = 60.0         # a longer gap between keyframes is a timestamp jump, not a GOP
_NO_KEY_WARN_S = 20.0     # streaming this long without a keyframe: say why the camera is not scanned
# One decoder thread per camera: with dozens of cameras the cores are shared between cameras anyway, and
# FFmpeg's default (a thread per core, per camera) only adds threads, memory and latency.
DECODE_THREADS = 1
_PACE_MAX_S = 0.2


class PyAvSource(RtspSource):
    """A live camera over RTSP (TCP) read with PyAV; same interface and status as `RtspSource`.

    read_timeout_s: no packet for this long is a stall (packets come at the frame rate in both modes).
    `ingest()` tells how the camera is being decoded: client (`builtin` or `ffmpeg`), mode (`keyframes`, `all`,
    or None before the first open), the measured GOP in seconds, packets / frames decoded so far, and (built-in
    client) access units of the current session lost to RTP sequence gaps, never decoded.
    """

    decode_threads = DECODE_THREADS

    def __init__(self, *args: Any, rtsp_client: str = "auto", **kw: Any) -> None:
        super().__init__(*args, **kw)
        if rtsp_client not in ("auto", "builtin", "ffmpeg"):
            raise ValueError(f"camera {self.camera_id}: rtsp_client must be auto, builtin or ffmpeg")
        self.rtsp_client = rtsp_client
        self.builtin_refused: str | None = None  # why the built-in client cannot read this camera (auto: FFmpeg's)

    def ingest(self) -> dict[str, Any]:
        reader = self._reader
        if not isinstance(reader, _PyAvReader):
            return dict(decoder="pyav", client=None, mode=None, gop_s=None, packets=0, decoded=0, damaged=None)
        with reader.lock:
            rtsp = reader.rtsp
            return dict(decoder="pyav", client=reader.client, mode=reader.mode, gop_s=reader.gop_s,
                        packets=reader.packets, decoded=reader.decoded,
                        damaged=None if rtsp is None else rtsp.damaged)


class _PyAvReader(_Reader):
    """One run of a PyAvSource: `_Reader`'s state machine with a PyAV session."""

    def __init__(self, src: RtspSource, stop: Any) -> None:
        super().__init__(src, stop)
        self.thread.name = f"pyav-{src.camera_id}"
        self.mode: str | None = None
        self.gop_s: float | None = None
        self.packets = 0
        self.decoded = 0
        self.client: str | None = None  # "builtin" or "ffmpeg": which RTSP client the current session uses
        self.rtsp: RtspClient | None = None  # the built-in client of the current session

    def stall_after_s(self) -> float:
        return self.src.read_timeout_s

    def session(self, failures: int) -> bool:
        src = self.src
        if (started := self.begin(failures)) is None:
            return False
        gen, say, url = started
        shown = self.shown
        if self.use_builtin(url):
            client = RtspClient(url, src.open_timeout_s, src.read_timeout_s)
            # read the socket at most every 0.2 s (a tenth of a 2 s scan): one wake-up per few frames instead of
            # one per TCP burst. 5 vs 13 ms of CPU per 2 s a 4 Mbit/s camera here; frames arrive <= 0.2 s later
            client.pace_s = min(_PACE_MAX_S, 0.1 * src.scan_interval_s)
            try:
                client.open()
            except RtspUnsupported as e:
                client.close()
                if src.rtsp_client == "builtin":
                    return self.open_failed(say, f"cannot open {shown} with the built-in RTSP client: {e}")
                src.builtin_refused = str(e)
                log.info("camera %s: %s: reading it with FFmpeg's RTSP client from now on", src.camera_id, e)
            except RtspError as e:  # messages of edge/rtsp.py never carry the URL
                client.close()
                return self.open_failed(say, f"cannot open {shown}: {e}")
            else:
                log.info("camera %s: opened %s (built-in RTSP client, PyAV decoding)", src.camera_id, shown)
                with self.lock:
                    self.client, self.rtsp = "builtin", client
                container = _BuiltinContainer(client)
                try:
                    return self.pump(container, gen, url)
                finally:
                    container.close()
        try:
            # (open, read) timeouts: without them a dead camera blocks the open and a frozen one each read.
            # FFmpeg's socket timeout (RTSP option `timeout`) would spare PyAV's read-timeout check, which takes
            # the GIL on every socket read (~4 ms of CPU per 2 s a 1080p camera). It was tried and set aside: a
            # 32-camera bench run with it failed its opens, but so did a later run with these timeouts (the test
            # server's mass opens are flaky on a loaded box), so the question is open; it needs a proper A/B.
            container = av.open(url, options=dict(_OPEN_OPTIONS),
                                timeout=(src.open_timeout_s, src.read_timeout_s))
        except (av.error.FFmpegError, OSError) as e:  # PyAV's messages carry the URL: scrubbed
            return self.open_failed(say, f"cannot open {shown}: {_scrub(str(e), url)}")
        try:
            if not container.streams.video:
                return self.open_failed(say, f"cannot open {shown}: no video stream")
            log.info("camera %s: opened %s (PyAV)", src.camera_id, shown)
            with self.lock:
                self.client, self.rtsp = "ffmpeg", None
            return self.pump(container, gen, url)
        finally:
            try:
                container.close()
            except av.error.FFmpegError:
                pass

    def use_builtin(self, url: str) -> bool:
        """The built-in client reads plain rtsp:// unless the camera is set to FFmpeg's or refused it before."""
        src = self.src
        if src.rtsp_client == "ffmpeg" or not url.lower().startswith("rtsp://"):
            return False
        return src.rtsp_client == "builtin" or src.builtin_refused is None

    def pump(self, container: Any, gen: int, url: str = "") -> bool:  # type: ignore[override]
        src = self.src
        stream = container.streams.video[0]
        cc = stream.codec_context
        cc.thread_count = src.decode_threads
        cc.skip_frame = "NONKEY"  # keyframes only until the GOP is known
        keyframes_only = True
        with self.lock:
            self.mode = "keyframes"
        tb = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        frame_s = 1.0 / fps if math.isfinite(fps) and 1 <= fps <= 240 else None
        live_wait = 0.5 * frame_s if frame_s else 0.02
        tolerance = 0.5 * frame_s if frame_s else 0.02
        intervals: collections.deque[float] = collections.deque(maxlen=_GOP_SAMPLES)
        last_key: float | None = None  # media time of the last keyframe
        last_key_at: float | None = None  # and when it came (monotonic)
        live, first, got, skipped, warned = False, None, False, 0, False
        packets = container.demux(stream)
        while not self.stopped():
            t0 = time.monotonic()
            try:
                packet = next(packets)
            except StopIteration:
                packet = None
            except (av.error.FFmpegError, RtspError) as e:
                if self.is_current(gen):
                    timed_out = isinstance(e, (av.error.ExitError, RtspTimeout))  # the read timeout fired
                    reason = ("stalled: no data within the read timeout" if timed_out
                              else f"the stream ended or the connection broke ({_scrub(str(e), url)})")
                    self.drop(reason, stall=timed_out, gen=gen)
                return got
            now = time.monotonic()
            waited = now - t0
            if not self.is_current(gen):
                return got
            if packet is None or (packet.size == 0 and packet.pts is None):  # end of stream / flush packet
                self.drop("the stream ended or the connection broke", stall=False, gen=gen)
                return got
            if waited >= src.read_timeout_s:  # came, but too late to trust the stream: reopen
                self.drop(f"stalled: a read waited {waited:.1f} s", stall=True, gen=gen)
                return got
            first = now if first is None else first
            with self.lock:
                self.last_frame = now
                self.packets += 1
            if not got:
                self.set_state("online")
            got = True
            skipped += not live
            if not live and (waited >= live_wait or now - first >= _CATCH_UP_MAX_S):
                live = True
                log.debug("camera %s: live after %d buffered packets", src.camera_id, skipped - 1)
            scan_s = src.scan_interval_s  # read afresh: a rule profile may change it
            if packet.is_keyframe:
                last_key_at = now
                if packet.pts is not None:
                    t = float(packet.pts * tb)
                    if last_key is not None and 0 < t - last_key <= _GOP_MAX_S:
                        intervals.append(t - last_key)
                    last_key = t
                gop = max(intervals) if intervals else None
                want = gop is None or scan_s >= gop - tolerance
                if want != keyframes_only:  # only here, at a keyframe, can the decoder start afresh
                    keyframes_only = want
                    cc.skip_frame = "NONKEY" if want else "DEFAULT"
                    log.info("camera %s: GOP %.2f s, scan every %.2f s: decoding %s", src.camera_id, gop or 0.0,
                             scan_s, "keyframes only" if want else "every frame")
                with self.lock:
                    self.gop_s = None if gop is None else round(gop, 3)
                    self.mode = "keyframes" if keyframes_only else "all"
            elif keyframes_only:
                if live and not warned and (keyless_s := now - (last_key_at or first)) >= _NO_KEY_WARN_S:
                    warned = True
                    log.warning("camera %s: %.0f s of stream without a keyframe: nothing to scan. Give the camera "
                                "an I-frame interval (GOP) of a few seconds and turn off intra refresh / "
                                "smart-codec modes", src.camera_id, keyless_s)
                continue  # the decoder would discard it (skip_frame): don't even hand it over
            # keyframes only: take the keyframe nearest the due time (up to half a GOP early)
            slack = min(0.5 * (self.gop_s or 0.0), 0.5 * scan_s) if keyframes_only else 0.0
            wanted = live and now + slack >= self.next_due
            if keyframes_only and not wanted:
                # a keyframe no scan wants (a GOP shorter than the scan interval, or the backlog at an open):
                # each keyframe decodes on its own, so skipping one costs nothing and saves ~25 ms a 1080p frame
                continue
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:  # one corrupt packet: the next keyframe repairs it
                log.debug("camera %s: a packet does not decode (%s)", src.camera_id, _scrub(str(e), url))
                continue
            for vf in frames:
                with self.lock:
                    self.decoded += 1
                if not wanted:
                    continue
                wanted = False  # one picture per due time: another from this packet waits for the next scan
                due = self.next_due + scan_s  # keep the grid; restart it after a gap
                self.next_due = due if due > now else now + scan_s
                self.offer(Frame(src.camera_id, src.clock(), to_pixels(vf), self.seq), gen)
                self.seq += 1
            # hold nothing between keyframes: the decoded picture (and its decoder buffer) would otherwise stay
            # alive for a whole scan interval, ~9 MB a 1080p camera (bench: RSS per added camera)
            frames = vf = None  # type: ignore[assignment]
        return got


def to_pixels(vf: Any) -> Pixels:
    """A decoded frame as the pipeline takes it: the usual yuv420p (video range, even size) as its planes (one
    copy, half the bytes of BGR; the detector converts only the shrunk picture), anything else as BGR."""
    if vf.format.name == "yuv420p" and vf.width % 2 == 0 and vf.height % 2 == 0:
        return Yuv420(vf.to_ndarray(format="yuv420p"))
    return vf.to_ndarray(format="bgr24")


def to_bgr(vf: Any) -> np.ndarray:
    """A decoded frame as BGR. For the usual yuv420p (video range) OpenCV's conversion of the planes costs about
    half of swscale's bgr24 (2.9 vs 5.3 ms a 1080p frame here); other formats (full-range yuvj420p, 4:2:2...)
    go through swscale, which knows their ranges."""
    pixels = to_pixels(vf)
    return pixels.bgr() if isinstance(pixels, Yuv420) else pixels


class _BuiltinPacket:
    """An access unit of the built-in client, shaped like the PyAV packet `pump` reads."""

    __slots__ = ("unit", "cc")

    def __init__(self, unit: AccessUnit, cc: Any) -> None:
        self.unit, self.cc = unit, cc

    @property
    def is_keyframe(self) -> bool:
        return self.unit.key

    @property
    def pts(self) -> int:
        return self.unit.pts

    @property
    def size(self) -> int:
        return self.unit.size

    def decode(self) -> list[Any]:
        if self.unit.data is None:  # not assembled (a frame no scan wanted) or damaged: nothing to show
            return []
        return self.cc.decode(av.Packet(self.unit.data))


class _BuiltinContainer:
    """The part of PyAV's container interface `pump` uses, over the built-in RTSP client: the same decoding,
    mode switching and stall handling whichever client receives."""

    def __init__(self, client: RtspClient) -> None:
        self.client = client
        cc = av.CodecContext.create(client.codec, "r")
        if client.parameter_sets:
            cc.extradata = client.parameter_sets
        self.streams = SimpleNamespace(video=[SimpleNamespace(
            codec_context=cc, time_base=Fraction(1, 90000), average_rate=None, guessed_rate=None)])

    def demux(self, stream: Any) -> Iterator[_BuiltinPacket]:
        cc = stream.codec_context
        for unit in self.client.access_units(lambda: cc.skip_frame != "NONKEY"):  # assemble P-frames only if decoded
            yield _BuiltinPacket(unit, cc)

    def close(self) -> None:
        self.client.close()


PyAvSource._reader_class = _PyAvReader
