"""The publisher against a real Mosquitto: order, exactly-once in normal operation, no loss across a broker
outage, refused credentials, a v5 ACL rejection, clean stop vs. LWT."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.config import Broker, ConfigError
from edge.outbox import Outbox
from edge.publisher import Publisher, broker_credentials
from fixtures_mqtt import Mosquitto, Subscriber
from incident_factory import enqueue_events

ROOT = Path(__file__).resolve().parents[1]
EDGE = "edge-t1"
EDGE_PW = "s3cret-Edge-pw!"
CENTRE = ("centre", "centre-pw")
FAST = dict(reconnect_delay=(0.1, 0.5), retry_delay=(0.1, 0.3))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", {EDGE: EDGE_PW, CENTRE[0]: CENTRE[1]}) as b:
        yield b


@pytest.fixture(autouse=True)
def password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_EDGE_MQTT_PW", EDGE_PW)


def broker_cfg(port: int, **kw: Any) -> Broker:
    return Broker(**{"host": "127.0.0.1", "port": port, "password_env": "TEST_EDGE_MQTT_PW", "keepalive_s": 5, **kw})


def enqueue(outbox: Outbox, start: int, n: int) -> list[str]:
    return enqueue_events(outbox, start, n, edge_id=EDGE, cameras=3)


def received_ids(sub: Subscriber) -> list[str]:
    return [m.json()["message_id"] for m in sub.snapshot()]


def subscriber(port: int, topic: str) -> Subscriber:
    return Subscriber(port, topic, username=CENTRE[0], password=CENTRE[1]).start()


def wait_until(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("protocol, n", [("5", 300), ("3.1.1", 60)])
def test_delivers_in_order_exactly_once(broker: Mosquitto, tmp_path: Path, protocol: str, n: int) -> None:
    sub = subscriber(broker.port, f"cityops/{EDGE}/incident/#")
    status = subscriber(broker.port, f"cityops/{EDGE}/status")
    outbox = Outbox(tmp_path / "outbox.db")
    expected = enqueue(outbox, 0, n // 2)  # some before start, some while running
    pub = Publisher(broker_cfg(broker.port, protocol=protocol), EDGE, outbox, **FAST)
    t0 = time.perf_counter()
    pub.start()
    assert pub.wait_connected(5)
    expected += enqueue(outbox, n // 2, n - n // 2)
    assert sub.wait_for(n, timeout=30), f"got {len(sub.snapshot())} of {n}"
    elapsed = time.perf_counter() - t0
    time.sleep(0.2)  # a duplicate would arrive now
    assert received_ids(sub) == expected
    assert all(m.topic == f"cityops/{EDGE}/incident/cam{i % 3}" for i, m in enumerate(sub.snapshot()))
    stats = pub.stats()
    assert (stats.acked, stats.pending, stats.connected, stats.rejected) == (n, 0, True, 0)
    assert status.wait_for(lambda ms: any(m.json()["state"] == "online" for m in ms), 5)
    pub.stop(2)
    print(f"\n[timing] MQTT {protocol}: {n} incident messages (≈{len(sub.snapshot()[0].payload)} B) "
          f"put→acked→received in {elapsed:.2f} s ({n / elapsed:.0f} msg/s incl. outbox fsyncs)")
    sub.close()
    status.close()
    outbox.close()


@pytest.mark.slow
def test_broker_outage_loses_nothing_and_keeps_order(broker: Mosquitto, tmp_path: Path) -> None:
    sub = subscriber(broker.port, f"cityops/{EDGE}/incident/#")  # durable session: queued for it across the restart
    outbox = Outbox(tmp_path / "outbox.db")
    pub = Publisher(broker_cfg(broker.port), EDGE, outbox, **FAST)
    pub.start()
    assert pub.wait_connected(5)

    # a producer keeps putting while the broker goes away mid-stream and comes back
    expected: list[str] = []
    done = threading.Event()

    def produce() -> None:
        for k in range(0, 240, 4):
            expected.extend(enqueue(outbox, k, 4))
            time.sleep(0.01)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert wait_until(lambda: pub.stats().acked >= 40, 10)
    broker.stop()
    assert wait_until(lambda: not pub.stats().connected, 5)
    time.sleep(0.5)
    held = pub.stats().pending
    assert held > 0  # the outage held messages back: they are in the outbox, not lost in a socket
    t_restart = time.perf_counter()
    broker.start()
    assert done.wait(20)
    producer.join()
    assert sub.wait_for(lambda ms: len({m.json()["message_id"] for m in ms}) >= 240, timeout=30), \
        f"{len(set(received_ids(sub)))} of 240 arrived; pending {pub.stats().pending}\n{broker.log[-2000:]}"
    recovered = time.perf_counter() - t_restart
    got = received_ids(sub)
    first_seen = list(dict.fromkeys(got))
    assert first_seen == expected  # none lost, order kept
    assert wait_until(lambda: pub.stats().pending == 0, 5)
    pub.stop(2)
    print(f"\n[timing] outage: {held} messages held in the outbox, all 240 delivered {recovered:.2f} s after the "
          f"broker restart; duplicates (at-least-once, dedupe on message_id): {len(got) - len(first_seen)}")
    sub.close()
    outbox.close()


@pytest.mark.slow
def test_refused_credentials_are_one_clear_line_and_lose_nothing(
        broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "Wrong-Password-123"
    monkeypatch.setenv("TEST_EDGE_MQTT_PW", wrong)
    caplog.set_level(logging.DEBUG)  # paho's own debug lines too: none may carry the password
    outbox = Outbox(tmp_path / "outbox.db")
    expected = enqueue(outbox, 0, 3)
    pub = Publisher(broker_cfg(broker.port), EDGE, outbox, **FAST)
    pub.start()
    assert not pub.wait_connected(2.0)  # ≥ 3 attempts at 0.1 → 0.5 s backoff
    stats = pub.stats()
    assert not stats.connected and stats.pending == 3 and stats.acked == 0
    assert stats.last_error and f"127.0.0.1:{broker.port}" in stats.last_error
    pub.stop(0.5)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # once, not once per retry
    assert f"127.0.0.1:{broker.port}" in errors[0] and "refused" in errors[0]
    assert "password" in errors[0].lower() or "authori" in errors[0].lower()
    assert wrong not in caplog.text and EDGE_PW not in caplog.text
    assert outbox.pending_count() == 3

    # the right password later delivers everything that waited
    monkeypatch.setenv("TEST_EDGE_MQTT_PW", EDGE_PW)
    sub = subscriber(broker.port, f"cityops/{EDGE}/incident/#")
    pub2 = Publisher(broker_cfg(broker.port), EDGE, outbox, **FAST)
    pub2.start()
    assert sub.wait_for(3, 10)
    assert received_ids(sub) == expected
    pub2.stop(2)
    sub.close()
    outbox.close()


@pytest.mark.slow
def test_v5_refused_publish_is_retried_then_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An ACL refusal (0x87) is retried with backoff a few times, then kept aside — never lost, never blocking."""
    acl = "pattern readwrite cityops/%u/#\nuser centre\ntopic read cityops/#\n"
    with Mosquitto(tmp_path / "broker", {EDGE: EDGE_PW, CENTRE[0]: CENTRE[1]}, acl=acl) as broker:
        sub = subscriber(broker.port, f"cityops/{EDGE}/incident/#")
        outbox = Outbox(tmp_path / "outbox.db")
        outbox.put("cityops/other-edge/incident/cam0", b'{"not": "ours"}')  # the ACL denies this topic
        expected = enqueue(outbox, 0, 2)
        pub = Publisher(broker_cfg(broker.port), EDGE, outbox, **FAST)
        pub.start()
        assert sub.wait_for(2, 10)
        assert received_ids(sub) == expected
        assert wait_until(lambda: pub.stats().set_aside == 1, 10)
        stats = pub.stats()
        assert stats.rejected == 3 and stats.pending == 0 and stats.acked == 2
        assert stats.last_error and "set aside" in stats.last_error and "0x87" in stats.last_error
        (_, topic, reason), = outbox.set_aside_rows()
        assert topic == "cityops/other-edge/incident/cam0" and reason.startswith("0x87")
        pub.stop(0.5)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 2, errors  # the refusal once (however often retried), then the set-aside
        assert "0x87" in errors[0] and "cityops/other-edge/incident/cam0" in errors[0]
        assert f"127.0.0.1:{broker.port}" in errors[0] and "set aside" in errors[1]
        assert outbox.requeue_set_aside() == 1 and outbox.pending_count() == 1  # back in the queue, not lost
        sub.close()
        outbox.close()


