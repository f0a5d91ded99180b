"""The built-in RTSP client (edge/rtsp.py): H.264 and H.265 RTP depacketising and the protocol corners against a scripted peer on
a real socket (unit tests), Digest authentication and the fallback to FFmpeg's client against the real
gst-rtsp-server."""
from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("av")

from edge.ingest import PyAvSource  # noqa: E402
from edge.rtsp import RtspClient, RtspError, RtspTimeout, RtspUnsupported  # noqa: E402
from fixtures_rtsp import RtspServer, ffmpeg_unavailable, make_clip, rtsp_unavailable  # noqa: E402
from test_sources import SECRET, Run  # noqa: E402

SC = b"\x00\x00\x00\x01"
SPS = bytes([0x67, 0x42, 0x00, 0x1E, 0xAB])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = bytes([0x65]) + bytes(range(1, 200))      # an IDR slice NAL (header 0x65), 199 bytes of payload
P1 = bytes([0x41]) + b"\x9a" * 50                # a non-IDR slice
P2 = bytes([0x41]) + b"\x9b" * 30

H264_SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n"
            "m=audio 0 RTP/AVP 0\r\na=control:stream=1\r\n"
            "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
            "a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0IAHqs=,aM48gA==\r\na=control:stream=0\r\n")
H265_SDP = (H264_SDP.replace("H264", "H265")
            .replace("packetization-mode=1;sprop-parameter-sets=Z0IAHqs=,aM48gA==", "sprop-vps=QAEM;sprop-sps=QgEB;sprop-pps=RAHA"))
MPEG4_SDP = H264_SDP.replace("H264", "MP4V-ES").replace("packetization-mode=1;", "")

# H.265 NAL units (2-byte headers: type << 1, then layer/temporal id 1)
VPS, SPS5, PPS5 = bytes([0x40, 0x01, 0x0C]), bytes([0x42, 0x01, 0x01]), bytes([0x44, 0x01, 0xC0])
IDR5 = bytes([19 << 1, 0x01]) + bytes(range(2, 202))   # IDR_W_RADL
TRAIL = bytes([1 << 1, 0x01]) + b"\x77" * 40            # TRAIL_R


def fu_h265(nal: bytes, size: int) -> list[bytes]:
    kind, body = (nal[0] >> 1) & 0x3F, nal[2:]
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    return [bytes([(nal[0] & 0x81) | (49 << 1), nal[1],
                   kind | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)]) + c
            for i, c in enumerate(chunks)]


def ap_h265(*nals: bytes) -> bytes:
    return bytes([48 << 1, 0x01]) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def rtp(seq: int, ts: int, payload: bytes, marker: bool = False, pt: int = 96, pad: int = 0, csrc: int = 0,
        ext: bytes | None = None, channel: int = 0) -> bytes:
    """One RTP packet, interleaved ($, channel, length) as on an RTSP/TCP connection."""
    b0 = 0x80 | csrc | (0x20 if pad else 0) | (0x10 if ext is not None else 0)
    head = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x1234)
    head += b"\x00\x00\x00\x01" * csrc
    if ext is not None:
        head += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    body = head + payload + (bytes(pad - 1) + bytes([pad]) if pad else b"")
    return b"$" + bytes([channel]) + struct.pack("!H", len(body)) + body


def fu_a(nal: bytes, size: int) -> list[bytes]:
    """A NAL unit cut into FU-A fragments of `size` payload bytes."""
    header, body = nal[0], nal[1:]
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    out = []
    for i, chunk in enumerate(chunks):
        fu = (header & 0x1F) | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
        out.append(bytes([(header & 0xE0) | 28, fu]) + chunk)
    return out


