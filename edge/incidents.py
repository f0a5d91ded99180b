"""The incident book: turns per-scan sightings into incidents that open once, update rarely and resolve.

Static incidents are confirmed by voting over time (seen in most scans of a window), not by a track id, and an
incident is identified by what and where it is, so passing traffic or an occlusion never makes a second one.
Open incidents live in SQLite, written in the same transaction as the events they cause (see `EventSink`), so a
restart neither repeats an `opened` nor loses a `resolved`. All timing comes from the frames' timestamps.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from .config import Rules
from .detections import Detections, box_iou
from .types import IncidentEvent

log = logging.getLogger(__name__)
_NS = uuid.UUID("6b1f8f1e-6a43-4d4e-9a1e-1c0c1a7e0d11")


class EventSink(Protocol):
    """Where events go, inside the book's transaction (the outbox shares the book's SQLite connection)."""

    def write_events(self, conn: sqlite3.Connection, events: list[IncidentEvent]) -> None: ...


@dataclass
class Track:
    """An incident or a candidate for one: a class at a place in one camera's view."""

    key: int
    camera_id: str
    class_id: int
    box: np.ndarray
    first_ts: float
    last_seen: float
    votes: deque = field(default_factory=lambda: deque(maxlen=512))  # (ts, seen)
    best_conf: float = 0.0
    best_box: np.ndarray | None = None
    evidence: bytes | None = None
    zone: str | None = None
    incident_id: str | None = None
    opened_ts: float | None = None
    last_update: float | None = None
    seq: int = 0
    image_size: tuple[int, int] = (0, 0)

    @property
    def is_open(self) -> bool:
        return self.incident_id is not None


Evidence = Callable[[np.ndarray, np.ndarray, str, float], bytes]