@pytest.mark.slow
def test_clean_stop_publishes_offline_and_no_lwt(broker: Mosquitto, tmp_path: Path) -> None:
    status = subscriber(broker.port, f"cityops/{EDGE}/status")
    outbox = Outbox(tmp_path / "outbox.db")
    pub = Publisher(broker_cfg(broker.port), EDGE, outbox, **FAST)
    pub.start()
    assert status.wait_for(lambda ms: any(m.json()["state"] == "online" for m in ms), 5)
    enqueue(outbox, 0, 5)
    pub.stop(5)
    assert outbox.pending_count() == 0  # stop flushed first
    assert status.wait_for(lambda ms: ms[-1].json()["state"] == "offline", 5)
    time.sleep(0.5)  # an LWT would arrive now
    states = [(m.json()["state"], m.json().get("reason")) for m in status.snapshot()]
    assert states[-1] == ("offline", "stopped") and ("offline", "connection lost") not in states
    late = subscriber(broker.port, f"cityops/{EDGE}/status")  # what a centre starting now sees
    assert late.wait_for(1, 5)
    retained = late.snapshot()[0]
    assert retained.retain and (retained.json()["state"], retained.json()["reason"]) == ("offline", "stopped")
    for s in (status, late):
        s.close()
    outbox.close()


