"""The reference intake without a broker: records, the SQLite store, case merging, exports and the CLI's
error paths. Messages are the real schema-1 messages the edge builds (tests/incident_factory.py)."""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from edge.geo import local_to_lonlat
from edge.intake import (
    EvidenceRecord,
    IncidentRecord,
    InvalidRecord,
    SQLiteStore,
    Store,
    StoreError,
    cases_csv,
    cases_geojson,
    parse_message,
    subscriptions,
    write_csv,
    write_geojson,
)
from edge.intake.cli import main as intake_main
from edge.intake.cli import parse_broker
from edge.messages import encode_message, incident_publications
from fixtures_mqtt import free_port
from incident_factory import FAKE_JPEG, make_event, make_manifest

pytest.importorskip("jsonschema")

MANIFEST = make_manifest()
ANCHOR = {"lon": 120.585321, "lat": 31.298945}


def at(x: float, y: float) -> dict[str, float]:
    """lon/lat of a point x metres east and y north of the anchor."""
    lon, lat = local_to_lonlat(x, y, ANCHOR)
    return {"lon": round(float(lon), 7), "lat": round(float(lat), 7)}


def pubs(ev: Any, edge: str = "edge-a", mode: str = "inline") -> list[tuple[str, bytes]]:
    return incident_publications(ev, edge_id=edge, admin_code="320582", utc_offset="+08:00", manifest=MANIFEST,
                                 evidence_mode=mode)  # type: ignore[arg-type]


def recs(ev: Any, edge: str = "edge-a", mode: str = "inline") -> list[Any]:
    return [parse_message(t, p) for t, p in pubs(ev, edge, mode)]


def event(i: int, kind: str = "opened", *, incident: str = "inc-1", x: float = 0.0, y: float = 0.0,
          **kw: Any) -> Any:
    kw = {"incident_id": incident, **at(x, y), **kw}
    return make_event(i, event=kind, **kw)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = SQLiteStore(tmp_path / "intake.sqlite", merge_radius_m=10.0)
    yield s
    s.close()


# ------------------------------------------------------------------------------------------ records
def test_parse_classifies_incident_evidence_and_topic_problems() -> None:
    ev = make_event(1)
    (rec,) = recs(ev)
    assert isinstance(rec, IncidentRecord)
    assert (rec.message_id, rec.edge_id, rec.camera_id, rec.event) == (ev.message_id, "edge-a", "cam01", "opened")
    assert rec.evidence_state == "ok" and rec.evidence_data == FAKE_JPEG
    assert "data_b64" not in rec.message["evidence"]  # the picture is stored once, in the evidence table

    (pic, msg) = recs(ev, mode="topic")
    assert isinstance(pic, EvidenceRecord) and pic.sha256 == hashlib.sha256(FAKE_JPEG).hexdigest()
    assert (pic.edge_id, pic.incident_id) == ("edge-a", ev.incident_id)
    assert isinstance(msg, IncidentRecord) and msg.evidence_state == "pending"

    for topic in ("cityops/edge-a/status", "other/edge-a/incident/cam01", "cityops/edge-a/incident/cam01/x"):
        r = parse_message(topic, b"{}")
        assert isinstance(r, InvalidRecord) and "unexpected topic" in r.reason
    assert subscriptions(None) == ["cityops/+/incident/#", "cityops/+/evidence/#"]
    assert subscriptions("g1") == ["$share/g1/cityops/+/incident/#", "$share/g1/cityops/+/evidence/#"]
    with pytest.raises(ValueError):
        subscriptions("a/b")


@pytest.mark.parametrize("broker, want", [("mq.city:1883", ("mq.city", 1883)), ("10.0.0.5", ("10.0.0.5", 1883)),
                                          ("[::1]:8883", ("::1", 8883))])
def test_parse_broker(broker: str, want: tuple[str, int]) -> None:
    assert parse_broker(broker) == want


@pytest.mark.parametrize("bad", ["", "host:", "host:0", "host:99999", "a:b:c", "host:x"])
def test_parse_broker_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="--broker"):
        parse_broker(bad)


