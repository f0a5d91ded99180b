"""Durable delivery end to end against a real Mosquitto (tests/fixtures_mqtt.py: the production broker
config, persistence on): the edge's outbox and publisher on one side, the reference intake on the other.

- a broker outage (CITYOPS_OUTAGE_S, default 120 s) while a producer keeps putting incident events of several
  cameras: the intake holds every event exactly once, per camera in the order produced;
- the edge process killed with SIGKILL at 20 random (seeded) moments while it produces and sends, restarted
  each time: every produced message id is in the intake's store exactly once (MQTT-level repeats are allowed
  and counted: the intake drops them by message_id);
- an intake that is down: what was published meanwhile waits in its durable session (more than Mosquitto's
  default queue of 1000, which the production config raises);
- two intakes in one shared-subscription group split the messages and store each once;
- the `intake` command: runs until SIGTERM, exports, prints its summary; a refused login exits 3.

Figures are printed, not asserted (`-s` shows them): the publish rate outbox → broker while draining a backlog
(CITYOPS_BACKLOG events, default 2,000), the time to drain it, and the intake's end-to-end rate.
"""
from __future__ import annotations

import inspect
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from edge.config import Broker
from edge.intake import Intake
from edge.intake.cli import main as intake_main
from edge.messages import incident_publications
from edge.outbox import Outbox, OutboxLimits
from edge.publisher import Publisher
from fixtures_mqtt import Mosquitto, Subscriber
from incident_factory import make_manifest

pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
EDGE = "edge-dlv1"
EDGE_PW = "Edge-Delivery-pw-7731"
INTAKE = ("intake", "Intake-Delivery-pw-4410")  # the production ACL's read-only intake account
MANIFEST = make_manifest()
FAST = dict(reconnect_delay=(0.1, 0.5), retry_delay=(0.1, 0.3))
CAMERAS = 4


def incident_event(i: int, cameras: int = 4) -> Any:
    """Event i of a steady stream: incident i // 3 goes opened → updated → resolved on camera (i // 3) % cameras,
    each incident at its own place (≈ 20 m apart), each event with its own evidence JPEG."""
    from incident_factory import FAKE_JPEG, make_event

    k = i // 3
    return make_event(i, camera_id=f"cam{k % cameras}", event=("opened", "updated", "resolved")[i % 3],
                      lon=round(120.58 + k * 2e-4, 7), lat=31.29,
                      jpeg=FAKE_JPEG[:-2] + i.to_bytes(4, "big") + b"\xff\xd9")


def publications(ev: Any, mode: str = "inline") -> list[tuple[str, bytes]]:
    return incident_publications(ev, edge_id=EDGE, admin_code="320582", utc_offset="+08:00", manifest=MANIFEST,
                                 evidence_mode=mode)  # type: ignore[arg-type]