def stap_a(*nals: bytes) -> bytes:
    return bytes([24]) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def gop(seq: int, ts: int, marker_on_p: bool = True) -> tuple[list[bytes], int]:
    """SPS+PPS (STAP-A) and an IDR in 3 FU-A fragments at ts, then two P-frames: (interleaved packets, next seq)."""
    pkts = [rtp(seq, ts, stap_a(SPS, PPS))]
    frags = fu_a(IDR, 70)
    pkts += [rtp(seq + 1 + i, ts, f, marker=i == len(frags) - 1) for i, f in enumerate(frags)]
    seq += 1 + len(frags)
    pkts += [rtp(seq, ts + 3600, P1, marker=marker_on_p), rtp(seq + 1, ts + 7200, P2, marker=marker_on_p)]
    return pkts, seq + 2


KEY_AU = SC + SPS + SC + PPS + SC + IDR


class ScriptedCamera:
    """A scripted RTSP peer on a real socket: answers OPTIONS/DESCRIBE/SETUP/PLAY from its script, then sends
    `stream` (interleaved packets, optionally spread over `over_s` seconds), and answers keep-alives."""

    def __init__(self, sdp: str = H264_SDP, stream: list[bytes] | None = None, over_s: float = 0.0,
                 session: str = "S1;timeout=60", setup_status: str = "200 OK", describe_status: str = "200 OK",
                 extra: list[bytes] | None = None) -> None:
        self.sdp, self.stream, self.over_s = sdp, stream or [], over_s
        self.session, self.setup_status, self.describe_status = session, setup_status, describe_status
        self.requests: list[tuple[float, str, str]] = []  # (time, method, uri)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def url(self, auth: str = "") -> str:
        return f"rtsp://{auth + '@' if auth else ''}127.0.0.1:{self.port}/live"

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, uri = lines[0].split()[:2]
                cseq = next(line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("cseq"))
                self.requests.append((time.monotonic(), method, uri))
                status, headers, body = "200 OK", "", b""
                if method == "OPTIONS":
                    headers = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN\r\n"
                elif method == "DESCRIBE":
                    status, body = self.describe_status, self.sdp.encode()
                    headers = f"Content-Base: rtsp://127.0.0.1:{self.port}/live/\r\nContent-Type: application/sdp\r\n"
                elif method == "SETUP":
                    status = self.setup_status
                    headers = f"Session: {self.session}\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
                reply = (f"RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
                         ).encode() + body
                try:
                    with self.lock:
                        conn.sendall(reply)
                except OSError:  # the client under test hung up first (a refused SETUP, a stop): its right
                    return
                if method == "PLAY":
                    threading.Thread(target=self.send_stream, args=(conn,), daemon=True).start()

    def send_stream(self, conn: socket.socket) -> None:
        step = self.over_s / max(1, len(self.stream))
        try:
            for pkt in self.stream:
                with self.lock:
                    conn.sendall(pkt)
                if step:
                    time.sleep(step)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def units(cam: ScriptedCamera, n: int, want_all: bool = True, read_timeout_s: float = 2.0) -> list:
    client = RtspClient(cam.url(), 2.0, read_timeout_s)
    client.open()
    out = []
    try:
        for unit in client.access_units(lambda: want_all):
            out.append(unit)
            if len(out) >= n:
                break
    finally:
        client.close()
        cam.close()
    return out


# ------------------------------------------------------------------------------------------ depacketising
def test_access_units_are_reassembled_from_stap_a_fu_a_and_single_nal_packets() -> None:
    g1, seq = gop(100, 90000)
    g2, _ = gop(seq, 90000 + 3 * 3600)
    got = units(ScriptedCamera(stream=g1 + g2), 4)
    assert [u.key for u in got] == [True, False, False, True]
    assert [u.pts for u in got] == [0, 3600, 7200, 10800]  # 90 kHz, from the session's first packet
    assert got[0].data == KEY_AU and got[3].data == KEY_AU
    assert got[1].data == SC + P1 and got[2].data == SC + P2
    assert not any(u.damaged for u in got)


