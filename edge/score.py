"""`score`: how close a replay's published incidents come to a synthetic scenario's truth.

A scenario (`synth-scenario`) knows every incident's class, ground point, appear/disappear time, unit grid and
(open manholes) the cover's component id; `replay --events-out` writes the incident messages the box would
publish. Scoring them tells whether the box reports each incident once, in the right place and cell, soon
enough, and closes it when it goes — the numbers a city's acceptance test asks for, from one JSON object.

Matching: a reported incident (its messages grouped by `incident_id`) matches a truth incident of the same
class whose ground point lies within `match_radius_m` of the report's last known position, while both exist
(with `slack_s` of slack for voting and resolve delays). Pairs are taken greedily, nearest first, one to one;
a further report of an incident already matched is a duplicate (a real incident, reported twice), any other
report a false positive. Truth incidents no camera can see (`visible_in` empty) are not counted in recall,
and a report of one is neither a hit nor a false positive.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .geo import lonlat_to_local

log = logging.getLogger(__name__)

EVENTS = ("opened", "updated", "resolved")
DEFAULT_SLACK_S = 60.0  # a vote window plus a resolve delay: a report this far outside a lifetime still counts


class ScoreInputError(ValueError):
    """Truth or events a user handed in that cannot be read: the message names the file (and line)."""


# ----------------------------------------------------------------------------------------------- inputs
def parse_time(text: str) -> float:
    """ISO 8601 with a UTC offset (as messages carry it) → epoch seconds; a naive time is refused, since it
    would silently shift every time by the machine's offset."""
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO 8601 time string, got {text!r}")
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"{text!r} is not ISO 8601 (e.g. 2026-07-01T09:00:00.000+08:00)") from None
    if t.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (e.g. +08:00)")
    return t.timestamp()


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _event_problem(ev: Any) -> str | None:
    """What is wrong with one incident message for scoring, None when it is usable."""
    if not isinstance(ev, dict):
        return f"expected a JSON object, got {type(ev).__name__}"
    if not isinstance(ev.get("incident_id"), str) or not ev["incident_id"]:
        return "incident_id: missing or not a string"
    if not isinstance(ev.get("class"), str):
        return f"incident {ev['incident_id']}: class: missing or not a string"
    if ev.get("event") not in EVENTS:
        return f"incident {ev['incident_id']}: event: {ev.get('event')!r} is not one of {', '.join(EVENTS)}"
    try:
        parse_time(ev.get("observed_at"))  # type: ignore[arg-type]
    except ValueError as e:
        return f"incident {ev['incident_id']}: observed_at: {e}"
    for key in ("lon", "lat"):
        if ev.get(key) is not None and not _finite(ev[key]):
            return f"incident {ev['incident_id']}: {key}: {ev[key]!r} is not a finite number"
    return None


def load_events(path: Path) -> list[dict]:
    """The incident messages of a JSON-lines file (`replay --events-out`), in file order. Blank lines and status
    messages (a `state` and no `incident_id`) are skipped; anything else unusable names its line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ScoreInputError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise ScoreInputError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise ScoreInputError(f"{path}: cannot read ({e.strerror})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError as e:
            raise ScoreInputError(f"{path}:{n}: not JSON: {e.msg} (column {e.colno})") from None
        if isinstance(ev, dict) and "state" in ev and "incident_id" not in ev:
            continue
        problem = _event_problem(ev)
        if problem:
            raise ScoreInputError(f"{path}:{n}: {problem}")
        out.append(ev)
    return out


def load_truth(path: Path) -> dict:
    """A scenario's truth.json, checked enough that scoring cannot fail half-way."""
    path = Path(path)
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScoreInputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScoreInputError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    except json.JSONDecodeError as e:
        raise ScoreInputError(f"{path}:{e.lineno}: not JSON: {e.msg}") from None
    problem = _truth_problem(truth)
    if problem:
        raise ScoreInputError(f"{path}: {problem}")
    return truth