def wait_until(pred: Callable[[], Any], timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return bool(pred())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", {EDGE: EDGE_PW, INTAKE[0]: INTAKE[1]}) as b:
        yield b
        stop_running()  # before the broker goes: a client that outlives it only logs noise


@pytest.fixture(autouse=True)
def edge_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_EDGE_PW", EDGE_PW)
    monkeypatch.setenv("DELIVERY_INTAKE_USER", INTAKE[0])
    monkeypatch.setenv("DELIVERY_INTAKE_PW", INTAKE[1])


def broker_cfg(port: int) -> Broker:
    return Broker(host="127.0.0.1", port=port, password_env="DELIVERY_EDGE_PW", keepalive_s=5)


_RUNNING: list[Any] = []  # intakes and publishers a test started: stopped at its end, even when it fails


@pytest.fixture(autouse=True)
def stop_what_runs() -> Iterator[None]:
    yield
    stop_running()


def stop_running() -> None:
    while _RUNNING:
        thing = _RUNNING.pop()
        try:
            thing.stop(0.5) if isinstance(thing, Publisher) else thing.stop(timeout=1)
        except Exception:
            pass


def new_intake(tmp: Path, port: int, client_id: str = "intake-1", **kw: Any) -> Intake:
    intake = Intake(tmp / "intake.sqlite", port=port, username=INTAKE[0], password=INTAKE[1],
                    client_id=client_id, reconnect_delay=(0.1, 0.5), **kw)
    _RUNNING.append(intake)
    intake.start()
    assert intake.wait_subscribed(10), intake.last_error
    return intake


def new_publisher(port: int, outbox: Outbox) -> Publisher:
    pub = Publisher(broker_cfg(port), EDGE, outbox, **FAST)
    _RUNNING.append(pub)
    pub.start()
    return pub


def check_exactly_once_in_order(intake: Intake, produced_ids: list[str], cameras: dict[str, str]) -> None:
    """Every produced id stored once; per camera the first arrivals are in the order produced."""
    rows = intake.events(EDGE)
    stored = [r.message_id for r in rows]
    missing = sorted(set(produced_ids) - set(stored))
    assert not missing, f"{len(missing)} of {len(produced_ids)} events never arrived, e.g. {missing[:5]}"
    assert len(stored) == len(set(stored)) == len(produced_ids), "an event was stored twice or an extra one"
    for cam in sorted(set(cameras.values())):
        want = [m for m in produced_ids if cameras[m] == cam]
        got = [r.message_id for r in rows if r.camera_id == cam]
        assert got == want, f"camera {cam}: arrival order differs from production order"
    c = intake.counts()
    assert c["invalid"] == 0 and c["evidence_bad"] == 0 and c["evidence_pending"] == 0, c


def check_states(intake: Intake, produced: list[Any]) -> None:
    """Each incident's stored state is the one of its last produced event."""
    last = {ev.incident_id: ev for ev in produced}
    got = {i.incident_id: (i.state, i.last_message_id) for i in intake.incidents(EDGE)}
    assert got == {k: ("resolved" if ev.event == "resolved" else "open", ev.message_id) for k, ev in last.items()}


# ------------------------------------------------------------------------------------ broker outage
@pytest.mark.slow
def test_broker_outage_every_event_once_in_camera_order(broker: Mosquitto, tmp_path: Path) -> None:
    outage_s = float(os.environ.get("CITYOPS_OUTAGE_S", "120"))
    rate = float(os.environ.get("CITYOPS_OUTAGE_RATE", "10"))  # events per second, all cameras together
    intake = new_intake(tmp_path, broker.port)
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    pub = new_publisher(broker.port, outbox)
    assert pub.wait_connected(10)

    produced: list[Any] = []
    stop = threading.Event()

    def produce() -> None:  # a steady stream, whatever the broker does
        t0, i = time.monotonic(), 0
        while not stop.is_set():
            ev = incident_event(i, CAMERAS)
            outbox.put_many(publications(ev))
            produced.append(ev)
            i += 1
            stop.wait(max(0.0, t0 + i / rate - time.monotonic()))

    producer = threading.Thread(target=produce, name="producer")
    producer.start()
    try:
        assert wait_until(lambda: intake.counts()["events"] >= 20, 60), intake.stats()
        broker.stop()
        t_down = time.monotonic()
        assert wait_until(lambda: not pub.connected and not intake.connected, 10)
        time.sleep(max(0.0, outage_s - (time.monotonic() - t_down)))
        held = outbox.pending_count()
        assert held > 0  # the outage held events back in the outbox: they are not lost in a socket
        broker.start()
        t_up = time.monotonic()
        assert wait_until(lambda: outbox.pending_count() <= 1, 60 + held / 20, every=0.02), outbox.pending_count()
        drained_s = time.monotonic() - t_up
        time.sleep(2.0)  # production goes on after the backlog is gone
    finally:
        stop.set()
        producer.join()
    n = len(produced)
    assert wait_until(lambda: outbox.pending_count() == 0, 60), outbox.pending_count()
    assert wait_until(lambda: intake.counts()["events"] >= n, 60 + n / 20), (intake.counts(), intake.stats())
    caught_up_s = time.monotonic() - t_up
    assert intake.wait_idle(30)
    time.sleep(0.5)  # a late MQTT repeat would arrive now
    check_exactly_once_in_order(intake, [e.message_id for e in produced], {e.message_id: e.camera_id for e in produced})
    check_states(intake, produced)
    c, s = intake.counts(), intake.stats()
    print(f"\n[delivery] broker down {outage_s:.0f} s while {rate:g} events/s of {CAMERAS} cameras went on: {held} "
          f"events held in the outbox; after the restart the outbox drained in {drained_s:.1f} s and the intake "
          f"held all {n} events (each once, per-camera order kept) {caught_up_s:.1f} s after it; MQTT repeats "
          f"dropped by message_id: {c['duplicates']}; intake reconnects: {s.connections - 1}")
    pub.stop(2)
    intake.stop()
    outbox.close()


# ---------------------------------------------------------------------------------------- SIGKILL
# The edge process: a producer that writes numbered events the way the incident book does (the event's messages and
# the producer's own state in one transaction, so a restart resumes exactly after the last committed event) and
# the real Outbox + Publisher draining them. Each run is forked from a parent that imported everything once: the
# imports alone take 3-8 s on a loaded 2-core machine, and 21 of them would not fit the time. A forked run shares
# nothing with its parent but the imported code: its database connections, MQTT socket and threads are its own,
# made after the fork, and SIGKILL ends it as it would any process; all it finds again is what is on disk.
EDGE_ZYGOTE = """
import os, signal, sqlite3, sys, time
from typing import Any
from edge.config import Broker
from edge.messages import IncidentSink
from edge.outbox import Outbox, OutboxLimits
from edge.publisher import Publisher
from incident_factory import make_manifest, make_event, FAKE_JPEG

{incident_event}

def run(port, db, n, rate, edge, mode):
    outbox = Outbox(db)
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS producer (id INTEGER PRIMARY KEY CHECK (id = 0), next INTEGER NOT NULL)")
    conn.execute("INSERT INTO producer (id, next) VALUES (0, 0) ON CONFLICT (id) DO NOTHING")
    sink = IncidentSink(edge_id=edge, admin_code="320582", utc_offset="+08:00", manifest=make_manifest(),
                        evidence_mode=mode)
    pub = Publisher(Broker(host="127.0.0.1", port=port, password_env="DELIVERY_EDGE_PW", keepalive_s=5), edge,
                    outbox, reconnect_delay=(0.1, 0.5), retry_delay=(0.1, 0.3))
    pub.start()
    i = start = conn.execute("SELECT next FROM producer").fetchone()[0]
    print("READY", i, outbox.pending_count(), flush=True)
    t0 = time.monotonic()
    while i < n:
        ev = incident_event(i)
        conn.execute("BEGIN IMMEDIATE")
        sink.write_events(conn, [ev])
        conn.execute("UPDATE producer SET next = ?", (i + 1,))
        conn.execute("COMMIT")
        i += 1
        time.sleep(max(0.0, t0 + (i - start) / rate - time.monotonic()))
    while outbox.pending_count():
        time.sleep(0.05)
    pub.stop(5)
    print("DONE", i, flush=True)

print("ZYGOTE", flush=True)
for line in sys.stdin:                      # "start LOG PORT DB N RATE EDGE MODE" | "wait PID"
    cmd, *args = line.split()
    if cmd == "start":
        pid = os.fork()
        if pid == 0:
            fd = os.open(args[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdin.close()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                run(int(args[1]), args[2], int(args[3]), float(args[4]), args[5], args[6])
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        print("PID", pid, flush=True)
    elif cmd == "wait":
        _, status = os.waitpid(int(args[0]), 0)
        print("EXIT", os.waitstatus_to_exitcode(status), flush=True)
"""


class EdgeZygote:
    """Starts edge runs (forks) on request; `kill` SIGKILLs one, `wait` reaps it."""

    def __init__(self, tmp: Path):
        script = tmp / "edge_zygote.py"
        script.write_text(EDGE_ZYGOTE.replace("{incident_event}", inspect.getsource(incident_event)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
        self.proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self._read() == "ZYGOTE"

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line, f"the edge zygote died (exit {self.proc.poll()})"
        return line

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def start(self, log: Path, *args: Any) -> int:
        self._send(" ".join(["start", str(log), *map(str, args)]))
        kind, pid = self._read().split()
        assert kind == "PID"
        return int(pid)

    def wait(self, pid: int) -> int:
        self._send(f"wait {pid}")
        kind, code = self._read().split()
        assert kind == "EXIT"
        return int(code)

    def kill(self, pid: int) -> int:
        os.kill(pid, signal.SIGKILL)
        return self.wait(pid)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.slow
def test_edge_killed_20_times_nothing_lost_nothing_duplicated(broker: Mosquitto, tmp_path: Path) -> None:
    n = int(os.environ.get("CITYOPS_KILL_EVENTS", "600"))
    kills = int(os.environ.get("CITYOPS_KILLS", "20"))
    rate = float(os.environ.get("CITYOPS_KILL_RATE", "30"))  # events per second while it runs
    rng = random.Random(int(os.environ.get("CITYOPS_KILL_SEED", "20260701")))
    db = tmp_path / "edge" / "state.db"
    db.parent.mkdir()
    intake = new_intake(tmp_path, broker.port)
    zygote = EdgeZygote(tmp_path)
    t0 = time.monotonic()
    starts = []  # (next event, rows pending in the outbox) each run began with
    try:
        for k in range(kills):
            log = tmp_path / f"edge-{k:02d}.log"
            log.touch()
            pid = zygote.start(log, broker.port, db, n, rate, EDGE, "topic")
            try:
                assert wait_until(lambda: "READY" in log.read_text() or "Error" in log.read_text(), 30), log.read_text()
                line = next((x for x in log.read_text().splitlines() if x.startswith("READY")), None)
                assert line is not None, log.read_text()[-3000:]
                starts.append(tuple(int(v) for v in line.split()[1:]))
                time.sleep(rng.uniform(0.05, 1.5))  # mid-connect, mid-produce, mid-send: wherever it lands
            finally:
                code = zygote.kill(pid)  # 0 only if that run had already produced and sent everything
                assert code == -signal.SIGKILL or (code == 0 and "DONE" in log.read_text()), log.read_text()[-3000:]
        log = tmp_path / "edge-final.log"
        log.touch()
        pid = zygote.start(log, broker.port, db, n, rate, EDGE, "topic")
        assert wait_until(lambda: "DONE" in log.read_text() or "Error" in log.read_text(), 120 + n / 5, every=0.2), \
            log.read_text()[-3000:]
        assert zygote.wait(pid) == 0, log.read_text()[-3000:]
    finally:
        zygote.close()
    assert wait_until(lambda: intake.counts()["events"] >= n, 60 + n / 20), (intake.counts(), intake.stats())
    assert intake.wait_idle(30)
    time.sleep(0.5)
    elapsed = time.monotonic() - t0

    produced = [incident_event(i, CAMERAS) for i in range(n)]
    check_exactly_once_in_order(intake, [e.message_id for e in produced], {e.message_id: e.camera_id for e in produced})
    check_states(intake, produced)
    c, s = intake.counts(), intake.stats()
    assert c["events"] == n and c["evidence"] == n  # every evidence JPEG too (evidence topic), hash matched
    mid_run = sum(1 for nxt, _ in starts[1:] if nxt < n)
    print(f"\n[delivery] edge SIGKILLed {kills} times (seeded), restarted each time: all {n} events at the intake "
          f"exactly once, per-camera order kept, {c['evidence']} evidence JPEGs by hash; {mid_run} restarts resumed "
          f"mid-production, outbox rows pending at the restarts {[p for _, p in starts[1:]]}; MQTT-level repeats "
          f"dropped by message_id: {c['duplicates']} events + {s.evidence_duplicates} evidence; {elapsed:.0f} s")


# ------------------------------------------------------------------------------- backlog drain rate
@pytest.mark.slow
def test_backlog_drain_rate(broker: Mosquitto, tmp_path: Path) -> None:
    n = int(os.environ.get("CITYOPS_BACKLOG", "2000"))
    intake = new_intake(tmp_path, broker.port)
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    produced = [incident_event(i, CAMERAS) for i in range(n)]
    for k in range(0, n, 250):
        outbox.put_many([p for ev in produced[k:k + 250] for p in publications(ev)])
    size = len(publications(produced[0])[0][1])
    t0 = time.perf_counter()
    pub = new_publisher(broker.port, outbox)
    assert wait_until(lambda: outbox.pending_count() == 0, 60 + n / 5, every=0.02), outbox.pending_count()
    acked_s = time.perf_counter() - t0
    assert wait_until(lambda: intake.counts()["events"] >= n, 60 + n / 5, every=0.1), intake.counts()
    stored_s = time.perf_counter() - t0
    assert intake.wait_idle(30)
    check_exactly_once_in_order(intake, [e.message_id for e in produced], {e.message_id: e.camera_id for e in produced})
    print(f"\n[delivery] backlog of {n} events (QoS 1, inline evidence, {size} B each): outbox → broker drained in "
          f"{acked_s:.1f} s = {n / acked_s:.0f} events/s acknowledged; stored once by the intake after "
          f"{stored_s:.1f} s = {n / stored_s:.0f} events/s end to end")
    pub.stop(2)
    intake.stop()
    outbox.close()


def test_at_the_outbox_cap_updates_go_first_and_the_status_counts_them(broker: Mosquitto, tmp_path: Path) -> None:
    """A box offline too long: its outbox holds 90 events but may keep 70. Every opened and resolved arrives; the
    20 oldest `updated` are the ones dropped; the centre reads the count in the retained edge status."""
    intake = new_intake(tmp_path, broker.port)
    status = Subscriber(broker.port, f"cityops/{EDGE}/status", username=INTAKE[0], password=INTAKE[1]).start()
    outbox = Outbox(tmp_path / "edge" / "outbox.db", OutboxLimits(max_messages=70))
    produced = [incident_event(i, CAMERAS) for i in range(90)]  # 30 incidents: opened, updated, resolved each
    outbox.put_many([p for ev in produced for p in publications(ev)])
    pub = new_publisher(broker.port, outbox)  # start() applies the limits before it connects
    assert wait_until(lambda: intake.counts()["events"] >= 70, 30), intake.counts()
    assert intake.wait_idle(10)
    updated = [e for e in produced if e.event == "updated"]
    kept = [e for e in produced if e.event != "updated"] + updated[20:]
    stored = {r.message_id for r in intake.events(EDGE)}
    assert stored == {e.message_id for e in kept}  # no opened/resolved lost; the dropped updates are the oldest
    assert pub.stats().dropped == {"updated": 20}

    def counted() -> bool:
        last = [json.loads(m.payload) for m in status.messages]
        return bool(last) and last[-1].get("outbox") == {"dropped": {"updated": 20}, "set_aside": 0}
    assert wait_until(counted, 5), [m.payload for m in status.messages]
    status.close()


# ------------------------------------------------------------------------------ intake sessions
@pytest.mark.slow
def test_messages_wait_in_the_session_of_an_intake_that_is_down(tmp_path: Path) -> None:
    n = int(os.environ.get("CITYOPS_INTAKE_DOWN_EVENTS", "1200"))  # > Mosquitto's default queue of 1000
    # Differs from production, visibly: with autosave_on_changes every acknowledgement rewrites the whole
    # persistence file, and with 1,200 messages queued that is ≈ 12 messages/s — measured separately and
    # reported; here the subject is the durable session, so the broker saves once a second instead.
    mq = Mosquitto(tmp_path / "broker", {EDGE: EDGE_PW, INTAKE[0]: INTAKE[1]},
                   overrides={"autosave_on_changes": "false"})
    with mq as broker:
        try:
            _intake_down(broker, tmp_path, n)
        finally:
            stop_running()


def _intake_down(broker: Mosquitto, tmp_path: Path, n: int) -> None:
    first = new_intake(tmp_path, broker.port)
    first.stop()  # the session, with its shared subscriptions, stays at the broker
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    produced = [incident_event(i, CAMERAS) for i in range(n)]
    for k in range(0, n, 250):
        outbox.put_many([p for ev in produced[k:k + 250] for p in publications(ev)])
    pub = new_publisher(broker.port, outbox)
    assert wait_until(lambda: outbox.pending_count() == 0, 60 + n / 5), outbox.pending_count()
    broker.stop()  # and a broker restart on top: the queue is in its persistence file
    broker.start()
    again = new_intake(tmp_path, broker.port)  # same client id: finds its session
    assert wait_until(lambda: again.counts()["events"] >= n, 60 + n / 10, every=0.1), \
        (again.counts(), broker.log[-2000:])
    assert again.wait_idle(30)
    check_exactly_once_in_order(again, [e.message_id for e in produced], {e.message_id: e.camera_id for e in produced})
    assert "dropped" not in broker.log.lower(), broker.log[-2000:]
    pub.stop(2)
    again.stop()
    outbox.close()


def test_two_intakes_in_one_group_share_the_load(broker: Mosquitto, tmp_path: Path) -> None:
    a = new_intake(tmp_path, broker.port, client_id="intake-a", group="centre")
    b = new_intake(tmp_path, broker.port, client_id="intake-b", group="centre")  # the same database file: one store
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    produced = [incident_event(i, CAMERAS) for i in range(120)]
    outbox.put_many([p for ev in produced for p in publications(ev, mode="topic")])
    new_publisher(broker.port, outbox)
    assert wait_until(lambda: a.counts()["events"] >= 120 and a.counts()["evidence_pending"] == 0, 60), a.counts()
    assert a.wait_idle(5) and b.wait_idle(5)
    sa, sb = a.stats(), b.stats()
    assert sa.received > 0 and sb.received > 0, (sa, sb)  # both got a share
    assert sa.stored + sb.stored == 120 and sa.duplicates + sb.duplicates == a.counts()["duplicates"]
    ids = [r.message_id for r in a.events()]
    assert sorted(ids) == sorted(e.message_id for e in produced)
    c = a.counts()
    assert c["evidence"] == 120 and c["evidence_bad"] == 0  # pictures and messages met, whichever intake got them

    # one member down: Mosquitto still deals it its share, which waits in its session until it is back
    b.stop()
    more = [incident_event(i, CAMERAS) for i in range(120, 240)]
    outbox.put_many([p for ev in more for p in publications(ev, mode="topic")])
    assert wait_until(lambda: outbox.pending_count() == 0, 60)
    time.sleep(1.0)
    while_down = a.counts()["events"] - 120
    b2 = new_intake(tmp_path, broker.port, client_id="intake-b", group="centre")
    assert wait_until(lambda: a.counts()["events"] >= 240, 60), a.counts()
    assert a.wait_idle(10) and b2.wait_idle(10)
    assert sorted(r.message_id for r in a.events()) == sorted(e.message_id for e in produced + more)
    print(f"\n[delivery] two intakes, one group: {sa.received} / {sb.received} messages each; with one down, "
          f"{while_down} of 120 events reached the other and {120 - while_down} waited for it to come back")
    stop_running()
    outbox.close()


def test_after_a_broker_restart_the_durable_session_queues_and_a_shared_one_on_old_mosquitto_does_not(
        broker: Mosquitto, tmp_path: Path) -> None:
    """Why a single intake uses a plain subscription: Mosquitto < 2.0.12 does not restore `$share` subscriptions
    from persistence, so what is published after a restart, before the intake subscribes again, is dropped."""
    plain = new_intake(tmp_path / "plain", broker.port, client_id="intake-plain")
    shared = new_intake(tmp_path / "shared", broker.port, client_id="intake-shared", group="centre")
    plain.stop()
    shared.stop()
    broker.stop()
    broker.start()
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    produced = [incident_event(i, CAMERAS) for i in range(10)]
    outbox.put_many([p for ev in produced for p in publications(ev)])
    new_publisher(broker.port, outbox)
    assert wait_until(lambda: outbox.pending_count() == 0, 30)
    plain = new_intake(tmp_path / "plain", broker.port, client_id="intake-plain")
    shared = new_intake(tmp_path / "shared", broker.port, client_id="intake-shared", group="centre")
    assert wait_until(lambda: plain.counts()["events"] >= 10, 20), plain.counts()
    time.sleep(1.0)
    got = shared.counts()["events"]
    print(f"\n[delivery] published after a broker restart, before the intakes were back: the plain durable session "
          f"got 10 of 10, the shared-subscription session {got} of 10 (Mosquitto 2.0.11 loses them; >= 2.0.12 "
          f"should not)")
    stop_running()
    outbox.close()


# ------------------------------------------------------------------------------------------- CLI
def test_cli_refused_login_exits_3_without_the_password(broker: Mosquitto, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_INTAKE_PW", "Wrong-Intake-pw-9911")
    rc = intake_main(["--broker", f"127.0.0.1:{broker.port}", "--db", str(tmp_path / "i.sqlite"),
                      "--username-env", "DELIVERY_INTAKE_USER", "--password-env", "DELIVERY_INTAKE_PW",
                      "--connect-timeout", "10"])
    out = capsys.readouterr()
    assert rc == 3
    errors = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"127.0.0.1:{broker.port}" in errors[0] and "refused" in errors[0], out.err
    assert "Wrong-Intake-pw-9911" not in out.err + out.out and INTAKE[1] not in out.err + out.out


@pytest.mark.slow
def test_cli_runs_until_sigterm_exports_and_summarises(broker: Mosquitto, tmp_path: Path) -> None:
    db, geo, table = tmp_path / "c.sqlite", tmp_path / "open.geojson", tmp_path / "open.csv"
    log = tmp_path / "intake.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.intake", "--broker", f"127.0.0.1:{broker.port}", "--db", str(db),
             "--username-env", "DELIVERY_INTAKE_USER", "--password-env", "DELIVERY_INTAKE_PW",
             "--client-id", "intake-cli", "--export-geojson", str(geo), "--export-csv", str(table)],
            cwd=ROOT, env=dict(os.environ), stdout=f, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: "connected to MQTT broker" in log.read_text() or proc.poll() is not None, 60)
        assert proc.poll() is None, log.read_text()
        time.sleep(0.5)  # its SUBSCRIBE follows the CONNACK
        outbox = Outbox(tmp_path / "edge" / "outbox.db")
        produced = [incident_event(i, CAMERAS) for i in range(30)]
        outbox.put_many([p for ev in produced for p in publications(ev)])
        outbox.put("cityops/" + EDGE + "/incident/cam0", b'{"schema": 1}')  # kept aside, does not stop it
        pub = new_publisher(broker.port, outbox)

        def stored() -> int:
            try:
                with sqlite3.connect(db) as conn:
                    return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            except sqlite3.Error:
                return 0

        assert wait_until(lambda: stored() >= 30, 60, every=0.2), log.read_text()
        pub.stop(2)
        outbox.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    summary = [line for line in text.splitlines() if line.startswith("intake:")]
    assert len(summary) == 1 and "30 stored" in summary[0] and "1 invalid" in summary[0], text
    assert INTAKE[1] not in text and EDGE_PW not in text
    features = json.loads(geo.read_text())["features"]
    open_incidents = {e.incident_id for e in produced} - {e.incident_id for e in produced if e.event == "resolved"}
    assert len(features) == len(open_incidents)  # one case per incident here: they are 20 m apart
    assert len(table.read_text(encoding="utf-8-sig").splitlines()) == len(open_incidents) + 1
