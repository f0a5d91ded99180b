"""Commands from the centre end to end against a real Mosquitto (tests/fixtures_mqtt.py: the production
broker_config/mosquitto.conf and broker_config/acl): a running edge (`EdgeApp.run_live`, its Publisher subscribed to
`cmd/#`, a file camera paced at real time, a constant model that always sees one ponding box) and the production
ACL's `centre` account, which sends each command on `cityops/<edge>/cmd/<command>` and reads the replies on
`cityops/<edge>/reply`.

Asserted: dismiss resolves the incident with reason `dismissed` and nothing reopens while the box still sees it;
profile and reload answer ok (and an unknown profile, a bad rule file are refused with a reason naming what is
wrong); snapshot publishes a JPEG on the evidence topic the reply names, with the reply's sha256; bad JSON and an
unknown command are refused with a reason; every reply matches the reply schema and the edge keeps running.
No password shows up in any message (the suite's secret watch scans them all).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from const_site import write_clip, write_model
from edge.app import EdgeApp, load_everything
from edge.messages import load_schema
from fixtures_mqtt import Mosquitto, Received, Subscriber
from schema_subset import errors

EDGE = "edge-cmd1"
EDGE_PW = "Edge-Commands-pw-3318"
CENTRE = ("centre", "Centre-Commands-pw-9054")  # the production ACL's commanding account
RULES = """
camera: cam1
persistence: {window_s: 3, vote_ratio: 0.6, min_scans: 3}
resolve_after_s: 30
update_interval_s: 10000
profiles:
  rainstorm:
    scan_interval_s: 0.25
    classes:
      ponding: {threshold: 0.45}
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", {EDGE: EDGE_PW, CENTRE[0]: CENTRE[1]}) as b:
        yield b


@pytest.fixture
def edge(broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EdgeApp]:
    """The edge running live against the broker, until the test ends."""
    monkeypatch.setenv("CMD_EDGE_PW", EDGE_PW)
    d = tmp_path / "site"
    (d / "rules").mkdir(parents=True)
    write_model(d)
    write_clip(d / "clip.mp4", seconds=90, fps=2)
    (d / "rules" / "cam1.yaml").write_text(RULES)
    site = {"edge_id": EDGE, "model": str(d / "const.onnx"), "state_dir": str(tmp_path / "state"),
            "broker": {"host": "127.0.0.1", "port": broker.port, "protocol": "5", "password_env": "CMD_EDGE_PW",
                       "keepalive_s": 5, "evidence": "inline"},
            "cameras": [{"id": "cam1", "url": "clip.mp4", "scan_interval_s": 0.5, "rules": "rules/cam1.yaml"}]}
    (d / "site.yaml").write_text(yaml.safe_dump(site))
    app = EdgeApp(load_everything(d / "site.yaml"), state_dir=tmp_path / "state", speed=1.0)
    done: list[Any] = []
    runner = threading.Thread(target=lambda: done.append(app.run_live(install_signals=False)), name="edge")
    runner.start()
    try:
        yield app
    finally:
        app.stop_event.set()
        runner.join(timeout=30)
        assert not runner.is_alive(), "the edge did not stop"


