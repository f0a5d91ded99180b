"""Gone or hidden: an open incident whose place a stopped lorry hides keeps its case (no `resolved`, and no second
`opened` when the lorry leaves); one that is gone from a place in plain view resolves on time; a place hidden for
ever does not hold its case for ever; and a restart in the middle of the hiding changes nothing."""
from __future__ import annotations

import sqlite3

import numpy as np

from edge import views
from edge.config import Persistence, Rules
from edge.detections import Detections
from edge.incidents import IncidentBook
from edge.types import Frame, Yuv420

NAMES = ["manhole_cover", "manhole_open", "ponding"]
RULES = {"cam": Rules(persistence=Persistence(window_s=10, vote_ratio=0.6, min_scans=3), resolve_after_s=30,
                      update_interval_s=1000)}
BOX = [80.0, 60.0, 120.0, 80.0]  # the puddle, in a 240 x 160 picture


class ListSink:
    def __init__(self) -> None:
        self.events = []

    def write_events(self, conn: sqlite3.Connection, events) -> None:
        self.events.extend(events)


def street(rng: np.random.Generator) -> np.ndarray:
    """A textured road (blocks of grey, as asphalt and markings at this scale), the same every time."""
    blocks = np.random.default_rng(7).integers(50, 200, (16, 24)).astype(np.uint8)
    grey = np.kron(blocks, np.ones((10, 10), np.uint8)).astype(np.int16)
    return np.clip(grey + rng.integers(-6, 7, grey.shape), 0, 255).astype(np.uint8)


