"""One MQTT message at the centre → one record for the store: an incident event, an evidence picture, or an
invalid message with the reason it was refused.

Pure and total: :func:`parse_message` never raises, whatever bytes arrive on whatever topic — a malformed
message is an :class:`InvalidRecord` the store keeps aside, never a crash of the intake.

Checks, in order:
- the topic is `{prefix}/{edge_id}/incident/{camera_id}` or `{prefix}/{edge_id}/evidence/{incident_id}`;
- an incident payload is UTF-8 JSON matching the schema-1 incident message (`edge.messages.validate_message`);
- its `edge_id` and `camera_id` are the topic's (the broker ACL lets an edge write only under its own prefix,
  so a payload claiming another edge is refused rather than trusted);
- inline evidence (`data_b64`) decodes, is a JPEG and hashes to the `sha256` the message claims — if not,
  the event is still kept (an incident matters more than its picture) with `evidence_state` `mismatch` or
  `not_jpeg` and the picture is dropped;
- an evidence-topic payload is a JPEG; it is stored by its sha256, which is what a message's
  `evidence.sha256` refers to (the picture may arrive before or after the message that names it, or at
  another intake of the same shared-subscription group).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Union

__all__ = ["EVENT_RANK", "EvidenceRecord", "IncidentRecord", "InvalidRecord", "Record", "parse_message",
           "parse_time", "split_topic"]

#: event order within one incident: a later rank always wins, whatever order the messages arrive in
EVENT_RANK = {"opened": 0, "updated": 1, "resolved": 2}
JPEG_MAGIC = b"\xff\xd8"
_REASON_MAX = 2000


@dataclass(frozen=True)
class IncidentRecord:
    """A valid incident message, ready to store."""

    message_id: str
    edge_id: str
    camera_id: str
    incident_id: str
    event: str
    class_name: str
    observed_at: str
    observed_ts: float
    discovered_at: str
    discovered_ts: float
    lon: float | None
    lat: float | None
    accuracy_m: float | None
    confidence: float
    topic: str
    raw: bytes = field(repr=False)  # the payload as received
    message: dict[str, Any] = field(repr=False)  # the message without `evidence.data_b64` (stored separately)
    evidence_sha256: str | None = None
    evidence_data: bytes | None = field(default=None, repr=False)  # inline picture, hash checked
    evidence_state: str = "none"  # none | ok | pending (topic, not here yet) | mismatch | not_jpeg

    @property
    def rank(self) -> int:
        return EVENT_RANK[self.event]

    @property
    def order_key(self) -> tuple[int, float, str]:
        """Event order within the incident: opened < updated < resolved, then frame time, then message id."""
        return (self.rank, self.observed_ts, self.message_id)


@dataclass(frozen=True)
class EvidenceRecord:
    """A JPEG received on `{prefix}/{edge_id}/evidence/{incident_id}`."""

    edge_id: str
    incident_id: str
    topic: str
    sha256: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class InvalidRecord:
    """A message the intake refused, kept aside with the reason."""

    topic: str
    payload: bytes = field(repr=False)
    reason: str


Record = Union[IncidentRecord, EvidenceRecord, InvalidRecord]


def parse_time(text: str) -> float:
    """ISO 8601 with an offset → epoch seconds (ValueError without an offset)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return dt.timestamp()


def split_topic(topic: str, prefix: str) -> tuple[str, str, str] | None:
    """`{prefix}/{edge}/{kind}/{leaf}` → (edge, kind, leaf); None for any other shape."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def _invalid(topic: str, payload: bytes, reason: str) -> InvalidRecord:
    if len(reason) > _REASON_MAX:
        reason = reason[:_REASON_MAX - 1] + "…"
    return InvalidRecord(topic, bytes(payload), reason)


def parse_message(topic: str, payload: bytes, prefix: str = "cityops") -> Record:
    """Classify and check one received message (see the module doc). Never raises."""
    payload = bytes(payload)
    try:
        parts = split_topic(topic, prefix)
        if parts is None:
            return _invalid(topic, payload, f"unexpected topic {topic!r}: not {prefix}/<edge>/incident/<camera> "
                                            f"or {prefix}/<edge>/evidence/<incident>")
        edge_id, kind, leaf = parts
        if kind == "evidence":
            if not payload.startswith(JPEG_MAGIC):
                return _invalid(topic, payload, f"evidence of {len(payload)} bytes is not a JPEG (no FF D8 header)")
            return EvidenceRecord(edge_id, leaf, topic, hashlib.sha256(payload).hexdigest(), payload)
        if kind != "incident":
            return _invalid(topic, payload, f"unexpected topic {topic!r}: level {kind!r} is not incident or evidence")
        return _parse_incident(topic, payload, edge_id, leaf)
    except Exception as e:  # a bug here must not lose the message or kill the intake: keep it aside
        return _invalid(topic, payload, f"could not be parsed: {type(e).__name__}: {e}")


def _parse_incident(topic: str, payload: bytes, edge_id: str, camera_id: str) -> Record:
    from edge.messages import MessageInvalid, validate_message

    try:
        msg = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as e:
        return _invalid(topic, payload, f"payload is not UTF-8: {e}")
    except json.JSONDecodeError as e:
        return _invalid(topic, payload, f"payload is not JSON: {e}")
    if not isinstance(msg, dict):
        return _invalid(topic, payload, f"payload is a JSON {type(msg).__name__}, not an object")
    try:
        validate_message(msg, kind="incident")
    except MessageInvalid as e:
        return _invalid(topic, payload, str(e))
    if msg["edge_id"] != edge_id:
        return _invalid(topic, payload, f"edge_id {msg['edge_id']!r} does not match the topic's edge {edge_id!r}")
    if msg["camera_id"] != camera_id:
        return _invalid(topic, payload, f"camera_id {msg['camera_id']!r} does not match the topic's camera "
                                        f"{camera_id!r}")
    try:
        observed_ts, discovered_ts = parse_time(msg["observed_at"]), parse_time(msg["discovered_at"])
    except ValueError as e:
        return _invalid(topic, payload, f"bad time: {e}")

    ev = msg["evidence"]
    sha = data = None
    state = "none"
    if ev is not None:
        sha = ev["sha256"]
        if "data_b64" in ev:
            try:
                blob = base64.b64decode(ev["data_b64"], validate=True)
            except (binascii.Error, ValueError):
                blob = b""
            if not blob.startswith(JPEG_MAGIC):
                state = "not_jpeg"
            elif hashlib.sha256(blob).hexdigest() != sha:
                state = "mismatch"
            else:
                state, data = "ok", blob
            msg = {**msg, "evidence": {k: v for k, v in ev.items() if k != "data_b64"}}
        else:
            state = "pending"
    return IncidentRecord(
        message_id=msg["message_id"], edge_id=edge_id, camera_id=camera_id, incident_id=msg["incident_id"],
        event=msg["event"], class_name=msg["class"], observed_at=msg["observed_at"], observed_ts=observed_ts,
        discovered_at=msg["discovered_at"], discovered_ts=discovered_ts, lon=msg["lon"], lat=msg["lat"],
        accuracy_m=msg["accuracy_m"], confidence=float(msg["confidence"]), topic=topic, raw=payload,
        message=msg, evidence_sha256=sha, evidence_data=data, evidence_state=state)