class Centre:
    """The centre's side: one client of the `centre` account that reads everything of the box and sends commands."""

    def __init__(self, port: int) -> None:
        self.sub = Subscriber(port, f"cityops/{EDGE}/#", username=CENTRE[0], password=CENTRE[1]).start()

    def send(self, command: str, payload: Any) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.sub.client.publish(f"cityops/{EDGE}/cmd/{command}", raw, qos=1)
        info.wait_for_publish(5)

    def messages(self, suffix: str) -> list[Received]:
        return [m for m in self.sub.snapshot() if m.topic == f"cityops/{EDGE}/{suffix}"]

    def incidents(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.messages("incident/cam1")]

    def reply(self, match: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first reply `match(reply)` accepts (a request id: that request's)."""
        pred = match if callable(match) else (lambda r: r["request_id"] == match)

        def found(msgs: list[Received]) -> bool:
            return any(pred(json.loads(m.payload)) for m in msgs if m.topic == f"cityops/{EDGE}/reply")

        assert self.sub.wait_for(found, timeout), f"no reply for {match!r}; got {[m.json() for m in self.messages('reply')]}"
        reply = next(r for r in (m.json() for m in self.messages("reply")) if pred(r))
        assert errors(load_schema("reply"), reply) == [], reply
        try:
            from edge.messages import validate_message
            validate_message(reply, kind="reply")
        except ImportError:
            pass
        return reply

    def close(self) -> None:
        self.sub.close()


def test_the_centre_commands_a_running_edge(broker: Mosquitto, edge: EdgeApp, tmp_path: Path) -> None:
    t0 = time.monotonic()
    centre = Centre(broker.port)
    try:
        # the box sees a ponding box in every frame: one incident opens (its Publisher subscribed cmd/# by then)
        assert centre.sub.wait_for(lambda ms: any(m.topic.endswith("/incident/cam1") for m in ms), 20), broker.log
        opened = centre.incidents()[0]
        assert opened["event"] == "opened"

        # dismiss: resolved as a false alarm, and the place stays quiet although the box still sees it
        centre.send("dismiss", {"request_id": "c-1", "incident_id": opened["incident_id"], "suppress_h": 2})
        r = centre.reply("c-1")
        assert r["ok"] and r["command"] == "dismiss" and r["edge_id"] == EDGE
        assert r["result"]["incident_id"] == opened["incident_id"] and r["result"]["suppress_h"] == 2
        assert centre.sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/incident/cam1")]) >= 2, 5)
        resolved = centre.incidents()[1]
        assert (resolved["event"], resolved["incident_id"], resolved["reason"]) == (
            "resolved", opened["incident_id"], "dismissed")
        time.sleep(2.0)  # four scans or more: a place that were not suppressed would open again by now

        # profile: a known one is switched to, an unknown one refused
        centre.send("profile", {"request_id": "c-2", "profile": "rainstorm"})
        r = centre.reply("c-2")
        assert r["ok"] and r["result"] == {"profile": "rainstorm", "previous_profile": "default",
                                           "scan_interval_s": {"cam1": 0.25}}
        centre.send("profile", {"request_id": "c-3", "profile": "flood"})
        r = centre.reply("c-3")
        assert not r["ok"] and r["reason"] == "unknown profile 'flood': the rule files define default, rainstorm"

        # reload: the files as they are load; a broken one is refused, naming file and key
        centre.send("reload", {"request_id": "c-4"})
        assert centre.reply("c-4")["ok"]
        rules_file = tmp_path / "site" / "rules" / "cam1.yaml"
        rules_file.write_text(RULES.replace("vote_ratio: 0.6", "vote_ratio: 6"))
        centre.send("reload", {"request_id": "c-5"})
        r = centre.reply("c-5")
        assert not r["ok"] and str(rules_file) in r["reason"] and "persistence.vote_ratio" in r["reason"], r
        assert edge.L.rules["cam1"].persistence.vote_ratio == 0.6  # the old rules stay

        # snapshot: the next frame as a JPEG on the evidence topic the reply names
        centre.send("snapshot", {"request_id": "c-6", "camera_id": "cam1"})
        r = centre.reply("c-6")
        assert r["ok"], r
        res = r["result"]
        assert res["topic"].startswith(f"cityops/{EDGE}/evidence/snapshot-cam1-")
        pictures = [m for m in centre.sub.snapshot() if m.topic == res["topic"]]
        assert len(pictures) == 1  # published before the reply, so here already
        jpeg = pictures[0].payload
        assert hashlib.sha256(jpeg).hexdigest() == res["sha256"] and len(jpeg) == res["bytes"]
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (320, 320, 3)

        # malformed and unknown commands: refused with a reason
        centre.send("dismiss", b"{not json")
        r = centre.reply(lambda x: x["command"] == "dismiss" and x["request_id"] is None)
        assert not r["ok"] and r["reason"].startswith("payload is not valid JSON")
        centre.send("selfdestruct", {"request_id": "c-7"})
        r = centre.reply("c-7")
        assert not r["ok"] and r["reason"].startswith("unknown command 'selfdestruct'")

        # the edge still runs, and the dismissed place never reopened
        assert not edge.stop_event.is_set() and edge.summary.camera_errors == {}
        assert [m["event"] for m in centre.incidents()] == ["opened", "resolved"]
        assert len(centre.messages("reply")) == 8
        assert edge.summary.scans > 0
    finally:
        centre.close()
    assert time.monotonic() - t0 < 60
