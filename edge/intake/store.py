"""The intake's storage: a small :class:`Store` interface and its SQLite implementation.

What is kept (one row each):

| table | key | what |
| --- | --- | --- |
| `events` | `message_id` (unique) | every incident message once, in arrival order (`rx_seq`); `duplicates` counts the at-least-once repeats dropped |
| `incidents` | (`edge_id`, `incident_id`) | the incident's state from its **latest event in event order** — opened < updated < resolved, then frame time — so a late or re-sent older event never reopens a resolved incident |
| `cases` | `case_id` | incidents of one class within `merge_radius_m` of each other (from any edges) as one case for dispatch; open while any member is open |
| `evidence` | `sha256` | JPEG bytes, content addressed (inline pictures decoded and hash-checked; evidence-topic pictures by their own hash) |
| `invalid` | digest of topic + payload | refused messages with the reason and the raw payload; `seen` counts repeats |

Merging: an incident seen for the first time joins the nearest **open** case of its class whose position is
within `merge_radius_m` (metres on the ground, `edge.geo.lonlat_to_local`); otherwise it starts a case. The
case position is the mean of its members' first positions. A resolved case is never reopened: an incident
near it later starts a new case. Incidents without a ground position never merge.

Transactions: :meth:`Store.ingest` stores a batch in one transaction, each message under a savepoint (a
message that cannot be stored becomes an `invalid` row with the reason; the others commit). The MQTT side
acknowledges a batch only after its commit, and SQLite runs with WAL and `synchronous=FULL`, so an
acknowledged message is on disk even after a power cut.

A PostgreSQL backend: subclass :class:`SqlStore` — the SQL in it is portable (`ON CONFLICT`, `RETURNING`,
savepoints); a backend supplies the connection, the DDL, the placeholder style and BEGIN. Several intakes of
one shared-subscription group must share one store (one SQLite file on one host, or PostgreSQL).
"""
from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from .records import EvidenceRecord, IncidentRecord, InvalidRecord, Record

__all__ = ["CaseRow", "EventRow", "IncidentRow", "InvalidRow", "SQLiteStore", "SqlStore", "Store", "StoreError"]

SCHEMA_VERSION = 1


class StoreError(RuntimeError):
    """The database cannot be opened or written (one line for the user)."""


# ---------------------------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class EventRow:
    rx_seq: int  # arrival order at the centre
    message_id: str
    edge_id: str
    camera_id: str
    incident_id: str
    event: str
    class_name: str
    observed_at: str
    lon: float | None
    lat: float | None
    evidence_sha256: str | None
    evidence_state: str
    duplicates: int
    received_at: float


@dataclass(frozen=True)
class IncidentRow:
    edge_id: str
    incident_id: str
    camera_id: str
    class_name: str
    state: str  # open | resolved
    last_event: str
    last_message_id: str
    discovered_at: str
    opened_at: str | None
    resolved_at: str | None
    last_observed_at: str
    lon: float | None
    lat: float | None
    accuracy_m: float | None
    confidence: float
    evidence_sha256: str | None
    events: int
    case_id: int
    incident_type: str
    type_name: str
    legacy_code: str | None
    major_code: str | None
    minor_code: str | None
    admin_code: str | None


@dataclass(frozen=True)
class CaseRow:
    case_id: int
    class_name: str
    state: str  # open | resolved
    lon: float | None
    lat: float | None
    members: int
    open_members: int
    created_at: float  # wall clock of the intake
    updated_at: float
    resolved_at: float | None
    incidents: tuple[str, ...] = ()  # "edge_id/incident_id" of the members, oldest first
    edges: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()  # "edge_id/camera_id"
    incident_type: str | None = None
    type_name: str | None = None
    legacy_code: str | None = None
    major_code: str | None = None
    minor_code: str | None = None
    admin_code: str | None = None
    first_discovered_at: str | None = None
    last_observed_at: str | None = None
    confidence: float | None = None  # the highest of the members'
    evidence_sha256: str | None = None  # the latest member picture


@dataclass(frozen=True)
class InvalidRow:
    id: int
    topic: str
    payload: bytes
    reason: str
    seen: int
    first_at: float
    last_at: float


R = TypeVar("R")