# --------------------------------------------------------------------------------------- idempotency
def test_each_message_is_stored_once_and_repeats_are_counted(store: Store) -> None:
    (r,) = recs(make_event(1))
    assert store.ingest([r]) == ["stored"]
    assert store.ingest([r, r]) == ["duplicate", "duplicate"]  # a repeat within one batch too
    assert store.ingest([r]) == ["duplicate"]
    c = store.counts()
    assert (c["events"], c["duplicates"], c["incidents"], c["evidence"]) == (1, 3, 1, 1)
    (row,) = store.events()
    assert row.message_id == "m-000001" and row.duplicates == 3
    assert store.incidents()[0].events == 1  # a repeat is not a second event of the incident


# ------------------------------------------------------------------------------------ event order
def test_late_older_event_never_reopens_a_resolved_incident(store: Store) -> None:
    opened, updated, resolved = (recs(event(i, k))[0] for i, k in ((0, "opened"), (1, "updated"), (2, "resolved")))
    store.ingest([opened])
    store.ingest([resolved])
    (inc,) = store.incidents()
    assert (inc.state, inc.last_event) == ("resolved", "resolved")
    store.ingest([updated])  # re-sent / delayed: arrives after the resolution
    (inc,) = store.incidents()
    assert (inc.state, inc.last_event, inc.last_message_id, inc.events) == ("resolved", "resolved", "m-000002", 3)
    assert [e.event for e in store.events()] == ["opened", "resolved", "updated"]  # arrival order kept
    (case,) = store.cases()
    assert case.state == "resolved" and case.open_members == 0


def test_out_of_order_arrival_ends_in_the_same_state(store: Store, tmp_path: Path) -> None:
    msgs = [recs(event(i, k))[0] for i, k in ((0, "opened"), (1, "updated"), (2, "updated"), (3, "resolved"))]
    store.ingest(msgs[::-1])  # resolved first, opened last
    (inc,) = store.incidents()
    assert (inc.state, inc.last_message_id, inc.opened_at, inc.resolved_at) == \
        ("resolved", "m-000003", msgs[0].observed_at, msgs[3].observed_at)
    other = SQLiteStore(tmp_path / "b.sqlite")
    other.ingest(msgs)
    a, b = store.incidents()[0], other.incidents()[0]
    assert (a.state, a.last_message_id, a.events) == (b.state, b.last_message_id, b.events)
    other.close()


def test_later_update_wins_by_frame_time_not_arrival(store: Store) -> None:
    opened = recs(event(0, "opened"))[0]
    u1 = recs(event(1, "updated", confidence=0.5))[0]
    u2 = recs(event(2, "updated", confidence=0.6, **at(1.0, 0.0)))[0]
    store.ingest([opened, u2, u1])
    (inc,) = store.incidents()
    assert (inc.state, inc.last_message_id) == ("open", "m-000002")
    assert (inc.lon, inc.lat) == (at(1.0, 0.0)["lon"], at(1.0, 0.0)["lat"])  # the position of the latest event
    assert inc.confidence == pytest.approx(0.8731)  # the highest seen


# ------------------------------------------------------------------------------------------ invalid
def test_invalid_messages_are_kept_aside_with_the_reason(store: Store) -> None:
    good_topic, good = pubs(make_event(1))[0]
    msg = json.loads(good)
    missing = {k: v for k, v in msg.items() if k != "incident_type"}
    wrong_edge = {**msg, "edge_id": "edge-b"}
    bad_event = {**msg, "event": "reopened"}
    cases = [
        (good_topic, b"\xff\xfe not utf-8", "not UTF-8"),
        (good_topic, b"{not json", "not JSON"),
        (good_topic, b"[1, 2]", "not an object"),
        (good_topic, encode_message(missing), "incident_type"),
        (good_topic, encode_message(bad_event), "event"),
        (good_topic, encode_message(wrong_edge), "does not match the topic's edge"),
        ("cityops/edge-a/incident/cam99", good, "does not match the topic's camera"),
        ("cityops/edge-a/evidence/inc-1", b"GIF89a....", "not a JPEG"),
        ("cityops/edge-a/cmd/dismiss", good, "unexpected topic"),
    ]
    records = [parse_message(t, p) for t, p, _ in cases]
    assert all(isinstance(r, InvalidRecord) for r in records)
    assert store.ingest(records) == ["invalid"] * len(cases)
    assert store.ingest([records[0]]) == ["invalid"]  # the same bad message again: counted, not duplicated
    rows = store.invalid()
    assert len(rows) == len(cases)
    for row, (topic, payload, why) in zip(rows, cases):
        assert row.topic == topic and row.payload == payload and why in row.reason, (row.reason, why)
    assert rows[0].seen == 2
    c = store.counts()
    assert (c["events"], c["invalid"], c["invalid_seen"]) == (0, len(cases), len(cases) + 1)
    assert store.ingest([parse_message(good_topic, good)]) == ["stored"]  # and the intake goes on


