"""Commands from the centre: parse them, check them against the running box, apply them, answer every one.

The centre publishes JSON on ``{prefix}/{edge_id}/cmd/{command}`` (the broker ACL lets only the `centre` account
write there, and only this box read its own); the box answers on ``{prefix}/{edge_id}/reply`` with a reply
(``edge/schemas/reply-v1.schema.json``) put into the durable outbox, so an answer is not lost to a broker outage.

| command | payload | what it does | `result` of an accepted one |
| --- | --- | --- | --- |
| `dismiss` | `{request_id, incident_id, suppress_h?}` | closes an open incident as a false alarm (a `resolved` message with `reason: dismissed`) and suppresses its class at its ground place (image place for an uncalibrated camera) for `suppress_h` hours (site `commands.suppress_h`, default 24): sightings there open nothing. Kept in the state file across restarts | `incident_id, suppress_h, suppressed_until` (`repeated: true` for a dismiss of an incident already dismissed) |
| `profile` | `{request_id, profile}` | switches every camera to the named rule profile (`profiles:` in the rule files; `default` = no override); kept across restarts | `profile, previous_profile, scan_interval_s` |
| `reload` | `{request_id}` | re-reads every camera's rule file; one invalid file rejects the whole reload (the reason names file, line and key) and the old rules stay | `profile, scan_interval_s` |
| `snapshot` | `{request_id, camera_id}` | publishes that camera's next frame as a JPEG on ``{prefix}/{edge_id}/evidence/snapshot-<camera>-<time>`` (the evidence topic), then replies; no frame within `commands.snapshot_timeout_s` → a failure reply | `camera_id, topic, mime, sha256, bytes, captured_at` |

Every payload is a JSON object with a `request_id` (1-128 characters, echoed in the reply) and exactly the fields
above (unknown fields are rejected). An unknown command, bad JSON, a missing, extra or mistyped field, or an
incident, camera or profile the box does not have is answered `ok: false` with a `reason`, and changes nothing.
A reason never holds the payload or a secret.

Parsing (`parse_command`) is pure. `CommandDispatcher` does the rest through a `CommandTarget` (the running app)
and is not thread-safe on purpose: the app calls it only between scans, on its pipeline, where nothing else
touches the incident book or the rules (paho's network thread merely queues the raw command).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import DEFAULT_PROFILE, PROFILE_NAME, CommandSettings, ConfigError
from .evidence import frame_jpeg
from .messages import encode_message, iso_time
from .topics import Topics

__all__ = ["COMMANDS", "Command", "CommandDispatcher", "CommandTarget", "Dismiss", "Rejected", "Reload",
           "REPLY_SCHEMA_VERSION", "Snapshot", "SwitchProfile", "parse_command", "reply_message"]

log = logging.getLogger(__name__)

REPLY_SCHEMA_VERSION = 1
MAX_PAYLOAD = 16 * 1024  # a command is a few fields; anything bigger is not one
_REQUEST_ID = r"^[^\x00-\x1f\x7f]{1,128}$"
_INCIDENT_ID = r"^[^/+#\x00-\x1f\x7f]{1,128}$"
_CAMERA_ID = r"^[A-Za-z0-9_.-]{1,64}$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---------------------------------------------------------------------------------------------- payloads
class Command(BaseModel):
    """Fields every command carries. Strict: "24" is not a number, and unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    request_id: str = Field(pattern=_REQUEST_ID, description="the centre's id for this request, echoed in the reply")


class Dismiss(Command):
    incident_id: str = Field(pattern=_INCIDENT_ID, description="an open incident of this box")
    suppress_h: float | None = Field(None, ge=0, allow_inf_nan=False, description="hours to suppress the class at "
                                     "that place; default the site's commands.suppress_h; 0: none")


class SwitchProfile(Command):
    profile: str = Field(pattern=PROFILE_NAME, description="a profile of the rule files, or `default`")


class Reload(Command):
    pass


class Snapshot(Command):
    camera_id: str = Field(pattern=_CAMERA_ID, description="a camera of this box")