def test_only_keyframes_are_assembled_while_only_keyframes_are_wanted() -> None:
    g1, seq = gop(7, 1000)
    g2, _ = gop(seq, 1000 + 3 * 3600)
    got = units(ScriptedCamera(stream=g1 + g2), 4, want_all=False)
    assert [u.data for u in got] == [KEY_AU, None, None, KEY_AU]
    assert [u.size for u in got[1:3]] == [len(P1), len(P2)]  # sizes still known: the stream is alive


# open-GOP cameras: their later "keyframes" are non-IDR I pictures behind a recovery point SEI
I_SLICE = bytes([0x61, 0x88]) + b"\x5a" * 120     # non-IDR slice: first_mb 0 (ue "1"), slice_type 7 = I ("0001000")
P_SLICE = bytes([0x41, 0x98]) + b"\x5b" * 40      # slice_type 5 = P ("00110")
SEI_RP0 = bytes([0x06, 0x05, 0x04]) + b"uuid" + bytes([0x06, 0x01, 0xC4, 0x80])  # user data, then recovery_frame_cnt 0
SEI_RP4 = bytes([0x06, 0x06, 0x02, 0x2C, 0x40, 0x80])  # recovery_frame_cnt 4: a gradual refresh starts, not a keyframe


def test_an_i_picture_at_a_recovery_point_is_a_keyframe() -> None:
    """Keyframes only: an open-GOP camera's I picture behind a recovery point SEI (count 0) is assembled with its
    SEI (the decoder needs it to start there), wherever the SEI and slices come (single NAL, STAP-A, FU-A); a
    recovery point that starts a gradual refresh, or one in front of a P picture, is not a keyframe."""
    g1, seq = gop(0, 0)
    pkts = list(g1)
    ts = 3 * 3600
    pkts.append(rtp(seq, ts, SEI_RP0))  # single-NAL SEI, I slice in FU-A fragments
    frags = fu_a(I_SLICE, 50)
    pkts += [rtp(seq + 1 + i, ts, f, marker=i == len(frags) - 1) for i, f in enumerate(frags)]
    seq += 1 + len(frags)
    pkts.append(rtp(seq, ts + 3600, stap_a(SPS, PPS, SEI_RP0)))  # SEI aggregated, single-NAL I slice
    pkts.append(rtp(seq + 1, ts + 3600, I_SLICE, marker=True))
    pkts.append(rtp(seq + 2, ts + 7200, SEI_RP4))  # intra refresh begins: a P picture
    pkts.append(rtp(seq + 3, ts + 7200, P_SLICE, marker=True))
    pkts.append(rtp(seq + 4, ts + 10800, stap_a(SEI_RP0, P_SLICE), marker=True))
    pkts.append(rtp(seq + 5, ts + 14400, I_SLICE, marker=True))  # an I picture without a recovery point
    got = units(ScriptedCamera(stream=pkts), 8, want_all=False)
    assert [u.key for u in got] == [True, False, False, True, True, False, False, False]
    assert got[3].data == SC + SEI_RP0 + SC + I_SLICE
    assert got[4].data == SC + SPS + SC + PPS + SC + SEI_RP0 + SC + I_SLICE
    assert [u.data for u in got[5:]] == [None, None, None]
    every = units(ScriptedCamera(stream=pkts), 8, want_all=True)  # decoding everything: the same keys
    assert [u.key for u in every] == [u.key for u in got]
    assert every[5].data == SC + SEI_RP4 + SC + P_SLICE


def test_a_lost_packet_damages_only_its_own_access_unit() -> None:
    g1, seq = gop(0, 0)
    g2, _ = gop(seq, 3 * 3600)
    del g1[2]  # the middle FU-A fragment of the first IDR
    got = units(ScriptedCamera(stream=g1 + g2), 4)
    assert got[0].damaged and got[0].data is None and not got[0].key  # never decoded: it would smear
    assert [u.damaged for u in got[1:]] == [False, False, False] and got[3].data == KEY_AU