def test_a_message_the_store_cannot_take_becomes_invalid_and_the_batch_still_commits(store: Store) -> None:
    good = recs(make_event(1))[0]
    broken = recs(make_event(4, incident_id="inc-x"))[0]
    broken = IncidentRecord(**{**broken.__dict__, "message": {"no": "codes"}})  # the store needs incident_type
    assert store.ingest([good, broken, recs(make_event(7, incident_id="inc-y"))[0]]) == ["stored", "invalid", "stored"]
    assert [e.message_id for e in store.events()] == ["m-000001", "m-000007"]
    (row,) = store.invalid()
    assert "could not be stored" in row.reason and row.payload == broken.raw


# ------------------------------------------------------------------------------------------ evidence
def test_inline_evidence_is_decoded_and_its_hash_checked(store: Store) -> None:
    topic, payload = pubs(make_event(1))[0]
    store.ingest([parse_message(topic, payload)])
    sha = hashlib.sha256(FAKE_JPEG).hexdigest()
    assert store.evidence(sha) == FAKE_JPEG
    assert store.events()[0].evidence_state == "ok" and store.incidents()[0].evidence_sha256 == sha

    msg = json.loads(payload)
    tampered = FAKE_JPEG[:-3] + b"\x00\xff\xd9"
    msg.update(message_id="m-tampered", event="updated", observed_at="2026-07-01T09:10:05.000+08:00",
               reported_at="2026-07-01T09:10:05.000+08:00")
    msg["evidence"]["data_b64"] = base64.b64encode(tampered).decode()
    assert store.ingest([parse_message(topic, encode_message(msg))]) == ["stored"]  # the incident still counts
    row = store.events()[-1]
    assert (row.message_id, row.evidence_state) == ("m-tampered", "mismatch")
    assert store.evidence(hashlib.sha256(tampered).hexdigest()) is None  # the bad picture is not kept
    assert store.incidents()[0].evidence_sha256 == sha  # nor does it replace the good one
    assert store.counts()["evidence_bad"] == 1


@pytest.mark.parametrize("picture_first", [True, False])
def test_evidence_topic_in_either_order(store: Store, picture_first: bool) -> None:
    pic, msg = recs(make_event(1, jpeg=FAKE_JPEG + b"1"), mode="topic")
    pic = parse_message(pic.topic, FAKE_JPEG + b"1")
    first, second = (pic, msg) if picture_first else (msg, pic)
    store.ingest([first])
    if not picture_first:
        assert store.events()[0].evidence_state == "pending"
        assert store.counts()["evidence_pending"] == 1
    assert store.ingest([second]) == (["stored"] if picture_first else ["evidence"])
    assert store.ingest([pic]) == ["evidence_duplicate"]
    (row,) = store.events()
    assert row.evidence_state == "ok" and store.evidence(row.evidence_sha256) == FAKE_JPEG + b"1"
    assert store.incidents()[0].evidence_sha256 == row.evidence_sha256
    assert store.counts()["evidence_pending"] == 0


