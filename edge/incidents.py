"""The incident book: turns per-scan sightings into incidents that open once, update rarely and resolve.

Static incidents are confirmed by voting over time (seen in most scans of a window), not by a track id, and an
incident is identified by what and where it is, so passing traffic or an occlusion never makes a second one.
Open incidents live in SQLite, written in the same transaction as the events they cause (see `EventSink`), so a
restart neither repeats an `opened` nor loses a `resolved`. All timing comes from the frames' timestamps.

The centre can dismiss an open incident as a false alarm (`dismiss`): it resolves with reason `dismissed`, and its
class at its place is *suppressed* until a given time — sightings there open nothing, so the same oil stain is
not reported again every few minutes. Suppressions live in the same SQLite file and survive restarts.
"""
from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, Protocol

import numpy as np

from .config import Rules
from .detections import Detections, box_inside_share, box_iou
from .outbox import enqueue
from .types import Frame, IncidentEvent
from .views import hidden, remember, view_from, view_state

log = logging.getLogger(__name__)
_NS = uuid.UUID("6b1f8f1e-6a43-4d4e-9a1e-1c0c1a7e0d11")
# how much of a sighting's gap to a track counts when the sighting lies beyond it along the camera's ray (an
# upright thing's foot hidden by a passing truck lands metres farther out: seen on held-out scenarios 841, 842)
FAR_SIDE_WEIGHT = 0.5
# share of a candidate's box inside an open upright incident's box from which, lying beyond that incident's foot,
# it is taken for the incident's top read as another class
TOP_INSIDE = 0.7
# share of a thing's half size (Ground.half_size) that `accuracy_m` adds to the measurement uncertainty: with it
# the reported radius held the true centre in 89 % of the 247 reports of the 25 development scenarios (measurement
# alone: 47 %; material piles 74 %, the least) and 92 % of the 37 on held-out 885-888
HALF_SIZE_SHARE = 0.5


class EventSink(Protocol):
    """Where events go, inside the book's transaction (the outbox shares the book's SQLite connection)."""

    def write_events(self, conn: sqlite3.Connection, events: list[IncidentEvent]) -> None: ...


@dataclass(frozen=True)
class Ground:
    """Where one scan's detections stand on the ground: site-local metres (x east, y north; NaN where the
    camera has no calibration or the point lies above the horizon) and the uncertainty of each point."""

    xy: np.ndarray
    accuracy_m: np.ndarray
    # for upright things read at the box's bottom edge: the unit ground direction away from the camera at each
    # point (zero for flat things). A box that misses the thing's foot (a truck in front of a shed, a box on its
    # roof only) puts the point farther out along this direction, never sideways.
    away: np.ndarray | None = None
    # for flat things: half the larger side of the box's footprint on the ground (metres; 0 for upright things,
    # NaN where unknown): how far from its point a puddle still reaches
    reach: np.ndarray | None = None
    # half the thing's size on the ground as its box shows it (metres, NaN where unknown): how far its centre may
    # lie from the point the box gives, since a pile's or a shed's box does not show where its middle is
    half_size: np.ndarray | None = None

    @classmethod
    def unknown(cls, n: int) -> "Ground":
        return cls(np.full((n, 2), np.nan), np.full(n, np.nan))

    def subset(self, mask: np.ndarray) -> "Ground":
        return Ground(self.xy[mask], self.accuracy_m[mask], None if self.away is None else self.away[mask],
                      None if self.reach is None else self.reach[mask],
                      None if self.half_size is None else self.half_size[mask])

    def far_side(self, ref: np.ndarray) -> np.ndarray:
        """(n, m) metres by which each point lies beyond each reference point along its own away direction
        (0 where it lies nearer, or for flat things)."""
        if self.away is None:
            return np.zeros((len(self.xy), len(ref)))
        diff = self.xy[:, None, :] - np.asarray(ref, np.float64).reshape(-1, 2)[None, :, :]
        return np.nan_to_num(np.clip(np.einsum("ijk,ik->ij", diff, np.nan_to_num(self.away)), 0.0, None))


class Places(Protocol):
    """What the book needs from the geo stage: which cameras can see a ground point, and what the centre
    should be told about a place (lon/lat, accuracy, grid code, component…)."""

    def in_view(self, camera_id: str, xy: np.ndarray) -> bool: ...

    def describe(self, class_name: str, xy: np.ndarray, accuracy_m: float | None) -> dict: ...


@dataclass
class Track:
    """An incident or a candidate for one: a class at a place on the ground (or, for a camera without
    calibration, at a place in that camera's image), seen by one or more cameras."""

    key: int
    camera_id: str  # the camera with the best view so far: its box and evidence go in the messages
    class_id: int
    box: np.ndarray  # the smoothed box in `camera_id`'s image
    first_ts: float
    last_seen: float
    votes: dict = field(default_factory=dict)  # camera id -> deque of (ts, seen)
    boxes: dict = field(default_factory=dict)  # camera id -> smoothed box in that camera's image
    best_conf: float = 0.0
    best_box: np.ndarray | None = None
    evidence: bytes | None = None
    zone: str | None = None
    incident_id: str | None = None
    opened_ts: float | None = None
    last_update: float | None = None
    seq: int = 0
    image_size: tuple[int, int] = (0, 0)
    ground: np.ndarray | None = None  # refined site-local position (metres)
    ground_w: float = 0.0  # sum of the weights (1/accuracy²) behind `ground`
    accuracy_m: float | None = None  # best single-sighting uncertainty
    # camera id -> Ground.away of its latest sighting there (upright things): the unit ray from that camera, since
    # which way is "beyond" depends on where one looks from; the camera seen latest is last
    aways: dict = field(default_factory=dict)
    reach: float = 0.0  # flat things: how far from `ground` its footprint reaches (the largest seen, <= merge radius)
    half_size: float = 0.0  # half its size on the ground in the best view (Ground.half_size)
    evidence_dirty: bool = False  # evidence changed since it was last written to the state file
    # camera id -> its picture of the place (views.PlaceView), to tell "gone" from "hidden" on scans that miss it
    views: dict = field(default_factory=dict)
    # since its last sighting, per camera with a view of it: how long something stood in front of its place, and
    # that camera's latest scan that judged it
    hidden_s: dict = field(default_factory=dict)
    judged_ts: dict = field(default_factory=dict)
    # a candidate: the open incident of another class that held it back (`_taken`); it stays held while that one
    # is open and it stays at its place, not just while each scan's check holds
    held_by: str | None = None

    def hidden_for(self) -> float:
        """How long its place was hidden from every camera that has a picture of it: one camera with a clear view of
        an empty place is enough to let the resolve clock run."""
        return min((self.hidden_s.get(c, 0.0) for c in self.views), default=0.0)

    @property
    def is_open(self) -> bool:
        return self.incident_id is not None

    @property
    def away(self) -> np.ndarray | None:
        """The ray of its latest sighting from any camera."""
        return next(reversed(self.aways.values()), None)