def test_rtcp_keepalive_replies_padding_csrc_extension_and_missing_markers() -> None:
    stream = [rtp(1, 500, stap_a(SPS, PPS)), rtp(9, 0, b"\x80\xc9\x00\x01", channel=1),  # RTCP on channel 1
              b"RTSP/1.0 200 OK\r\nCSeq: 99\r\nContent-Length: 0\r\n\r\n",  # a keep-alive reply mid-stream
              rtp(2, 500, IDR, marker=True, pad=4, csrc=2, ext=b"\x10\x20\x30\x40"),
              rtp(3, 500 + 3600, P1),  # no marker bit: the next timestamp ends the unit
              rtp(4, 500 + 7200, P2, marker=True), rtp(5, 500 + 7200, b"", pt=97)]  # a stray payload type
    got = units(ScriptedCamera(stream=stream), 3)
    assert [(u.key, u.data) for u in got] == [(True, KEY_AU), (False, SC + P1), (False, SC + P2)]


def test_h265_access_units_are_reassembled_from_ap_fu_and_single_nal_packets() -> None:
    frags = fu_h265(IDR5, 64)
    stream = ([rtp(1, 0, ap_h265(VPS, SPS5, PPS5))] +
              [rtp(2 + i, 0, f, marker=i == len(frags) - 1) for i, f in enumerate(frags)] +
              [rtp(2 + len(frags), 3600, TRAIL, marker=True)])
    cam = ScriptedCamera(sdp=H265_SDP, stream=stream)
    got = units(cam, 2, want_all=False)
    key_au = SC + VPS + SC + SPS5 + SC + PPS5 + SC + IDR5
    assert [(u.key, u.data) for u in got] == [(True, key_au), (False, None)]
    cam = ScriptedCamera(sdp=H265_SDP, stream=stream)
    client = RtspClient(cam.url(), 2.0, 2.0)
    client.open()
    try:
        assert client.codec == "hevc" and client.parameter_sets == SC + VPS + SC + SPS5 + SC + PPS5  # from the SDP
        it = client.access_units(lambda: True)
        assert [next(it).data, next(it).data] == [key_au, SC + TRAIL]
    finally:
        client.close()
        cam.close()


def test_rtp_timestamps_keep_rising_across_the_32_bit_wrap() -> None:
    start = 2**32 - 3600
    stream = [rtp(i, start + i * 3600, P1, marker=True) for i in range(4)]
    got = units(ScriptedCamera(stream=stream), 4)
    assert [u.pts for u in got] == [0, 3600, 7200, 10800]


# ------------------------------------------------------------------------------------------ protocol
def test_keepalives_go_out_at_half_the_session_timeout_while_streaming() -> None:
    pkts = [rtp(i, i * 3600, IDR if i % 10 == 0 else P1, marker=True) for i in range(100)]
    cam = ScriptedCamera(stream=pkts, over_s=4.0, session="S1;timeout=2")
    got = units(cam, 95)
    assert len(got) == 95
    keepalives = [t for t, method, _ in cam.requests if method == "GET_PARAMETER"]
    assert len(keepalives) >= 3, cam.requests  # ~4 s of stream, one every second
    assert all(method != "SETUP" or uri == f"rtsp://127.0.0.1:{cam.port}/live/stream=0"
               for _, method, uri in cam.requests)  # the video track's control, resolved against Content-Base


def test_pacing_never_throttles_a_camera_faster_than_buffer_per_pace() -> None:
    """Reading every 0.2 s into a 256 KiB buffer would cap a paced client at ~10 Mbit/s: a 4K camera sends more.
    A recv that fills the buffer is followed by another without a pause."""
    big = bytes([0x41]) + b"\x55" * 60000
    frames = [rtp(i, i * 3600, big, marker=True) for i in range(100)]  # 6 MB: 2 s of a 24 Mbit/s camera
    cam = ScriptedCamera(stream=frames)
    client = RtspClient(cam.url(), 2.0, 2.0)
    client.open()
    client.pace_s = 0.2
    t0 = time.monotonic()
    try:
        n = sum(1 for _, unit in zip(range(100), client.access_units(lambda: False)) if unit.size)
    finally:
        client.close()
        cam.close()
    assert n == 100
    assert time.monotonic() - t0 < 2.0  # paced on every recv it would take 6 MB / 256 KiB * 0.2 s = 4.6 s


