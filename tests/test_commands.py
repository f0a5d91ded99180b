"""Commands from the centre without a broker: the parser's every rejection, and the dispatcher driving a real
EdgeApp (a constant ONNX model that always sees one ponding box, so what opens is known) through `process()`.

- dismiss: the incident resolves with reason `dismissed`, its place stays quiet for `suppress_h` — across a
  restart — and reports again once that ends; a repeated dismiss is answered the same and changes nothing;
- profile: the effective threshold and the scan interval change (the latter in a running replay's source too),
  and the profile survives a restart;
- reload: a good file takes effect, a bad one is refused naming file and key, the old rules stay;
- snapshot: the camera's next frame is published as a JPEG on the evidence topic and the reply says where;
- every reply is in the outbox and matches edge/schemas/reply-v1.schema.json.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sqlite3
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from const_site import IMG, NAMES, PONDING, write_clip, write_model
from edge.app import EdgeApp, load_everything
from edge.commands import Dismiss, Rejected, Reload, Snapshot, SwitchProfile, parse_command
from edge.config import Rules
from edge.detections import Detections
from edge.incidents import Ground, IncidentBook
from edge.messages import load_schema
from edge.types import Frame
from schema_subset import ANNOTATIONS, CHECKED, errors, keywords

EDGE = "edge-cmd-t"
SECRET = "Hunter2-Secret-Value"

RULES = """
camera: {camera}
persistence: {{window_s: 6, vote_ratio: 0.6, min_scans: 3}}
resolve_after_s: 20
update_interval_s: 10000
classes:
  ponding: {{threshold: {threshold}}}
profiles:
  rainstorm:
    description: heavy rain
    scan_interval_s: 1.0
    classes:
      ponding: {{threshold: 0.4}}