# ------------------------------------------------------------------------------------------ interface
class Store(ABC):
    """Where the intake keeps what it received. Thread-safe; one transaction per :meth:`ingest` call."""

    merge_radius_m: float

    @abstractmethod
    def ingest(self, records: Sequence[Record], received_at: float | None = None) -> list[str]:
        """Store a batch in one transaction; per record one outcome: `stored`, `duplicate`, `evidence`,
        `evidence_duplicate` or `invalid`. Raises (and stores nothing) only when the database itself fails."""

    @abstractmethod
    def events(self, edge_id: str | None = None, camera_id: str | None = None) -> list[EventRow]:
        """Stored incident events in arrival order."""

    @abstractmethod
    def incidents(self, edge_id: str | None = None) -> list[IncidentRow]:
        ...

    @abstractmethod
    def cases(self, state: str | None = None) -> list[CaseRow]:
        """Cases (`state` "open" / "resolved" / None for all) with their members, by case id."""

    @abstractmethod
    def invalid(self) -> list[InvalidRow]:
        ...

    @abstractmethod
    def evidence(self, sha256: str) -> bytes | None:
        ...

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """events, duplicates, invalid, invalid_seen, incidents, open_incidents, cases, open_cases, evidence,
        evidence_pending, evidence_bad."""

    @abstractmethod
    def close(self) -> None:
        ...

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- portable SQL
class SqlStore(Store):
    """The store logic in portable SQL over a DB-API connection; subclasses supply the connection and DDL.

    Statements are written with `?` placeholders; a backend with another paramstyle overrides :meth:`_sql`.
    """

    def __init__(self, conn: Any, *, merge_radius_m: float = 10.0):
        if not (merge_radius_m > 0 and math.isfinite(merge_radius_m)):
            raise ValueError(f"merge_radius_m must be a positive number, got {merge_radius_m!r}")
        self.merge_radius_m = float(merge_radius_m)
        from edge.geo import lonlat_to_local  # here, not inside a transaction: its import takes a second

        self._lonlat_to_local = lonlat_to_local
        self._conn = conn
        self._lock = threading.RLock()

    # ----------------------------------------------------------------------------- backend hooks
    def _sql(self, sql: str) -> str:
        return sql

    @abstractmethod
    def _begin(self) -> None:
        ...

    def _commit(self) -> None:
        self._conn.commit()

    def _rollback(self) -> None:
        self._conn.rollback()

    def _is_db_failure(self, exc: BaseException) -> bool:
        """True for an error of the database itself (disk, lock, permissions): the whole batch fails and is
        retried; anything else fails one message, which is kept aside as invalid."""
        return False

    # ----------------------------------------------------------------------------------- helpers
    def _x(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(self._sql(sql), tuple(params))

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._x(sql, params).fetchone()

    def _rows(self, cls: type[R], sql: str, params: Sequence[Any] = ()) -> list[R]:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        with self._lock:
            cur = self._x(sql, params)
            cols = [d[0] for d in cur.description]
            out = []
            for r in cur.fetchall():
                d = {c: v for c, v in zip(cols, r) if c in names}
                out.append(cls(**d))
        return out

    # ------------------------------------------------------------------------------------ ingest
    def ingest(self, records: Sequence[Record], received_at: float | None = None) -> list[str]:
        now = time.time() if received_at is None else float(received_at)
        outcomes: list[str] = []
        with self._lock:
            self._begin()
            try:
                for rec in records:
                    self._x("SAVEPOINT rec")
                    try:
                        out = self._ingest_one(rec, now)
                        self._x("RELEASE SAVEPOINT rec")
                    except Exception as e:
                        if self._is_db_failure(e):
                            raise
                        self._x("ROLLBACK TO SAVEPOINT rec")
                        self._x("RELEASE SAVEPOINT rec")
                        payload = _payload_of(rec)
                        self._invalid(InvalidRecord(rec.topic, payload, f"could not be stored: {type(e).__name__}: {e}"),
                                      now)
                        out = "invalid"
                    outcomes.append(out)
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return outcomes

    def _ingest_one(self, rec: Record, now: float) -> str:
        if isinstance(rec, IncidentRecord):
            return self._incident_event(rec, now)
        if isinstance(rec, EvidenceRecord):
            return self._evidence(rec, now)
        if isinstance(rec, InvalidRecord):
            self._invalid(rec, now)
            return "invalid"
        raise TypeError(f"not a record: {type(rec).__name__}")

    def _invalid(self, rec: InvalidRecord, now: float) -> None:
        digest = hashlib.sha256(rec.topic.encode("utf-8", "replace") + b"\x00" + rec.payload).hexdigest()
        self._x("INSERT INTO invalid (digest, topic, payload, reason, seen, first_at, last_at) "
                "VALUES (?, ?, ?, ?, 1, ?, ?) "
                "ON CONFLICT (digest) DO UPDATE SET seen = invalid.seen + 1, last_at = excluded.last_at",
                (digest, rec.topic, rec.payload, rec.reason, now, now))

    def _evidence(self, rec: EvidenceRecord, now: float) -> str:
        cur = self._x("INSERT INTO evidence (sha256, data, size, edge_id, incident_id, received_at) "
                      "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                      (rec.sha256, rec.data, len(rec.data), rec.edge_id, rec.incident_id, now))
        if cur.rowcount == 0:
            return "evidence_duplicate"
        self._x("UPDATE events SET evidence_state = 'ok' WHERE evidence_sha256 = ? AND evidence_state = 'pending'",
                (rec.sha256,))
        return "evidence"

    def _incident_event(self, rec: IncidentRecord, now: float) -> str:
        import json

        state = rec.evidence_state
        if rec.evidence_data is not None:
            self._x("INSERT INTO evidence (sha256, data, size, edge_id, incident_id, received_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                    (rec.evidence_sha256, rec.evidence_data, len(rec.evidence_data), rec.edge_id, rec.incident_id,
                     now))
        elif state == "pending" and self._one("SELECT 1 FROM evidence WHERE sha256 = ?", (rec.evidence_sha256,)):
            state = "ok"
        cur = self._x(
            "INSERT INTO events (message_id, edge_id, camera_id, incident_id, event, class_name, observed_at, "
            "observed_ts, lon, lat, evidence_sha256, evidence_state, topic, message, duplicates, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (message_id) DO NOTHING",
            (rec.message_id, rec.edge_id, rec.camera_id, rec.incident_id, rec.event, rec.class_name,
             rec.observed_at, rec.observed_ts, rec.lon, rec.lat, rec.evidence_sha256, state, rec.topic,
             json.dumps(rec.message, ensure_ascii=False, separators=(",", ":")), now))
        if cur.rowcount == 0:
            self._x("UPDATE events SET duplicates = duplicates + 1 WHERE message_id = ?", (rec.message_id,))
            return "duplicate"
        self._incident(rec, now, state)
        return "stored"

    def _incident(self, rec: IncidentRecord, now: float, evidence_state: str) -> None:
        row = self._one("SELECT state, last_rank, last_observed_ts, last_message_id, case_id FROM incidents "
                        "WHERE edge_id = ? AND incident_id = ?", (rec.edge_id, rec.incident_id))
        new_state = "resolved" if rec.event == "resolved" else "open"
        opened_at = rec.observed_at if rec.event == "opened" else None
        resolved_at = rec.observed_at if rec.event == "resolved" else None
        sha = rec.evidence_sha256 if evidence_state in ("ok", "pending") else None
        m = rec.message
        if row is None:
            case_id = self._join_case(rec, new_state, now)
            self._x(
                "INSERT INTO incidents (edge_id, incident_id, camera_id, class_name, state, last_event, last_rank, "
                "last_observed_ts, last_observed_at, last_message_id, discovered_at, discovered_ts, opened_at, "
                "resolved_at, lon, lat, accuracy_m, confidence, evidence_sha256, events, case_id, incident_type, "
                "type_name, legacy_code, major_code, minor_code, admin_code) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
                (rec.edge_id, rec.incident_id, rec.camera_id, rec.class_name, new_state, rec.event, rec.rank,
                 rec.observed_ts, rec.observed_at, rec.message_id, rec.discovered_at, rec.discovered_ts, opened_at,
                 resolved_at, rec.lon, rec.lat, rec.accuracy_m, rec.confidence, sha, case_id, m["incident_type"],
                 m["type_name"], m["legacy_code"], m["major_code"], m["minor_code"], m["admin_code"]))
            return
        old_state, last_rank, last_ts, last_mid, case_id = row
        self._x("UPDATE incidents SET events = events + 1, opened_at = COALESCE(opened_at, ?), "
                "resolved_at = COALESCE(resolved_at, ?), confidence = CASE WHEN confidence < ? THEN ? ELSE confidence END "
                "WHERE edge_id = ? AND incident_id = ?",
                (opened_at, resolved_at, rec.confidence, rec.confidence, rec.edge_id, rec.incident_id))
        if rec.order_key <= (last_rank, last_ts, last_mid):
            return  # an older event arrived late: it is recorded, it changes no state
        self._x("UPDATE incidents SET state = ?, last_event = ?, last_rank = ?, last_observed_ts = ?, "
                "last_observed_at = ?, last_message_id = ?, lon = COALESCE(?, lon), lat = COALESCE(?, lat), "
                "accuracy_m = COALESCE(?, accuracy_m), evidence_sha256 = COALESCE(?, evidence_sha256) "
                "WHERE edge_id = ? AND incident_id = ?",
                (new_state, rec.event, rec.rank, rec.observed_ts, rec.observed_at, rec.message_id, rec.lon, rec.lat,
                 rec.accuracy_m, sha, rec.edge_id, rec.incident_id))
        if old_state == "open" and new_state == "resolved":
            self._x("UPDATE cases SET open_members = open_members - 1, updated_at = ? WHERE case_id = ?",
                    (now, case_id))
            self._x("UPDATE cases SET state = 'resolved', resolved_at = ? WHERE case_id = ? AND open_members <= 0",
                    (now, case_id))
        else:
            self._x("UPDATE cases SET updated_at = ? WHERE case_id = ?", (now, case_id))

    def _join_case(self, rec: IncidentRecord, state: str, now: float) -> int:
        """The case a newly seen incident belongs to: the nearest open case of its class within the radius,
        or a new one."""
        is_open = 1 if state == "open" else 0
        if rec.lon is not None and rec.lat is not None:
            r = self.merge_radius_m
            dlat = r / 110_000.0 * 1.5  # a generous box first (index), the exact distance below
            dlon = dlat / max(math.cos(math.radians(rec.lat)), 1e-6)
            cands = self._x("SELECT case_id, lon, lat, members FROM cases WHERE class_name = ? AND state = 'open' "
                            "AND lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?",
                            (rec.class_name, rec.lat - dlat, rec.lat + dlat, rec.lon - dlon, rec.lon + dlon)).fetchall()
            if cands:
                xs, ys = self._lonlat_to_local([c[1] for c in cands], [c[2] for c in cands], {"lon": rec.lon, "lat": rec.lat})
                dist = [math.hypot(float(x), float(y)) for x, y in zip(xs, ys)]
                best = min(range(len(cands)), key=lambda i: (dist[i], cands[i][0]))
                if dist[best] <= r:
                    case_id, lon, lat, n = cands[best]
                    self._x("UPDATE cases SET lon = ?, lat = ?, members = members + 1, "
                            "open_members = open_members + ?, updated_at = ? WHERE case_id = ?",
                            ((lon * n + rec.lon) / (n + 1), (lat * n + rec.lat) / (n + 1), is_open, now, case_id))
                    return int(case_id)
        row = self._one("INSERT INTO cases (class_name, lon, lat, state, members, open_members, created_at, "
                        "updated_at, resolved_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?) RETURNING case_id",
                        (rec.class_name, rec.lon, rec.lat, state, is_open, now, now, None if is_open else now))
        return int(row[0])

    # ------------------------------------------------------------------------------------- queries
    _EVENT_COLS = ("rx_seq, message_id, edge_id, camera_id, incident_id, event, class_name, observed_at, lon, lat, "
                   "evidence_sha256, evidence_state, duplicates, received_at")

    def events(self, edge_id: str | None = None, camera_id: str | None = None) -> list[EventRow]:
        where, params = self._where(edge_id=edge_id, camera_id=camera_id)
        return self._rows(EventRow, f"SELECT {self._EVENT_COLS} FROM events{where} ORDER BY rx_seq", params)

    def incidents(self, edge_id: str | None = None) -> list[IncidentRow]:
        where, params = self._where(edge_id=edge_id)
        return self._rows(IncidentRow, f"SELECT * FROM incidents{where} ORDER BY discovered_ts, edge_id, incident_id",
                          params)

    def cases(self, state: str | None = None) -> list[CaseRow]:
        where, params = self._where(state=state)
        base = self._rows(CaseRow, f"SELECT * FROM cases{where} ORDER BY case_id", params)
        if not base:
            return []
        members: dict[int, list[IncidentRow]] = {}
        sub = f"SELECT case_id FROM cases{where}"
        for inc in self._rows(IncidentRow, f"SELECT * FROM incidents WHERE case_id IN ({sub}) "
                                           "ORDER BY discovered_ts, edge_id, incident_id", params):
            members.setdefault(inc.case_id, []).append(inc)
        out = []
        for c in base:
            ms = members.get(c.case_id, [])
            if not ms:
                out.append(c)
                continue
            latest = max(ms, key=lambda i: (self._ts(i.last_observed_at), i.edge_id, i.incident_id))
            first = min(ms, key=lambda i: self._ts(i.discovered_at))
            out.append(_replace(
                c, incidents=tuple(f"{i.edge_id}/{i.incident_id}" for i in ms),
                edges=tuple(sorted({i.edge_id for i in ms})),
                cameras=tuple(sorted({f"{i.edge_id}/{i.camera_id}" for i in ms})),
                incident_type=latest.incident_type, type_name=latest.type_name, legacy_code=latest.legacy_code,
                major_code=latest.major_code, minor_code=latest.minor_code, admin_code=latest.admin_code,
                first_discovered_at=first.discovered_at, last_observed_at=latest.last_observed_at,
                confidence=max(i.confidence for i in ms),
                evidence_sha256=next((i.evidence_sha256 for i in sorted(
                    ms, key=lambda i: self._ts(i.last_observed_at), reverse=True) if i.evidence_sha256), None)))
        return out

    @staticmethod
    def _ts(text: str) -> float:
        from .records import parse_time

        return parse_time(text)

    def invalid(self) -> list[InvalidRow]:
        rows = self._rows(InvalidRow, "SELECT id, topic, payload, reason, seen, first_at, last_at FROM invalid "
                                      "ORDER BY id")
        return [_replace(r, payload=bytes(r.payload)) for r in rows]

    def evidence(self, sha256: str) -> bytes | None:
        with self._lock:
            row = self._one("SELECT data FROM evidence WHERE sha256 = ?", (sha256,))
        return None if row is None else bytes(row[0])

    def counts(self) -> dict[str, int]:
        q = {
            "events": "SELECT COUNT(*) FROM events",
            "duplicates": "SELECT COALESCE(SUM(duplicates), 0) FROM events",
            "invalid": "SELECT COUNT(*) FROM invalid",
            "invalid_seen": "SELECT COALESCE(SUM(seen), 0) FROM invalid",
            "incidents": "SELECT COUNT(*) FROM incidents",
            "open_incidents": "SELECT COUNT(*) FROM incidents WHERE state = 'open'",
            "cases": "SELECT COUNT(*) FROM cases",
            "open_cases": "SELECT COUNT(*) FROM cases WHERE state = 'open'",
            "evidence": "SELECT COUNT(*) FROM evidence",
            "evidence_pending": "SELECT COUNT(*) FROM events WHERE evidence_state = 'pending'",
            "evidence_bad": "SELECT COUNT(*) FROM events WHERE evidence_state IN ('mismatch', 'not_jpeg')",
        }
        with self._lock:
            return {k: int(self._one(sql)[0]) for k, sql in q.items()}

    @staticmethod
    def _where(**conds: Any) -> tuple[str, list[Any]]:
        parts = [(k, v) for k, v in conds.items() if v is not None]
        if not parts:
            return "", []
        return " WHERE " + " AND ".join(f"{k} = ?" for k, _ in parts), [v for _, v in parts]


def _payload_of(rec: Record) -> bytes:
    """The bytes as received, whatever the record's kind: a refused message is kept aside with them."""
    if isinstance(rec, IncidentRecord):
        return rec.raw
    if isinstance(rec, EvidenceRecord):
        return rec.data
    return rec.payload


def _replace(obj: R, **kw: Any) -> R:
    from dataclasses import replace

    return replace(obj, **kw)  # type: ignore[type-var]


# -------------------------------------------------------------------------------------------- SQLite
_SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    rx_seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT    NOT NULL UNIQUE,
    edge_id         TEXT    NOT NULL,
    camera_id       TEXT    NOT NULL,
    incident_id     TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    class_name      TEXT    NOT NULL,
    observed_at     TEXT    NOT NULL,
    observed_ts     REAL    NOT NULL,
    lon             REAL,
    lat             REAL,
    evidence_sha256 TEXT,
    evidence_state  TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    duplicates      INTEGER NOT NULL DEFAULT 0,
    received_at     REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_camera ON events (edge_id, camera_id, rx_seq);
CREATE INDEX IF NOT EXISTS events_by_incident ON events (edge_id, incident_id);
CREATE INDEX IF NOT EXISTS events_pending_evidence ON events (evidence_sha256) WHERE evidence_state = 'pending';
CREATE TABLE IF NOT EXISTS incidents (
    edge_id          TEXT    NOT NULL,
    incident_id      TEXT    NOT NULL,
    camera_id        TEXT    NOT NULL,
    class_name       TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    last_event       TEXT    NOT NULL,
    last_rank        INTEGER NOT NULL,
    last_observed_ts REAL    NOT NULL,
    last_observed_at TEXT    NOT NULL,
    last_message_id  TEXT    NOT NULL,
    discovered_at    TEXT    NOT NULL,
    discovered_ts    REAL    NOT NULL,
    opened_at        TEXT,
    resolved_at      TEXT,
    lon              REAL,
    lat              REAL,
    accuracy_m       REAL,
    confidence       REAL    NOT NULL,
    evidence_sha256  TEXT,
    events           INTEGER NOT NULL,
    case_id          INTEGER NOT NULL,
    incident_type    TEXT    NOT NULL,
    type_name        TEXT    NOT NULL,
    legacy_code      TEXT,
    major_code       TEXT,
    minor_code       TEXT,
    admin_code       TEXT,
    PRIMARY KEY (edge_id, incident_id)
);
CREATE INDEX IF NOT EXISTS incidents_by_case ON incidents (case_id);
CREATE TABLE IF NOT EXISTS cases (
    case_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    class_name   TEXT    NOT NULL,
    lon          REAL,
    lat          REAL,
    state        TEXT    NOT NULL,
    members      INTEGER NOT NULL,
    open_members INTEGER NOT NULL,
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL,
    resolved_at  REAL
);
CREATE INDEX IF NOT EXISTS cases_open ON cases (class_name, state, lat, lon);
CREATE TABLE IF NOT EXISTS evidence (
    sha256      TEXT PRIMARY KEY,
    data        BLOB    NOT NULL,
    size        INTEGER NOT NULL,
    edge_id     TEXT    NOT NULL,
    incident_id TEXT    NOT NULL,
    received_at REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS invalid (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    digest   TEXT    NOT NULL UNIQUE,
    topic    TEXT    NOT NULL,
    payload  BLOB    NOT NULL,
    reason   TEXT    NOT NULL,
    seen     INTEGER NOT NULL,
    first_at REAL    NOT NULL,
    last_at  REAL    NOT NULL
);
"""


class SQLiteStore(SqlStore):
    """The default store: one SQLite file, WAL, `synchronous=FULL` (a committed batch survives a power cut
    before its messages are acknowledged to the broker). Several processes may share the file."""

    def __init__(self, path: str | Path, *, merge_radius_m: float = 10.0, timeout_s: float = 30.0):
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=timeout_s)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the intake database {path}: {e}") from None
        super().__init__(conn, merge_radius_m=merge_radius_m)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SQLITE_DDL)
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO NOTHING",
                         (str(SCHEMA_VERSION),))
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        except sqlite3.Error as e:
            conn.close()
            raise StoreError(f"cannot use the intake database {path}: {e}") from None
        if version != str(SCHEMA_VERSION):
            conn.close()
            raise StoreError(f"intake database {path} has schema version {version}, this intake writes "
                             f"{SCHEMA_VERSION}")
        self.journal_mode = str(mode).lower()

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _is_db_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