# ------------------------------------------------------------------------------------------- cases
def test_incidents_of_one_class_from_two_edges_merge_within_the_radius(store: Store) -> None:
    a = recs(event(0, incident="a-1", x=0, y=0), edge="edge-a")
    b = recs(event(1, incident="b-1", x=6, y=5, camera_id="camB"), edge="edge-b")  # 7.8 m away: same case
    c = recs(event(2, incident="c-1", x=25, y=0), edge="edge-c")  # 25 m: another case
    d = recs(event(3, incident="d-1", x=1, y=0, class_name="material_pile"), edge="edge-b")  # another class
    e = recs(event(4, incident="e-1", x=12, y=0), edge="edge-c")  # 12 m from a but 8.9 m from the a+b centroid
    store.ingest(a + b + c + d + e)
    cases = {c.case_id: c for c in store.cases()}
    assert len(cases) == 3
    by_inc = {i.incident_id: i.case_id for i in store.incidents()}
    assert by_inc["a-1"] == by_inc["b-1"] == by_inc["e-1"]
    assert len({by_inc["a-1"], by_inc["c-1"], by_inc["d-1"]}) == 3
    merged = cases[by_inc["a-1"]]
    assert merged.members == 3 and merged.open_members == 3 and merged.state == "open"
    assert merged.edges == ("edge-a", "edge-b", "edge-c")
    assert set(merged.incidents) == {"edge-a/a-1", "edge-b/b-1", "edge-c/e-1"}
    assert merged.cameras == ("edge-a/cam01", "edge-b/camB", "edge-c/cam01")
    centre = at(6, 5 / 3)  # the mean of the three first positions
    assert merged.lon == pytest.approx(centre["lon"], abs=2e-7) and merged.lat == pytest.approx(centre["lat"], abs=2e-7)
    assert cases[by_inc["d-1"]].class_name == "material_pile"


def test_a_case_resolves_with_its_last_member_and_is_never_reopened(store: Store) -> None:
    store.ingest(recs(event(0, incident="a-1"), edge="edge-a") + recs(event(1, incident="b-1", x=3), edge="edge-b"))
    store.ingest(recs(event(2, "resolved", incident="a-1"), edge="edge-a"))
    (case,) = store.cases()
    assert (case.state, case.open_members) == ("open", 1)
    store.ingest(recs(event(3, "resolved", incident="b-1", x=3), edge="edge-b"))
    (case,) = store.cases()
    assert (case.state, case.open_members) == ("resolved", 0) and case.resolved_at is not None
    store.ingest(recs(event(4, incident="a-2", x=1), edge="edge-a"))  # the garbage is back: a new case
    assert [(c.members, c.state) for c in store.cases()] == [(2, "resolved"), (1, "open")]
    assert [c.incidents for c in store.cases("open")] == [("edge-a/a-2",)]


def test_incidents_without_a_position_never_merge(store: Store) -> None:
    store.ingest(recs(make_event(0, incident_id="n-1", located=False), edge="edge-a")
                 + recs(make_event(1, incident_id="n-2", located=False), edge="edge-b"))
    assert [(c.members, c.lon, c.lat) for c in store.cases()] == [(1, None, None), (1, None, None)]


# ------------------------------------------------------------------------------------------- export
def _three_cases(store: Store) -> None:
    store.ingest(recs(event(0, incident="a-1"), edge="edge-a") + recs(event(1, incident="b-1", x=4), edge="edge-b")
                 + recs(event(2, incident="c-1", x=100), edge="edge-c")
                 + recs(make_event(3, incident_id="n-1", located=False), edge="edge-c"))
    store.ingest(recs(event(4, "resolved", incident="c-1", x=100), edge="edge-c"))


