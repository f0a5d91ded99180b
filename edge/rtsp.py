"""A small RTSP client for H.264 and H.265 cameras over TCP: handshake, keep-alive and RTP depacketising in
Python, the decoding left to FFmpeg (PyAV). It exists for one reason: the cost of receiving.

FFmpeg's RTSP demuxer reads each interleaved RTP packet of a TCP session with three socket reads (the `$`,
the rest of the 4-byte header, the payload), each behind its own poll(), and PyAV's read-timeout callback takes
the GIL around each: about 2,500 poll/recv pairs per 2 s of a 4 Mbit/s camera, ~20 ms of CPU per 2 s on this
box before a single frame is decoded. This client reads the socket a few frames at a time (`pace_s`), only
walks the RTP headers of frames no scan wants, and copies out only the access units that will be decoded:
~7 ms per 2 s at a 0.2 s pace, ~13 ms unpaced (measured here on the bench clip; `bench/cameras.py` gives
the whole runtime's figure).

Scope, deliberately narrow: RTSP/1.0 with RTP/AVP/TCP interleaved; H.264 in packetization modes 0 and 1
(single NAL units, STAP-A, FU-A; RFC 6184) and H.265 without decoding order numbers (single NAL units, AP, FU;
RFC 7798), the two codecs city cameras send; Basic and Digest (MD5) authentication; GET_PARAMETER/OPTIONS
keep-alives at half the session timeout. Anything else (another codec, rtsps, interleaved modes, a camera that
refuses TCP, a redirect) raises `RtspUnsupported`, and the caller reads that camera with FFmpeg's client.

Credentials come from the URL and go only into the Authorization header: no message here contains the URL.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Iterator

log = logging.getLogger(__name__)

_START = b"\x00\x00\x00\x01"
_BUF = 1 << 18           # receive buffer (256 KiB: 0.2 s of an 8 Mbit/s camera); compacted when nearly full
_MAX_FRAME = 4 + 65535   # the largest interleaved frame
_MAX_HEADER = 16384      # an RTSP message header longer than this is not RTSP: the stream lost sync
_USER_AGENT = "cityops-edge"
_SLICE, _IDR, _SEI, _SPS, _PPS, _STAP_A, _FU_A = 1, 5, 6, 7, 8, 24, 28   # H.264 NAL unit types (RFC 6184)
_RECOVERY_POINT = 6                # H.264 SEI payload type: decoding can start at this picture
_H265_AP, _H265_FU = 48, 49        # H.265 aggregation / fragmentation units (RFC 7798)
_H265_IRAP = range(16, 22)         # BLA, IDR, CRA: the pictures a decoder can start from (keyframes)
_H265_PARAMS = range(32, 35)       # VPS, SPS, PPS


class RtspError(Exception):
    """The camera or the connection failed; the message never contains the URL or its credentials."""


class RtspTimeout(RtspError):
    """No data within the read timeout: a stall."""


class RtspUnsupported(RtspError):
    """The camera needs something this client does not do (codec, transport, packetisation, redirect)."""


@dataclass(slots=True)
class AccessUnit:
    """One picture's worth of H.264/H.265 as Annex-B bytes; `data` is None for a unit that was not asked for (a
    non-key frame while only keyframes are wanted) or arrived damaged (`damaged`: an RTP sequence gap)."""

    pts: int            # RTP timestamp, 90 kHz, unwrapped and counted from the session's first packet
    key: bool           # a picture a decoder can start from: an IDR, or an I picture behind a recovery point
                        # SEI (open-GOP cameras); H.265: an IRAP picture (IDR, CRA, BLA)
    size: int           # payload bytes received for it
    data: bytes | None
    damaged: bool = False


@dataclass
class _Reply:
    code: int
    reason: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass
class _Track:
    control: str
    payload_type: int
    codec: str               # "h264" or "hevc" (FFmpeg's decoder names)
    parameter_sets: bytes    # VPS/SPS/PPS from the SDP's sprop-*, Annex-B ("" when the SDP has none)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # RFC 2617 Digest is MD5 by definition (not for security here)


def _auth_params(challenge: str) -> dict[str, str]:
    return {k.lower(): v1 if v1 else v2 for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', challenge)}


def _ue(data: bytes, bit: int) -> tuple[int, int]:
    """One Exp-Golomb code (ue(v)) at `bit` of `data`: (value, next bit). IndexError past the end."""
    zeros = 0
    while not (data[bit >> 3] >> (7 - (bit & 7))) & 1:
        zeros += 1
        bit += 1
    bit += 1
    value = 0
    for _ in range(zeros):
        value = (value << 1) | ((data[bit >> 3] >> (7 - (bit & 7))) & 1)
        bit += 1
    return (1 << zeros) - 1 + value, bit


def _recovery_point(sei: bytes) -> bool:
    """Does this H.264 SEI NAL (header byte first) say decoding can start right here (a recovery point with
    recovery_frame_cnt 0)? A later count means a gradual refresh: that picture alone is not a keyframe."""
    data = sei[1:].replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention, rare in SEI
    i = 0
    try:
        while i < len(data) and data[i] != 0x80:  # 0x80: the RBSP trailing bits
            kind = size = 0
            while data[i] == 0xFF:
                kind, i = kind + 255, i + 1
            kind, i = kind + data[i], i + 1
            while data[i] == 0xFF:
                size, i = size + 255, i + 1
            size, i = size + data[i], i + 1
            if kind == _RECOVERY_POINT:
                return _ue(data[i:i + size], 0)[0] == 0
            i += size
    except IndexError:
        pass
    return False


def _intra_slice(header: bytes) -> bool:
    """Is this H.264 slice (the bytes after its NAL header) an I or SI slice?"""
    try:
        _, bit = _ue(header, 0)  # first_mb_in_slice
        return _ue(header, bit)[0] % 5 in (2, 4)
    except IndexError:
        return False


class RtspClient:
    """One RTSP session: `open()` (DESCRIBE, SETUP, PLAY), then `access_units()`, then `close()`."""

    def __init__(self, url: str, open_timeout_s: float, read_timeout_s: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() != "rtsp":
            raise RtspUnsupported(f"scheme {parts.scheme!r} (only rtsp:// here)")
        self._host = parts.hostname or ""
        try:
            self._port = parts.port or 554
        except ValueError:
            raise RtspError("the URL's port is not a number") from None
        self._user = urllib.parse.unquote(parts.username) if parts.username else None
        self._password = urllib.parse.unquote(parts.password) if parts.password else ""
        netloc = self._host if ":" not in self._host else f"[{self._host}]"
        netloc += f":{parts.port}" if parts.port else ""
        # the URL as sent in requests: without its userinfo
        self._url = urllib.parse.urlunsplit(("rtsp", netloc, parts.path or "/", parts.query, ""))
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self._sock: socket.socket | None = None
        self._buf = bytearray(_BUF)
        self._have = 0
        self._pos = 0
        self._cseq = 0
        self._auth: tuple[str, dict[str, str]] | None = None
        self._nc = 0
        self._session: str | None = None
        self._keepalive_s = 30.0
        self._keepalive_method = "OPTIONS"
        self._channel = 0
        self.parameter_sets = b""
        self.codec = "h264"
        self.pace_s = 0.0
        self._last_recv = 0.0
        self._drained = True
        self.damaged = 0  # access units lost to RTP sequence gaps (a server that dropped packets)

    # ------------------------------------------------------------------------------------------ handshake
    def open(self) -> None:
        """Connect and start playing the first H.264/H.265 video track; raises RtspError / RtspUnsupported."""
        try:
            self._open()
        except (ValueError, IndexError, UnicodeError) as e:  # a reply that is not what RTSP says it must be
            raise RtspError(f"a malformed reply from the camera ({type(e).__name__})") from None

    def _open(self) -> None:
        try:
            self._sock = socket.create_connection((self._host, self._port), timeout=self.open_timeout_s)
        except socket.timeout:
            raise RtspTimeout(f"no connection within {self.open_timeout_s:g} s") from None
        except OSError as e:
            raise RtspError(f"cannot connect: {e.strerror or e}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        options = self._request("OPTIONS", self._url)
        public = (options.header("public") or "").upper()
        self._keepalive_method = "GET_PARAMETER" if "GET_PARAMETER" in public else "OPTIONS"
        describe = self._request("DESCRIBE", self._url, "Accept: application/sdp\r\n")
        base = describe.header("content-base") or describe.header("content-location") or self._url
        track = self._video_track(describe.body.decode("utf-8", "replace"), base)
        self.parameter_sets, self.codec = track.parameter_sets, track.codec
        self._payload_type = track.payload_type
        setup = self._request("SETUP", track.control, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
        session = setup.header("session")
        if not session:
            raise RtspError("SETUP: the camera gave no Session")
        sid, _, rest = session.partition(";")
        self._session = sid.strip()
        if m := re.search(r"timeout=(\d+)", rest):
            self._keepalive_s = max(1.0, int(m.group(1)) / 2)
        transport = setup.header("transport") or ""
        if m := re.search(r"interleaved=(\d+)", transport):
            self._channel = int(m.group(1))
        elif "TCP" not in transport.upper():
            raise RtspUnsupported("the camera did not accept RTP over the RTSP connection (TCP interleaved)")
        self._request("PLAY", self._url, "Range: npt=0.000-\r\n")
        self._sock.settimeout(self.read_timeout_s)
        self._last_keepalive = time.monotonic()

    def _video_track(self, sdp: str, base: str) -> _Track:
        sections = re.split(r"\r?\n(?=m=)", sdp)
        codecs = []
        for section in sections[1:]:
            if not section.startswith("m=video"):
                continue
            fields = section.split("\n", 1)[0].split()
            pts = {int(p) for p in fields[3:] if p.isdigit()}
            for pt_s, name in re.findall(r"a=rtpmap:(\d+)\s+([\w.-]+)/", section):
                if int(pt_s) not in pts:
                    continue
                codecs.append(name)
                codec = {"H264": "h264", "H265": "hevc"}.get(name.upper())
                if codec is None:
                    continue
                fmtp = dict(re.findall(r"([\w-]+)=([^;\s]+)", " ".join(
                    re.findall(rf"a=fmtp:{pt_s}\s+(.*)", section))))
                if codec == "h264" and fmtp.get("packetization-mode", "0") not in ("0", "1"):
                    raise RtspUnsupported(f"H.264 packetization-mode {fmtp['packetization-mode']}")
                if codec == "hevc" and fmtp.get("sprop-max-don-diff", "0") != "0":
                    raise RtspUnsupported("H.265 with decoding order numbers (sprop-max-don-diff)")
                keys = ("sprop-parameter-sets",) if codec == "h264" else ("sprop-vps", "sprop-sps", "sprop-pps")
                sets = b""
                for b64 in filter(None, ",".join(fmtp.get(k, "") for k in keys).split(",")):
                    try:
                        sets += _START + base64.b64decode(b64 + "=" * (-len(b64) % 4))
                    except ValueError:
                        log.debug("a parameter set in the SDP does not decode; relying on in-band ones")
                control = (re.findall(r"a=control:\s*(\S+)", section) or ["*"])[0]
                return _Track(self._resolve(base, control), int(pt_s), codec, sets)
        raise RtspUnsupported(f"no H.264 or H.265 video track (video codecs offered: {', '.join(codecs) or 'none'})")

    def _resolve(self, base: str, control: str) -> str:
        if control == "*":
            return base
        if control.lower().startswith("rtsp://"):
            parts = urllib.parse.urlsplit(control)  # never send credentials a camera put in its SDP
            return urllib.parse.urlunsplit(("rtsp", parts.hostname + (f":{parts.port}" if parts.port else ""),
                                            parts.path, parts.query, ""))
        return base.rstrip("/") + "/" + control.lstrip("/")

    def _authorization(self, method: str, uri: str) -> str:
        if self._auth is None:
            return ""
        kind, p = self._auth
        if kind == "basic":
            token = base64.b64encode(f"{self._user}:{self._password}".encode()).decode()
            return f"Authorization: Basic {token}\r\n"
        ha1 = _md5(f"{self._user}:{p.get('realm', '')}:{self._password}")
        ha2 = _md5(f"{method}:{uri}")
        fields = f'username="{self._user}", realm="{p.get("realm", "")}", nonce="{p.get("nonce", "")}", uri="{uri}"'
        if "auth" in [q.strip() for q in p.get("qop", "").split(",")]:
            self._nc += 1
            nc, cnonce = f"{self._nc:08x}", os.urandom(8).hex()
            response = _md5(f"{ha1}:{p.get('nonce', '')}:{nc}:{cnonce}:auth:{ha2}")
            fields += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
        else:
            response = _md5(f"{ha1}:{p.get('nonce', '')}:{ha2}")
        if "opaque" in p:
            fields += f', opaque="{p["opaque"]}"'
        return f"Authorization: Digest {fields}, response=\"{response}\", algorithm=MD5\r\n"

    def _send(self, method: str, uri: str, extra: str = "") -> None:
        assert self._sock is not None
        self._cseq += 1
        head = f"{method} {uri} RTSP/1.0\r\nCSeq: {self._cseq}\r\nUser-Agent: {_USER_AGENT}\r\n"
        if self._session:
            head += f"Session: {self._session}\r\n"
        self._sock.sendall((head + self._authorization(method, uri) + extra + "\r\n").encode())

    def _request(self, method: str, uri: str, extra: str = "") -> _Reply:
        for attempt in range(2):
            try:
                self._send(method, uri, extra)
                reply = self._read_reply(method)
            except socket.timeout:
                raise RtspTimeout(f"{method}: no answer within {self.open_timeout_s:g} s") from None
            except OSError as e:
                raise RtspError(f"{method}: connection failed: {e.strerror or e}") from None
            if reply.code == 401 and attempt == 0 and self._user is not None:
                challenges = reply.headers.get("www-authenticate", [])
                digest = [c for c in challenges if c.lower().startswith("digest")]
                if digest:
                    self._auth = ("digest", _auth_params(digest[0][6:]))
                elif any(c.lower().startswith("basic") for c in challenges):
                    self._auth = ("basic", {})
                else:
                    raise RtspUnsupported(f"{method}: unknown authentication scheme")
                continue
            break
        if reply.code == 401:
            raise RtspError(f"{method}: the camera refused the credentials (401 {reply.reason})"
                            if self._user is not None else f"{method}: the camera asks for credentials (401)")
        if reply.code in (301, 302, 303, 305, 307):
            raise RtspUnsupported(f"{method}: the camera redirects ({reply.code})")
        if reply.code == 461:
            raise RtspUnsupported(f"{method}: the camera refused RTP over TCP (461 {reply.reason})")
        if reply.code != 200:
            raise RtspError(f"{method}: {reply.code} {reply.reason}")
        return reply

    def _read_reply(self, method: str) -> _Reply:
        """The next RTSP reply (interleaved data before it, which a camera may already send, is skipped)."""
        while True:
            self._fill_to(1)
            if self._buf[self._pos] == 0x24:  # '$': interleaved data
                self._fill_to(4)
                length = (self._buf[self._pos + 2] << 8) | self._buf[self._pos + 3]
                self._fill_to(4 + length)
                self._pos += 4 + length
                continue
            reply = self._take_message()
            if reply is not None:
                return reply

    def _take_message(self) -> _Reply | None:
        """Parse the RTSP message at the read position (reply or a server request, which is answered)."""
        buf = self._buf
        while (end := buf.find(b"\r\n\r\n", self._pos, self._have)) < 0:
            if self._have - self._pos > _MAX_HEADER:
                raise RtspError("the camera sent something that is neither RTSP nor interleaved RTP")
            self._fill_to(self._have - self._pos + 1)
        lines = bytes(buf[self._pos:end]).decode("utf-8", "replace").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = int((headers.get("content-length") or ["0"])[0] or 0)
        start = end + 4 - self._pos
        self._fill_to(start + length)
        body = bytes(buf[self._pos + start:self._pos + start + length])
        self._pos += start + length
        status = lines[0].split(" ", 2)
        if status[0].startswith("RTSP/") and len(status) >= 2 and status[1].isdigit():
            return _Reply(int(status[1]), status[2] if len(status) > 2 else "", headers, body)
        # a request from the server (e.g. a GET_PARAMETER of its own): answer it so it does not time us out
        cseq = (headers.get("cseq") or ["0"])[0]
        assert self._sock is not None
        self._sock.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n\r\n".encode())
        return None

    def _fill_to(self, n: int) -> None:
        """Receive until at least n bytes are buffered from the read position."""
        assert self._sock is not None
        buf = self._buf
        while self._have - self._pos < n:
            if self._pos and len(buf) - self._have < _MAX_FRAME:  # compact: keep the unread tail only
                left = self._have - self._pos
                buf[:left] = buf[self._pos:self._have]
                self._pos, self._have = 0, left
            if self._have - self._pos + (len(buf) - self._have) < n:
                raise RtspError("an RTSP message larger than the receive buffer")
            if self.pace_s and self._drained:  # let a few frames gather: one wake-up and one recv for them all
                wait = self._last_recv + self.pace_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._last_recv = time.monotonic()
            room = len(buf) - self._have
            got = self._sock.recv_into(memoryview(buf)[self._have:])
            if not got:
                raise RtspError("the camera closed the connection")
            self._have += got
            # a recv that filled the buffer left data in the socket: read on without pausing, or a camera above
            # buffer / pace (~10 Mbit/s) would fall behind and its server start dropping packets
            self._drained = got < room

    # -------------------------------------------------------------------------------------------- media
    def access_units(self, want_all: Callable[[], bool]) -> Iterator[AccessUnit]:
        """The stream as access units. Non-key units are assembled only while `want_all()` (asked once a unit);
        otherwise only their sizes and timestamps are known. Raises RtspTimeout on a stall, RtspError when the
        connection breaks."""
        try:
            yield from self._units(want_all)
        except socket.timeout:
            raise RtspTimeout(f"no data within the read timeout ({self.read_timeout_s:g} s)") from None
        except OSError as e:
            raise RtspError(f"the connection broke: {e.strerror or e}") from None
        except (ValueError, IndexError) as e:  # garbage where RTP or RTSP should be: reconnect, don't crash
            raise RtspError(f"malformed data from the camera ({type(e).__name__})") from None

    def _units(self, want_all: Callable[[], bool]) -> Iterator[AccessUnit]:
        buf = self._buf
        channel, payload_type = self._channel, self._payload_type
        hevc = self.codec == "hevc"
        parts: list[bytes] = []
        size, key, damaged, ts = 0, False, False, -1
        recovery = False  # this H.264 unit carries a recovery point SEI (count 0): its I slices make it a keyframe
        collect = want_all()
        expect = -1
        base = last = -1
        wraps = 0
        while True:
            pos = self._pos
            avail = self._have - pos
            if avail < 4 or buf[pos] != 0x24:
                if avail >= 1 and buf[pos] != 0x24:
                    self._take_message()  # a keep-alive reply (or a server request) between RTP packets
                else:
                    self._fill_to(4)
                continue
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if avail < 4 + length:
                self._fill_to(4 + length)
                continue
            p = pos + 4
            end = self._pos = p + length
            if buf[pos + 1] != channel or length < 13 or (buf[p + 1] & 0x7f) != payload_type:
                continue  # RTCP, another track, or a stray payload type
            b0 = buf[p]
            seq = (buf[p + 2] << 8) | buf[p + 3]
            t = (buf[p + 4] << 24) | (buf[p + 5] << 16) | (buf[p + 6] << 8) | buf[p + 7]
            marker = buf[p + 1] & 0x80
            q = p + 12 + 4 * (b0 & 0x0F)
            if b0 & 0x10:  # header extension
                q += 4 + 4 * ((buf[q + 2] << 8) | buf[q + 3])
            if b0 & 0x20:  # padding
                end -= buf[end - 1]
            if t != ts and size:  # a new timestamp without a marker: the camera did not mark the last unit
                yield self._unit(parts, size, key, damaged, ts, base, wraps, collect)
                parts, size, key, damaged, recovery = [], 0, False, False, False
                collect = want_all()
            if t != ts:
                if base < 0:
                    base = t
                elif t < last and last - t > 0x80000000:
                    wraps += 1
                last = ts = t
            if expect >= 0 and seq != expect:
                damaged = True
            expect = (seq + 1) & 0xFFFF
            if q < end and hevc:
                size += end - q
                kind = (buf[q] >> 1) & 0x3F
                if kind == _H265_FU:
                    fu = buf[q + 2]
                    kind = fu & 0x3F
                    irap = kind in _H265_IRAP
                    key = key or irap
                    if collect or irap:
                        if fu & 0x80:
                            parts.append(_START + bytes(((buf[q] & 0x81) | (kind << 1), buf[q + 1])))
                        parts.append(buf[q + 3:end])
                elif kind == _H265_AP:
                    r = q + 2
                    while r + 3 < end:
                        n = (buf[r] << 8) | buf[r + 1]
                        kind = (buf[r + 2] >> 1) & 0x3F
                        key = key or kind in _H265_IRAP
                        if collect or kind in _H265_IRAP or kind in _H265_PARAMS:
                            parts.append(_START)
                            parts.append(buf[r + 2:r + 2 + n])
                        r += 2 + n
                elif kind < 48:
                    key = key or kind in _H265_IRAP
                    if collect or kind in _H265_IRAP or kind in _H265_PARAMS:
                        parts.append(_START)
                        parts.append(buf[q:end])
                else:
                    damaged = True  # PACI or a reserved type
            elif q < end:
                size += end - q
                nal = buf[q]
                kind = nal & 0x1F
                if kind == _FU_A:
                    fu = buf[q + 1]
                    kind = fu & 0x1F
                    if kind == _SLICE and recovery and fu & 0x80 and not key:
                        key = _intra_slice(buf[q + 2:q + 18])  # an open-GOP keyframe: an I slice at a recovery point
                    elif kind == _IDR:
                        key = True
                    if collect or kind == _IDR or (kind == _SLICE and key):
                        if fu & 0x80:
                            parts.append(_START + bytes(((nal & 0xE0) | kind,)))
                        parts.append(buf[q + 2:end])
                elif kind == _STAP_A:
                    r = q + 1
                    while r + 2 < end:
                        n = (buf[r] << 8) | buf[r + 1]
                        recovery, key = self._h264_nal(r + 2, r + 2 + n, parts, collect, recovery, key)
                        r += 2 + n
                elif 0 < kind < 24:
                    recovery, key = self._h264_nal(q, end, parts, collect, recovery, key)
                else:
                    damaged = True  # STAP-B, MTAP, FU-B: not in modes 0/1
            if marker and size:
                yield self._unit(parts, size, key, damaged, ts, base, wraps, collect)
                parts, size, key, damaged, recovery = [], 0, False, False, False
                collect = want_all()
                if time.monotonic() - self._last_keepalive >= self._keepalive_s:
                    self._last_keepalive = time.monotonic()
                    self._send(self._keepalive_method, self._url)

    def _h264_nal(self, q: int, end: int, parts: list[bytes], collect: bool, recovery: bool,
                  key: bool) -> tuple[bool, bool]:
        """One whole H.264 NAL unit at `buf[q:end]` (a single-NAL packet, or one of a STAP-A): kept in `parts` when
        its unit will be decoded; returns the unit's (recovery, key) so far. Copied only when kept."""
        buf = self._buf
        kind = buf[q] & 0x1F
        if kind == _SEI and not recovery and _recovery_point(buf[q:end]):
            recovery = True
            if not collect:
                parts += (_START, buf[q:end])  # the decoder needs it to take the picture as a keyframe
        elif kind == _SLICE and recovery and not key:
            key = _intra_slice(buf[q + 1:q + 17])  # an open-GOP keyframe: an I slice at a recovery point
        key = key or kind == _IDR
        if collect or kind in (_IDR, _SPS, _PPS) or (kind == _SLICE and key):
            parts += (_START, buf[q:end])
        return recovery, key

    def _unit(self, parts: list[bytes], size: int, key: bool, damaged: bool, ts: int, base: int, wraps: int,
              collect: bool) -> AccessUnit:
        pts = ts + (wraps << 32) - base
        if damaged:  # a lost packet: decoding it would smear the picture; the next keyframe repairs the stream
            self.damaged += 1
            return AccessUnit(pts, False, size, None, damaged=True)
        data = b"".join(parts) if parts and (key or collect) else None
        return AccessUnit(pts, key, size, data)

    def close(self) -> None:
        """TEARDOWN (best effort, never waits long) and close the connection."""
        if self._sock is None:
            return
        try:
            if self._session:
                self._sock.settimeout(0.2)
                self._send("TEARDOWN", self._url)
        except OSError:
            pass
        finally:
            self._sock.close()
            self._sock = None