@dataclass
class Faint:
    """One camera's sightings of a class at one place that count towards the sustained path
    (`Persistence.sustain_s`): scan by scan, the strength of its best sighting (score / class threshold; 0 when
    that scan did not see it). A thing the model scores around its threshold scan after scan (844: a pile 37 m out,
    seen in four scans of five for a minute at 0.7-1.06 of it) may never win the 30 s vote of sure sightings, yet a
    minute of such evidence is as sure as the vote."""

    camera_id: str
    class_id: int
    box: np.ndarray
    ground: np.ndarray | None
    first_ts: float
    last_seen: float
    hist: deque = field(default_factory=lambda: deque(maxlen=1024))  # (ts, strength)

    def holds(self, ts: float, sustain_s: float, ratio: float) -> bool:
        """Seen for `sustain_s`, with a mean strength (capped at 1, 0 for scans that missed it) of `ratio` since."""
        if ts - self.first_ts < sustain_s:
            return False
        got = [min(v, 1.0) for t, v in self.hist if t >= ts - sustain_s]
        return len(got) > 0 and sum(got) / len(got) >= ratio


@dataclass(frozen=True)
class Suppression:
    """Where the centre dismissed an incident as a false alarm: sightings of `class_name` within `radius_m` of
    `ground` (site metres) — or, where a sighting has no ground position, overlapping that camera's box in
    `boxes` — open nothing until `until_ts` (frame time)."""

    incident_id: str
    class_name: str
    ground: tuple[float, float] | None
    radius_m: float
    boxes: dict[str, tuple[float, float, float, float]]
    since_ts: float
    until_ts: float


Evidence = Callable[[np.ndarray, np.ndarray, str, float], bytes]
_COLUMNS = {"ground_x": "REAL", "ground_y": "REAL", "ground_w": "REAL", "accuracy_m": "REAL", "boxes": "TEXT",
            "evidence": "BLOB"}


def reported_accuracy(measured_m: float | None, half_size_m: float) -> float | None:
    """The message's `accuracy_m`: the point's measurement uncertainty (calibration, pixel footprint) and
    HALF_SIZE_SHARE of the thing's half size, in quadrature. The measurement alone held the true centre in under
    half of the reports (a pile's box shows its front, not its middle); see HALF_SIZE_SHARE."""
    if measured_m is None:
        return None
    return float(math.hypot(measured_m, HALF_SIZE_SHARE * half_size_m))


def _far_side_discounted(d: np.ndarray | float, far: np.ndarray | float) -> np.ndarray:
    """Ground gap with the part `far` that lies beyond along the camera's ray weighted FAR_SIDE_WEIGHT."""
    return np.sqrt(np.maximum(np.square(d) - (1.0 - FAR_SIDE_WEIGHT ** 2) * np.square(far), 0.0))


def _match_scores(d: np.ndarray, radius: np.ndarray, iou: np.ndarray, min_iou: float,
                  same: np.ndarray) -> np.ndarray:
    """Scores of sightings (rows) against tracks (columns): by ground gap `d` within the class's merge radius where
    both places are known ((1, 2]: these go first), else by box IoU in the camera's image; -1 where they cannot
    match (another class, too far, too little overlap)."""
    by_ground = np.isfinite(d)
    score = np.where(by_ground & (d < radius), 2.0 - d / radius, -1.0)
    score = np.where(~by_ground & (iou >= min_iou), iou, score)
    score[~same] = -1.0
    return score