@pytest.mark.parametrize(("script", "match"), [
    (dict(sdp=MPEG4_SDP), "no H.264 or H.265 video track.*MP4V-ES"),
    (dict(setup_status="461 Unsupported Transport"), "refused RTP over TCP"),
    (dict(sdp=H264_SDP.replace("packetization-mode=1", "packetization-mode=2")), "packetization-mode 2"),
])
def test_what_the_client_cannot_read_is_unsupported(script: dict, match: str) -> None:
    cam = ScriptedCamera(**script)
    client = RtspClient(cam.url("viewer:" + SECRET), 2.0, 2.0)
    with pytest.raises(RtspUnsupported, match=match) as e:
        client.open()
    client.close()
    cam.close()
    assert SECRET not in str(e.value)


def test_a_missing_stream_and_a_silent_camera_are_errors_without_the_url() -> None:
    cam = ScriptedCamera(describe_status="404 Not Found")
    with pytest.raises(RtspError, match="DESCRIBE: 404 Not Found") as e:
        RtspClient(cam.url("viewer:" + SECRET), 2.0, 2.0).open()
    assert SECRET not in str(e.value) and "127.0.0.1" not in str(e.value)
    cam.close()
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) and never answers
    try:
        t0 = time.monotonic()
        with pytest.raises(RtspTimeout, match="OPTIONS: no answer within 0.5 s"):
            RtspClient(f"rtsp://127.0.0.1:{silent.getsockname()[1]}/x", 0.5, 0.5).open()
        assert time.monotonic() - t0 < 2
    finally:
        silent.close()


def test_garbage_from_the_camera_is_an_error_not_a_crash() -> None:
    cam = ScriptedCamera(describe_status="200 OK\r\nContent-Length: lots")  # a header that is not a number
    with pytest.raises(RtspError, match="malformed reply"):
        RtspClient(cam.url(), 2.0, 2.0).open()
    cam.close()
    g1, _ = gop(0, 0)
    garbage = b"XX" + b"\x00" * 20000  # neither '$' nor an RTSP message: no header end within 16 KiB
    with pytest.raises(RtspError, match="neither RTSP nor interleaved RTP"):
        units(ScriptedCamera(stream=g1 + [garbage]), 10)


def test_a_camera_that_stops_sending_is_a_timeout() -> None:
    g1, _ = gop(0, 0)
    with pytest.raises(RtspTimeout, match="no data within the read timeout"):
        units(ScriptedCamera(stream=g1), 10, read_timeout_s=0.5)


# ----------------------------------------------------------------------------------------- real server
@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if (why := ffmpeg_unavailable() or rtsp_unavailable()) is not None:
        pytest.skip(why)
    return make_clip(tmp_path_factory.mktemp("rtsp") / "cam.mp4", seconds=4, fps=10, gop=10)