COMMANDS: Mapping[str, type[Command]] = MappingProxyType(
    {"dismiss": Dismiss, "profile": SwitchProfile, "reload": Reload, "snapshot": Snapshot})


@dataclass(frozen=True)
class Rejected:
    """A command that is not applied: why, and the request id to answer to (None when none could be read)."""

    reason: str
    request_id: str | None = None


def _fields(model: type[Command]) -> str:
    return ", ".join(model.model_fields)


def parse_command(command: str, payload: bytes) -> Command | Rejected:
    """Turn a command topic's name and payload into a validated command, or say exactly what is wrong with it
    (without repeating the payload: it may be anything)."""
    model = COMMANDS.get(command)
    if len(payload) > MAX_PAYLOAD:
        return Rejected(f"payload of {len(payload)} bytes is larger than {MAX_PAYLOAD}: not a command")
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        data, bad = None, "payload is not UTF-8 text"
    except json.JSONDecodeError as e:
        data, bad = None, f"payload is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
    else:
        bad = None if isinstance(data, dict) else f"payload must be a JSON object, got {type(data).__name__}"
    rid = data.get("request_id") if isinstance(data, dict) else None
    rid = rid if isinstance(rid, str) and re.match(_REQUEST_ID, rid) else None
    if model is None:
        return Rejected(f"unknown command {_clip(command, 64)!r}: this box knows {', '.join(COMMANDS)}", rid)
    if bad is not None:
        return Rejected(bad, rid)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "payload"
            if err["type"] == "missing":
                problems.append(f"{where}: required")
            elif err["type"] == "extra_forbidden":
                problems.append(f"{_clip(where, 64)}: unknown field ({command} takes {_fields(model)})")
            else:
                problems.append(f"{where}: {err['msg']}")
        return Rejected(f"{command}: " + "; ".join(problems), rid)


# ----------------------------------------------------------------------------------------------- replies
def _clip(text: str, n: int) -> str:
    text = _CONTROL.sub("?", text)
    return text if len(text) <= n else text[: n - 1] + "…"


