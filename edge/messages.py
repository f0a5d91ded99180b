"""Incident and status messages: the JSON the centre receives (schema version 1).

Messages are built from an :class:`~edge.types.IncidentEvent` and configuration only — every time comes from the
event (frame time), never from the wall clock, so a replayed clip produces byte-identical messages. The JSON
Schemas ship in ``edge/schemas/`` and :func:`validate_message` checks a message against them (tests run it on
every message we emit).

Incident message fields (topic ``{prefix}/{edge_id}/incident/{camera_id}``, QoS 1, not retained):

| field | type | meaning |
| --- | --- | --- |
| `schema` | 1 | message schema version; a breaking change bumps it |
| `message_id` | string | unique per message; QoS 1 is at-least-once, so the centre deduplicates on it |
| `incident_id` | string | one incident (class + ground position) through opened → updated → resolved |
| `event` | `opened` \\| `updated` \\| `resolved` | what changed |
| `class` | string | detector class name (e.g. `garbage_pile`) |
| `incident_type` | string | `manhole_missing`, `ponding`, `illegal_structure`, `garbage_exposed`, `material_pile` |
| `standard_ref` | string | the code standard `major_code`/`minor_code` follow (default `GB/T 47678.5-2026`; `CJ/T 214-2007` or `GB/T 30428.2-2013` select the legacy codes) |
| `case_kind` | `部件` \\| `事件` | component or event case |
| `major_code`, `minor_code` | string \\| null | 大类/小类 in `standard_ref` (2+3 digits for 2026, 2+2 legacy); null when that standard lists none (ponding in 2026: file by `type_name` or a local code) |
| `type_name` | string | case type name, e.g. 暴露垃圾 |
| `legacy_code` | string \\| null | legacy 4-digit code (e.g. `0102`) whatever `standard_ref` is; most deployed platforms still file by it |
| `source` | `视频智能发现` | discovery channel (video intelligent discovery) |
| `edge_id`, `camera_id` | string | which box and camera saw it |
| `admin_code` | string \\| null | GB/T 2260 6-digit county code of the site |
| `discovered_at` | ISO 8601 | first sighting of the incident (event's `discovered_ts`), with the site's UTC offset |
| `observed_at` | ISO 8601 | the frame this event comes from (event's `ts`) |
| `reported_at` | ISO 8601 | = `observed_at`: the event's frame time, never the wall clock (replays stay deterministic; the broker's arrival time is the centre's to record) |
| `confidence` | 0..1 | detector score |
| `box` | object | `x0, y0, x1, y1` in pixels of the `image_w` × `image_h` frame, clamped to the frame |
| `zone` | string \\| null | rule zone name |
| `lon`, `lat` | number \\| null | ground position; both null when the camera has no ground calibration |
| `crs` | string | always present: `EPSG:4490` (CGCS2000 geographic; equal to WGS84 within centimetres here) |
| `accuracy_m` | number \\| null | radius (m) around `lon`/`lat` that holds the thing's centre about 9 times in 10 (measurement error and the thing's size); null when unknown (always null when `lon`/`lat` are) |
| `model` | object | `name`, `version`, `sha256` of the ONNX model |
| `needs_review` | true | AI discoveries are verified by a seat operator before dispatch |
| `description` | string | short Chinese / English text (eventDesc) |
| `evidence` | object \\| null | `mime` (`image/jpeg`), `sha256` of the JPEG, and `data_b64` (broker `evidence: inline`) or `topic` (`evidence: topic`: the JPEG bytes go to `{prefix}/{edge_id}/evidence/{incident_id}` just before this message); null with `evidence: none` or no picture |
| `component_id`, `component_status`, `component_kind`, `grid_code`, `street_code`, `community_code`, `location_desc` | string, optional | present only when the geo stage knows them (from the event's `extra`); a matched cover's kind also sets `major_code`/`minor_code`/`legacy_code` to that kind's codes (污水井盖 0102 / 01002 …) |
| `grid_codes_near` | array of strings, optional | the other unit grids within `accuracy_m` of the point, by code: the place may lie in one of them (present only when there are any) |
| `gcj02` | object, optional | `{"lon", "lat"}` on GCJ-02 (consumer maps in China), when the site asks for it (`geo.gcj02`) |
| `projected` | object, optional | `{"crs", "x", "y"}` in the site's projected CRS (`geo.projected_crs`, e.g. EPSG:4549), metres |
| `reason` | `dismissed`, optional | `resolved` only: the centre dismissed the incident as a false alarm (command `dismiss`, edge/commands.py), not "no longer seen" |

Unknown values are **null, not omitted**: every message has the same keys (plus the optional geo keys), so a
consumer never needs `.get()` for a core field. The schema rejects keys it does not list — a new field
means a new schema version.

Status messages (retained): ``{"schema": 1, "state": "online"|"offline", "edge_id": ..., "at"?: ...,
"reason"?: ...}`` on ``{prefix}/{edge_id}/status`` (the LWT carries no ``at``), and the same plus
``camera_id`` (and state ``disabled``) on ``{prefix}/{edge_id}/camera/{camera_id}/status``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from edge.manifest import Manifest
from edge.outbox import enqueue
from edge.topics import Topics
from edge.types import IncidentEvent

__all__ = [
    "CGCS2000",
    "GB2026_REF",
    "IncidentSink",
    "LEGACY_REFS",
    "MessageInvalid",
    "SCHEMA_DIR",
    "SCHEMA_VERSION",
    "SOURCE",
    "build_incident_message",
    "camera_status_message",
    "edge_status_message",
    "encode_message",
    "incident_publications",
    "iso_time",
    "load_schema",
    "validate_message",
]

SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SOURCE = "视频智能发现"
CGCS2000 = "EPSG:4490"
GB2026_REF = "GB/T 47678.5-2026"
LEGACY_REFS = ("CJ/T 214-2007", "GB/T 30428.2-2013")
OPTIONAL_GEO_FIELDS = ("component_id", "component_status", "component_kind", "grid_code", "street_code",
                       "community_code", "grid_codes_near", "location_desc", "gcj02", "projected")

EvidenceMode = Literal["inline", "topic", "none"]
MessageKind = Literal["incident", "edge_status", "camera_status", "reply"]

_SCHEMA_FILES = {"incident": "incident-v1.schema.json", "status": "status-v1.schema.json",
                 "reply": "reply-v1.schema.json"}
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")

_EN = {
    "manhole_missing": "manhole cover missing or open",
    "ponding": "standing water on the road",
    "illegal_structure": "illegal structure",
    "garbage_exposed": "exposed garbage",
    "material_pile": "piled materials",
}


class MessageInvalid(ValueError):
    """A message that does not match its JSON Schema; `errors` lists `path: problem` lines."""

    def __init__(self, kind: str, errors: list[str]):
        self.errors = errors
        super().__init__(f"invalid {kind} message: " + "; ".join(errors))


# ------------------------------------------------------------------------------------------------ time
@lru_cache(maxsize=16)
def _tz(utc_offset: str) -> timezone:
    m = _OFFSET.match(utc_offset)
    if not m:
        raise ValueError(f"utc_offset must look like +08:00, got {utc_offset!r}")
    sign = -1 if m.group(1) == "-" else 1
    return timezone(sign * timedelta(hours=int(m.group(2)), minutes=int(m.group(3))))


def iso_time(ts: float, utc_offset: str = "+08:00") -> str:
    """Epoch (or media) seconds → ISO 8601 with the offset and milliseconds: 2026-07-01T09:30:00.250+08:00."""
    if not math.isfinite(ts):
        raise ValueError(f"timestamp must be finite, got {ts!r}")
    return datetime.fromtimestamp(ts, _tz(utc_offset)).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------------------------- building
def _codes(manifest: Manifest, class_name: str, standard_ref: str) -> tuple[Any, str | None, str | None, str | None]:
    spec = next((c for c in manifest.classes if c.name == class_name), None)
    if spec is None:
        raise ValueError(f"class {class_name!r} is not in model {manifest.name} (classes: {manifest.class_names})")
    if spec.codes is None or spec.incident_type is None:
        raise ValueError(f"class {class_name!r} of model {manifest.name} has no incident type/codes: it is never filed")
    codes = spec.codes
    if standard_ref.startswith("GB/T 47678"):
        chosen = codes.gb2026
    elif standard_ref in LEGACY_REFS:
        chosen = codes.legacy
    else:
        raise ValueError(f"standard_ref {standard_ref!r} is unknown: use {GB2026_REF!r} or one of {LEGACY_REFS}")
    legacy = f"{codes.legacy.major}{codes.legacy.minor}" if codes.legacy else None
    return spec, (chosen.major if chosen else None), (chosen.minor if chosen else None), legacy


def _description(type_name: str, incident_type: str, ev: IncidentEvent) -> str:
    dismissed = ev.event == "resolved" and ev.extra.get("reason") == "dismissed"
    zh_head = {"opened": f"视频智能发现{type_name}", "updated": f"{type_name}仍存在",
               "resolved": f"{type_name}已被中心判为误报" if dismissed else f"{type_name}已消失"}[ev.event]
    en_type = _EN.get(incident_type, incident_type.replace("_", " "))
    en_head = {"opened": f"AI video: {en_type} detected", "updated": f"AI video: {en_type} still present",
               "resolved": f"AI video: {en_type} dismissed by the centre as a false alarm" if dismissed
               else f"AI video: {en_type} no longer seen"}[ev.event]
    zone_zh = f"，区域 {ev.zone}" if ev.zone else ""
    zone_en = f", zone {ev.zone}" if ev.zone else ""
    return (f"{zh_head}（摄像机 {ev.camera_id}{zone_zh}，置信度 {ev.confidence:.2f}）/ "
            f"{en_head} (camera {ev.camera_id}{zone_en}, confidence {ev.confidence:.2f})")


def _box(ev: IncidentEvent) -> dict[str, Any]:
    w, h = (int(v) for v in ev.image_size)
    x0, y0, x1, y1 = (float(v) for v in ev.box_xyxy)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"incident {ev.incident_id}: box {ev.box_xyxy} is not finite")

    def clamp(v: float, hi: int) -> float:
        return round(min(max(v, 0.0), float(hi)), 1)

    return {"x0": clamp(x0, w), "y0": clamp(y0, h), "x1": clamp(x1, w), "y1": clamp(y1, h),
            "image_w": w, "image_h": h}


def _evidence(ev: IncidentEvent, mode: EvidenceMode, topics: Topics) -> dict[str, Any] | None:
    if mode == "none" or ev.evidence_jpeg is None:
        return None
    ev_hash = hashlib.sha256(ev.evidence_jpeg).hexdigest()
    if mode == "inline":
        return {"mime": "image/jpeg", "sha256": ev_hash, "data_b64": base64.b64encode(ev.evidence_jpeg).decode("ascii")}
    if mode == "topic":
        return {"mime": "image/jpeg", "sha256": ev_hash, "topic": topics.evidence(ev.incident_id)}
    raise ValueError(f"evidence_mode must be inline, topic or none, got {mode!r}")


def build_incident_message(
    ev: IncidentEvent,
    *,
    edge_id: str,
    admin_code: str | None,
    utc_offset: str,
    manifest: Manifest,
    evidence_mode: EvidenceMode,
    standard_ref: str = GB2026_REF,
    topic_prefix: str = "cityops",
    crs: str = CGCS2000,
) -> dict[str, Any]:
    """The schema-1 incident message for one event (see the module's table). Pure: same inputs, same dict.

    `topic_prefix` only matters with `evidence_mode="topic"` (the message names the evidence topic).
    Raises ValueError for a class the manifest never files, an unknown `standard_ref` or a bad offset.
    """
    spec, major, minor, legacy = _codes(manifest, ev.class_name, standard_ref)
    kind_codes = ev.extra.get("component_codes")  # a matched inventory cover: file it under its own kind
    if kind_codes:
        legacy = kind_codes.get("legacy") or legacy
        chosen = kind_codes.get("gb2026") if standard_ref.startswith("GB/T 47678") else kind_codes.get("legacy")
        if chosen:
            major, minor = chosen[:2], chosen[2:]
    codes = spec.codes
    assert codes is not None and spec.incident_type is not None  # checked in _codes
    topics = Topics(topic_prefix, edge_id)
    known = ev.lon is not None and ev.lat is not None
    observed = iso_time(ev.ts, utc_offset)
    msg: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "message_id": ev.message_id,
        "incident_id": ev.incident_id,
        "event": ev.event,
        "class": ev.class_name,
        "incident_type": spec.incident_type,
        "standard_ref": standard_ref,
        "case_kind": codes.case_kind,
        "major_code": major,
        "minor_code": minor,
        "type_name": codes.type_name,
        "legacy_code": legacy,
        "source": SOURCE,
        "edge_id": edge_id,
        "camera_id": ev.camera_id,
        "admin_code": admin_code,
        "discovered_at": iso_time(ev.discovered_ts, utc_offset),
        "reported_at": observed,
        "observed_at": observed,
        "confidence": round(float(ev.confidence), 4),
        "box": _box(ev),
        "zone": ev.zone,
        "lon": round(float(ev.lon), 7) if known else None,  # 1e-7° ≈ 1 cm
        "lat": round(float(ev.lat), 7) if known else None,
        "crs": crs,
        "accuracy_m": round(float(ev.accuracy_m), 2) if known and ev.accuracy_m is not None else None,
        "model": {"name": manifest.name, "version": manifest.version, "sha256": manifest.sha256.lower()},
        "needs_review": True,
        "description": _description(codes.type_name, spec.incident_type, ev),
        "evidence": _evidence(ev, evidence_mode, topics),
    }
    for key in OPTIONAL_GEO_FIELDS:
        if ev.extra.get(key) is not None:
            msg[key] = ev.extra[key]
    if ev.event == "resolved" and ev.extra.get("reason"):
        msg["reason"] = ev.extra["reason"]
    return msg


def encode_message(msg: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (Chinese kept readable); NaN/Infinity are refused, they are not JSON."""
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def incident_publications(ev: IncidentEvent, *, topic_prefix: str = "cityops",
                          **kwargs: Any) -> list[tuple[str, bytes]]:
    """(topic, payload) pairs to put in the outbox for one event, in publish order.

    With `evidence_mode="topic"` the JPEG goes first on the evidence topic, so the picture is at the centre
    before the message that names it. Put both in one outbox transaction (`Outbox.put_many`).
    `kwargs` are :func:`build_incident_message`'s.
    """
    msg = build_incident_message(ev, topic_prefix=topic_prefix, **kwargs)
    topics = Topics(topic_prefix, kwargs["edge_id"])
    out: list[tuple[str, bytes]] = []
    if msg["evidence"] is not None and "topic" in msg["evidence"]:
        assert ev.evidence_jpeg is not None
        out.append((msg["evidence"]["topic"], ev.evidence_jpeg))
    out.append((topics.incident(ev.camera_id), encode_message(msg)))
    return out


@dataclass(frozen=True)
class IncidentSink:
    """The incident book's event sink: each event's messages go into the outbox table inside the book's own
    transaction (state and message commit together). Fields are :func:`build_incident_message`'s arguments.
    A class the manifest never files raises, which rolls the book's transaction back: loud, not lost."""

    edge_id: str
    admin_code: str | None
    utc_offset: str
    manifest: Manifest
    evidence_mode: EvidenceMode
    standard_ref: str = GB2026_REF
    topic_prefix: str = "cityops"

    def publications(self, events: list[IncidentEvent]) -> list[tuple[str, bytes]]:
        """(topic, payload) of every message the events make, in publishing order."""
        items: list[tuple[str, bytes]] = []
        for ev in events:
            items += incident_publications(
                ev, topic_prefix=self.topic_prefix, edge_id=self.edge_id, admin_code=self.admin_code,
                utc_offset=self.utc_offset, manifest=self.manifest, evidence_mode=self.evidence_mode,
                standard_ref=self.standard_ref)
        return items

    def write_events(self, conn: sqlite3.Connection, events: list[IncidentEvent]) -> None:
        enqueue(conn, self.publications(events))


# ----------------------------------------------------------------------------------------------- status
def edge_status_message(edge_id: str, state: Literal["online", "offline"], *, ts: float | None = None,
                        utc_offset: str = "+08:00", reason: str | None = None) -> dict[str, Any]:
    """Retained edge status. `ts` None leaves out `at` (the LWT: the broker sends it at an unknown later time)."""
    msg: dict[str, Any] = {"schema": SCHEMA_VERSION, "state": state, "edge_id": edge_id}
    if ts is not None:
        msg["at"] = iso_time(ts, utc_offset)
    if reason:
        msg["reason"] = reason
    return msg


def camera_status_message(edge_id: str, camera_id: str, state: Literal["online", "degraded", "offline", "disabled"],
                          *, ts: float | None = None, utc_offset: str = "+08:00", reason: str | None = None,
                          health: dict[str, Any] | None = None) -> dict[str, Any]:
    """Retained camera status (`reason`: e.g. "read stalled", never a URL with credentials; `health`: the link's
    reconnects and stalls in the last hour, age of the last frame, decode mode)."""
    msg: dict[str, Any] = {"schema": SCHEMA_VERSION, "state": state, "edge_id": edge_id, "camera_id": camera_id}
    if ts is not None:
        msg["at"] = iso_time(ts, utc_offset)
    if reason:
        msg["reason"] = reason[:200]
    if health is not None:
        msg["health"] = health
    return msg


# ------------------------------------------------------------------------------------------- validation
def load_schema(name: Literal["incident", "status", "reply"]) -> dict[str, Any]:
    """The shipped JSON Schema (draft 2020-12) by name."""
    return json.loads((SCHEMA_DIR / _SCHEMA_FILES[name]).read_text(encoding="utf-8"))


@lru_cache(maxsize=4)
def _validator(name: str) -> Any:
    try:
        import jsonschema
    except ImportError:  # a dev/test dependency, not a runtime one
        raise ImportError("validate_message needs the 'jsonschema' package (pip install -e '.[dev]')") from None
    schema = load_schema(name)  # type: ignore[arg-type]
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _kind_of(msg: Any) -> MessageKind:
    if isinstance(msg, dict) and "request_id" in msg:
        return "reply"
    if isinstance(msg, dict) and "state" in msg and "incident_id" not in msg:
        return "camera_status" if "camera_id" in msg else "edge_status"
    return "incident"


def validate_message(msg: Any, kind: MessageKind | None = None) -> None:
    """Raise MessageInvalid unless `msg` (a dict, or the JSON bytes/str on the wire) matches its schema.

    `kind` defaults to what the message looks like: a `state` key means a status message, a `request_id` a
    reply to a command (edge/commands.py).
    """
    if isinstance(msg, (bytes, str)):
        msg = json.loads(msg)
    kind = kind or _kind_of(msg)
    validator = _validator(kind if kind in ("incident", "reply") else "status")
    errors = sorted(validator.iter_errors(msg), key=lambda e: [str(p) for p in e.absolute_path])
    if kind == "camera_status" and isinstance(msg, dict) and "camera_id" not in msg:
        raise MessageInvalid(kind, ["camera_id: required for a camera status"])
    if kind == "edge_status" and isinstance(msg, dict) and "camera_id" in msg:
        raise MessageInvalid(kind, ["camera_id: not allowed in an edge status"])
    if errors:
        raise MessageInvalid(kind, [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
                                    for e in errors])