@pytest.mark.slow
def test_digest_authentication_against_the_real_server(clip: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edge")
    monkeypatch.setenv("CAM_PW", SECRET)
    monkeypatch.setenv("BAD_PW", SECRET + "x")
    with RtspServer({"cam1": clip}, auth=f"viewer:{SECRET}") as srv:
        good = Run(lambda cb: PyAvSource("cam1", srv.url("cam1", auth="viewer:${CAM_PW}"), 0.5, on_status=cb))
        bad = Run(lambda cb: PyAvSource("cam2", srv.url("cam1", auth="viewer:${BAD_PW}"), 0.5, on_status=cb))
        try:
            good.wait("3 scans", lambda: len(good.frames) >= 3, 20)
            bad.wait("the refusal", lambda: "credentials" in (bad.source.status()["error"] or ""), 20)
            ingest, bad_status = good.source.ingest(), bad.source.status()
        finally:
            good.close()
            bad.close()
    assert ingest["client"] == "builtin" and good.frames[0][1].image.shape == (180, 320, 3)
    assert bad_status["state"] != "online" and "refused the credentials (401" in bad_status["error"]
    assert bad.source.builtin_refused is None  # a wrong password is not a reason to switch clients
    assert SECRET not in caplog.text and SECRET not in bad_status["error"]


def test_auto_falls_back_to_ffmpeg_for_a_camera_the_builtin_client_cannot_read(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.ingest")
    for mode in ("auto", "builtin"):
        cam = ScriptedCamera(sdp=MPEG4_SDP)
        run = Run(lambda cb: PyAvSource("cam1", cam.url(), 2.0, open_timeout_s=1.0, on_status=cb, rtsp_client=mode))
        try:
            run.wait("the open to fail", lambda: (run.source.status()["error"] or "") != "", 10)
            status = run.source.status()
        finally:
            run.close()
            cam.close()
        if mode == "auto":
            assert "no H.264 or H.265 video track" in (run.source.builtin_refused or "")
            assert "reading it with FFmpeg's RTSP client from now on" in caplog.text
            assert "built-in" not in status["error"]  # what failed after is FFmpeg's open of the scripted peer
        else:
            assert run.source.builtin_refused is None
            assert "with the built-in RTSP client: no H.264 or H.265 video track" in status["error"]


@pytest.mark.slow
def test_an_h265_camera_is_read_by_the_builtin_client_keyframes_only(tmp_path: Path, clip: Path) -> None:
    hevc = make_clip(tmp_path / "hevc.mp4", seconds=4, fps=10, gop=10, codec="h265")
    with RtspServer({"cam1": hevc}) as srv:
        run = Run(lambda cb: PyAvSource("cam1", srv.url("cam1"), 1.0, on_status=cb))
        try:
            run.wait("4 scans", lambda: len(run.frames) >= 4, 25)
            ingest = run.source.ingest()
        finally:
            run.close()
    assert ingest["client"] == "builtin" and ingest["mode"] == "keyframes", ingest
    assert ingest["gop_s"] == pytest.approx(1.0, abs=0.05) and ingest["damaged"] == 0, ingest
    assert ingest["decoded"] <= len(run.frames) + 2, ingest  # keyframes only, one per scan
    image = run.frames[-1][1].image
    assert image.shape == (180, 320, 3) and image.std() > 10  # a real picture, not a grey failed decode


def _open_gop_camera(tmp_path: Path, seconds: float = 9.0) -> ScriptedCamera:
    """A camera joined mid-stream whose encoder closes no GOP: x264 with B-frames and open GOPs sends one IDR at
    its start and then only I pictures behind recovery point SEIs. Streamed in real time from its second GOP on,
    so no IDR ever comes."""
    import base64
    import subprocess

    import av

    path = tmp_path / "opengop.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size=320x180:rate=10:duration={seconds + 1}", "-c:v", "libx264",
                    "-preset", "veryfast", "-g", "10", "-keyint_min", "10", "-sc_threshold", "0", "-bf", "2",
                    "-x264-params", "open-gop=1", "-pix_fmt", "yuv420p", "-an", str(path)], check=True, timeout=60)
    pkts, seq = [], 0
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        avcc = bytes(stream.codec_context.extradata)  # avcC: SPS and PPS for the SDP
        n_sps = avcc[5] & 0x1F
        sps_len = struct.unpack("!H", avcc[6:8])[0]
        sps = avcc[8:8 + sps_len]
        pps = avcc[8 + sps_len + 3:8 + sps_len + 3 + struct.unpack("!H", avcc[9 + sps_len:11 + sps_len])[0]]
        assert n_sps == 1
        idr_seen = 0
        for packet in c.demux(stream):
            if packet.size == 0:
                continue
            data, nals, i = bytes(packet), [], 0
            while i + 4 <= len(data):
                n = struct.unpack("!I", data[i:i + 4])[0]
                nals.append(data[i + 4:i + 4 + n])
                i += 4 + n
            idr_seen += any(nal[0] & 0x1F == 5 for nal in nals)
            if packet.is_keyframe and not any(nal[0] & 0x1F == 5 for nal in nals):
                assert any(nal[0] & 0x1F == 6 for nal in nals)  # really a recovery point picture
            if float(packet.dts * stream.time_base) < 1.0:  # the first GOP, with the only IDR: never sent
                continue
            ts = int(packet.pts * stream.time_base * 90000)
            for j, nal in enumerate(nals):
                last = j == len(nals) - 1
                pieces = fu_a(nal, 1200) if len(nal) > 1200 else [nal]
                for k, piece in enumerate(pieces):
                    pkts.append(rtp(seq, ts, piece, marker=last and k == len(pieces) - 1))
                    seq += 1
        assert idr_seen == 1
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    sdp = H264_SDP.replace("sprop-parameter-sets=Z0IAHqs=,aM48gA==", f"sprop-parameter-sets={b64(sps)},{b64(pps)}")
    return ScriptedCamera(sdp=sdp, stream=pkts, over_s=seconds)