def _truth_problem(truth: Any) -> str | None:
    if not isinstance(truth, dict):
        return f"expected a JSON object, got {type(truth).__name__}"
    incs = truth.get("incidents")
    if not isinstance(incs, list):
        return "incidents: missing or not a list"
    for k, inc in enumerate(incs):
        where = f"incidents[{k}]"
        if not isinstance(inc, dict):
            return f"{where}: expected an object"
        if not isinstance(inc.get("id"), str) or not isinstance(inc.get("class"), str):
            return f"{where}: needs string `id` and `class`"
        if not _finite(inc.get("appear_s")):
            return f"{where} ({inc['id']}): appear_s: missing or not a number"
        if inc.get("disappear_s") is not None and not _finite(inc["disappear_s"]):
            return f"{where} ({inc['id']}): disappear_s: not a number"
        xy = inc.get("ground_xy_m")
        has_xy = isinstance(xy, list) and len(xy) == 2 and all(_finite(v) for v in xy)
        if not has_xy and not (_finite(inc.get("lon")) and _finite(inc.get("lat"))):
            return f"{where} ({inc['id']}): needs `ground_xy_m` [x, y] or `lon`, `lat`"
    cams = truth.get("cameras", [])
    if not isinstance(cams, list) or not all(isinstance(c, dict) for c in cams):
        return "cameras: expected a list of objects"
    return None


# ---------------------------------------------------------------------------------------------- scoring
@dataclass
class _Report:
    """One reported incident: its messages folded into what the centre ends up knowing."""

    incident_id: str
    cls: str
    camera_id: str | None
    lon: float | None
    lat: float | None
    open_s: float
    resolve_s: float | None
    grid_code: str | None
    component_id: str | None
    x: float = math.nan
    y: float = math.nan


def _reports(events: list[dict], start_time: float) -> list[_Report]:
    """Group messages by incident id (first-seen order) and fold each group, latest message winning."""
    groups: dict[str, list[tuple[float, int, dict]]] = {}
    for n, ev in enumerate(events):
        problem = _event_problem(ev)
        if problem:
            raise ValueError(f"events[{n}]: {problem}")
        groups.setdefault(ev["incident_id"], []).append((parse_time(ev["observed_at"]) - start_time, n, ev))
    out = []
    for iid, evs in groups.items():
        evs.sort(key=lambda e: (e[0], e[1]))  # by frame time; file order breaks ties
        opened = [t for t, _, e in evs if e["event"] == "opened"]
        resolved = [t for t, _, e in evs if e["event"] == "resolved"]
        placed = [e for _, _, e in evs if e.get("lon") is not None and e.get("lat") is not None]

        def latest(key: str) -> str | None:
            return next((str(e[key]) for _, _, e in reversed(evs) if e.get(key) is not None), None)

        last = placed[-1] if placed else None
        out.append(_Report(iid, evs[0][2]["class"], latest("camera_id"),
                           None if last is None else float(last["lon"]), None if last is None else float(last["lat"]),
                           opened[0] if opened else evs[0][0], resolved[-1] if resolved else None,
                           latest("grid_code"), latest("component_id")))
    return out


