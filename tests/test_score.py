"""Tests for the scenario scorer: hand-made truth and incident messages whose score is known by construction."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from edge.geo import local_to_lonlat
from edge.messages import iso_time
from edge.score import add_score_parser, cmd_score, load_events, score

ANCHOR = {"lon": 120.55, "lat": 31.87}


def _inc(iid: str, cls: str, x: float, y: float, appear: float = 20.0, disappear: float | None = 200.0,
         visible: tuple[str, ...] = ("cam1",), **extra) -> dict:
    lon, lat = local_to_lonlat(x, y, ANCHOR)
    return {"id": iid, "class": cls, "appear_s": appear, "disappear_s": disappear, "ground_xy_m": [x, y],
            "lon": round(float(lon), 8), "lat": round(float(lat), 8), "visible_in": list(visible), **extra}


def _truth(*incs: dict, duration: float = 300.0) -> dict:
    cam = {"id": "cam1", "geo_anchor": dict(ANCHOR), "pose": {"x_m": 0.0, "y_m": 0.0, "height_m": 8.0,
                                                               "tilt_deg": 30.0, "heading_deg": 0.0}}
    return {"schema": 1, "duration_s": duration, "cameras": [cam], "incidents": list(incs), "covers": []}


def _msg(iid: str, event: str, cls: str, x: float | None, y: float | None, t: float, start: float = 0.0,
         **extra) -> dict:
    if x is None:
        lon = lat = None
    else:
        lo, la = local_to_lonlat(x, y, ANCHOR)
        lon, lat = round(float(lo), 7), round(float(la), 7)  # as messages carry them (1 cm)
    return {"schema": 1, "incident_id": iid, "event": event, "class": cls, "camera_id": "cam1",
            "observed_at": iso_time(start + t), "reported_at": iso_time(start + t), "lon": lon, "lat": lat,
            "accuracy_m": 0.5, **extra}


def _life(iid: str, cls: str, x: float, y: float, t_open: float, t_resolve: float | None = None, **extra) -> list:
    evs = [_msg(iid, "opened", cls, x, y, t_open, **extra)]
    if t_resolve is not None:
        evs.append(_msg(iid, "resolved", cls, x, y, t_resolve, **extra))
    return evs


TRUTH3 = _truth(_inc("inc-01", "garbage_pile", 5.0, 10.0), _inc("inc-02", "ponding", -3.0, 20.0),
                _inc("inc-03", "manhole_open", 2.0, 30.0, disappear=None))


def _perfect(offset: float = 0.0) -> list[dict]:
    return (_life("a", "garbage_pile", 5.0 + offset, 10.0, 30.0, 230.0)
            + _life("b", "ponding", -3.0, 20.0 - offset, 30.0, 230.0)
            + _life("c", "manhole_open", 2.0, 30.0 + offset, 30.0))


def test_perfect_reports_score_perfectly_and_the_geo_error_is_the_offset() -> None:
    res = score(TRUTH3, _perfect(0.5))
    assert res["recall"] == 1.0 and res["precision"] == 1.0 and res["duplicates"] == 0
    assert res["geo_error_m"]["median"] == pytest.approx(0.5, abs=0.02)
    assert res["geo_error_m"]["p95"] == pytest.approx(0.5, abs=0.02)
    assert res["unmatched_truth"] == [] and res["false_positive_ids"] == []
    assert res["true_incidents"] == 3 and res["reported_incidents"] == 3 and res["matched"] == 3
    assert res["grid_code_accuracy"] is None and res["component_id_accuracy"] is None  # truth has none
    assert set(res) >= {"recall", "precision", "duplicates", "geo_error_m", "grid_code_accuracy",
                        "component_id_accuracy", "time_to_report_s", "time_to_resolve_s"}
    json.dumps(res, allow_nan=False)


def test_a_missed_incident_lowers_recall_and_is_listed() -> None:
    evs = [e for e in _perfect() if e["incident_id"] != "b"]
    res = score(TRUTH3, evs)
    assert res["recall"] == pytest.approx(2 / 3, abs=1e-4) and res["precision"] == 1.0
    assert res["unmatched_truth"] == ["inc-02"]
    assert res["per_class"]["ponding"] == {"true": 1, "reported": 0, "matched": 0, "duplicates": 0,
                                           "false_positives": 0, "recall": 0.0, "precision": None}


def test_a_second_report_of_one_incident_is_a_duplicate_not_a_false_positive() -> None:
    evs = _perfect() + _life("a2", "garbage_pile", 6.0, 10.0, 90.0, 230.0)
    res = score(TRUTH3, evs)
    assert res["duplicates"] == 1 and res["duplicate_ids"] == ["a2"]
    assert res["precision"] == 1.0 and res["recall"] == 1.0 and res["false_positives"] == 0
    assert res["duplicates_per_true_incident"] == pytest.approx(1 / 3, abs=1e-4)
    # the nearer report is the primary match, whichever came first
    assert {m["truth_id"]: m["incident_id"] for m in res["matches"]}["inc-01"] == "a"


def test_a_wrong_class_at_the_right_place_is_a_false_positive() -> None:
    evs = _perfect() + _life("x", "material_pile", 5.0, 10.0, 30.0)
    res = score(TRUTH3, evs)
    assert res["precision"] == 0.75 and res["recall"] == 1.0 and res["duplicates"] == 0
    assert res["false_positive_ids"] == ["x"]
    assert res["per_class"]["material_pile"]["precision"] == 0.0
    assert res["per_class"]["material_pile"]["true"] == 0


def test_reports_too_far_away_or_at_another_time_do_not_match() -> None:
    truth = _truth(_inc("inc-01", "garbage_pile", 5.0, 10.0, appear=20.0, disappear=100.0), duration=600.0)
    far = _life("far", "garbage_pile", 5.0, 15.5, 30.0)  # 5.5 m off
    late = _life("late", "garbage_pile", 5.0, 10.0, 100.0 + 61.0)  # after the lifetime plus 60 s of slack
    res = score(truth, far + late)
    assert res["recall"] == 0.0 and res["false_positive_ids"] == ["far", "late"]
    assert score(truth, far, match_radius_m=6.0)["recall"] == 1.0
    assert score(truth, late, slack_s=90.0)["recall"] == 1.0


def test_grid_code_accuracy_counts_matches_with_a_truth_code() -> None:
    truth = _truth(_inc("inc-01", "garbage_pile", 5.0, 10.0, grid_code="320582001001001"),
                   _inc("inc-02", "ponding", -3.0, 20.0, grid_code="320582001001002"))
    evs = (_life("a", "garbage_pile", 5.0, 10.0, 30.0, grid_code="320582001001001")
           + _life("b", "ponding", -3.0, 20.0, 30.0, grid_code="320582001001001"))
    res = score(truth, evs)
    assert res["grid_code_accuracy"] == 0.5
    assert [m["grid_code_ok"] for m in res["matches"]] == [True, False]


def test_the_latest_message_carrying_a_code_wins() -> None:
    truth = _truth(_inc("inc-01", "garbage_pile", 5.0, 10.0, grid_code="320582001001002"))
    evs = [_msg("a", "opened", "garbage_pile", 5.0, 10.0, 30.0, grid_code="320582001001001"),
           _msg("a", "updated", "garbage_pile", 5.0, 10.0, 60.0, grid_code="320582001001002"),
           _msg("a", "updated", "garbage_pile", 5.0, 10.0, 90.0)]  # carries none: the earlier one stays
    assert score(truth, evs)["grid_code_accuracy"] == 1.0


def test_component_id_accuracy_counts_open_manholes_with_a_truth_id() -> None:
    truth = _truth(_inc("inc-01", "manhole_open", 5.0, 10.0, component_id="3205820102048188"),
                   _inc("inc-02", "manhole_open", -3.0, 20.0, component_id="3205820103000001"),
                   _inc("inc-03", "manhole_open", 1.0, 35.0))
    evs = (_life("a", "manhole_open", 5.0, 10.0, 30.0, component_id="3205820102048188")
           + _life("b", "manhole_open", -3.0, 20.0, 30.0, component_id="3205820102048188")
           + _life("c", "manhole_open", 1.0, 35.0, 30.0, component_id="3205820102999999"))
    res = score(truth, evs)
    assert res["component_id_accuracy"] == 0.5
    assert [m["component_id_ok"] for m in res["matches"]] == [True, False, None]


def test_times_to_report_and_resolve_are_exact() -> None:
    truth = _truth(_inc("inc-01", "garbage_pile", 5.0, 10.0, appear=20.0, disappear=100.0),
                   _inc("inc-02", "ponding", -3.0, 20.0, appear=40.0, disappear=None))
    evs = (_life("a", "garbage_pile", 5.0, 10.0, 32.5, 131.0)
           + [_msg("b", "opened", "ponding", -3.0, 20.0, 62.5), _msg("b", "updated", "ponding", -3.0, 20.0, 120.0)])
    res = score(truth, evs)
    assert res["time_to_report_s"]["median"] == pytest.approx(17.5)  # median of 12.5 and 22.5
    assert res["time_to_report_s"]["p95"] == pytest.approx(12.5 + 0.95 * 10.0)  # linear interpolation
    assert res["time_to_resolve_s"] == {"median": pytest.approx(31.0), "p95": pytest.approx(31.0)}


def test_a_start_time_turns_wall_clock_messages_back_into_media_seconds() -> None:
    start = 1782868800.0  # 2026-07-01T09:20:00+08:00
    truth = _truth(_inc("inc-01", "garbage_pile", 5.0, 10.0, appear=20.0, disappear=100.0))
    evs = [_msg("a", "opened", "garbage_pile", 5.0, 10.0, 32.5, start=start),
           _msg("a", "resolved", "garbage_pile", 5.0, 10.0, 131.0, start=start)]
    res = score(truth, evs, start_time=start)
    assert res["recall"] == 1.0
    assert res["time_to_report_s"]["median"] == pytest.approx(12.5)
    assert res["time_to_resolve_s"]["median"] == pytest.approx(31.0)
    assert score(truth, evs)["recall"] == 0.0  # read as media seconds they are decades late


def test_a_refined_position_is_used_not_the_first_one() -> None:
    truth = _truth(_inc("inc-01", "garbage_pile", 5.0, 10.0))
    evs = [_msg("a", "opened", "garbage_pile", 5.0, 40.0, 30.0),  # 30 m off at first
           _msg("a", "updated", "garbage_pile", 5.2, 10.0, 60.0),
           _msg("a", "updated", "garbage_pile", None, None, 90.0)]  # no position: the last known one stays
    res = score(truth, evs)
    assert res["recall"] == 1.0 and res["geo_error_m"]["median"] == pytest.approx(0.2, abs=0.02)


def test_invisible_truth_is_not_counted_and_a_report_of_it_is_no_false_positive() -> None:
    truth = _truth(_inc("inc-01", "garbage_pile", 5.0, 10.0), _inc("inc-02", "ponding", -3.0, 20.0, visible=()))
    res = score(truth, _life("a", "garbage_pile", 5.0, 10.0, 30.0))
    assert res["true_incidents"] == 1 and res["recall"] == 1.0 and res["unmatched_truth"] == []
    res = score(truth, _life("a", "garbage_pile", 5.0, 10.0, 30.0) + _life("b", "ponding", -3.0, 20.0, 30.0))
    assert res["recall"] == 1.0 and res["precision"] == 1.0 and res["false_positives"] == 0
    assert res["matched_not_counted"] == 1


def test_geo_error_counts_only_incidents_near_a_camera() -> None:
    truth = _truth(_inc("inc-01", "garbage_pile", 5.0, 10.0), _inc("inc-02", "ponding", 0.0, 55.0))
    evs = _life("a", "garbage_pile", 5.5, 10.0, 30.0) + _life("b", "ponding", 0.0, 58.0, 30.0)
    res = score(truth, evs)
    assert res["geo_error_m"]["median"] == pytest.approx(0.5, abs=0.02)
    assert res["geo_error_all_m"]["median"] == pytest.approx(1.75, abs=0.02)
    assert score(truth, evs, near_m=60.0)["geo_error_m"]["median"] == pytest.approx(1.75, abs=0.02)


def test_nothing_to_score_gives_nulls_not_nan() -> None:
    res = score(_truth(), [])
    assert res["recall"] is None and res["precision"] is None and res["duplicates"] == 0
    assert res["geo_error_m"] == {"median": None, "p95": None}
    json.dumps(res, allow_nan=False)
    assert score(_truth(_inc("inc-01", "ponding", 0.0, 9.0)), [])["recall"] == 0.0


def test_a_malformed_event_raises_naming_it() -> None:
    bad = _msg("a", "opened", "ponding", 0.0, 9.0, 30.0)
    bad["observed_at"] = "1970-01-01T00:00:30"
    with pytest.raises(ValueError, match="events\\[0\\].*UTC offset"):
        score(_truth(), [bad])
    with pytest.raises(ValueError, match="truth: incidents\\[0\\]"):
        score({"incidents": [{"id": "inc-01"}]}, [])


# --------------------------------------------------------------------------------------------- the command
def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_score_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["score", *argv])


def _files(tmp_path: Path, events: list[dict], truth: dict = TRUTH3) -> tuple[Path, Path]:
    t, e = tmp_path / "truth.json", tmp_path / "events.jsonl"
    t.write_text(json.dumps(truth))
    e.write_text("".join(json.dumps(ev, ensure_ascii=False) + "\n" for ev in events))
    return t, e


def test_json_output_is_exactly_one_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t, e = _files(tmp_path, _perfect(0.5) + _life("x", "material_pile", 9.0, 9.0, 30.0))
    assert cmd_score(_args("--truth", str(t), "--events", str(e), "--json")) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    res = json.loads(out)
    assert res["precision"] == 0.75 and res["false_positive_ids"] == ["x"]


def test_the_table_names_the_misses_and_the_false_positives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evs = [e for e in _perfect() if e["incident_id"] != "b"] + _life("x", "material_pile", 9.0, 9.0, 30.0)
    t, e = _files(tmp_path, evs)
    assert cmd_score(_args("--truth", str(t), "--events", str(e))) == 0
    out = capsys.readouterr().out
    assert "unmatched truth: inc-02" in out and "false positives: x" in out
    assert "ponding" in out and "recall" in out


def test_start_time_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = "2026-07-01T09:20:00+08:00"
    evs = [_msg("a", "opened", "garbage_pile", 5.0, 10.0, 32.5, start=1782868800.0)]
    t, e = _files(tmp_path, evs, _truth(_inc("inc-01", "garbage_pile", 5.0, 10.0)))
    assert cmd_score(_args("--truth", str(t), "--events", str(e), "--json", "--start-time", start)) == 0
    assert json.loads(capsys.readouterr().out)["time_to_report_s"]["median"] == pytest.approx(12.5)
    assert cmd_score(_args("--truth", str(t), "--events", str(e), "--start-time", "09:20")) == 2
    assert "--start-time" in capsys.readouterr().err


def test_a_malformed_events_line_is_exit_2_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t, e = _files(tmp_path, _perfect())
    lines = e.read_text().splitlines()
    lines.insert(2, '{"incident_id": "a", "event": "opened",')  # truncated
    e.write_text("\n".join(lines) + "\n")
    assert cmd_score(_args("--truth", str(t), "--events", str(e), "--json")) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.startswith("error: ") and f"{e}:3: not JSON" in cap.err
    with pytest.raises(ValueError, match=r"events.jsonl:1: incident a: event: 'closed'"):
        e.write_text(json.dumps({**_msg("a", "opened", "ponding", 0.0, 9.0, 30.0), "event": "closed"}) + "\n")
        load_events(e)


@pytest.mark.parametrize("content, needle", [
    (None, "file not found"),
    ("{not json", "truth.json:1: not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"incidents": [{"id": "inc-01", "class": "ponding", "appear_s": "soon"}]}', "appear_s"),
])
def test_unreadable_truth_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None,
                                    needle: str) -> None:
    t, e = _files(tmp_path, _perfect())
    if content is None:
        t.unlink()
    else:
        t.write_text(content)
    assert cmd_score(_args("--truth", str(t), "--events", str(e))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and str(t) in err


def test_status_lines_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    e = tmp_path / "events.jsonl"
    e.write_text("\n" + json.dumps({"schema": 1, "state": "online", "edge_id": "x"}) + "\n"
                 + json.dumps(_msg("a", "opened", "ponding", 0.0, 9.0, 30.0)) + "\n\n")
    evs = load_events(e)
    assert [ev["incident_id"] for ev in evs] == ["a"] and math.isfinite(evs[0]["lon"])