"""


# ------------------------------------------------------------------------------------------ builders
def write_site(d: Path, threshold: float = 0.5, **commands: float) -> Path:
    """cam1 (enabled, its rule file with the `rainstorm` profile) and cam2 (disabled, no rule file)."""
    d.mkdir(parents=True, exist_ok=True)
    write_model(d)
    write_clip(d / "clip.mp4")
    (d / "rules").mkdir(exist_ok=True)
    (d / "rules" / "cam1.yaml").write_text(RULES.format(camera="cam1", threshold=threshold))
    site = {"edge_id": EDGE, "model": str(d / "const.onnx"), "state_dir": str(d / "state"),
            "broker": {"evidence": "inline", "password_env": "CMD_TEST_PW"},
            "commands": {"snapshot_timeout_s": 30, **commands},
            "cameras": [{"id": "cam1", "url": "clip.mp4", "scan_interval_s": 2.0, "rules": "rules/cam1.yaml"},
                        {"id": "cam2", "url": "clip.mp4", "enabled": False}]}
    p = d / "site.yaml"
    p.write_text(yaml.safe_dump(site))
    return p


class Box:
    """An EdgeApp (live mode, no publisher: its messages stay in the outbox table) on a test clock."""

    def __init__(self, site: Path, state: Path) -> None:
        self.t = 0.0
        self.app = EdgeApp(load_everything(site), state_dir=state, clock=lambda: self.t)
        self.state = state

    def scan(self, t0: float, t1: float, step: float = 2.0, camera: str = "cam1") -> list[Any]:
        events, t = [], t0
        while t < t1 - 1e-9:
            self.t = t
            events += self.app.process(Frame(camera, t, IMG))
            t += step
        return events

    def command(self, name: str, payload: Any) -> dict[str, Any] | None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.app.commands.handle(name, raw)

    def outbox(self) -> list[tuple[str, bytes]]:
        with sqlite3.connect(self.app.db_path) as c:
            if not c.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchone():
                return []  # nothing was ever put
            return [(t, bytes(p)) for t, p in c.execute("SELECT topic, payload FROM outbox ORDER BY id")]

    def replies(self) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p in self.outbox() if t == f"cityops/{EDGE}/reply"]

    def incidents(self) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p in self.outbox() if "/incident/" in t]

    def close(self) -> None:
        self.app.close()


@pytest.fixture
def box(tmp_path: Path):
    made: list[Box] = []

    def make(threshold: float = 0.5, state: str = "state", site: Path | None = None, **commands: float) -> Box:
        b = Box(site or write_site(tmp_path / "site", threshold, **commands), tmp_path / state)
        made.append(b)
        return b

    yield make
    for b in made:
        try:
            b.close()
        except Exception:
            pass


def check_reply(reply: dict[str, Any]) -> None:
    """Valid against the shipped reply schema (the keyword subset always, jsonschema where installed)."""
    assert errors(load_schema("reply"), json.loads(json.dumps(reply))) == [], reply
    if importlib.util.find_spec("jsonschema") is None:
        return
    from edge.messages import validate_message

    validate_message(json.dumps(reply), kind="reply")


# ------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(("command", "payload", "model"), [
    ("dismiss", {"request_id": "r1", "incident_id": "e-1", "suppress_h": 2}, Dismiss),
    ("dismiss", {"request_id": "r1", "incident_id": "e-1"}, Dismiss),
    ("profile", {"request_id": "r2", "profile": "rainstorm"}, SwitchProfile),
    ("reload", {"request_id": "r3"}, Reload),
    ("snapshot", {"request_id": "r4", "camera_id": "cam1"}, Snapshot),
])
def test_each_command_parses(command: str, payload: dict[str, Any], model: type) -> None:
    got = parse_command(command, json.dumps(payload).encode())
    assert isinstance(got, model) and got.model_dump(exclude_unset=True) == payload


@pytest.mark.parametrize(("command", "payload", "reason", "request_id"), [
    ("reboot", b'{"request_id": "r1"}', "unknown command 'reboot': this box knows dismiss, profile, reload, snapshot", "r1"),
    ("dismiss/extra", b'{"request_id": "r1"}', "unknown command 'dismiss/extra'", "r1"),
    ("dismiss", b"not json", "payload is not valid JSON (Expecting value at line 1, column 1)", None),
    ("dismiss", b"\xff\xfe{}", "payload is not UTF-8 text", None),
    ("dismiss", b"[1, 2]", "payload must be a JSON object, got list", None),
    ("dismiss", b'{"request_id": "r2"}', "dismiss: incident_id: required", "r2"),
    ("dismiss", f'{{"request_id": "r3", "incident_id": "x", "password": "{SECRET}"}}'.encode(),
     "dismiss: password: unknown field (dismiss takes request_id, incident_id, suppress_h)", "r3"),
    ("dismiss", b'{"request_id": "r4", "incident_id": "x", "suppress_h": "24"}', "suppress_h: Input should be a valid number", "r4"),
    ("dismiss", b'{"request_id": "r5", "incident_id": "x", "suppress_h": -1}', "suppress_h: Input should be greater than or equal to 0", "r5"),
    ("dismiss", b'{"request_id": "r5", "incident_id": "x", "suppress_h": NaN}', "suppress_h: Input should be a finite number", "r5"),
    ("dismiss", b'{"request_id": "r6", "incident_id": "a/b"}', "incident_id: String should match pattern", "r6"),
    ("profile", b'{"profile": "rainstorm"}', "profile: request_id: required", None),
    ("profile", b'{"request_id": "r7", "profile": "rain storm"}', "profile: String should match pattern", "r7"),
    ("reload", b'{"request_id": "r8", "now": true}', "reload: now: unknown field (reload takes request_id)", "r8"),
    ("snapshot", b'{"request_id": 5, "camera_id": "cam1"}', "request_id: Input should be a valid string", None),
    ("snapshot", b'{"request_id": "", "camera_id": "cam1"}', "request_id: String should match pattern", None),
    ("snapshot", b'{"request_id": "r9", "camera_id": "../cam1"}', "camera_id: String should match pattern", "r9"),
    ("snapshot", b'{"request_id": "r10", "camera_id": "' + b"x" * 20000 + b'"}', "larger than 16384", None),
])
def test_each_malformed_command_is_rejected_with_its_reason(command: str, payload: bytes, reason: str,
                                                            request_id: str | None) -> None:
    got = parse_command(command, payload)
    assert isinstance(got, Rejected), got
    assert reason in got.reason, got.reason
    assert got.request_id == request_id
    assert SECRET not in got.reason and "x" * 100 not in got.reason


# -------------------------------------------------------------------------------------- rejections
def test_rejected_commands_change_nothing_and_every_reply_is_in_the_outbox(box: Any) -> None:
    b = box(suppress_h=24, max_suppress_h=48)
    b.scan(0, 8)
    opened = b.app.book.open_incidents()
    assert len(opened) == 1
    before = (b.incidents(), b.app.profile, b.app.L.rulesets["cam1"].thresholds.tolist(), b.app.book.suppressions())
    cases = [
        ("reboot", {"request_id": "a1"}, "unknown command 'reboot'"),
        ("dismiss", b"{oops", "payload is not valid JSON"),
        ("dismiss", {"request_id": "a2", "incident_id": "nope"}, "no open incident 'nope' on this box"),
        ("dismiss", {"request_id": "a3", "incident_id": opened[0].incident_id, "suppress_h": 49},
         "suppress_h 49 is longer than this box allows (commands.max_suppress_h = 48)"),
        ("dismiss", {"request_id": "a4", "incident_id": opened[0].incident_id, "extra": 1}, "extra: unknown field"),
        ("profile", {"request_id": "a5", "profile": "flood"}, "unknown profile 'flood': the rule files define default, rainstorm"),
        ("snapshot", {"request_id": "a6", "camera_id": "cam9"}, "unknown camera 'cam9': this box has cam1, cam2"),
        ("snapshot", {"request_id": "a7", "camera_id": "cam2"}, "camera 'cam2' is disabled"),
    ]
    for name, payload, reason in cases:
        reply = b.command(name, payload)
        assert reply is not None and reply["ok"] is False and reason in reply["reason"], (name, reply)
        check_reply(reply)
    after = (b.incidents(), b.app.profile, b.app.L.rulesets["cam1"].thresholds.tolist(), b.app.book.suppressions())
    assert after == before
    assert [o.incident_id for o in b.app.book.open_incidents()] == [opened[0].incident_id]
    replies = b.replies()
    assert [r["request_id"] for r in replies] == ["a1", None, "a2", "a3", "a4", "a5", "a6", "a7"]
    assert [r["command"] for r in replies] == [c[0] for c in cases]
    assert all(r["edge_id"] == EDGE and r["schema"] == 1 and r["at"].endswith("+08:00") for r in replies)
    assert b.scan(8, 12) == []  # and the pipeline goes on


# ------------------------------------------------------------------------------------------ dismiss
def test_dismiss_suppresses_the_place_across_a_restart_until_it_expires(box: Any) -> None:
    b = box()
    opened = b.scan(0, 8)
    assert [e.event for e in opened] == ["opened"]
    iid = opened[0].incident_id
    b.t = 7.0  # the box's clock when the command arrives
    reply = b.command("dismiss", {"request_id": "d1", "incident_id": iid, "suppress_h": 0.02})  # 72 s
    check_reply(reply)
    assert reply["ok"] and reply["result"] == {"incident_id": iid, "suppress_h": 0.02,
                                               "suppressed_until": "1970-01-01T08:01:19.000+08:00"}
    msgs = b.incidents()
    assert [(m["event"], m.get("reason")) for m in msgs] == [("opened", None), ("resolved", "dismissed")]
    assert msgs[1]["incident_id"] == iid and "误报" in msgs[1]["description"]
    topics = [t for t, _ in b.outbox()]
    assert topics[-2:] == [f"cityops/{EDGE}/incident/cam1", f"cityops/{EDGE}/reply"]  # one transaction, in order
    from edge.messages import validate_message

    pytest.importorskip("jsonschema")
    for m in msgs:
        validate_message(m)

    assert b.scan(8, 40) == []  # the box still sees it: nothing opens
    again = b.command("dismiss", {"request_id": "d2", "incident_id": iid})
    assert again["ok"] and again["result"]["repeated"] is True and len(b.incidents()) == 2
    b.close()

    b2 = box(state="state")  # a restart on the same state file
    assert [s.incident_id for s in b2.app.book.suppressions()] == [iid]
    assert b2.scan(40, 78) == []  # still suppressed until 79 s
    reopened = b2.scan(80, 90)  # suppression over: the place votes afresh and reports again
    assert [e.event for e in reopened] == ["opened"] and reopened[0].incident_id != iid
    assert 84 <= reopened[0].ts <= 86
    assert b2.app.book.suppressions() == []


def test_dismiss_holds_that_class_at_that_ground_place_only(tmp_path: Path) -> None:
    """With ground positions the suppression follows the place, whichever camera sees it; another place of the
    class, or another class at the place, still opens."""
    rules = Rules.model_validate({"persistence": {"window_s": 6, "vote_ratio": 0.6, "min_scans": 3}})
    book = IncidentBook(str(tmp_path / "s.db"), EDGE, NAMES, {"a": rules, "b": rules}, default_merge_m=3.0,
                        merge_radius_m={"ponding": 5.0})

    def scan(cam: str, t0: float, t1: float, xy: tuple[float, float], cls: int = PONDING) -> list[Any]:
        out, t = [], t0
        det = Detections(np.array([[100, 100, 160, 140]], np.float32), np.array([0.9], np.float32), np.array([cls]))
        while t < t1:
            out += book.update(cam, t, det, [None], IMG, Ground(np.array([xy], float), np.array([0.5])))
            t += 2.0
        return out

    ev = scan("a", 0, 8, (10.0, 5.0))
    assert [e.event for e in ev] == ["opened"]
    dismissed = book.dismiss(ev[0].incident_id, 8.0, 1000.0)
    assert dismissed.event == "resolved" and dismissed.extra["reason"] == "dismissed"
    assert scan("b", 10, 30, (12.0, 6.0)) == []  # another camera, 2.2 m away (< 5 m): the same place
    assert [e.event for e in scan("b", 30, 40, (30.0, 5.0))] == ["opened"]  # 20 m away: another place
    assert [e.event for e in scan("a", 40, 50, (10.0, 5.0), cls=NAMES.index("garbage_pile"))] == ["opened"]
    with pytest.raises(KeyError):
        book.dismiss("no-such-incident", 50.0, 60.0)
    book.close()


# ------------------------------------------------------------------------------------------ profile
def test_profile_switch_changes_threshold_and_scan_interval_and_survives_a_restart(box: Any) -> None:
    b = box(threshold=0.7)  # the model scores the box 0.6: below the default profile's threshold
    assert b.scan(0, 12) == []
    assert b.app.scan_interval("cam1") == 2.0
    reply = b.command("profile", {"request_id": "p1", "profile": "rainstorm"})
    check_reply(reply)
    assert reply["ok"] and reply["result"] == {"profile": "rainstorm", "previous_profile": "default",
                                               "scan_interval_s": {"cam1": 1.0, "cam2": 2.0}}
    assert b.app.L.rulesets["cam1"].thresholds[PONDING] == pytest.approx(0.4)
    assert b.app.L.rulesets["cam1"].rules.classes["ponding"].threshold == 0.4
    assert [e.event for e in b.scan(12, 20, step=1.0)] == ["opened"]
    b.close()

    b2 = box(threshold=0.7, state="state")
    assert b2.app.profile == "rainstorm" and b2.app.scan_interval("cam1") == 1.0
    assert b2.app.L.rulesets["cam1"].thresholds[PONDING] == pytest.approx(0.4)
    back = b2.command("profile", {"request_id": "p2", "profile": "default"})
    assert back["ok"] and back["result"]["previous_profile"] == "rainstorm"
    assert b2.app.L.rulesets["cam1"].thresholds[PONDING] == pytest.approx(0.7) and b2.app.scan_interval("cam1") == 2.0


@pytest.mark.parametrize("profile", ["default", "rainstorm"])
def test_a_queued_profile_switch_reaches_the_running_source(tmp_path: Path, profile: str) -> None:
    """A 10 s clip replayed: 5 scans every 2 s; switched (between the first two scans) to rainstorm, every 1 s."""
    app = EdgeApp(load_everything(write_site(tmp_path / "site")), replay=True, state_dir=tmp_path / "state")
    app.submit_command("profile", json.dumps({"request_id": "q1", "profile": profile}).encode())
    summary = app.run_replay()
    assert summary.scans == {"default": 5, "rainstorm": 10}[profile]


# ------------------------------------------------------------------------------------------- reload
def test_reload_takes_a_good_file_and_refuses_a_bad_one_keeping_the_old_rules(box: Any, tmp_path: Path) -> None:
    b = box(threshold=0.7)
    rules_file = tmp_path / "site" / "rules" / "cam1.yaml"
    rules_file.write_text(RULES.format(camera="cam1", threshold=0.55))
    ok = b.command("reload", {"request_id": "l1"})
    check_reply(ok)
    assert ok["ok"] and ok["result"] == {"profile": "default", "scan_interval_s": {"cam1": 2.0, "cam2": 2.0}}
    assert b.app.L.rulesets["cam1"].thresholds[PONDING] == pytest.approx(0.55)

    bad_files = {
        "classes.ponding.threshold": RULES.format(camera="cam1", threshold=2),
        "persistence.windo_s": RULES.format(camera="cam1", threshold=0.5).replace("window_s", "windo_s"),
        "profiles.rainstorm.classes": RULES.format(camera="cam1", threshold=0.5).replace(
            "ponding: {threshold: 0.4}", "puddle: {threshold: 0.4}"),
        "camera: says 'cam7'": RULES.format(camera="cam7", threshold=0.5),
    }
    for key, text in bad_files.items():
        rules_file.write_text(text)
        reply = b.command("reload", {"request_id": "l2"})
        check_reply(reply)
        assert not reply["ok"], key
        assert reply["reason"].startswith("rules not reloaded, the old ones stay: ")
        assert str(rules_file) in reply["reason"] and key in reply["reason"], reply["reason"]
        assert b.app.L.rulesets["cam1"].thresholds[PONDING] == pytest.approx(0.55)
        assert b.app.book.rules["cam1"].classes["ponding"].threshold == 0.55

    rules_file.write_text(RULES.format(camera="cam1", threshold=0.55))
    assert b.command("profile", {"request_id": "l3", "profile": "rainstorm"})["ok"]
    rules_file.write_text(RULES.format(camera="cam1", threshold=0.55).split("profiles:")[0])
    gone = b.command("reload", {"request_id": "l4"})
    assert not gone["ok"] and "the profile in force, 'rainstorm', is in none of the new rule files" in gone["reason"]
    assert b.app.profile == "rainstorm" and b.app.L.rulesets["cam1"].thresholds[PONDING] == pytest.approx(0.4)


# ----------------------------------------------------------------------------------------- snapshot
def test_snapshot_publishes_the_next_frame_as_a_jpeg_and_the_reply_says_where(box: Any) -> None:
    b = box()
    b.t = 100.25
    assert b.command("snapshot", {"request_id": "s1", "camera_id": "cam1"}) is None  # waits for a frame
    assert b.command("snapshot", {"request_id": "s2", "camera_id": "cam1"}) is None
    assert b.replies() == []
    frame = IMG.copy()
    cv2.circle(frame, (100, 120), 40, (0, 0, 255), -1)
    b.t = 101.5
    b.app.process(Frame("cam1", 101.5, frame))
    out = b.outbox()
    topic = f"cityops/{EDGE}/evidence/snapshot-cam1-19700101T000141500"
    assert [t for t, _ in out] == [topic, f"cityops/{EDGE}/reply", f"cityops/{EDGE}/reply"]  # picture first
    jpeg = out[0][1]
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == frame.shape and np.abs(img.astype(int) - frame).mean() < 3
    replies = b.replies()
    assert [r["request_id"] for r in replies] == ["s1", "s2"]
    for r in replies:
        check_reply(r)
        assert r["ok"] and r["result"] == {"camera_id": "cam1", "topic": topic, "mime": "image/jpeg",
                                           "sha256": hashlib.sha256(jpeg).hexdigest(), "bytes": len(jpeg),
                                           "captured_at": "1970-01-01T08:01:41.500+08:00"}
    b.app.process(Frame("cam1", 103.5, frame))
    assert len(b.outbox()) == 3  # one snapshot per request, not one per frame


def test_a_snapshot_of_a_silent_camera_times_out_with_a_reason(box: Any) -> None:
    b = box()
    b.t = 10.0
    b.app.submit_command("snapshot", json.dumps({"request_id": "s3", "camera_id": "cam1"}).encode())
    assert b.app.apply_commands() == []
    b.t = 39.0
    assert b.app.apply_commands() == []
    b.t = 40.0
    late = b.app.apply_commands()
    assert [(r["request_id"], r["ok"], r["reason"]) for r in late] == [
        ("s3", False, "no frame from camera 'cam1' within 30 s (offline?)")]
    check_reply(late[0])
    assert b.replies() == late


def test_reply_schema_uses_only_checked_keywords() -> None:
    assert keywords(load_schema("reply")) - CHECKED - ANNOTATIONS == set()