def _stats(values: list[float], nd: int = 3) -> dict[str, float | None]:
    """Median and 95th percentile (linear interpolation); None for no values."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"median": None, "p95": None}
    return {"median": _num(np.median(v), nd), "p95": _num(np.percentile(v, 95), nd)}


def _num(v: Any, nd: int = 4) -> float | None:
    """A JSON-safe number: None for None, NaN or infinity."""
    if v is None:
        return None
    f = float(v)
    return round(f, nd) + 0.0 if math.isfinite(f) else None


def _ratio(a: int, b: int) -> float | None:
    return _num(a / b) if b else None


def _anchor(truth: dict) -> dict[str, float] | None:
    """The local frame of the truth's ground points: its cameras' geo anchor, else the first incident."""
    for cam in truth.get("cameras", []):
        a = cam.get("geo_anchor")
        if isinstance(a, dict) and _finite(a.get("lon")) and _finite(a.get("lat")):
            return {"lon": float(a["lon"]), "lat": float(a["lat"])}
    for inc in truth["incidents"]:
        if _finite(inc.get("lon")) and _finite(inc.get("lat")):
            return {"lon": float(inc["lon"]), "lat": float(inc["lat"])}
    return None


def score(truth: dict, events: list[dict], start_time: float = 0.0, match_radius_m: float = 5.0,
          near_m: float = 40.0, slack_s: float = DEFAULT_SLACK_S) -> dict:
    """Score published incident messages against a scenario's truth (see the module docstring).

    `start_time`: epoch seconds of the clip's first frame (what `replay --start-time` was given; 0 when media
    seconds were published as epoch seconds). `near_m`: geo error counts incidents within this ground
    distance of the nearest camera (far ones are worth metres per pixel). Returns a JSON-safe dict: recall,
    precision, duplicates, geo_error_m, grid_code_accuracy, component_id_accuracy, time_to_report_s,
    time_to_resolve_s, and detail keys (per_class, unmatched_truth, false_positive_ids, matches, ...).
    Raises ValueError for truth or events that are not what a scenario and a replay write."""
    problem = _truth_problem(truth)
    if problem:
        raise ValueError(f"truth: {problem}")
    if not match_radius_m > 0:
        raise ValueError(f"match_radius_m must be > 0, got {match_radius_m}")
    reports = _reports(events, start_time)
    anchor = _anchor(truth)
    has_anchor = any(isinstance(c.get("geo_anchor"), dict) for c in truth.get("cameras", []))
    duration = float(truth["duration_s"]) if _finite(truth.get("duration_s")) else math.inf

    incs = truth["incidents"]
    txy = np.zeros((len(incs), 2))
    for k, inc in enumerate(incs):
        if has_anchor and inc.get("ground_xy_m") is not None:
            txy[k] = inc["ground_xy_m"]
        else:
            txy[k] = lonlat_to_local(float(inc["lon"]), float(inc["lat"]), anchor)
    counted = [("visible_in" not in inc) or bool(inc["visible_in"]) for inc in incs]
    t_lo = np.array([float(inc["appear_s"]) - slack_s for inc in incs])
    t_hi = np.array([(duration if inc.get("disappear_s") is None else float(inc["disappear_s"])) + slack_s
                     for inc in incs])
    for r in reports:
        if r.lon is not None and anchor is not None:
            x, y = lonlat_to_local(r.lon, r.lat, anchor)
            r.x, r.y = float(x), float(y)

    # candidate pairs: same class, near enough, alive at overlapping times
    pairs: list[tuple[float, int, int]] = []
    for ri, r in enumerate(reports):
        if not math.isfinite(r.x):
            continue
        r_end = max(r.open_s, duration) if r.resolve_s is None else r.resolve_s
        d = np.hypot(txy[:, 0] - r.x, txy[:, 1] - r.y)
        for ti, inc in enumerate(incs):
            if inc["class"] == r.cls and d[ti] <= match_radius_m and r.open_s <= t_hi[ti] and t_lo[ti] <= r_end:
                pairs.append((float(d[ti]), ri, ti))
    pairs.sort(key=lambda p: (p[0], reports[p[1]].open_s, p[1], p[2]))
    primary: dict[int, int] = {}  # report -> truth
    taken: set[int] = set()
    for dist, ri, ti in pairs:
        if ri not in primary and ti not in taken:
            primary[ri] = ti
            taken.add(ti)
    dup_of: dict[int, int] = {}  # report -> the (already matched) truth it reports again
    for dist, ri, ti in pairs:
        if ri not in primary and ri not in dup_of:
            dup_of[ri] = ti
    fps = [ri for ri in range(len(reports)) if ri not in primary and ri not in dup_of]

    cams = [c["pose"] for c in truth.get("cameras", []) if isinstance(c.get("pose"), dict)
            and _finite(c["pose"].get("x_m")) and _finite(c["pose"].get("y_m"))]
    cam_xy = np.array([[p["x_m"], p["y_m"]] for p in cams], dtype=float).reshape(-1, 2)
    any_grid = any(inc.get("grid_code") is not None for inc in incs)
    geo_near, geo_all, to_report, to_resolve = [], [], [], []
    grid_ok: list[bool] = []
    comp_ok: list[bool] = []
    matches = []
    for ri, ti in sorted(primary.items(), key=lambda m: incs[m[1]]["id"]):
        r, inc = reports[ri], incs[ti]
        dist = float(math.hypot(r.x - txy[ti, 0], r.y - txy[ti, 1]))
        ttr = r.open_s - float(inc["appear_s"])
        tts = (r.resolve_s - float(inc["disappear_s"])
               if r.resolve_s is not None and inc.get("disappear_s") is not None else None)
        g = None if inc.get("grid_code") is None else r.grid_code == str(inc["grid_code"])
        c = (None if inc["class"] != "manhole_open" or inc.get("component_id") is None
             else r.component_id == str(inc["component_id"]))
        matches.append({"truth_id": inc["id"], "incident_id": r.incident_id, "class": inc["class"],
                        "counted": counted[ti], "distance_m": _num(dist, 3), "time_to_report_s": _num(ttr, 3),
                        "time_to_resolve_s": _num(tts, 3), "grid_code_ok": g, "component_id_ok": c})
        if not counted[ti]:
            continue
        geo_all.append(dist)
        cam_d = np.hypot(cam_xy[:, 0] - txy[ti, 0], cam_xy[:, 1] - txy[ti, 1]).min() if len(cam_xy) else 0.0
        if cam_d <= near_m:
            geo_near.append(dist)
        to_report.append(ttr)
        if tts is not None:
            to_resolve.append(tts)
        if g is not None:
            grid_ok.append(g)
        if c is not None:
            comp_ok.append(c)

    n_true = sum(counted)
    n_hit = sum(counted[ti] for ti in primary.values())
    n_real = len(primary) + len(dup_of)
    per_class: dict[str, dict[str, Any]] = {}
    for cls in sorted({inc["class"] for inc, ok in zip(incs, counted) if ok} | {r.cls for r in reports}):
        t_n = sum(ok and inc["class"] == cls for inc, ok in zip(incs, counted))
        hit = sum(counted[ti] and incs[ti]["class"] == cls for ti in primary.values())
        rep = [ri for ri, r in enumerate(reports) if r.cls == cls]
        real = sum(ri in primary or ri in dup_of for ri in rep)
        per_class[cls] = {"true": t_n, "reported": len(rep), "matched": hit,
                          "duplicates": sum(ri in dup_of for ri in rep), "false_positives": len(rep) - real,
                          "recall": _ratio(hit, t_n), "precision": _ratio(real, len(rep))}
    return {
        "recall": _ratio(n_hit, n_true),
        "precision": _ratio(n_real, len(reports)),
        "duplicates": len(dup_of),
        "geo_error_m": _stats(geo_near),
        "grid_code_accuracy": _ratio(sum(grid_ok), len(grid_ok)) if any_grid else None,
        "component_id_accuracy": _ratio(sum(comp_ok), len(comp_ok)),
        "time_to_report_s": _stats(to_report),
        "time_to_resolve_s": _stats(to_resolve),
        "true_incidents": n_true,
        "reported_incidents": len(reports),
        "matched": n_hit,
        "matched_not_counted": len(primary) - n_hit,
        "false_positives": len(fps),
        "duplicates_per_true_incident": _ratio(len(dup_of), n_true),
        "geo_error_all_m": _stats(geo_all),
        "reports_without_position": sum(not math.isfinite(r.x) for r in reports),
        "per_class": per_class,
        "unmatched_truth": [inc["id"] for ti, inc in enumerate(incs) if counted[ti] and ti not in taken],
        "false_positive_ids": [reports[ri].incident_id for ri in fps],
        "duplicate_ids": [reports[ri].incident_id for ri in sorted(dup_of)],
        "matches": matches,
        "params": {"match_radius_m": _num(match_radius_m), "near_m": _num(near_m), "slack_s": _num(slack_s),
                   "start_time": _num(start_time, 3)},
    }


# ---------------------------------------------------------------------------------------------- output
def _fmt(v: Any, nd: int = 2) -> str:
    return "—" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def format_table(res: dict) -> str:
    """A person's view of a score: overall figures, per-class recall/precision, what was missed or invented."""
    def stats(s: dict) -> str:
        return f"median {_fmt(s['median'])}  p95 {_fmt(s['p95'])}"

    near = res.get("params", {}).get("near_m")
    lines = [
        f"recall                  {_fmt(res['recall'], 3)}  ({res['matched']}/{res['true_incidents']} true incidents)",
        f"precision               {_fmt(res['precision'], 3)}  ({res['reported_incidents'] - res['false_positives']}"
        f"/{res['reported_incidents']} reports are real incidents)",
        f"duplicates              {res['duplicates']}",
        f"geo error (m)           {stats(res['geo_error_m'])}  (within {_fmt(near, 0)} m of a camera; all: "
        f"{stats(res['geo_error_all_m'])})",
        f"grid code accuracy      {_fmt(res['grid_code_accuracy'], 3)}",
        f"component id accuracy   {_fmt(res['component_id_accuracy'], 3)}",
        f"time to report (s)      {stats(res['time_to_report_s'])}",
        f"time to resolve (s)     {stats(res['time_to_resolve_s'])}",
        "",
        f"{'class':<18} {'true':>5} {'reported':>9} {'matched':>8} {'dup':>4} {'fp':>4} {'recall':>7} {'precision':>10}",
    ]
    for cls, c in res["per_class"].items():
        lines.append(f"{cls:<18} {c['true']:>5} {c['reported']:>9} {c['matched']:>8} {c['duplicates']:>4} "
                     f"{c['false_positives']:>4} {_fmt(c['recall'], 3):>7} {_fmt(c['precision'], 3):>10}")
    lines += ["", "unmatched truth: " + (", ".join(res["unmatched_truth"]) or "none"),
              "false positives: " + (", ".join(res["false_positive_ids"]) or "none")]
    if res["duplicate_ids"]:
        lines.append("duplicates:      " + ", ".join(res["duplicate_ids"]))
    return "\n".join(lines)