def test_geojson_export_has_the_open_cases_as_points(store: Store, tmp_path: Path) -> None:
    _three_cases(store)
    fc = cases_geojson(store)
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 2  # the resolved case is left out
    merged, unlocated = fc["features"]
    assert merged["type"] == "Feature" and merged["geometry"]["type"] == "Point"
    lon, lat = merged["geometry"]["coordinates"]
    assert lon == pytest.approx(at(2, 0)["lon"], abs=2e-7) and lat == pytest.approx(at(2, 0)["lat"], abs=2e-7)
    p = merged["properties"]
    assert (p["class"], p["state"], p["members"], p["edges"]) == ("garbage_pile", "open", 2, ["edge-a", "edge-b"])
    assert p["incidents"] == ["edge-a/a-1", "edge-b/b-1"]
    assert p["type_name"] and p["legacy_code"] and p["evidence_sha256"] == hashlib.sha256(FAKE_JPEG).hexdigest()
    assert p["first_discovered_at"].endswith("+08:00") and p["confidence"] == pytest.approx(0.8731)
    assert unlocated["geometry"] is None and unlocated["properties"]["incidents"] == ["edge-c/n-1"]
    assert len(cases_geojson(store, state=None)["features"]) == 3

    out = tmp_path / "out" / "cases.geojson"
    assert write_geojson(store, out) == 2
    assert json.loads(out.read_text(encoding="utf-8")) == fc
    assert not [f for f in out.parent.iterdir() if f.name != "cases.geojson"]  # no temp file left behind


def test_csv_export_has_one_row_per_open_case(store: Store, tmp_path: Path) -> None:
    _three_cases(store)
    rows = list(csv.DictReader(io.StringIO(cases_csv(store))))
    assert len(rows) == 2
    assert rows[0]["class"] == "garbage_pile" and rows[0]["members"] == "2"
    assert rows[0]["edges"] == "edge-a;edge-b" and rows[0]["incidents"] == "edge-a/a-1;edge-b/b-1"
    assert float(rows[0]["lon"]) == pytest.approx(at(2, 0)["lon"], abs=2e-7)
    assert rows[1]["lon"] == "" and rows[1]["lat"] == ""
    out = tmp_path / "cases.csv"
    assert write_csv(store, out) == 2
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM: spreadsheets read the Chinese type names right
    assert list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))) == rows


# ---------------------------------------------------------------------------------------- storage
def test_sqlite_store_uses_wal_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    s = SQLiteStore(path)
    assert s.journal_mode == "wal"
    s.ingest(recs(make_event(1)))
    s.close()
    s = SQLiteStore(path)
    assert s.ingest(recs(make_event(1))) == ["duplicate"]  # the dedup key survives a restart
    assert s.counts()["events"] == 1
    s.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unusable_database_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the intake database"):
        SQLiteStore(blocker / "intake.sqlite")
    notdb = tmp_path / "not.sqlite"
    notdb.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not.sqlite"):
        SQLiteStore(notdb)
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / "ok.sqlite", merge_radius_m=0)


# -------------------------------------------------------------------------------------- CLI errors
def test_cli_unwritable_db_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert intake_main(["--broker", "127.0.0.1:1883", "--db", str(blocker / "x.sqlite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot open the intake database")


def test_cli_unreachable_broker_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE_T_USER", "centre")
    monkeypatch.setenv("INTAKE_T_PW", "Very-Secret-pw-42")
    port = free_port()
    rc = intake_main(["--broker", f"127.0.0.1:{port}", "--db", str(tmp_path / "i.sqlite"), "--username-env",
                      "INTAKE_T_USER", "--password-env", "INTAKE_T_PW", "--connect-timeout", "1"])
    out = capsys.readouterr()
    assert rc == 2
    err = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0] and "cannot reach" in err[0]
    assert "Very-Secret-pw-42" not in out.err + out.out


def test_cli_credential_mistakes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTAKE_UNSET_PW", raising=False)
    db = str(tmp_path / "i.sqlite")
    assert intake_main(["--broker", "h:1", "--db", db, "--username", "c", "--password-env", "INTAKE_UNSET_PW"]) == 2
    assert "INTAKE_UNSET_PW is not set" in capsys.readouterr().err
    secret = tmp_path / "pw"
    secret.write_text("file-Secret-77\n")
    secret.chmod(0o644)
    assert intake_main(["--broker", "h:1", "--db", db, "--username", "c", "--password-file", str(secret)]) == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err and "file-Secret-77" not in err
    secret.chmod(0o600)
    assert intake_main(["--broker", "h:1", "--db", db, "--password-file", str(secret)]) == 2
    assert "needs a user name" in capsys.readouterr().err
    assert intake_main(["--broker", "h:x", "--db", db]) == 2
    assert "--broker" in capsys.readouterr().err