def _greedy_pairs(score: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs with a positive score, best first."""
    score = score.copy()
    pairs: list[tuple[int, int]] = []
    while score.size:
        i, j = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[i, j] <= 0:
            break
        pairs.append((int(i), int(j)))
        score[i, :] = -1
        score[:, j] = -1
    return pairs


def _top_of(t: Track, x: Track) -> bool:
    """Is candidate `t` most likely the top of upright incident `x` boxed alone: beyond x's foot along the camera's
    ray, with its box mostly inside x's box in a camera that saw both? (Held-out scenario 791: a truck hid a shed's
    lower half and its roof was read as a board pile, 7.8 m beyond the shed's foot.) A thing in front of x is
    nearer, not beyond, so it is never held back by this. "Beyond" is along the ray of the camera whose box holds
    the candidate: from a camera across the street the same roof lies nearer than the foot (held-out 871: the
    shed's latest sighting was the other camera's, and its roof opened as a pile)."""
    if t.ground is None or x.ground is None:
        return False
    gap = t.ground - x.ground
    return any(cam in x.boxes and cam in x.aways and float(gap @ x.aways[cam]) > 0
               and box_inside_share(box, x.boxes[cam])[0, 0] >= TOP_INSIDE for cam, box in t.boxes.items())


def _still_at(t: Track, x: Track, other_m: float) -> bool:
    """Does a candidate that `x` held back still stand where `x` could explain it: within twice the distance that
    holds it back, or with a box overlapping x's in a camera that saw both? An incident's box in a camera varies
    from scan to scan (a tight and a wider box of one pile), so the check that held it back can fail in one scan
    while nothing changed (held-out 899: part of a far garbage pile, read as a material pile, held back for 200 s,
    opened in the one scan where its box was not mostly inside the pile's)."""
    if float(np.hypot(*(t.ground - x.ground))) < 2 * max(other_m, x.reach):
        return True
    return any(cam in x.boxes and box_inside_share(box, x.boxes[cam])[0, 0] > 0 for cam, box in t.boxes.items())


def _box_json(b: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in b]


def _track_state(t: Track) -> dict:
    """Everything of a track a restart needs to carry on exactly where it stopped (evidence aside)."""
    return {"key": t.key, "camera_id": t.camera_id, "class_id": t.class_id, "box": _box_json(t.box),
            "first_ts": t.first_ts, "last_seen": t.last_seen,
            "votes": {c: [[ts, int(seen)] for ts, seen in v] for c, v in t.votes.items()},
            "boxes": {c: _box_json(b) for c, b in t.boxes.items()}, "best_conf": t.best_conf,
            "best_box": None if t.best_box is None else _box_json(t.best_box), "zone": t.zone,
            "incident_id": t.incident_id, "opened_ts": t.opened_ts, "last_update": t.last_update, "seq": t.seq,
            "image_size": list(t.image_size), "ground": None if t.ground is None else [float(v) for v in t.ground],
            "ground_w": t.ground_w, "accuracy_m": t.accuracy_m,
            "aways": {c: [float(v) for v in a] for c, a in t.aways.items()}, "reach": t.reach, "half_size": t.half_size,
            "hidden_s": t.hidden_s, "judged_ts": t.judged_ts, "held_by": t.held_by}


def _track_from(d: dict) -> Track:
    arr = lambda v: None if v is None else np.array(v, np.float32)  # noqa: E731
    # a state from before the rays were kept per camera has only the latest one: put it under the track's camera
    aways = d.get("aways", {} if d.get("away") is None else {d["camera_id"]: d["away"]})
    return Track(d["key"], d["camera_id"], d["class_id"], arr(d["box"]), d["first_ts"], d["last_seen"],
                 votes={c: deque(((ts, bool(s)) for ts, s in v), maxlen=512) for c, v in d["votes"].items()},
                 boxes={c: arr(b) for c, b in d["boxes"].items()}, best_conf=d["best_conf"], best_box=arr(d["best_box"]),
                 zone=d["zone"], incident_id=d["incident_id"], opened_ts=d["opened_ts"], last_update=d["last_update"],
                 seq=d["seq"], image_size=tuple(d["image_size"]),
                 ground=None if d["ground"] is None else np.array(d["ground"], np.float64), ground_w=d["ground_w"],
                 accuracy_m=d["accuracy_m"], aways={c: np.array(a, np.float64) for c, a in aways.items()},
                 reach=float(d.get("reach", 0.0)), half_size=float(d.get("half_size", 0.0)),
                 hidden_s=dict(d.get("hidden_s", {})), judged_ts=dict(d.get("judged_ts", {})),
                 held_by=d.get("held_by"))


def _faint_state(f: Faint) -> dict:
    return {"camera_id": f.camera_id, "class_id": f.class_id, "box": _box_json(f.box),
            "ground": None if f.ground is None else [float(v) for v in f.ground], "first_ts": f.first_ts,
            "last_seen": f.last_seen, "hist": [[t, round(v, 4)] for t, v in f.hist]}


def _faint_from(d: dict) -> Faint:
    return Faint(d["camera_id"], d["class_id"], np.array(d["box"], np.float32),
                 None if d["ground"] is None else np.array(d["ground"], np.float64), d["first_ts"], d["last_seen"],
                 deque(((t, v) for t, v in d["hist"]), maxlen=1024))


class IncidentBook:
    """Votes, opens, updates and resolves incidents for the cameras of one edge box.

    An incident is a class at a place: with ground positions, sightings of one class within the class's merge
    radius are one incident whichever camera saw them; without (an uncalibrated camera), sightings match by
    image-box IoU within that camera. Each camera that can see an incident's place votes on it on its own
    cadence; the incident opens when any camera's vote holds, and resolves only on a scan of a camera that
    should see it, so a camera that goes dark cannot resolve what it no longer watches."""

    def __init__(self, db_path: str, edge_id: str, class_names: list[str], rules: dict[str, Rules],
                 sink: EventSink | None = None, evidence: Evidence | None = None,
                 reportable: set[str] | None = None, places: Places | None = None,
                 merge_radius_m: Mapping[str, float] | None = None, default_merge_m: float = 3.0,
                 other_class_m: float = 0.0, may_share_place: Iterable[str] = ()) -> None:
        self.edge_id = edge_id
        self.class_names = class_names
        self.rules = rules
        self.sink = sink
        self.evidence = evidence
        self.places = places
        self.reportable = reportable if reportable is not None else set(class_names)
        self._radius = np.array([float((merge_radius_m or {}).get(n, default_merge_m)) for n in class_names])
        self._other_m = float(other_class_m)
        self._shares = np.array([n in set(may_share_place) for n in class_names], bool)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("""CREATE TABLE IF NOT EXISTS incidents (
            incident_id TEXT PRIMARY KEY, camera_id TEXT, class_id INTEGER, box TEXT, first_ts REAL,
            opened_ts REAL, last_seen REAL, last_update REAL, best_conf REAL, zone TEXT, seq INTEGER,
            image_w INTEGER, image_h INTEGER, state TEXT)""")
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(incidents)")}
        for col, typ in _COLUMNS.items():  # state files from before ground positions: add the columns
            if col not in have:
                self._conn.execute(f"ALTER TABLE incidents ADD COLUMN {col} {typ}")
        self._conn.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        self._conn.execute("""CREATE TABLE IF NOT EXISTS suppressions (
            incident_id TEXT PRIMARY KEY, class_name TEXT NOT NULL, ground_x REAL, ground_y REAL,
            radius_m REAL NOT NULL, boxes TEXT NOT NULL, since_ts REAL NOT NULL, until_ts REAL NOT NULL)""")
        self._tracks: list[Track] = []
        self._faint: list[Faint] = []  # the sustained path's evidence, per camera
        self._next_key = 0
        # row writes of the scan in progress: executed by _commit inside the transaction that also writes the
        # scan's events to the outbox, so an incident row can never be on disk without its message (or the reverse)
        self._pending: list[tuple[str, tuple]] = []
        self._count: int | None = None  # the id counter, ahead of the disk by the pending writes
        self._suppressions: list[Suppression] = []
        self._frame_sizes: dict[str, tuple[int, int]] = {}  # camera id -> (w, h) its boxes here are in
        # open incidents' pictures of their places (views.py) changed since they were last written: they go to disk
        # only then (a new picture every 10 s at most), not with every scan's snapshot
        self._views_dirty = False
        self._load()

    # ---------------------------------------------------------------- persistence
    def _load(self) -> None:
        """Restore the book as the last committed scan left it: candidates and their votes too, so a restart
        mid-vote opens the incident exactly when an uninterrupted run would. State files without a snapshot
        (older versions) restore the open incidents only."""
        self._suppressions = [
            Suppression(r[0], r[1], None if r[2] is None else (r[2], r[3]), r[4],
                        {k: tuple(v) for k, v in json.loads(r[5]).items()}, r[6], r[7])
            for r in self._conn.execute("SELECT incident_id, class_name, ground_x, ground_y, radius_m, boxes, since_ts, "
                                        "until_ts FROM suppressions ORDER BY since_ts")]
        if self._suppressions:
            log.info("restored %d suppressed places (dismissed false alarms)", len(self._suppressions))
        sizes = self._conn.execute("SELECT v FROM meta WHERE k='frame_sizes'").fetchone()
        self._frame_sizes = {k: (int(v[0]), int(v[1])) for k, v in json.loads(sizes[0]).items()} if sizes else {}
        faint = self._conn.execute("SELECT v FROM meta WHERE k='faint'").fetchone()
        self._faint = [_faint_from(d) for d in json.loads(faint[0])] if faint else []
        snap = self._conn.execute("SELECT v FROM meta WHERE k='tracks'").fetchone()
        if snap is not None:
            self._tracks = [_track_from(d) for d in json.loads(snap[0])]
            pictures = self._conn.execute("SELECT v FROM meta WHERE k='views'").fetchone()
            saved = json.loads(pictures[0]) if pictures else {}
            for t in self._tracks:
                got = ((c, view_from(v)) for c, v in saved.get(str(t.key), {}).items())
                t.views = {c: v for c, v in got if v is not None}
            self._next_key = max((t.key for t in self._tracks), default=0)
            ev = dict(self._conn.execute("SELECT incident_id, evidence FROM incidents WHERE state='open'").fetchall())
            for t in self._tracks:
                t.evidence = ev.get(t.incident_id) if t.is_open else None
            if self._tracks:
                log.info("restored %d open incidents and %d candidates", sum(t.is_open for t in self._tracks),
                         sum(not t.is_open for t in self._tracks))
            return
        rows = self._conn.execute("SELECT incident_id, camera_id, class_id, box, first_ts, opened_ts, last_seen, "
                                  "last_update, best_conf, zone, seq, image_w, image_h, ground_x, ground_y, ground_w, "
                                  "accuracy_m, boxes FROM incidents WHERE state='open'").fetchall()
        for r in rows:
            t = Track(self._key(), r[1], r[2], np.array(json.loads(r[3]), np.float32), r[4], r[6], best_conf=r[8],
                      zone=r[9], incident_id=r[0], opened_ts=r[5], last_update=r[7], seq=r[10], image_size=(r[11], r[12]),
                      ground=None if r[13] is None else np.array([r[13], r[14]]), ground_w=r[15] or 0.0,
                      accuracy_m=r[16])
            t.boxes = {k: np.array(v, np.float32) for k, v in json.loads(r[17] or "{}").items()} or {t.camera_id: t.box}
            t.best_box = t.box.copy()
            self._tracks.append(t)
        if rows:
            log.info("restored %d open incidents", len(rows))

    def _counter(self) -> int:
        if self._count is None:
            row = self._conn.execute("SELECT v FROM meta WHERE k='counter'").fetchone()
            self._count = int(row[0]) if row else 0
        self._count += 1
        self._pending.append(("INSERT OR REPLACE INTO meta VALUES ('counter', ?)", (str(self._count),)))
        return self._count

    def _save(self, t: Track, state: str) -> None:
        g = t.ground if t.ground is not None else (None, None)
        self._pending.append((
            "INSERT OR REPLACE INTO incidents (incident_id, camera_id, class_id, box, first_ts, opened_ts, last_seen, "
            "last_update, best_conf, zone, seq, image_w, image_h, state, ground_x, ground_y, ground_w, accuracy_m, boxes, "
            "evidence) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (t.incident_id, t.camera_id, t.class_id, json.dumps(_box_json(t.box)), t.first_ts, t.opened_ts, t.last_seen,
             t.last_update, t.best_conf, t.zone, t.seq, t.image_size[0], t.image_size[1], state,
             None if g[0] is None else float(g[0]), None if g[1] is None else float(g[1]), t.ground_w, t.accuracy_m,
             json.dumps({k: _box_json(v) for k, v in t.boxes.items()}), t.evidence if state == "open" else None)))
        t.evidence_dirty = False

    def _key(self) -> int:
        self._next_key += 1
        return self._next_key

    # ---------------------------------------------------------------- the vote
    def update(self, camera_id: str, ts: float, dets: Detections, zones: list[str | None],
               image: np.ndarray | Frame | None = None,
               ground: Ground | None = None, strong: np.ndarray | None = None,
               strength: np.ndarray | None = None) -> list[IncidentEvent]:
        """One scan of one camera: match sightings to tracks, vote, and return the events it causes (already
        handed to the sink in the same transaction as the state they reflect). `ground` gives each sighting's
        site-local position; without it this camera's sightings match by image box only. `strong` marks the
        sightings at or above their class threshold (default: all); the others only keep an open incident
        open — they never start a candidate nor match one (hysteresis against a detector near its threshold).
        `image` is the BGR picture or the frame itself, whose BGR is made only when a sighting becomes a best view.
        `strength` (score / class threshold; 0: may not count) feeds the sustained path (`Persistence.sustain_s`);
        without it only the vote opens incidents."""
        rules = self.rules[camera_id]
        if isinstance(image, Frame):
            w, h = image.size
        else:
            h, w = (image.shape[:2] if image is not None else (0, 0))
        ground = ground if ground is not None else Ground.unknown(len(dets))
        strong = np.ones(len(dets), bool) if strong is None else np.asarray(strong, bool)
        with self._lock:
            if w > 0 and h > 0 and self._frame_sizes.get(camera_id) != (w, h):
                self._frame_size_changed(camera_id, (w, h))
            expired = [s for s in self._suppressions if s.until_ts <= ts]
            if expired:
                self._suppressions = [s for s in self._suppressions if s.until_ts > ts]
                log.info("suppression of %s ended", ", ".join(f"{s.class_name} at {s.incident_id}'s place" for s in expired))
            matched, twins = self._match(camera_id, dets, ground, rules.match_iou, strong)
            seen_keys = set()
            for i, t in matched.items():
                self._observe(t, camera_id, ts, dets, i, ground, zones[i], image, (w, h))
                seen_keys.add(t.key)
            for i in range(len(dets)):
                if i in twins or not strong[i]:
                    continue  # a second box on a thing this scan already saw (rim and shaft), or a weak sighting
                if i not in matched and self.class_names[int(dets.class_id[i])] in self.reportable:
                    if self._suppressed(int(dets.class_id[i]), {camera_id: dets.xyxy[i]}, ground.xy[i]):
                        continue  # a dismissed false alarm's place: no candidate, no vote
                    t = Track(self._key(), camera_id, int(dets.class_id[i]), dets.xyxy[i].copy(), ts, ts)
                    self._observe(t, camera_id, ts, dets, i, ground, zones[i], image, (w, h))
                    self._tracks.append(t)
                    seen_keys.add(t.key)
            p = rules.persistence
            sustained: set[int] = set()
            if strength is not None and p.sustain_s > 0:
                sustained = self._sustain(camera_id, ts, dets, ground, matched, twins, np.asarray(strength, np.float64),
                                          zones, image, (w, h), seen_keys)
            events: list[IncidentEvent] = []
            keep: list[Track] = []
            for t in self._tracks:
                seen = t.key in seen_keys
                if not seen and not self._watches(t, camera_id):
                    # another camera's incident, out of this camera's view: this scan says nothing about it
                    if t.is_open or ts - t.last_seen <= p.window_s:
                        keep.append(t)
                    continue
                votes = t.votes.setdefault(camera_id, deque(maxlen=512))
                votes.append((ts, seen))
                while votes and votes[0][0] < ts - p.window_s:
                    votes.popleft()
                if not t.is_open and self._near_open(t):
                    continue  # a candidate that drifted onto an open incident of its class is that incident
                if not t.is_open:
                    n = len(votes)
                    k = sum(1 for _, s in votes if s)
                    if ((t.key in sustained or (n >= p.min_scans and k / n >= p.vote_ratio and k >= p.min_scans))
                            and not self._suppressed(t.class_id, t.boxes, t.ground) and not self._taken(t)):
                        t.incident_id = self._new_id(ts)
                        self._views_dirty = True  # its pictures join the state file
                        t.opened_ts = t.last_update = ts
                        events.append(self._event(t, "opened", ts))
                        self._save(t, "open")
                    if ts - t.last_seen <= p.window_s or t.is_open:
                        keep.append(t)
                    continue
                if not seen and image is not None and camera_id in t.views and rules.hidden_hold_s > 0:
                    # a scan that misses it: was its place in plain view, or did something stand in front of it?
                    if hidden(t.views[camera_id], image):
                        since = t.judged_ts.get(camera_id, t.last_seen)
                        t.hidden_s[camera_id] = t.hidden_s.get(camera_id, 0.0) + ts - since
                    t.judged_ts[camera_id] = ts
                if ts - t.last_seen - min(t.hidden_for(), rules.hidden_hold_s) >= rules.resolve_after_s:
                    events.append(self._event(t, "resolved", ts))
                    self._save(t, "resolved")
                    continue
                # only on a scan that sees it: an update must carry fresh evidence, never a stale box
                if seen and ts - (t.last_update or ts) >= rules.update_interval_s:
                    t.last_update = ts
                    events.append(self._event(t, "updated", ts))
                    self._save(t, "open")
                keep.append(t)
            self._tracks = keep
            try:
                self._commit(events, keep, expired=expired)
            except BaseException:
                # nothing of this scan reached the disk: forget it in memory too, or an incident could be open
                # here with its `opened` never sent
                self._tracks, self._next_key = [], 0
                self._load()
                raise
            return events

    def _frame_size_changed(self, camera_id: str, size: tuple[int, int]) -> None:
        """A camera's frames changed size (reconfigured, or its stream restarted at another resolution): its boxes
        here (tracks, open incidents, dismissed places) are rescaled to the new frames, so what it already
        reported keeps matching — not a second incident and a false `resolved` for the first."""
        old = self._frame_sizes.get(camera_id)
        self._frame_sizes[camera_id] = size
        self._pending.append(("INSERT OR REPLACE INTO meta VALUES ('frame_sizes', ?)",
                              (json.dumps({k: list(v) for k, v in sorted(self._frame_sizes.items())}),)))
        if old is None:
            return
        f = np.array([size[0] / old[0], size[1] / old[1]] * 2, np.float32)
        n = 0
        for t in self._tracks:
            if camera_id in t.boxes:
                t.boxes[camera_id] = t.boxes[camera_id] * f
                n += 1
            if t.views.pop(camera_id, None) is not None:  # a picture of other pixels: the next sighting makes anew
                self._views_dirty = True
            if t.camera_id == camera_id:
                t.box = t.box * f
                t.best_box = None if t.best_box is None else t.best_box * f
                t.image_size = size
                if t.is_open:
                    self._pending.append(("UPDATE incidents SET image_w=?, image_h=? WHERE incident_id=?",
                                          (size[0], size[1], t.incident_id)))
        for fa in self._faint:
            if fa.camera_id == camera_id:
                fa.box = fa.box * f
        for k, sp in enumerate(self._suppressions):
            if camera_id in sp.boxes:
                boxes = {**sp.boxes, camera_id: tuple(float(v) for v in np.asarray(sp.boxes[camera_id]) * f)}
                self._suppressions[k] = replace(sp, boxes=boxes)
                self._pending.append(("UPDATE suppressions SET boxes=? WHERE incident_id=?",
                                      (json.dumps(boxes), sp.incident_id)))
        log.info("camera %s: frames are now %dx%d (were %dx%d); %d tracks and their boxes follow", camera_id,
                 size[0], size[1], old[0], old[1], n)

    def _observe(self, t: Track, camera_id: str, ts: float, dets: Detections, i: int, ground: Ground,
                 zone: str | None, image: np.ndarray | Frame | None, size: tuple[int, int]) -> None:
        """Fold one sighting into a track: smoothed box per camera, refined ground position, best view."""
        box, conf = dets.xyxy[i], float(dets.confidence[i])
        prev = t.boxes.get(camera_id)
        t.boxes[camera_id] = box.copy() if prev is None else 0.7 * prev + 0.3 * box
        t.last_seen = ts
        t.hidden_s, t.judged_ts = {}, {}
        if image is not None and size[0] > 0:
            view = remember(t.views.get(camera_id), t.boxes[camera_id], image, size, ts)
            if view is None:
                t.views.pop(camera_id, None)
            else:
                t.views[camera_id] = view
            self._views_dirty |= t.is_open and (view is None or view.kept_ts == ts)
        xy, acc = ground.xy[i], float(ground.accuracy_m[i])
        if ground.away is not None and np.any(ground.away[i]):
            t.aways.pop(camera_id, None)  # re-inserted last: `away` is the latest sighting's
            t.aways[camera_id] = ground.away[i].astype(np.float64)
        reach = np.nan if ground.reach is None else float(ground.reach[i])
        if np.isfinite(reach) and reach > t.reach:
            # the largest footprint seen: a passing truck only ever hides part of a puddle (884: a smoothed reach
            # shrank from 1.8 to 1.4 m on the hidden puddle's sliver, and the pile read on its edge opened)
            t.reach = min(reach, float(self._radius[t.class_id]))
        beyond = 0.0 if t.ground is None else float(ground.far_side(t.ground)[i, 0])
        if np.all(np.isfinite(xy)) and beyond < 0.5 * float(self._radius[t.class_id]):
            # a sighting well beyond the place along its ray (its foot hidden) matches but does not move it
            wgt = 1.0 / max(acc if np.isfinite(acc) else 1.0, 0.1) ** 2
            t.ground = xy.astype(np.float64).copy() if t.ground is None else (t.ground * t.ground_w + xy * wgt) / (t.ground_w + wgt)
            t.ground_w += wgt
            if np.isfinite(acc):
                t.accuracy_m = acc if t.accuracy_m is None else min(t.accuracy_m, acc)
        if conf > t.best_conf + 0.02 or t.best_box is None:
            t.best_conf, t.best_box, t.camera_id, t.image_size = conf, box.copy(), camera_id, size
            half = np.nan if ground.half_size is None else float(ground.half_size[i])
            if np.isfinite(half):
                t.half_size = half
            if zone is not None or t.zone is None:
                t.zone = zone
            if image is not None and self.evidence is not None:
                picture = image.image if isinstance(image, Frame) else image
                t.evidence = self.evidence(picture, box, self.class_names[t.class_id], conf)
                t.evidence_dirty = True
        t.box = t.boxes[t.camera_id]

    def _sustain(self, camera_id: str, ts: float, dets: Detections, ground: Ground, matched: dict[int, Track],
                 twins: set[int], strength: np.ndarray, zones: list[str | None], image: np.ndarray | Frame | None,
                 size: tuple[int, int], seen_keys: set[int]) -> set[int]:
        """The sustained path: fold this scan's sightings that no open incident holds into the camera's faint
        tracks, and return the keys of the candidates whose faint evidence now holds (making one from the
        sighting where none is there yet). The caller opens them as if their vote had held."""
        p = self.rules[camera_id].persistence
        fed = [i for i in range(len(dets)) if i not in twins and strength[i] > 0
               and not (i in matched and matched[i].is_open)
               and self.class_names[int(dets.class_id[i])] in self.reportable
               # a dismissed place: no evidence builds up there while the centre's suppression lasts
               and not self._suppressed(int(dets.class_id[i]), {camera_id: dets.xyxy[i]}, ground.xy[i])]
        mine = [f for f in self._faint if f.camera_id == camera_id]
        hit = self._match_faint(mine, dets, ground, fed, self.rules[camera_id].match_iou)
        for i in fed:
            if i not in hit:
                f = Faint(camera_id, int(dets.class_id[i]), dets.xyxy[i].copy(),
                          ground.xy[i].astype(np.float64).copy() if np.all(np.isfinite(ground.xy[i])) else None, ts, ts)
                mine.append(f)
                hit[i] = f
        by_faint = {id(f): i for i, f in hit.items()}
        out: set[int] = set()
        keep: list[Faint] = []
        for f in mine:
            i = by_faint.get(id(f))
            if i is not None:
                f.last_seen = ts
                f.box = 0.7 * f.box + 0.3 * dets.xyxy[i]
                xy = ground.xy[i]
                if np.all(np.isfinite(xy)):
                    f.ground = xy.astype(np.float64).copy() if f.ground is None else 0.8 * f.ground + 0.2 * xy
            f.hist.append((ts, 0.0 if i is None else float(strength[i])))
            while f.hist and f.hist[0][0] < ts - p.sustain_s:
                f.hist.popleft()
            if ts - f.last_seen > p.window_s:
                continue  # gone
            keep.append(f)
            if i is not None and f.holds(ts, p.sustain_s, p.sustain_ratio):
                t = matched.get(i) or self._candidate_at(f, camera_id)
                if t is None:
                    t = Track(self._key(), camera_id, f.class_id, dets.xyxy[i].copy(), ts, ts)
                    self._tracks.append(t)
                if i not in matched:
                    self._observe(t, camera_id, ts, dets, i, ground, zones[i], image, size)
                t.first_ts = min(t.first_ts, f.first_ts)  # seen there since; the evidence is this scan's view
                if t.key not in out:
                    log.debug("%s at %s: seen by %s for %.0f s, sustained evidence holds",
                              self.class_names[f.class_id], None if f.ground is None else np.round(f.ground, 2).tolist(),
                              camera_id, ts - f.first_ts)
                out.add(t.key)
                seen_keys.add(t.key)
        self._faint = [f for f in self._faint if f.camera_id != camera_id] + keep
        return out

    def _match_faint(self, faint: list[Faint], dets: Detections, ground: Ground, fed: list[int],
                     min_iou: float) -> dict[int, Faint]:
        """Greedy one-to-one matching of one camera's sightings to its faint tracks of the same class, as `_match`
        does: by ground distance within the class's merge radius, else by box IoU."""
        if not faint or not fed:
            return {}
        idx = np.array(fed)
        fc = np.array([f.class_id for f in faint])
        fg = np.array([f.ground if f.ground is not None else (np.nan, np.nan) for f in faint], np.float64)
        d = np.linalg.norm(ground.xy[idx][:, None, :] - fg[None, :, :], axis=2)
        iou = np.nan_to_num(box_iou(dets.xyxy[idx], np.stack([f.box for f in faint])), nan=0.0)
        score = _match_scores(d, self._radius[dets.class_id[idx]][:, None], iou, min_iou,
                              dets.class_id[idx][:, None] == fc[None, :])
        return {int(idx[a]): faint[b] for a, b in _greedy_pairs(score)}

    def _candidate_at(self, f: Faint, camera_id: str) -> Track | None:
        """A candidate (not open) of the faint track's class at its place: by ground within the merge radius, else
        by box IoU in this camera."""
        r = float(self._radius[f.class_id])
        for t in self._tracks:
            if t.is_open or t.class_id != f.class_id:
                continue
            if f.ground is not None and t.ground is not None:
                if float(np.hypot(*(f.ground - t.ground))) < r:
                    return t
            elif camera_id in t.boxes and box_iou(f.box[None], t.boxes[camera_id][None])[0, 0] >= \
                    self.rules[camera_id].match_iou:
                return t
        return None

    def _watches(self, t: Track, camera_id: str) -> bool:
        """Should this camera see the track? Its place is in the camera's view (calibrated), or the camera
        has seen it before (an image-only track)."""
        if t.ground is not None and self.places is not None:
            return bool(self.places.in_view(camera_id, t.ground))
        return camera_id in t.boxes

    def _commit(self, events: list[IncidentEvent], tracks: list[Track], *, expired: Iterable[Suppression] = (),
                also: Iterable[tuple[str, bytes]] = (), before: Callable[[], None] | None = None) -> None:
        """Events and the state they reflect go to disk together; last-seen times of open incidents ride along.
        `before` runs first inside the transaction; `also` are more outbox rows (a command's reply) after the
        events'."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            if before is not None:
                before()
            for sql, params in self._pending:
                self._conn.execute(sql, params)
            self._pending.clear()
            for s in expired:
                self._conn.execute("DELETE FROM suppressions WHERE incident_id=?", (s.incident_id,))
            for t in tracks:
                if t.is_open:
                    g = t.ground if t.ground is not None else (None, None)
                    self._conn.execute(
                        "UPDATE incidents SET last_seen=?, box=?, ground_x=?, ground_y=?, ground_w=? WHERE incident_id=?",
                        (t.last_seen, json.dumps(_box_json(t.box)), None if g[0] is None else float(g[0]),
                         None if g[1] is None else float(g[1]), t.ground_w, t.incident_id))
                    if t.evidence_dirty:
                        self._conn.execute("UPDATE incidents SET evidence=? WHERE incident_id=?", (t.evidence, t.incident_id))
                        t.evidence_dirty = False
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('tracks', ?)",
                               (json.dumps([_track_state(t) for t in tracks]),))
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('faint', ?)",
                               (json.dumps([_faint_state(f) for f in self._faint]),))
            if self._views_dirty:
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('views', ?)", (json.dumps(
                    {str(t.key): {c: view_state(v) for c, v in t.views.items()} for t in tracks if t.is_open}),))
            if events and self.sink is not None:
                self.sink.write_events(self._conn, events)
            enqueue(self._conn, also)
            self._conn.execute("COMMIT")
            self._views_dirty = False
        except BaseException:
            self._conn.execute("ROLLBACK")
            self._pending.clear()
            self._count = None  # re-read: the counter writes of this scan were rolled back
            raise

    def _match(self, camera_id: str, dets: Detections, ground: Ground, min_iou: float,
               strong: np.ndarray) -> tuple[dict[int, Track], set[int]]:
        """Greedy one-to-one matching of sightings to tracks of the same class: by ground distance within the
        class's merge radius where both positions are known, else by box IoU in this camera's image. Also returns
        the unmatched sightings that would have matched a track already taken: a second box on one thing (NMS
        keeps a rim box and a shaft box whose IoU is under its threshold), which must not start a second track."""
        if not self._tracks or len(dets) == 0:
            return {}, set()
        tc = np.array([t.class_id for t in self._tracks])
        same = dets.class_id[:, None] == tc[None, :]
        tg = np.array([t.ground if t.ground is not None else (np.nan, np.nan) for t in self._tracks], np.float64)
        is_open = np.array([t.is_open for t in self._tracks], bool)
        d = np.linalg.norm(ground.xy[:, None, :] - tg[None, :, :], axis=2)  # NaN where either is unknown
        # an upright thing's sighting beyond an open incident along the camera's ray is most likely its foot
        # hidden or missed by the box: that part of the gap counts FAR_SIDE_WEIGHT. Not for candidates: a stray
        # box in front of a thing would otherwise collect that thing's second boxes and open as a case
        d = _far_side_discounted(d, ground.far_side(tg) * is_open[None, :])
        tb = np.stack([t.boxes.get(camera_id, np.full(4, np.nan, np.float32)) for t in self._tracks])
        iou = np.nan_to_num(box_iou(dets.xyxy, tb), nan=0.0)
        score = _match_scores(d, self._radius[dets.class_id][:, None], iou, min_iou, same)
        score[~strong[:, None] & ~is_open[None, :]] = -1.0  # weak sightings: open incidents only
        near = (score > 0).any(axis=1)
        out = {i: self._tracks[j] for i, j in _greedy_pairs(score)}
        return out, {int(i) for i in np.flatnonzero(near) if int(i) not in out}

    def _near_open(self, t: Track) -> bool:
        """Is there an open incident of the candidate's class within the merge radius (or, without ground
        positions, overlapping it in a camera both were seen by)?"""
        r = float(self._radius[t.class_id])
        for x in self._tracks:
            if x is t or not x.is_open or x.class_id != t.class_id:
                continue
            if t.ground is not None and x.ground is not None:
                # as in _match: a candidate beyond the incident along its ray (a hidden foot) may be that thing
                gap = t.ground - x.ground
                far = 0.0 if t.away is None else max(float(gap @ t.away), 0.0)
                if float(_far_side_discounted(np.hypot(*gap), far)) < r:
                    return True
                continue
            for cam, box in t.boxes.items():
                if cam in x.boxes and cam in self.rules:
                    if box_iou(box[None], x.boxes[cam][None])[0, 0] >= self.rules[cam].match_iou:
                        return True
        return False

    def _taken(self, t: Track) -> bool:
        """Is the candidate's place already an open incident of another class — within `other_class_m` of its point,
        or inside a flat one's footprint (884: a puddle mostly hidden by a stopped truck, its visible edge read as a
        material pile 1.5 m from the puddle's centre, inside its 3.5 m footprint)? Then it is most likely that thing
        read as something else (a puddle seen as a garbage pile from the second camera), and the centre wants one
        case per thing; so is its top boxed alone beyond an upright incident's foot (`_top_of`). Classes in
        `may_share_place` (an open manhole lies in a puddle) are never held back nor hold others back; the candidate opens if that incident resolves while it is still seen.
        Records the holder in `t.held_by`: later scans keep the candidate held while that incident is open and it is
        still there (`_still_at`), rather than judging it afresh against that scan's box."""
        if self._other_m <= 0 or t.ground is None or self._shares[t.class_id]:
            return False
        if t.held_by is not None:
            x = next((x for x in self._tracks if x.is_open and x.incident_id == t.held_by), None)
            if x is not None and x.ground is not None and _still_at(t, x, self._other_m):
                log.debug("%s candidate at %s still held back by %s %s", self.class_names[t.class_id],
                          np.round(t.ground, 2).tolist(), self.class_names[x.class_id], x.incident_id)
                return True
            t.held_by = None
        for x in self._tracks:
            if (x.is_open and x.class_id != t.class_id and not self._shares[x.class_id] and x.ground is not None
                    and (float(np.hypot(*(t.ground - x.ground))) < max(self._other_m, x.reach) or _top_of(t, x))):
                log.debug("%s candidate at %s held back: open %s %s is there", self.class_names[t.class_id],
                          np.round(t.ground, 2).tolist(), self.class_names[x.class_id], x.incident_id)
                t.held_by = x.incident_id
                return True
        return False

    def _new_id(self, ts: float) -> str:
        n = self._counter()
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(ts))
        return f"{self.edge_id}-{stamp}-{n:04d}"

    def _event(self, t: Track, kind: str, ts: float, reason: str | None = None) -> IncidentEvent:
        t.seq += 1
        mid = str(uuid.uuid5(_NS, f"{self.edge_id}/{t.incident_id}/{kind}/{t.seq}"))
        box = t.best_box if t.best_box is not None else t.box
        name = self.class_names[t.class_id]
        place: dict = {}
        accuracy = reported_accuracy(t.accuracy_m, t.half_size)
        if t.ground is not None and self.places is not None:
            place = dict(self.places.describe(name, t.ground, accuracy))
        lon, lat, acc = place.pop("lon", None), place.pop("lat", None), place.pop("accuracy_m", accuracy)
        return IncidentEvent(message_id=mid, incident_id=t.incident_id or "", event=kind,  # type: ignore[arg-type]
                             class_name=name, camera_id=t.camera_id, ts=ts,
                             discovered_ts=t.opened_ts if t.opened_ts is not None else ts, confidence=round(t.best_conf, 4),
                             box_xyxy=tuple(round(float(v), 1) for v in box), image_size=t.image_size, zone=t.zone,
                             ground_xy=None if t.ground is None else (round(float(t.ground[0]), 3), round(float(t.ground[1]), 3)),
                             lon=lon, lat=lat, accuracy_m=acc if lon is not None else None,
                             evidence_jpeg=t.evidence if kind != "resolved" else None,
                             extra={"first_seen_ts": t.first_ts, "last_seen_ts": t.last_seen, "seq": t.seq,
                                    "cameras": sorted(t.boxes), **place, **({"reason": reason} if reason else {})})

    def open_incidents(self) -> list[Track]:
        with self._lock:
            return [t for t in self._tracks if t.is_open]

    # ---------------------------------------------------------------- the centre's commands
    def _suppressed(self, class_id: int, boxes: Mapping[str, np.ndarray], xy: np.ndarray | None) -> bool:
        """Is a sighting (or a track) of this class at a dismissed place? By ground distance where both places are
        known, else by box IoU in a camera both were seen by — the same test `_match` makes."""
        if not self._suppressions:
            return False
        name = self.class_names[class_id]
        known = xy is not None and bool(np.all(np.isfinite(xy)))
        for s in self._suppressions:
            if s.class_name != name:
                continue
            if known and s.ground is not None:
                if float(np.hypot(xy[0] - s.ground[0], xy[1] - s.ground[1])) < s.radius_m:  # type: ignore[index]
                    return True
                continue
            for cam, box in boxes.items():
                if cam in s.boxes and cam in self.rules:
                    iou = box_iou(np.asarray(box, np.float32)[None], np.asarray(s.boxes[cam], np.float32)[None])[0, 0]
                    if iou >= self.rules[cam].match_iou:
                        return True
        return False

    def dismiss(self, incident_id: str, ts: float, until_ts: float,
                also: Iterable[tuple[str, bytes]] = ()) -> IncidentEvent:
        """Close an open incident as a false alarm (a `resolved` event with reason `dismissed`) and suppress its
        class at its place until `until_ts`; candidates of that class there are dropped too. The event, the
        suppression and `also` (the command's reply) commit together. KeyError if it is not open."""
        with self._lock:
            t = next((x for x in self._tracks if x.is_open and x.incident_id == incident_id), None)
            if t is None:
                raise KeyError(incident_id)
            s = Suppression(incident_id, self.class_names[t.class_id],
                            None if t.ground is None else (float(t.ground[0]), float(t.ground[1])),
                            float(self._radius[t.class_id]),
                            {c: tuple(round(float(v), 2) for v in b) for c, b in t.boxes.items()},  # type: ignore[misc]
                            float(ts), float(until_ts))
            ev = self._event(t, "resolved", ts, reason="dismissed")
            suppressions = [x for x in self._suppressions if x.incident_id != incident_id] + [s]
            saved, self._suppressions = self._suppressions, suppressions
            keep = [x for x in self._tracks
                    if x is not t and (x.is_open or x.class_id != t.class_id or not self._suppressed(x.class_id, x.boxes, x.ground))]

            def write() -> None:
                self._save(t, "resolved")
                self._conn.execute("INSERT OR REPLACE INTO suppressions VALUES (?,?,?,?,?,?,?,?)",
                                   (s.incident_id, s.class_name, None if s.ground is None else s.ground[0],
                                    None if s.ground is None else s.ground[1], s.radius_m, json.dumps(s.boxes),
                                    s.since_ts, s.until_ts))
            try:
                self._commit([ev], keep, also=also, before=write)
            except BaseException:
                self._suppressions = saved
                raise
            self._tracks = keep
            log.info("dismissed %s (%s) as a false alarm; suppressed there until %.0f", incident_id, s.class_name,
                     until_ts)
            return ev

    def dismissal(self, incident_id: str) -> Suppression | None:
        """The suppression a dismiss of this incident left (None if it was never dismissed, or it ended)."""
        with self._lock:
            return next((s for s in self._suppressions if s.incident_id == incident_id), None)

    def suppressions(self) -> list[Suppression]:
        """Places where dismissed false alarms are suppressed now (ended ones go at the next scan after their end)."""
        with self._lock:
            return list(self._suppressions)

    def set_rules(self, rules: dict[str, Rules]) -> None:
        """New rules (a reload or a profile switch), in force from the next scan."""
        with self._lock:
            self.rules = dict(rules)

    def enqueue(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Put messages (a command's reply, a snapshot) in the outbox of this book's file, in one transaction."""
        items = list(items)
        if not items:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                enqueue(self._conn, items)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def setting(self, key: str) -> str | None:
        """A value the centre set that must survive a restart (the active rule profile)."""
        with self._lock:
            row = self._conn.execute("SELECT v FROM meta WHERE k=?", (f"setting:{key}",)).fetchone()
            return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"setting:{key}", value))

    def close(self) -> None:
        self._conn.close()
