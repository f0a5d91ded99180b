"""Incident and status messages against the shipped JSON Schemas, and the topic tree.

Every message is checked twice: with `jsonschema` (edge.messages.validate_message) where it is installed,
and always with the keyword subset in schema_subset.py, so the schema tests never silently vanish.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import json
import typing
from contextlib import nullcontext as does_not_raise
from typing import Any

import pytest

from edge.manifest import IncidentType
from edge.messages import (
    GB2026_REF,
    build_incident_message,
    camera_status_message,
    edge_status_message,
    encode_message,
    incident_publications,
    iso_time,
    load_schema,
)
from edge.topics import Topics, TopicError
from incident_factory import FAKE_JPEG, T0, make_event, make_manifest
from schema_subset import ANNOTATIONS, CHECKED, errors, keywords

MANIFEST = make_manifest()
FILED = [c.name for c in MANIFEST.classes if c.codes is not None]
SITE = dict(edge_id="edge-zjg-01", admin_code="320582", utc_offset="+08:00", manifest=MANIFEST)


def build(ev: Any = None, **kw: Any) -> dict[str, Any]:
    args = {**SITE, "evidence_mode": "inline", **kw}
    return build_incident_message(ev if ev is not None else make_event(), **args)


def problems(msg: Any, schema: str = "incident") -> list[str]:
    """Schema errors of `msg` after a JSON round trip (what goes on the wire), by both checkers."""
    wire = json.loads(encode_message(msg)) if isinstance(msg, dict) else msg
    found = errors(load_schema(schema), wire)
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        return found
    from edge.messages import MessageInvalid, validate_message
    try:
        validate_message(wire, kind=None if schema == "incident" else
                         ("camera_status" if "camera_id" in wire else "edge_status"))
        js_ok = True
    except MessageInvalid:
        js_ok = False
    assert js_ok == (not found), f"jsonschema says {'valid' if js_ok else 'invalid'}, subset says {found}"
    return found


# ------------------------------------------------------------------------------------------- valid
@pytest.mark.parametrize("class_name", FILED)
@pytest.mark.parametrize("mode", ["inline", "topic", "none"])
@pytest.mark.parametrize("standard_ref", [GB2026_REF, "CJ/T 214-2007"])
@pytest.mark.parametrize("event", ["opened", "updated", "resolved"])
def test_every_message_we_build_validates(class_name: str, mode: str, standard_ref: str, event: str) -> None:
    msg = build(make_event(4, class_name=class_name, event=event), evidence_mode=mode, standard_ref=standard_ref)
    assert problems(msg) == []


@pytest.mark.parametrize("kw", [
    {"located": False},
    {"jpeg": None},
    {"zone": None},
    {"accuracy_m": None},
    {"extra": {"grid_code": "320582001002003", "component_id": "3205820102048188", "component_status": "丢失",
               "location_desc": "杨舍镇 人民路 12 号", "grid_codes_near": ["320582001002004"]}},
], ids=["no-geo", "no-jpeg", "no-zone", "no-accuracy", "geo-extras"])
def test_optional_parts_validate(kw: dict[str, Any]) -> None:
    msg = build(make_event(1, **kw), admin_code=None)
    assert problems(msg) == []


def test_example_message_fields() -> None:
    ev = make_event(3)
    msg = build(ev)
    assert msg["schema"] == 1
    assert (msg["class"], msg["incident_type"], msg["case_kind"], msg["type_name"]) == \
        ("garbage_pile", "garbage_exposed", "事件", "暴露垃圾")
    assert (msg["standard_ref"], msg["major_code"], msg["minor_code"], msg["legacy_code"]) == \
        ("GB/T 47678.5-2026", "06", "010", "0102")
    assert msg["source"] == "视频智能发现" and msg["needs_review"] is True
    assert msg["observed_at"] == "2026-07-01T09:10:06.000+08:00"  # T0 + 3 * 2 s, site offset
    assert msg["reported_at"] == msg["observed_at"]  # frame time, never the wall clock
    assert msg["discovered_at"] == "2026-07-01T09:10:06.000+08:00"
    assert msg["box"] == {"x0": 812.2, "y0": 604.0, "x1": 1010.5, "y1": 760.8, "image_w": 1920, "image_h": 1080}
    assert (msg["lon"], msg["lat"], msg["crs"], msg["accuracy_m"]) == (120.585321, 31.298945, "EPSG:4490", 1.8)
    assert msg["model"] == {"name": "cityops_det_n416", "version": "2026.7.1", "sha256": "ab" * 32}
    assert "暴露垃圾" in msg["description"] and "exposed garbage" in msg["description"]
    ev_block = msg["evidence"]
    assert ev_block["sha256"] == hashlib.sha256(FAKE_JPEG).hexdigest()
    assert base64.b64decode(ev_block["data_b64"]) == FAKE_JPEG


def test_legacy_standard_and_missing_codes() -> None:
    legacy = build(make_event(class_name="manhole_open"), standard_ref="GB/T 30428.2-2013")
    assert (legacy["major_code"], legacy["minor_code"], legacy["case_kind"]) == ("01", "14", "部件")
    ponding = build(make_event(class_name="ponding"))  # the 2026 list has no ponding code
    assert (ponding["major_code"], ponding["minor_code"], ponding["legacy_code"]) == (None, None, "0406")
    assert problems(ponding) == []


def test_unknown_location_is_null_not_omitted() -> None:
    msg = build(make_event(located=False))
    assert (msg["lon"], msg["lat"], msg["accuracy_m"], msg["crs"]) == (None, None, None, "EPSG:4490")


def test_build_is_deterministic() -> None:
    """Same event, same bytes: replays reproduce messages exactly (no wall clock inside)."""
    assert encode_message(build(make_event(7))) == encode_message(build(make_event(7)))


def test_media_time_and_offsets() -> None:
    assert iso_time(12.25, "+08:00") == "1970-01-01T08:00:12.250+08:00"
    assert iso_time(T0, "+00:00") == "2026-07-01T01:10:00.000+00:00"
    assert iso_time(T0, "-03:30") == "2026-06-30T21:40:00.000-03:30"
    with pytest.raises(ValueError, match="utc_offset"):
        iso_time(T0, "UTC+8")


@pytest.mark.parametrize("kw, expectation", [
    ({"ev": make_event(class_name="manhole_cover")}, pytest.raises(ValueError, match="never filed")),
    ({"ev": make_event(class_name="dog")}, pytest.raises(ValueError, match="not in model")),
    ({"standard_ref": "ISO 9999"}, pytest.raises(ValueError, match="standard_ref")),
    ({"evidence_mode": "sideways"}, pytest.raises(ValueError, match="evidence_mode")),
    ({"ev": make_event(confidence=float("nan"))}, does_not_raise()),
], ids=["no-codes", "unknown-class", "bad-standard", "bad-evidence-mode", "nan"])
def test_build_errors(kw: dict[str, Any], expectation: Any) -> None:
    ev = kw.pop("ev", None)
    with expectation:
        build(ev, **kw)


def test_nan_is_refused_on_the_wire() -> None:
    with pytest.raises(ValueError):
        encode_message(build(make_event(confidence=float("nan"))))


def test_evidence_on_companion_topic_goes_first() -> None:
    ev = make_event(2)
    pubs = incident_publications(ev, topic_prefix="city/zjg", evidence_mode="topic", **SITE)
    assert [t for t, _ in pubs] == ["city/zjg/edge-zjg-01/evidence/inc-00000", "city/zjg/edge-zjg-01/incident/cam01"]
    assert pubs[0][1] == FAKE_JPEG
    msg = json.loads(pubs[1][1])
    assert msg["evidence"] == {"mime": "image/jpeg", "sha256": hashlib.sha256(FAKE_JPEG).hexdigest(),
                               "topic": pubs[0][0]}
    inline = incident_publications(ev, evidence_mode="inline", **SITE)
    assert [t for t, _ in inline] == ["cityops/edge-zjg-01/incident/cam01"]
    assert json.loads(inline[0][1])["description"].startswith("视频智能发现")  # UTF-8, not \u escapes


# --------------------------------------------------------------------------------------- malformed
def _mutate(path: str, value: Any = "__delete__") -> dict[str, Any]:
    msg = copy.deepcopy(build())
    *parents, last = path.split(".")
    node = msg
    for p in parents:
        node = node[p]
    if value == "__delete__":
        del node[last]
    else:
        node[last] = value
    return msg


@pytest.mark.parametrize("msg", [
    pytest.param(_mutate("message_id"), id="missing-message_id"),
    pytest.param(_mutate("evidence"), id="missing-evidence-key"),
    pytest.param(_mutate("schema", 2), id="schema-2"),
    pytest.param(_mutate("schema", True), id="schema-true"),
    pytest.param(_mutate("event", "closed"), id="bad-event"),
    pytest.param(_mutate("major_code", "6"), id="one-digit-major"),
    pytest.param(_mutate("minor_code", "0100"), id="four-digit-minor"),
    pytest.param(_mutate("legacy_code", 102), id="legacy-code-number"),
    pytest.param(_mutate("admin_code", "32058"), id="short-admin-code"),
    pytest.param(_mutate("observed_at", "2026-07-01T09:10:06"), id="time-without-offset"),
    pytest.param(_mutate("reported_at", 1782868206.0), id="time-as-epoch"),
    pytest.param(_mutate("confidence", 1.5), id="confidence-above-1"),
    pytest.param(_mutate("box.image_w", 0), id="zero-width"),
    pytest.param(_mutate("box.x0", -3), id="negative-x"),
    pytest.param(_mutate("box.extra", 1), id="box-extra-key"),
    pytest.param(_mutate("lat", None), id="lon-without-lat"),
    pytest.param(_mutate("lon", 200.0), id="lon-out-of-range"),
    pytest.param(_mutate("crs", "WGS84"), id="crs-not-epsg"),
    pytest.param(_mutate("needs_review", "yes"), id="needs-review-string"),
    pytest.param(_mutate("model.sha256", "xyz"), id="bad-model-hash"),
    pytest.param(_mutate("evidence.data_b64"), id="inline-without-data"),
    pytest.param(_mutate("evidence.topic", "a/b"), id="inline-and-topic"),
    pytest.param(_mutate("evidence.mime", "image/png"), id="png"),
    pytest.param(_mutate("source", "人工上报"), id="other-source"),
    pytest.param(_mutate("grid_code", "12345"), id="short-grid-code"),
    pytest.param(_mutate("grid_codes_near", []), id="empty-grid-codes-near"),
    pytest.param(_mutate("grid_codes_near", ["320582001002004", "12345"]), id="short-grid-code-near"),
    pytest.param(_mutate("grid_codes_near", ["320582001002004"] * 2), id="repeated-grid-code-near"),
    pytest.param(_mutate("grid_codes_near", "320582001002004"), id="grid-code-near-not-a-list"),
    pytest.param(_mutate("case_kind", "component"), id="case-kind-english"),
    pytest.param(_mutate("surprise", 1), id="unknown-field"),
])
def test_malformed_incident_is_rejected(msg: dict[str, Any]) -> None:
    assert problems(msg) != []


# ------------------------------------------------------------------------------------------ status
_HEALTH = {"reconnects_1h": 1, "stalls_1h": 2, "last_frame_age_s": 0.04, "scans_1h": 1790, "decode": "keyframes",
           "gop_s": 2.0}


@pytest.mark.parametrize("msg, ok", [
    (edge_status_message("edge-1", "online", ts=T0), True),
    (edge_status_message("edge-1", "offline", reason="connection lost"), True),  # the LWT: no time
    (camera_status_message("edge-1", "cam01", "offline", ts=T0, reason="read stalled"), True),
    (camera_status_message("edge-1", "cam01", "disabled", ts=T0), True),
    (camera_status_message("edge-1", "cam01", "degraded", ts=T0, reason="link broke 1 times", health=_HEALTH), True),
    (camera_status_message("edge-1", "cam01", "online", ts=T0, health={**_HEALTH, "decode": None, "gop_s": None}), True),
    (camera_status_message("edge-1", "cam01", "online", ts=T0, health={"stalls_1h": 0}), False),  # counts missing
    (camera_status_message("edge-1", "cam01", "online", ts=T0, health={**_HEALTH, "stalls_1h": -1}), False),
    ({"schema": 1, "state": "degraded", "edge_id": "edge-1"}, False),  # only a camera is degraded
    ({"schema": 1, "state": "online", "edge_id": "edge-1", "health": _HEALTH}, False),
    ({"schema": 1, "state": "disabled", "edge_id": "edge-1"}, False),  # only a camera can be disabled
    ({"schema": 1, "state": "up", "edge_id": "edge-1"}, False),
    ({"schema": 1, "state": "online"}, False),
    ({"schema": 1, "state": "online", "edge_id": "edge-1", "at": "yesterday"}, False),
    ({"schema": 1, "state": "online", "edge_id": "edge-1", "password": "x"}, False),
])
def test_status_messages(msg: dict[str, Any], ok: bool) -> None:
    assert (problems(msg, "status") == []) == ok


def test_status_time_uses_offset() -> None:
    assert edge_status_message("e", "online", ts=T0)["at"] == "2026-07-01T09:10:00.000+08:00"


# ------------------------------------------------------------------------------------- the schemas
@pytest.mark.parametrize("name", ["incident", "status"])
def test_schema_uses_only_checked_keywords(name: str) -> None:
    assert keywords(load_schema(name)) - CHECKED - ANNOTATIONS == set()


@pytest.mark.parametrize("name", ["incident", "status"])
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_and_builder_agree_on_fields() -> None:
    schema = load_schema("incident")
    msg = build()
    assert set(schema["required"]) == set(msg)  # every field always present (null when unknown)
    assert set(schema["properties"]["incident_type"]["enum"]) == set(typing.get_args(IncidentType))


# ------------------------------------------------------------------------------------------ topics
def test_topic_tree() -> None:
    t = Topics("city/zjg", "edge-01")
    assert t.status == "city/zjg/edge-01/status"
    assert t.camera_status("cam01") == "city/zjg/edge-01/camera/cam01/status"
    assert t.incident("cam01") == "city/zjg/edge-01/incident/cam01"
    assert t.evidence("inc-7") == "city/zjg/edge-01/evidence/inc-7"
    assert t.cmd_filter == "city/zjg/edge-01/cmd/#"
    assert t.cmd("dismiss") == "city/zjg/edge-01/cmd/dismiss"
    assert t.command_of(t.cmd("dismiss")) == "dismiss"
    assert t.command_of("city/zjg/edge-02/cmd/dismiss") is None
    assert t.reply == "city/zjg/edge-01/reply"


@pytest.mark.parametrize("prefix, edge_id, level", [
    ("cityops", "edge/1", "cam"),
    ("cityops", "edge+", "cam"),
    ("city/#", "edge", "cam"),
    ("/cityops", "edge", "cam"),
    ("cityops", "edge", "cam/1"),
    ("cityops", "edge", ""),
    ("cityops", "edge", "c#"),
])
def test_topic_levels_are_checked(prefix: str, edge_id: str, level: str) -> None:
    with pytest.raises(TopicError):
        Topics(prefix, edge_id).incident(level)


def test_incident_sink_writes_in_the_callers_transaction(tmp_path: Any) -> None:
    import sqlite3

    from edge.messages import IncidentSink
    from edge.outbox import Outbox

    sink = IncidentSink(evidence_mode="topic", **SITE)
    ob = Outbox(tmp_path / "state.db")
    conn = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    sink.write_events(conn, [make_event(0), make_event(1, event="updated")])
    conn.execute("COMMIT")
    rows = ob.next_batch(10)
    assert [r.topic.split("/")[2] for r in rows] == ["evidence", "incident", "evidence", "incident"]
    assert [json.loads(r.payload)["event"] for r in rows[1::2]] == ["opened", "updated"]
    assert all(problems(json.loads(r.payload)) == [] for r in rows[1::2])
    conn.close()
    ob.close()