PUBLISHER_PROC = """
import sys, time
from edge.config import Broker
from edge.outbox import Outbox
from edge.publisher import Publisher
port, db = int(sys.argv[1]), sys.argv[2]
pub = Publisher(Broker(host="127.0.0.1", port=port, password_env="TEST_EDGE_MQTT_PW", keepalive_s=5),
                "%s", Outbox(db), reconnect_delay=(0.1, 0.5))
pub.start()
print("CONNECTED" if pub.wait_connected(10) else "FAILED", flush=True)
time.sleep(60)
""" % EDGE


@pytest.mark.slow
def test_lwt_when_the_publisher_dies(broker: Mosquitto, tmp_path: Path) -> None:
    status = subscriber(broker.port, f"cityops/{EDGE}/status")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER_PROC, str(broker.port), str(tmp_path / "o.db")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "CONNECTED"
        assert status.wait_for(lambda ms: any(m.json()["state"] == "online" for m in ms), 5)
        t_kill = time.perf_counter()
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        assert status.wait_for(lambda ms: ms[-1].json()["state"] == "offline", 10)
        lwt_s = time.perf_counter() - t_kill
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert status.snapshot()[-1].json() == {"schema": 1, "state": "offline", "edge_id": EDGE,
                                            "reason": "connection lost"}
    late = subscriber(broker.port, f"cityops/{EDGE}/status")
    assert late.wait_for(1, 5) and late.snapshot()[0].retain
    assert json.loads(late.snapshot()[0].payload)["state"] == "offline"
    print(f"\n[timing] LWT 'offline' seen {lwt_s * 1000:.0f} ms after SIGKILL of the publisher")
    status.close()
    late.close()


# ----------------------------------------------------------------------------- without a broker
def test_unreachable_broker_stop_is_prompt_and_keeps_messages(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from fixtures_mqtt import free_port
    port = free_port()  # nothing listens there
    outbox = Outbox(tmp_path / "outbox.db")
    enqueue(outbox, 0, 3)
    pub = Publisher(broker_cfg(port), EDGE, outbox, **FAST)
    pub.start()
    assert not pub.wait_connected(1.0)
    t0 = time.perf_counter()
    pub.stop(0.5)
    assert time.perf_counter() - t0 < 3.0
    assert outbox.pending_count() == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0], warnings
    outbox.close()


def test_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    secret.chmod(0o600)
    monkeypatch.setenv("EDGE_USER", "box7")
    assert broker_credentials(Broker(password_file=str(secret)), "edge-9") == ("edge-9", "from-file")
    assert broker_credentials(Broker(username_env="EDGE_USER", password_env="TEST_EDGE_MQTT_PW"), "e") == \
        ("box7", EDGE_PW)
    assert broker_credentials(Broker(), "e") == (None, None)
    with pytest.raises(ConfigError, match="MISSING_VAR") as err:
        broker_credentials(Broker(password_env="MISSING_VAR"), "e")
    assert EDGE_PW not in str(err.value)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        broker_credentials(Broker(password_file=str(secret)), "e")