def reply_message(*, edge_id: str, command: str, request_id: str | None, ok: bool, ts: float, utc_offset: str,
                  reason: str | None = None, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """The reply to one command (schema `reply-v1`); `ts` is the box's clock when it answered."""
    msg: dict[str, Any] = {"schema": REPLY_SCHEMA_VERSION, "request_id": request_id,
                           "command": _clip(command, 64) or "?", "ok": ok, "edge_id": edge_id,
                           "at": iso_time(ts, utc_offset)}
    if not ok:
        msg["reason"] = _clip(reason or "rejected", 1000)
    elif result:
        msg["result"] = result
    return msg


# ------------------------------------------------------------------------------------------------ target
class CommandTarget(Protocol):
    """What the commands need from the running box (EdgeApp). Called only between scans."""

    def now(self) -> float:
        """The box's clock: wall time live, frame time in a replay."""
        ...

    def camera_ids(self) -> dict[str, bool]:
        """Every camera of the site → enabled."""
        ...

    def profile_names(self) -> list[str]:
        """Profiles any rule file defines (not `default`)."""
        ...

    def dismiss(self, incident_id: str, ts: float, until_ts: float, also: list[tuple[str, bytes]]) -> bool:
        """Close the incident as a false alarm and suppress its place, with `also` (the reply) in the same
        transaction; False when no such incident is open."""
        ...

    def dismissed_until(self, incident_id: str) -> float | None:
        """End of the running suppression a dismiss of this incident left, None if there is none."""
        ...

    def switch_profile(self, profile: str) -> dict[str, Any]:
        """Put the profile in force; returns the reply's result."""
        ...

    def reload_rules(self) -> dict[str, Any]:
        """Re-read the rule files; ConfigError (naming file and key) leaves the old rules in force."""
        ...

    def write(self, items: list[tuple[str, bytes]]) -> None:
        """Put messages into the durable outbox, in one transaction."""
        ...


@dataclass(frozen=True)
class _Waiting:
    request_id: str
    camera_id: str
    deadline: float


class CommandDispatcher:
    """Checks a parsed command against the box, applies it and answers it. One per app (it holds the snapshots
    still waiting for a frame); not thread-safe — call it from one thread at a time."""

    def __init__(self, target: CommandTarget, topics: Topics, *, utc_offset: str = "+08:00",
                 settings: CommandSettings | None = None) -> None:
        self.target = target
        self.topics = topics
        self.edge_id = topics.edge_id
        self.utc_offset = utc_offset
        self.settings = settings or CommandSettings()
        self._waiting: dict[str, list[_Waiting]] = {}

    # ---------------------------------------------------------------------------------------- entry
    def handle(self, command: str, payload: bytes) -> dict[str, Any] | None:
        """Apply one command and put its reply into the outbox; returns the reply, or None for a snapshot, which
        is answered when its frame comes (`on_frame`) or its time runs out (`expire`)."""
        parsed = parse_command(command, payload)
        if isinstance(parsed, Rejected):
            return self._answer(command, parsed.request_id, False, reason=parsed.reason)
        try:
            if isinstance(parsed, Dismiss):
                return self._dismiss(command, parsed)
            if isinstance(parsed, SwitchProfile):
                return self._profile(command, parsed)
            if isinstance(parsed, Reload):
                return self._reload(command, parsed)
            assert isinstance(parsed, Snapshot)
            return self._snapshot(command, parsed)
        except Exception as e:  # a bug must not leave the centre without an answer (or stop the pipeline)
            log.exception("command %s (request %s) failed", command, parsed.request_id)
            return self._answer(command, parsed.request_id, False,
                                reason=f"internal error ({type(e).__name__}); see the edge's log")

    # ------------------------------------------------------------------------------------- commands
    def _dismiss(self, command: str, cmd: Dismiss) -> dict[str, Any]:
        hours = self.settings.suppress_h if cmd.suppress_h is None else cmd.suppress_h
        if hours > self.settings.max_suppress_h:
            return self._answer(command, cmd.request_id, False, reason=f"suppress_h {hours:g} is longer than this "
                                f"box allows (commands.max_suppress_h = {self.settings.max_suppress_h:g})")
        now = self.target.now()
        until = now + hours * 3600.0
        result = {"incident_id": cmd.incident_id, "suppress_h": hours, "suppressed_until": iso_time(until, self.utc_offset)}
        reply = self._reply(command, cmd.request_id, True, now, result=result)
        if self.target.dismiss(cmd.incident_id, now, until, [self._item(reply)]):
            log.info("command %s (request %s): %s dismissed, suppressed %g h", command, cmd.request_id,
                     cmd.incident_id, hours)
            return reply
        earlier = self.target.dismissed_until(cmd.incident_id)
        if earlier is not None:  # the centre repeated a dismiss (no reply seen?): same answer, nothing changes
            result = {"incident_id": cmd.incident_id, "suppressed_until": iso_time(earlier, self.utc_offset),
                      "repeated": True}
            return self._answer(command, cmd.request_id, True, result=result)
        return self._answer(command, cmd.request_id, False,
                            reason=f"no open incident {cmd.incident_id!r} on this box (resolved already, or another box's)")

    def _profile(self, command: str, cmd: SwitchProfile) -> dict[str, Any]:
        known = self.target.profile_names()
        if cmd.profile != DEFAULT_PROFILE and cmd.profile not in known:
            return self._answer(command, cmd.request_id, False, reason=f"unknown profile {cmd.profile!r}: the rule "
                                f"files define {', '.join([DEFAULT_PROFILE, *sorted(known)])}")
        return self._answer(command, cmd.request_id, True, result=self.target.switch_profile(cmd.profile))

    def _reload(self, command: str, cmd: Reload) -> dict[str, Any]:
        try:
            result = self.target.reload_rules()
        except ConfigError as e:
            return self._answer(command, cmd.request_id, False, reason=f"rules not reloaded, the old ones stay: {e}")
        return self._answer(command, cmd.request_id, True, result=result)

    def _snapshot(self, command: str, cmd: Snapshot) -> dict[str, Any] | None:
        cameras = self.target.camera_ids()
        if cmd.camera_id not in cameras:
            return self._answer(command, cmd.request_id, False, reason=f"unknown camera {cmd.camera_id!r}: this box "
                                f"has {', '.join(sorted(cameras))}")
        if not cameras[cmd.camera_id]:
            return self._answer(command, cmd.request_id, False, reason=f"camera {cmd.camera_id!r} is disabled")
        deadline = self.target.now() + self.settings.snapshot_timeout_s
        self._waiting.setdefault(cmd.camera_id, []).append(_Waiting(cmd.request_id, cmd.camera_id, deadline))
        log.info("command %s (request %s): waiting for the next frame of %s", command, cmd.request_id, cmd.camera_id)
        return None

    # ------------------------------------------------------------------------------------ snapshots
    def wants_frame(self, camera_id: str) -> bool:
        return bool(self._waiting.get(camera_id))

    def on_frame(self, camera_id: str, ts: float, image: np.ndarray) -> list[dict[str, Any]]:
        """A camera's new frame: publish it (one JPEG, however many asked) and answer each waiting snapshot."""
        waiting = self._waiting.pop(camera_id, [])
        if not waiting:
            return []
        jpeg = frame_jpeg(image)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ts)) + f"{int(round((ts % 1) * 1000)) % 1000:03d}"
        topic = self.topics.evidence(f"snapshot-{camera_id}-{stamp}")
        result = {"camera_id": camera_id, "topic": topic, "mime": "image/jpeg",
                  "sha256": hashlib.sha256(jpeg).hexdigest(), "bytes": len(jpeg),
                  "captured_at": iso_time(ts, self.utc_offset)}
        now = self.target.now()
        replies = [self._reply("snapshot", w.request_id, True, now, result=result) for w in waiting]
        self._write([(topic, jpeg), *(self._item(r) for r in replies)])
        log.info("snapshot of %s published on %s (%d bytes)", camera_id, topic, len(jpeg))
        return replies

    def expire(self, now: float) -> list[dict[str, Any]]:
        """Answer the snapshots whose camera sent no frame in time."""
        out = []
        for cam in list(self._waiting):
            late = [w for w in self._waiting[cam] if w.deadline <= now]
            if not late:
                continue
            self._waiting[cam] = [w for w in self._waiting[cam] if w.deadline > now]
            if not self._waiting[cam]:
                del self._waiting[cam]
            for w in late:
                out.append(self._answer("snapshot", w.request_id, False, reason=f"no frame from camera {cam!r} within "
                                        f"{self.settings.snapshot_timeout_s:g} s (offline?)"))
        return out

    def abandon(self, reason: str) -> list[dict[str, Any]]:
        """Answer every snapshot still waiting (the box is stopping, or a replay ran out of frames)."""
        waiting = [w for ws in self._waiting.values() for w in ws]
        self._waiting.clear()
        return [self._answer("snapshot", w.request_id, False, reason=f"no frame from camera {w.camera_id!r}: {reason}")
                for w in waiting]

    # -------------------------------------------------------------------------------------- answers
    def _reply(self, command: str, request_id: str | None, ok: bool, ts: float, *, reason: str | None = None,
               result: dict[str, Any] | None = None) -> dict[str, Any]:
        return reply_message(edge_id=self.edge_id, command=command, request_id=request_id, ok=ok, ts=ts,
                             utc_offset=self.utc_offset, reason=reason, result=result)

    def _item(self, reply: dict[str, Any]) -> tuple[str, bytes]:
        return (self.topics.reply, encode_message(reply))

    def _answer(self, command: str, request_id: str | None, ok: bool, *, reason: str | None = None,
                result: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = self._reply(command, request_id, ok, self.target.now(), reason=reason, result=result)
        if ok:
            log.info("command %s (request %s): done", _clip(command, 64), request_id)
        else:
            log.warning("command %s (request %s) rejected: %s", _clip(command, 64), request_id, reply["reason"])
        self._write([self._item(reply)])
        return reply

    def _write(self, items: list[tuple[str, bytes]]) -> None:
        try:
            self.target.write(items)
        except Exception:  # the outbox itself failed (disk full?): say so; the centre sees no reply and retries
            log.exception("could not put the reply to a command into the outbox")