@pytest.mark.slow
def test_an_open_gop_camera_is_scanned_from_its_recovery_point_keyframes(tmp_path: Path) -> None:
    """Without IDRs the built-in client must still find keyframes (FFmpeg's does): a 1 s scan gets one decoded
    I picture a second, keyframes only, and real pictures, not grey failed decodes."""
    if (why := ffmpeg_unavailable()) is not None:
        pytest.skip(why)
    cam = _open_gop_camera(tmp_path)
    run = Run(lambda cb: PyAvSource("cam1", cam.url(), 1.0, on_status=cb, rtsp_client="builtin"))
    try:
        run.wait("4 scans", lambda: len(run.frames) >= 4, 12)
        ingest = run.source.ingest()
    finally:
        run.close()
        cam.close()
    assert ingest["client"] == "builtin" and ingest["mode"] == "keyframes", ingest
    assert ingest["gop_s"] == pytest.approx(1.0, abs=0.05) and ingest["damaged"] == 0, ingest
    assert ingest["decoded"] <= len(run.frames) + 2, ingest
    image = run.frames[-1][1].image
    assert image.shape == (180, 320, 3) and image.std() > 10


def test_a_camera_that_sends_no_keyframe_is_named_in_the_log(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Intra refresh (or a smart-codec mode) can leave a stream with no keyframe at all: nothing can be scanned,
    and the operator must read why, once, with the camera's name."""
    import edge.ingest

    monkeypatch.setattr(edge.ingest, "_NO_KEY_WARN_S", 1.5)
    caplog.set_level(logging.INFO, logger="edge")
    pkts = [rtp(i, i * 9000, SEI_RP4 if i % 10 == 0 else P_SLICE, marker=True) for i in range(40)]
    cam = ScriptedCamera(stream=pkts, over_s=4.0)
    run = Run(lambda cb: PyAvSource("gate-7", cam.url(), 1.0, on_status=cb, rtsp_client="builtin"))
    try:
        deadline = time.monotonic() + 8  # a log line wakes no Run.wait: poll
        while "without a keyframe" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        status = run.source.status()
        time.sleep(1.0)  # the stream goes on: no second warning
    finally:
        run.close()
        cam.close()
    warnings = [r for r in caplog.records if "without a keyframe" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "camera gate-7:" in warnings[0].getMessage() and "I-frame interval" in warnings[0].getMessage()
    assert run.frames == [] and status["state"] == "online"