def picture(rng, *, puddle: bool, lorry: bool = False, gain: float = 1.0) -> np.ndarray:
    g = street(rng).astype(np.float64)
    if puddle:
        g[60:80, 80:120] = 30
    if lorry:
        g[20:130, 40:200] = 225  # a lorry's side: the puddle and most of the road around it
    g = np.clip(g * gain, 0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def test_a_place_hidden_by_a_lorry_is_hidden_and_one_in_plain_view_is_not():
    rng = np.random.default_rng(0)
    view = None
    for k in range(5):
        view = views.remember(view, np.array(BOX), picture(rng, puddle=True), (240, 160), 20.0 * k)
    assert view is not None and view.ring.any() and not view.ring.all()
    assert views.hidden(view, picture(rng, puddle=True, lorry=True))
    assert not views.hidden(view, picture(rng, puddle=False))  # gone: the ground around it is as it was
    assert not views.hidden(view, picture(rng, puddle=True))
    assert not views.hidden(view, picture(rng, puddle=False, gain=0.6))  # dusk: darker, the same place


def test_a_lorry_crossing_in_front_in_most_sightings_does_not_make_the_empty_place_look_hidden():
    rng = np.random.default_rng(2)
    view = None
    for k in range(5):
        g = picture(rng, puddle=True)
        if k % 2 == 0:
            g[74:130, 30:210] = 215  # a lorry in the lane in front, the puddle still showing above it
        view = views.remember(view, np.array(BOX), g, (240, 160), 10.0 * k)
    assert len(view.crops) == 5
    assert not views.hidden(view, picture(rng, puddle=False))
    assert views.hidden(view, picture(rng, puddle=True, lorry=True))


def test_the_picture_comes_from_a_cameras_planes_as_from_bgr():
    rng = np.random.default_rng(1)
    bgr = picture(rng, puddle=True)
    grey = bgr[:, :, 0]
    planes = np.concatenate([grey, np.full((80, 240), 128, np.uint8)])  # Y, then U and V (grey: 128)
    frame = Frame("cam", 0.0, Yuv420(np.ascontiguousarray(planes)))
    a = views.remember(None, np.array(BOX), bgr, (240, 160), 0.0)
    b = views.remember(None, np.array(BOX), frame, (240, 160), 0.0)
    assert a is not None and b is not None
    assert np.abs(a.crops[0].astype(int) - b.crops[0].astype(int)).max() <= 1


def dets(boxes, conf=0.8) -> Detections:
    if not boxes:
        return Detections.empty()
    b = np.array(boxes, np.float32)
    return Detections(b, np.full(len(b), conf, np.float32), np.full(len(b), 2, np.int64))


def scene(book, t0, t1, *, puddle=(0, 1e9), lorry=(), seed=0, step=2.0):
    """Scan every `step` s: the detector sees the puddle while it is there and no lorry stands over it."""
    rng = np.random.default_rng(seed + int(t0))
    out, t = [], t0
    while t < t1:
        here = puddle[0] <= t < puddle[1]
        over = any(a <= t < b for a, b in lorry)
        d = dets([BOX] if here and not over else [])
        out += book.update("cam", t, d, [None] * len(d), picture(rng, puddle=here, lorry=over))
        t += step
    return out


def test_a_lorry_standing_over_a_puddle_longer_than_resolve_after_neither_resolves_nor_duplicates_it(tmp_path):
    book = IncidentBook(str(tmp_path / "s.db"), "edge1", NAMES, RULES, ListSink())
    ev = scene(book, 0, 400, puddle=(0, 250), lorry=[(60, 160)])  # 100 s hidden; resolve_after_s is 30
    assert [e.event for e in ev] == ["opened", "resolved"], [(e.event, e.ts) for e in ev]
    assert ev[0].incident_id == ev[1].incident_id
    assert 248 + 30 <= ev[1].ts <= 248 + 32  # gone in plain view: resolved on time


def test_gone_in_plain_view_resolves_on_time_and_a_place_hidden_for_ever_does_not_hold_its_case(tmp_path):
    book = IncidentBook(str(tmp_path / "a.db"), "edge1", NAMES, RULES, ListSink())
    ev = scene(book, 0, 200, puddle=(0, 100))
    assert [e.event for e in ev] == ["opened", "resolved"] and 98 + 30 <= ev[1].ts <= 98 + 32
    book = IncidentBook(str(tmp_path / "b.db"), "edge1", NAMES, RULES, ListSink())
    ev = scene(book, 0, 2000, puddle=(0, 1e9), lorry=[(60, 2000)])  # a lorry parks on it and never leaves
    assert [e.event for e in ev] == ["opened", "resolved"]
    hold = RULES["cam"].hidden_hold_s
    assert hold == 600 and 58 + hold + 30 <= ev[1].ts <= 58 + hold + 30 + 4
    off = {"cam": RULES["cam"].model_copy(update={"hidden_hold_s": 0.0})}  # the operator turned it off
    book = IncidentBook(str(tmp_path / "c.db"), "edge1", NAMES, off, ListSink())
    ev = scene(book, 0, 400, puddle=(0, 250), lorry=[(60, 160)])
    assert [e.event for e in ev] == ["opened", "resolved", "opened", "resolved"]


def test_a_restart_while_the_place_is_hidden_changes_nothing(tmp_path):
    # the lorry arrives long after the incident opened, or right after it (before a second picture was taken);
    # the box stops in the middle of the hiding
    for lorry, stop in (((60, 160), 100), ((8, 108), 8)):
        ref = scene(IncidentBook(str(tmp_path / f"ref{stop}.db"), "edge1", NAMES, RULES, ListSink()), 0, 400,
                    puddle=(0, 250), lorry=[lorry])
        assert [e.event for e in ref] == ["opened", "resolved"]
        db = str(tmp_path / f"s{stop}.db")
        first = IncidentBook(db, "edge1", NAMES, RULES, ListSink())
        got = scene(first, 0, stop, puddle=(0, 250), lorry=[lorry])
        first.close()
        got += scene(IncidentBook(db, "edge1", NAMES, RULES, ListSink()), stop, 400, puddle=(0, 250), lorry=[lorry])
        assert [(e.event, e.ts, e.message_id) for e in got] == [(e.event, e.ts, e.message_id) for e in ref], stop


def test_one_camera_with_a_clear_view_of_the_empty_place_lets_it_resolve_on_time(tmp_path):
    """The lorry stands between camera a and the place; camera b, across the street, sees the place empty. Which
    camera's scan comes first at a timestamp must not matter."""
    from test_incidents import FakePlaces, ground_of

    rules = {c: RULES["cam"].model_copy() for c in ("a", "b")}
    for order in (("a", "b"), ("b", "a")):
        book = IncidentBook(str(tmp_path / f"{order[0]}.db"), "edge1", NAMES, rules, ListSink(), places=FakePlaces())
        rng = np.random.default_rng(3)
        ev, t = [], 0.0
        while t < 300:
            here, over = t < 100, 90 <= t < 300
            for cam in order:
                blocked = over and cam == "a"
                d = dets([BOX] if here and not blocked else [])
                ev += book.update(cam, t, d, [None] * len(d), picture(rng, puddle=here, lorry=blocked),
                                  ground_of([(10.0, 3.0)] * len(d)))
            t += 2.0
        assert [e.event for e in ev] == ["opened", "resolved"], order
        assert 98 + 30 <= ev[1].ts <= 98 + 32, order