class IncidentBook:
    """Votes, opens, updates and resolves incidents for the cameras of one edge box."""

    def __init__(self, db_path: str, edge_id: str, class_names: list[str], rules: dict[str, Rules],
                 sink: EventSink | None = None, evidence: Evidence | None = None,
                 reportable: set[str] | None = None) -> None:
        self.edge_id = edge_id
        self.class_names = class_names
        self.rules = rules
        self.sink = sink
        self.evidence = evidence
        self.reportable = reportable if reportable is not None else set(class_names)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("""CREATE TABLE IF NOT EXISTS incidents (
            incident_id TEXT PRIMARY KEY, camera_id TEXT, class_id INTEGER, box TEXT, first_ts REAL,
            opened_ts REAL, last_seen REAL, last_update REAL, best_conf REAL, zone TEXT, seq INTEGER,
            image_w INTEGER, image_h INTEGER, state TEXT)""")
        self._conn.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        self._tracks: dict[str, list[Track]] = {}
        self._next_key = 0
        self._load()

    # ---------------------------------------------------------------- persistence
    def _load(self) -> None:
        rows = self._conn.execute("SELECT incident_id, camera_id, class_id, box, first_ts, opened_ts, last_seen, "
                                  "last_update, best_conf, zone, seq, image_w, image_h FROM incidents WHERE state='open'").fetchall()
        for r in rows:
            t = Track(self._key(), r[1], r[2], np.array(json.loads(r[3]), np.float32), r[4], r[6], best_conf=r[8],
                      zone=r[9], incident_id=r[0], opened_ts=r[5], last_update=r[7], seq=r[10], image_size=(r[11], r[12]))
            t.best_box = t.box.copy()
            self._tracks.setdefault(t.camera_id, []).append(t)
        if rows:
            log.info("restored %d open incidents", len(rows))

    def _counter(self) -> int:
        row = self._conn.execute("SELECT v FROM meta WHERE k='counter'").fetchone()
        n = int(row[0]) + 1 if row else 1
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('counter', ?)", (str(n),))
        return n

    def _save(self, t: Track, state: str) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO incidents VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (t.incident_id, t.camera_id, t.class_id, json.dumps([round(float(v), 2) for v in t.box]), t.first_ts,
             t.opened_ts, t.last_seen, t.last_update, t.best_conf, t.zone, t.seq, t.image_size[0], t.image_size[1], state))

    def _key(self) -> int:
        self._next_key += 1
        return self._next_key

    # ---------------------------------------------------------------- the vote
    def update(self, camera_id: str, ts: float, dets: Detections, zones: list[str | None], image: np.ndarray | None = None) -> list[IncidentEvent]:
        """One scan of one camera: match sightings to tracks, vote, and return the events it causes (already
        handed to the sink in the same transaction as the state they reflect)."""
        rules = self.rules[camera_id]
        h, w = (image.shape[:2] if image is not None else (0, 0))
        with self._lock:
            tracks = self._tracks.setdefault(camera_id, [])
            matched = self._match(tracks, dets, rules.match_iou)
            seen_keys = set()
            for i, t in matched.items():
                box, conf = dets.xyxy[i], float(dets.confidence[i])
                t.box = 0.7 * t.box + 0.3 * box if t.votes else box.copy()
                t.last_seen = ts
                t.image_size = (w, h)
                if zones[i] is not None:
                    t.zone = zones[i]
                if conf > t.best_conf + 0.02 or t.best_box is None:
                    t.best_conf, t.best_box = conf, box.copy()
                    if image is not None and self.evidence is not None:
                        t.evidence = self.evidence(image, box, self.class_names[t.class_id], conf)
                seen_keys.add(t.key)
            for i in range(len(dets)):
                if i not in matched and self.class_names[int(dets.class_id[i])] in self.reportable:
                    conf = float(dets.confidence[i])
                    t = Track(self._key(), camera_id, int(dets.class_id[i]), dets.xyxy[i].copy(), ts, ts, best_conf=conf,
                              best_box=dets.xyxy[i].copy(), zone=zones[i], image_size=(w, h))
                    if image is not None and self.evidence is not None:
                        t.evidence = self.evidence(image, dets.xyxy[i], self.class_names[t.class_id], conf)
                    tracks.append(t)
                    seen_keys.add(t.key)
            events: list[IncidentEvent] = []
            p = rules.persistence
            keep: list[Track] = []
            for t in tracks:
                t.votes.append((ts, t.key in seen_keys))
                while t.votes and t.votes[0][0] < ts - p.window_s:
                    t.votes.popleft()
                if not t.is_open:
                    n = len(t.votes)
                    k = sum(1 for _, s in t.votes if s)
                    if n >= p.min_scans and k / n >= p.vote_ratio and k >= p.min_scans:
                        t.incident_id = self._new_id(ts)
                        t.opened_ts = t.last_update = ts
                        events.append(self._event(t, "opened", ts))
                        self._save(t, "open")
                    if ts - t.last_seen <= p.window_s or t.is_open:
                        keep.append(t)
                    continue
                if ts - t.last_seen >= rules.resolve_after_s:
                    events.append(self._event(t, "resolved", ts))
                    self._save(t, "resolved")
                    continue
                # only on a scan that sees it: an update must carry fresh evidence, never a stale box
                if t.key in seen_keys and ts - (t.last_update or ts) >= rules.update_interval_s:
                    t.last_update = ts
                    events.append(self._event(t, "updated", ts))
                    self._save(t, "open")
                keep.append(t)
            self._tracks[camera_id] = keep
            self._commit(events, ts, keep)
            return events

    def _commit(self, events: list[IncidentEvent], ts: float, tracks: list[Track]) -> None:
        """Events and the state they reflect go to disk together; last-seen times of open incidents ride along."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for t in tracks:
                if t.is_open:
                    self._conn.execute("UPDATE incidents SET last_seen=?, box=? WHERE incident_id=?",
                                       (t.last_seen, json.dumps([round(float(v), 2) for v in t.box]), t.incident_id))
            if events and self.sink is not None:
                self.sink.write_events(self._conn, events)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def _match(self, tracks: list[Track], dets: Detections, min_iou: float) -> dict[int, Track]:
        """Greedy one-to-one matching of sightings to tracks of the same class by box IoU."""
        if not tracks or len(dets) == 0:
            return {}
        tb = np.stack([t.box for t in tracks])
        tc = np.array([t.class_id for t in tracks])
        iou = box_iou(dets.xyxy, tb) * (dets.class_id[:, None] == tc[None, :])
        out: dict[int, Track] = {}
        while True:
            i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
            if iou[i, j] < min_iou:
                break
            out[int(i)] = tracks[int(j)]
            iou[i, :] = -1
            iou[:, j] = -1
        return out

    def _new_id(self, ts: float) -> str:
        n = self._counter()
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(ts))
        return f"{self.edge_id}-{stamp}-{n:04d}"

    def _event(self, t: Track, kind: str, ts: float) -> IncidentEvent:
        t.seq += 1
        mid = str(uuid.uuid5(_NS, f"{self.edge_id}/{t.incident_id}/{kind}/{t.seq}"))
        box = t.best_box if t.best_box is not None else t.box
        return IncidentEvent(message_id=mid, incident_id=t.incident_id or "", event=kind,  # type: ignore[arg-type]
                             class_name=self.class_names[t.class_id], camera_id=t.camera_id, ts=ts,
                             discovered_ts=t.opened_ts if t.opened_ts is not None else ts, confidence=round(t.best_conf, 4),
                             box_xyxy=tuple(round(float(v), 1) for v in box), image_size=t.image_size, zone=t.zone,
                             evidence_jpeg=t.evidence if kind != "resolved" else None,
                             extra={"first_seen_ts": t.first_ts, "last_seen_ts": t.last_seen, "seq": t.seq})

    def open_incidents(self) -> list[Track]:
        with self._lock:
            return [t for ts in self._tracks.values() for t in ts if t.is_open]

    def close(self) -> None:
        self._conn.close()
