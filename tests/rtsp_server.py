#!/usr/bin/python3
"""A real RTSP server for tests: gst-rtsp-server looping H.264 (or H.265) MP4 clips, one mount per clip, no re-encoding.

Run with Debian's /usr/bin/python3 (the only interpreter that imports `gi`):

    /usr/bin/python3 tests/rtsp_server.py --port 0 --clip cam1=a.mp4 --clip cam2=b.mp4 [--freeze-after 5]

`--auth USER:PASS` demands Digest authentication, as most IP cameras do.

Prints `READY <port>` on stdout once it listens, and stops on SIGTERM/SIGINT.

Why this shape (see shared/INFRA.md): a plain `filesrc ! qtdemux ! rtph264pay` media stops at the end of the
file, so each clip is demuxed once into memory (access units with their timestamps) and a feeder thread per
mount paces those units in real time, looping, with timestamps offset by loop × duration so they keep
rising. They go into one shared media per mount, `appsrc is-live=true ! h264parse ! rtph264pay`, so every
client sees the same live "camera". A client that joins starts at the next keyframe.

`--freeze-after S` stops pushing data S seconds after the first client of a mount started playing, while
the server keeps the RTSP/TCP connections open: a frozen camera, which a client must detect by itself.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from dataclasses import dataclass

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtsp, GstRtspServer  # noqa: E402

# {codec}: h264 or h265, whichever the clip holds
_LAUNCH = ("( appsrc name=src is-live=true format=time ! {codec}parse "
           "! rtp{codec}pay config-interval=1 name=pay0 pt=96 )")


def codec_of(path: str) -> str:
    """h264 or h265: the video codec of an MP4 (what its first track's demuxed caps say)."""
    pipe = Gst.parse_launch(f'filesrc location="{path}" ! qtdemux ! fakesink name=sink')
    pipe.set_state(Gst.State.PAUSED)
    pipe.get_state(5 * Gst.SECOND)
    pad = pipe.get_by_name("sink").get_static_pad("sink")
    caps = pad.get_current_caps()
    pipe.set_state(Gst.State.NULL)
    return "h265" if caps is not None and caps.to_string().startswith("video/x-h265") else "h264"


@dataclass(frozen=True)
class Unit:
    """One H.264 access unit of the clip, byte-stream, with its place in the clip (ns)."""

    data: bytes
    pts: int
    duration: int
    key: bool


def demux(path: str, codec: str = "h264") -> tuple[list[Unit], Gst.Caps, int]:
    """Read every access unit of an MP4's H.264/H.265 track into memory (test clips are small)."""
    pipe = Gst.parse_launch(
        f'filesrc location="{path}" ! qtdemux ! {codec}parse config-interval=-1 ! '
        f"video/x-{codec},stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    )
    sink = pipe.get_by_name("sink")
    bus = pipe.get_bus()
    pipe.set_state(Gst.State.PLAYING)
    units: list[Unit] = []
    caps = None
    err = None
    while err is None:
        sample = sink.emit("try-pull-sample", Gst.SECOND // 10)  # None at EOS, on timeout or after an error
        if sample is None:
            if sink.is_eos():
                break
            err = bus.pop_filtered(Gst.MessageType.ERROR)  # pull-sample would block forever after one
            continue
        caps = caps or sample.get_caps()
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        data = bytes(info.data) if ok else b""
        buf.unmap(info)
        units.append(Unit(data, buf.pts, buf.duration, not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)))
    pipe.set_state(Gst.State.NULL)
    if err is not None or not units:
        detail = err.parse_error()[0].message if err is not None else "no H.264 access units"
        raise SystemExit(f"rtsp_server: cannot read {path}: {detail}")
    base = units[0].pts
    step = units[1].pts - units[0].pts if len(units) > 1 else Gst.SECOND // 10
    units = [Unit(u.data, u.pts - base, u.duration if u.duration != Gst.CLOCK_TIME_NONE else step, u.key)
             for u in units]
    duration = units[-1].pts + units[-1].duration
    return units, caps, duration


class Feeder:
    """Paces one clip in real time, forever, into whichever media currently serves its mount."""

    def __init__(self, mount: str, path: str, freeze_after: float | None, stop: threading.Event) -> None:
        self.mount = mount
        self.codec = codec_of(path)
        self.units, self.caps, self.duration = demux(path, self.codec)
        self.freeze_after = freeze_after
        self.stop = stop
        self.lock = threading.Lock()
        self.appsrc: GstApp.AppSrc | None = None
        self.base_ns = 0          # stream time at which the current media started (its PTS zero)
        self.need_key = True      # a new media starts at a keyframe
        self.first_play: float | None = None
        self.thread = threading.Thread(target=self.run, name=f"feed{mount}", daemon=True)

    # -- called on the GLib main loop when a client makes the server build a media for this mount
    def attach(self, media: GstRtspServer.RTSPMedia) -> None:
        src = media.get_element().get_by_name("src")
        src.set_property("caps", self.caps)
        src.set_property("format", Gst.Format.TIME)
        media.connect("unprepared", self.detach)
        with self.lock:
            self.appsrc = src
            self.need_key = True
            if self.first_play is None:
                self.first_play = time.monotonic()
        print(f"rtsp_server: client on {self.mount}", file=sys.stderr, flush=True)

    def detach(self, media: GstRtspServer.RTSPMedia) -> None:
        with self.lock:
            if self.appsrc is not None and media.get_element().get_by_name("src") is self.appsrc:
                self.appsrc = None

    def run(self) -> None:
        t0 = time.monotonic()
        loop = 0
        while not self.stop.is_set():
            for u in self.units:
                stream_ns = loop * self.duration + u.pts
                delay = t0 + stream_ns / Gst.SECOND - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    return
                self.push(u, stream_ns)
            loop += 1

    def push(self, u: Unit, stream_ns: int) -> None:
        with self.lock:
            src = self.appsrc
            if src is None:
                return
            if self.freeze_after is not None and self.first_play is not None \
                    and time.monotonic() - self.first_play >= self.freeze_after:
                return
            if self.need_key:
                if not u.key:
                    return
                self.need_key = False
                self.base_ns = stream_ns
            pts = stream_ns - self.base_ns
        buf = Gst.Buffer.new_wrapped(u.data)
        buf.pts = buf.dts = pts
        buf.duration = u.duration
        if not u.key:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        src.emit("push-buffer", buf)  # FLUSHING while a media shuts down: harmless, the unit is dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    ap.add_argument("--clip", action="append", required=True, metavar="MOUNT=PATH",
                    help="serve PATH (H.264 MP4) on rtsp://127.0.0.1:PORT/MOUNT; repeatable")
    ap.add_argument("--freeze-after", type=float, default=None, metavar="S",
                    help="stop sending data S seconds after a mount's first client, keeping connections open")
    ap.add_argument("--auth", default=None, metavar="USER:PASS",
                    help="require RTSP Digest authentication with these credentials (as most IP cameras do)")
    args = ap.parse_args(argv)

    Gst.init(None)
    stop = threading.Event()
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    role = None
    if args.auth:
        user, _, password = args.auth.partition(":")
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        auth.add_digest(user, password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        server.set_auth(auth)
        role = "viewer"
    feeders = []
    for spec in args.clip:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            ap.error(f"--clip expects MOUNT=PATH, got {spec!r}")
        feeder = Feeder("/" + name.strip("/"), path, args.freeze_after, stop)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(_LAUNCH.format(codec=feeder.codec))
        factory.set_shared(True)
        if role:
            factory.add_role_from_structure(Gst.Structure.from_string(
                f"{role}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0])
        factory.connect("media-configure", lambda _f, media, fd=feeder: fd.attach(media))
        mounts.add_factory(feeder.mount, factory)
        feeders.append(feeder)

    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on port {args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    for f in feeders:
        f.thread.start()
    print(f"READY {server.get_bound_port()}", flush=True)
    try:
        loop.run()
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