def add_score_parser(sub: Any) -> None:
    """Register `score` on an argparse subparsers object."""
    s = sub.add_parser("score", help="score a replay's incident messages against a scenario's truth.json")
    s.add_argument("--truth", required=True, help="truth.json written by synth-scenario")
    s.add_argument("--events", required=True, help="JSON lines written by replay --events-out")
    s.add_argument("--json", action="store_true", help="print exactly one JSON object")
    s.add_argument("--start-time", help="the --start-time the replay was given (ISO 8601 with offset); default: "
                   "media seconds were published as epoch seconds")
    s.add_argument("--match-radius-m", type=float, default=5.0, help="a report this close to a truth incident of "
                   "its class can be it (metres on the ground)")
    s.add_argument("--near-m", type=float, default=40.0, help="geo error counts incidents this close to a camera")
    s.add_argument("--slack-s", type=float, default=DEFAULT_SLACK_S, help="time slack around a truth lifetime")
    s.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    """`score`: 0 with the score printed, 2 when truth, events or options cannot be used."""
    try:
        start = parse_time(args.start_time) if getattr(args, "start_time", None) else 0.0
    except ValueError as e:
        print(f"error: --start-time: {e}", file=sys.stderr)
        return 2
    try:
        truth = load_truth(Path(args.truth))
        events = load_events(Path(args.events))
        res = score(truth, events, start_time=start, match_radius_m=args.match_radius_m,
                    near_m=getattr(args, "near_m", 40.0), slack_s=getattr(args, "slack_s", DEFAULT_SLACK_S))
    except ValueError as e:  # ScoreInputError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, ensure_ascii=False, allow_nan=False))
    else:
        print(f"truth {args.truth}, events {args.events}")
        print(format_table(res))
    return 0
