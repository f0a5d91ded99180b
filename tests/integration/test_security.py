"""Broker security against a real Mosquitto running the production config (broker_config/mosquitto.conf and
broker_config/acl, rendered by tests/fixtures_mqtt.py onto free loopback ports), with the CA, the server
certificate and the accounts made by broker_config/make_certs.sh and add_edge.sh.

What Mosquitto 2.0.11 does, measured here and asserted as such:
- a refused login (no user name, a wrong password, an unknown user) gets CONNACK 0x87 "Not authorized", on
  every listener and with MQTT 3.1.1 too (return code 5, which paho reports as "Not authorized");
- a client trusting another CA fails the TLS handshake (ssl.SSLCertVerificationError) before any MQTT;
- a publish the ACL denies gets PUBACK 0x87 with MQTT v5 and is never delivered; MQTT 3.1.1 acknowledges it
  (success) and drops it silently;
- a SUBSCRIBE to another box's command topic is granted (SUBACK "Granted QoS 1"): the ACL filters at delivery,
  so nothing of it ever arrives;
- on the boxes' listener the client id is the user name (use_username_as_clientid), so a box cannot take over
  another box's session.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
import pytest
import secret_watch
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import Broker
from edge.outbox import Outbox
from edge.publisher import Publisher
from fixtures_mqtt import Mosquitto, TlsFiles
from incident_factory import enqueue_events

ROOT = Path(__file__).resolve().parents[2]
MAKE_CERTS = ROOT / "broker_config" / "make_certs.sh"
ADD_EDGE = ROOT / "broker_config" / "add_edge.sh"
EDGES = ("edge-a", "edge-b")
SERVICES = ("centre", "intake")
WRONG_PW = "Wrong-Pa55word-4412"  # a credential the tests use: must not show up in any log either
FAST = dict(reconnect_delay=(0.1, 0.5), retry_delay=(0.1, 0.3))
NOT_AUTHORIZED = 0x87


# ------------------------------------------------------------------------------------------ fixtures
@dataclass(frozen=True)
class Pki:
    dir: Path  # make_certs.sh OUTDIR: ca.crt, server.crt/.key, passwd, accounts/NAME/password
    other_ca: Path  # a CA of another deployment

    def password(self, name: str) -> str:
        return (self.dir / "accounts" / name / "password").read_text().strip()

    def secrets(self) -> list[str]:
        """Every credential the tests configured: account passwords, the wrong password, private keys."""
        keys = [p.read_text() for p in (self.dir / "ca.key", self.dir / "server.key")]
        key_bodies = [line for k in keys for line in k.splitlines() if line and not line.startswith("-----")]
        return [self.password(n) for n in EDGES + SERVICES] + [WRONG_PW] + key_bodies


def run_script(*args: Any) -> str:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    run_script(MAKE_CERTS, d / "ours", "--host", "broker.test")
    for name in EDGES:
        run_script(ADD_EDGE, d / "ours", name)
    for name in SERVICES:
        run_script(ADD_EDGE, d / "ours", name, "--service")
    other = d / "other-ca.crt"  # another deployment's CA (its key is thrown away)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(d / "other-ca.key"), "-out", str(other), "-days", "2", "-subj", "/CN=other CA"],
                   check=True, capture_output=True, timeout=60)
    pki = Pki(d / "ours", other)
    secret_watch.register(*pki.secrets())  # watched in every log, message and file of the whole suite
    return pki


@pytest.fixture(scope="module")
def broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    # log_type all on top of the production logging: the secret scan then sees every line Mosquitto can write
    with Mosquitto(tmp_path_factory.mktemp("broker"), {}, password_file=pki.dir / "passwd",
                   tls=TlsFiles.from_dir(pki.dir), log_types=("all",)) as b:
        yield b


class Client:
    """A paho client over TLS that records the CONNACK, each PUBACK/SUBACK reason and the messages it gets."""

    def __init__(self, port: int, user: str | None, password: str | None, *, ca: Path, client_id: str | None = None,
                 protocol: int = mqtt.MQTTv5, clean_start: bool = True, session_expiry: int = 0,
                 host: str = "127.0.0.1", will: tuple[str, bytes] | None = None):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol,  # type: ignore[arg-type]
                                  client_id=client_id or f"t-{user}-{uuid.uuid4().hex[:8]}",
                                  reconnect_on_failure=False)
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.tls_set(ca_certs=str(ca))
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self.connack: ReasonCode | None = None
        self.disconnected = threading.Event()
        self.messages: list[tuple[str, bytes]] = []
        self._acks: dict[int, Any] = {}
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.on_publish = lambda c, u, mid, reason, p: self._ack(mid, reason)
        self.client.on_subscribe = lambda c, u, mid, reasons, p: self._ack(mid, reasons)
        self.client.on_message = self._on_message
        kw: dict[str, Any] = {}
        if protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
            kw = {"clean_start": clean_start, "properties": props}
        self.client.connect(host, port, keepalive=10, **kw)  # the TLS handshake happens here
        self.client.loop_start()
        assert self.wait(lambda: self.connack is not None, 5), "no CONNACK"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        with self._cond:
            self.connack = reason
            self._cond.notify_all()

    def _ack(self, mid: int, reason: Any) -> None:
        with self._cond:
            self._acks[mid] = reason
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            secret_watch.scan(f"MQTT message on {msg.topic}", bytes(msg.payload))
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred():
                if time.monotonic() >= deadline:
                    return False
                self._cond.wait(0.05)
            return True

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """QoS 1; the PUBACK's reason code."""
        mid = self.client.publish(topic, payload, qos=1, retain=retain).mid
        assert self.wait(lambda: mid in self._acks, 5), f"no PUBACK for {topic}"
        return self._acks.pop(mid)

    def subscribe(self, topic: str) -> ReasonCode:
        """QoS 1; the SUBACK's reason code."""
        mid = self.client.subscribe(topic, qos=1)[1]
        assert self.wait(lambda: mid in self._acks, 5), f"no SUBACK for {topic}"
        return self._acks.pop(mid)[0]

    def got(self, payload: bytes) -> bool:
        return any(p == payload for _, p in self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def boxes_port(broker: Mosquitto) -> int:
    return broker.tls_ports[8883]


def centre_port(broker: Mosquitto) -> int:
    return broker.tls_ports[8884]


def login(broker: Mosquitto, pki: Pki, user: str, **kw: Any) -> Client:
    port = centre_port(broker) if user in SERVICES else boxes_port(broker)
    c = Client(port, user, pki.password(user), ca=pki.dir / "ca.crt", **kw)
    assert c.connack is not None and not c.connack.is_failure, f"{user}: {c.connack}"
    return c


@pytest.fixture(scope="module")
def centre_watch(broker: Mosquitto, pki: Pki) -> Iterator[Client]:
    """The centre, subscribed to everything for the whole module: what any test let through shows up here."""
    c = login(broker, pki, "centre")
    assert c.subscribe("cityops/#").getName() == "Granted QoS 1"
    yield c
    c.close()


def payload() -> bytes:
    return f"probe-{uuid.uuid4().hex}".encode()


# ------------------------------------------------------------------------------------- logging in
@pytest.mark.parametrize("listener, user, password, protocol", [
    ("boxes", None, None, mqtt.MQTTv5),  # anonymous
    ("boxes", None, None, mqtt.MQTTv311),
    ("centre", None, None, mqtt.MQTTv5),
    ("plain", None, None, mqtt.MQTTv5),  # the fixture's loopback listener: same rules (per_listener_settings false)
    ("boxes", "edge-a", WRONG_PW, mqtt.MQTTv5),
    ("boxes", "edge-a", WRONG_PW, mqtt.MQTTv311),
    ("centre", "centre", WRONG_PW, mqtt.MQTTv5),
    ("boxes", "edge-zz", WRONG_PW, mqtt.MQTTv5),  # no such account
])
def test_refused_logins(broker: Mosquitto, pki: Pki, listener: str, user: str | None, password: str | None,
                        protocol: int) -> None:
    if listener == "plain":
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        got: list[ReasonCode] = []
        c.on_connect = lambda cl, u, f, reason, p: got.append(reason)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        c.loop_stop()
        reason = got[0] if got else None
    else:
        port = boxes_port(broker) if listener == "boxes" else centre_port(broker)
        cl = Client(port, user, password, ca=pki.dir / "ca.crt", protocol=protocol)
        assert cl.disconnected.wait(5), "the broker kept a refused client connected"
        cl.close()
        reason = cl.connack
    assert reason is not None
    assert (reason.value, reason.getName()) == (NOT_AUTHORIZED, "Not authorized")  # measured: never 0x86


@pytest.mark.parametrize("listener", ["boxes", "centre"])
def test_tls_trusts_only_our_ca(broker: Mosquitto, pki: Pki, listener: str) -> None:
    port = boxes_port(broker) if listener == "boxes" else centre_port(broker)
    user = "edge-a" if listener == "boxes" else "centre"
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        Client(port, user, pki.password(user), ca=pki.other_ca)
    for host in ("127.0.0.1", "localhost"):  # both in the server certificate's subjectAltName
        c = Client(port, user, pki.password(user), ca=pki.dir / "ca.crt", host=host)
        assert c.connack is not None and c.connack.value == 0
        c.close()


# ------------------------------------------------------------------------------------------ the ACL
# (user, topic, allowed): every write the topic tree has, and the ones a stolen box or a confused centre try
PUBLISHES = [
    ("edge-a", "cityops/edge-a/incident/cam1", True),
    ("edge-a", "cityops/edge-a/status", True),
    ("edge-a", "cityops/edge-a/camera/cam1/status", True),
    ("edge-a", "cityops/edge-a/evidence/inc-1", True),
    ("edge-a", "cityops/edge-a/reply", True),
    ("edge-a", "cityops/edge-b/incident/cam1", False),  # another box's prefix
    ("edge-a", "cityops/edge-b/status", False),
    ("edge-a", "cityops/edge-a/cmd/dismiss", False),  # no box writes a command, not even its own
    ("edge-a", "cityops/edge-b/cmd/dismiss", False),
    ("edge-a", "cityops/edge-a/anything", False),  # outside the topic tree
    ("edge-a", "cityops/edge-a/incident/cam1/more", False),  # not the shape edge/topics.py makes
    ("edge-a", "cityops/edge-a/camera/cam1/config", False),
    ("edge-a", "elsewhere/edge-a", False),
    ("centre", "cityops/edge-a/cmd/dismiss", True),
    ("centre", "cityops/edge-b/cmd/profile", True),
    ("centre", "cityops/edge-a/incident/cam1", False),  # the centre cannot forge an incident
    ("centre", "cityops/edge-a/reply", False),
    ("intake", "cityops/edge-a/cmd/dismiss", False),  # the intake reads only
    ("intake", "cityops/edge-a/incident/cam1", False),
]
# an allowed topic per user, published after a denied one: once the centre has it, the denied message would
# have arrived before it (one publisher → one subscriber keeps order), so "never received" needs no sleep
MARKER = {"edge-a": "cityops/edge-a/incident/marker", "centre": "cityops/edge-b/cmd/marker",
          "intake": "cityops/intake/status"}  # intake: the edge patterns apply to every user (%u = intake)


@pytest.mark.parametrize("user, topic, allowed", PUBLISHES)
def test_acl_publish(broker: Mosquitto, pki: Pki, centre_watch: Client, user: str, topic: str,
                     allowed: bool) -> None:
    c = login(broker, pki, user)
    try:
        data = payload()
        reason = c.publish(topic, data)
        if allowed:
            assert reason.value == 0, reason  # 0x00: the centre_watch subscription matches
            assert centre_watch.wait(lambda: centre_watch.got(data), 5)
        else:
            assert (reason.value, reason.getName()) == (NOT_AUTHORIZED, "Not authorized"), reason
            marker = payload()
            assert not c.publish(MARKER[user], marker).is_failure
            assert centre_watch.wait(lambda: centre_watch.got(marker), 5)
            assert not centre_watch.got(data), f"{user} got {topic} through"
    finally:
        c.close()


def test_mqtt311_denied_publish_is_acked_and_dropped(broker: Mosquitto, pki: Pki, centre_watch: Client) -> None:
    """3.1.1 has no reason codes: the broker acknowledges the denied publish, then drops it. A publisher cannot
    tell — one reason the edge uses MQTT v5."""
    c = login(broker, pki, "edge-a", protocol=mqtt.MQTTv311)
    try:
        data, marker = payload(), payload()
        assert not c.publish("cityops/edge-b/incident/cam1", data).is_failure
        assert not c.publish(MARKER["edge-a"], marker).is_failure
        assert centre_watch.wait(lambda: centre_watch.got(marker), 5)
        assert not centre_watch.got(data)
    finally:
        c.close()


def test_a_box_reads_only_its_own_commands(broker: Mosquitto, pki: Pki) -> None:
    a = login(broker, pki, "edge-a")
    b = login(broker, pki, "edge-b")
    centre = login(broker, pki, "centre")
    try:
        # granted, all of them (measured): Mosquitto 2.0 does not check a filter at SUBSCRIBE time
        for flt in ("cityops/edge-a/cmd/#", "cityops/edge-b/cmd/#", "cityops/+/cmd/#", "cityops/#", "#"):
            assert a.subscribe(flt).getName() == "Granted QoS 1", flt
        assert b.subscribe("cityops/edge-b/cmd/#").getName() == "Granted QoS 1"
        for_b, for_a = payload(), payload()
        assert centre.publish("cityops/edge-b/cmd/dismiss", for_b).value == 0
        assert centre.publish("cityops/edge-a/cmd/dismiss", for_a).value == 0
        assert b.wait(lambda: b.got(for_b), 5)
        assert a.wait(lambda: a.got(for_a), 5)  # sent after for_b: for_b would be here by now
        assert {t for t, _ in a.messages} == {"cityops/edge-a/cmd/dismiss"}
        assert not a.got(for_b)
    finally:
        for c in (a, b, centre):
            c.close()


def test_a_box_will_is_subject_to_the_acl(broker: Mosquitto, pki: Pki, centre_watch: Client) -> None:
    """A last will under another box's prefix is accepted at CONNECT (measured: Mosquitto 2.0.11 does not check
    it then) but dropped when it fires; the box's own will arrives."""
    wills = [("cityops/edge-b/status", payload()), ("cityops/edge-a/status", payload())]  # denied, then allowed
    for will in wills:
        c = login(broker, pki, "edge-a", will=will)
        sock = c.client.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)  # the box dies without a DISCONNECT: the broker sends its will
        assert c.disconnected.wait(5)
        c.close()
    assert centre_watch.wait(lambda: centre_watch.got(wills[1][1]), 5)  # the first would have come before it
    assert not centre_watch.got(wills[0][1])


def test_a_box_cannot_take_over_another_boxs_session(broker: Mosquitto, pki: Pki) -> None:
    """With edge-a's password and edge-b's client id. Without use_username_as_clientid Mosquitto lets this
    take over edge-b's durable session (measured): edge-b is kicked off, and the commands queued for it are
    dropped (they fail the ACL for edge-a) — it could not read them, but it could make them vanish."""
    b = login(broker, pki, "edge-b", client_id="edge-b", clean_start=False, session_expiry=300)
    centre = login(broker, pki, "centre")
    thief = None
    try:
        assert b.subscribe("cityops/edge-b/cmd/#").getName() == "Granted QoS 1"
        thief = login(broker, pki, "edge-a", client_id="edge-b", clean_start=False, session_expiry=300)
        cmd = payload()
        assert centre.publish("cityops/edge-b/cmd/dismiss", cmd).value == 0
        assert b.wait(lambda: b.got(cmd), 5)
        assert not b.disconnected.is_set(), "edge-b was kicked off by a client with edge-a's password"
        assert thief.messages == []
    finally:
        for c in (b, centre, thief):
            if c is not None:
                c.close()


def test_centre_clients_share_one_account(broker: Mosquitto, pki: Pki) -> None:
    """The centre listener keeps the client ids: two intakes of one account both stay connected and split a
    shared subscription."""
    i1 = login(broker, pki, "intake", client_id="intake-1")
    i2 = login(broker, pki, "intake", client_id="intake-2")
    a = login(broker, pki, "edge-a")
    try:
        for i in (i1, i2):
            assert i.subscribe("$share/centre/cityops/+/incident/#").getName() == "Granted QoS 1"
        sent = [payload() for _ in range(20)]
        for data in sent:
            assert a.publish("cityops/edge-a/incident/cam1", data).value == 0
        assert i1.wait(lambda: len(i1.messages) + len(i2.messages) >= len(sent), 5)
        assert sorted(p for _, p in i1.messages + i2.messages) == sorted(sent)
        assert not i1.disconnected.is_set() and not i2.disconnected.is_set()
    finally:
        for c in (i1, i2, a):
            c.close()


# ------------------------------------------------------------------------------- the edge's Publisher
EDGE = "edge-a"


def enqueue(outbox: Outbox, start: int, n: int) -> list[str]:
    return enqueue_events(outbox, start, n, edge_id=EDGE, cameras=2)


def site_broker(broker: Mosquitto, pki: Pki, **kw: Any) -> Broker:
    """What a site file says for a box behind this broker: TLS with our CA, the password from the environment."""
    return Broker(**{"host": "127.0.0.1", "port": boxes_port(broker), "tls_ca": str(pki.dir / "ca.crt"),
                     "password_env": "SECURITY_TEST_EDGE_PW", "keepalive_s": 5, **kw})


@pytest.fixture
def edge_env(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECURITY_TEST_EDGE_PW", pki.password(EDGE))


def incident_ids(watch: Client, since: int) -> list[str]:
    return [json.loads(p)["message_id"] for t, p in watch.messages[since:] if t.startswith(f"cityops/{EDGE}/incident/")]


def assert_no_secret(pki: Pki, text: str, where: str) -> None:
    leaked = [s for s in pki.secrets() if s in text]
    assert not leaked, f"{len(leaked)} configured secret(s) in {where}"


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records)


def test_publisher_over_tls_acks_its_own_and_counts_a_refused_publish(
        broker: Mosquitto, pki: Pki, centre_watch: Client, edge_env: None, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # paho's own lines too (edge.publisher.paho)
    outbox = Outbox(tmp_path / "outbox.db")
    since = len(centre_watch.messages)
    expected = enqueue(outbox, 0, 3)
    outbox.put("cityops/edge-b/incident/cam0", b'{"forged": true}')  # edge-p may not write there
    expected += enqueue(outbox, 3, 3)
    pub = Publisher(site_broker(broker, pki), EDGE, outbox, **FAST)  # type: ignore[arg-type]
    pub.start()
    try:
        assert pub.wait_connected(10), pub.stats().last_error
        assert centre_watch.wait(lambda: len(incident_ids(centre_watch, since)) >= 6, 10)
        assert incident_ids(centre_watch, since) == expected  # its own publishes: acked, delivered, in order
        assert wait_for(lambda: pub.stats().rejected >= 2, 5)  # refused, counted, retried with backoff
        stats = pub.stats()
        assert stats.acked == 6 and stats.connected
        assert stats.last_error is not None and "0x87" in stats.last_error
        assert not any(t == "cityops/edge-b/incident/cam0" for t, _ in centre_watch.messages)
        # backoff, not a tight loop: with retry_delay (0.1, 0.3) s, 1 s holds a handful of attempts
        n0 = pub.stats().rejected
        time.sleep(1.0)
        assert pub.stats().rejected - n0 <= 6
    finally:
        pub.stop(1.0)
        outbox.close()
    records = [r for r in caplog.records if r.name.startswith("edge.publisher")]
    assert any("TLS" in r.getMessage() and r.levelno == logging.INFO for r in records)  # "(MQTT 5, TLS)"
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors  # the refusal logged once however often retried, then its set-aside
    assert "retried" in errors[0] and "set aside" in errors[1]
    assert "0x87" in errors[0] and "cityops/edge-b/incident/cam0" in errors[0] and f"'{EDGE}'" in errors[0]
    assert_no_secret(pki, log_text(caplog), "the publisher's log")


def test_publisher_with_a_password_file_from_add_edge(broker: Mosquitto, pki: Pki, centre_watch: Client,
                                                      tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    outbox = Outbox(tmp_path / "outbox.db")
    since = len(centre_watch.messages)
    cfg = site_broker(broker, pki, password_env=None, password_file=str(pki.dir / "accounts" / EDGE / "password"))
    pub = Publisher(cfg, EDGE, outbox, **FAST)  # type: ignore[arg-type]
    pub.start()
    try:
        assert pub.wait_connected(10), pub.stats().last_error
        assert centre_watch.wait(lambda: any(t == f"cityops/{EDGE}/status" and b'"online"' in p
                                             for t, p in centre_watch.messages[since:]), 5)
    finally:
        pub.stop(1.0)
        outbox.close()
    assert_no_secret(pki, log_text(caplog), "the publisher's log")


def test_publisher_with_the_wrong_ca_never_connects(broker: Mosquitto, pki: Pki, edge_env: None, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    outbox = Outbox(tmp_path / "outbox.db")
    enqueue(outbox, 0, 1)
    pub = Publisher(site_broker(broker, pki, tls_ca=str(pki.other_ca)), EDGE, outbox, **FAST)  # type: ignore[arg-type]
    pub.start()
    try:
        assert not pub.wait_connected(1.0)
        assert outbox.pending_count() == 1
    finally:
        pub.stop(0.5)
        outbox.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "edge.publisher" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"127.0.0.1:{boxes_port(broker)}" in warnings[0], warnings
    assert_no_secret(pki, log_text(caplog), "the publisher's log")


def test_publisher_names_a_certificate_failure(broker: Mosquitto, pki: Pki, edge_env: None, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    pub = Publisher(site_broker(broker, pki, tls_ca=str(pki.other_ca)), EDGE, outbox, **FAST)  # type: ignore[arg-type]
    pub.start()
    try:
        assert wait_for(lambda: pub.stats().last_error is not None, 5)
        assert "certificate" in (pub.stats().last_error or "").lower()
        assert pub.refused is not None and "broker.tls_ca" in pub.refused  # a configuration error: run exits
        assert not pub.connected
    finally:
        pub.stop(0.5)
        outbox.close()


def test_a_refused_publish_is_set_aside_not_retried_forever(broker: Mosquitto, pki: Pki, centre_watch: Client,
                                                            edge_env: None, tmp_path: Path) -> None:
    """An ACL refusal is a configuration error, not a blip: retrying cannot succeed until an operator changes the
    ACL. The row should leave the send queue (kept aside, counted) after at most a few attempts."""
    outbox = Outbox(tmp_path / "outbox.db")
    since = len(centre_watch.messages)
    outbox.put("cityops/edge-b/incident/cam0", b'{"forged": true}')
    expected = enqueue(outbox, 0, 40)
    pub = Publisher(site_broker(broker, pki), EDGE, outbox, reconnect_delay=(0.1, 0.5), retry_delay=(0.3, 0.3))
    pub.start()
    try:
        assert pub.wait_connected(10)
        assert centre_watch.wait(lambda: len(incident_ids(centre_watch, since)) >= len(expected), 10)
        assert steady(lambda: pub.stats().rejected, for_s=1.0, timeout=3.0), "the refused row is still retried"
        assert pub.stats().set_aside == 1 and pub.stats().pending == 0
        # the centre sees it in the retained edge status
        assert centre_watch.wait(lambda: any(t == f"cityops/{EDGE}/status" and json.loads(p).get("outbox", {}).get(
            "set_aside") == 1 for t, p in centre_watch.messages[since:]), 5)
    finally:
        pub.stop(0.5)
        outbox.close()


def steady(value: Callable[[], int], for_s: float, timeout: float) -> bool:
    """True once value() has not changed for `for_s` seconds; False if it still changes after `timeout`."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= for_s:
            return True
    return False


def wait_for(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


# ------------------------------------------------------------------------------------ scripts, secrets
def test_scripts_are_idempotent_and_keep_secrets_private(pki: Pki) -> None:
    files = sorted(p for p in pki.dir.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    out = run_script(MAKE_CERTS, pki.dir, "--host", "broker.test")
    out += run_script(ADD_EDGE, pki.dir, "edge-a")
    out += run_script(ADD_EDGE, pki.dir, "centre", "--service")
    assert {p: p.read_bytes() for p in files} == before  # same arguments: nothing re-issued, no new password
    assert "kept" in out
    assert_no_secret(pki, out, "the scripts' output")
    for p in [pki.dir / "passwd", pki.dir / "ca.key", pki.dir / "server.key",
              *(pki.dir / "accounts" / n / "password" for n in EDGES + SERVICES)]:
        assert p.stat().st_mode & 0o777 == 0o600, p
    san = subprocess.run(["openssl", "x509", "-in", str(pki.dir / "server.crt"), "-noout", "-ext", "subjectAltName"],
                         capture_output=True, text=True, check=True).stdout
    assert "DNS:localhost" in san and "IP Address:127.0.0.1" in san and "DNS:broker.test" in san
    # an edge may not take a centre account's name, nor an id that is not one topic level
    for bad in (["centre"], ["a/b"], ["a+b"], [".."], ["edge-x", "--service"]):
        r = subprocess.run([str(ADD_EDGE), str(pki.dir), *bad], capture_output=True, text=True)
        assert r.returncode == 2, (bad, r.stderr)


def test_client_certificate_for_mtls(pki: Pki) -> None:
    run_script(ADD_EDGE, pki.dir, "edge-m", "--client-cert")
    crt = pki.dir / "accounts" / "edge-m" / "client.crt"
    subprocess.run(["openssl", "verify", "-CAfile", str(pki.dir / "ca.crt"), "-purpose", "sslclient", str(crt)],
                   check=True, capture_output=True)
    subject = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-subject"], capture_output=True,
                             text=True, check=True).stdout
    assert "CN = edge-m" in subject
    assert (pki.dir / "accounts" / "edge-m" / "client.key").stat().st_mode & 0o777 == 0o600


def test_a_broker_requiring_client_certificates_takes_the_box_with_one_and_refuses_it_without(
        pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mTLS end to end: `require_certificate true` (broker_config/mosquitto.conf shows where), the box's site
    file names tls_cert/tls_key made by add_edge.sh --client-cert; without them the handshake fails and the
    publisher names it as a TLS problem (a configuration error: `run` exits 3)."""
    run_script(ADD_EDGE, pki.dir, "edge-a", "--client-cert")
    monkeypatch.setenv("SECURITY_TEST_EDGE_PW", pki.password("edge-a"))
    acc = pki.dir / "accounts" / "edge-a"
    with Mosquitto(tmp_path / "mtls", {}, password_file=pki.dir / "passwd", tls=TlsFiles.from_dir(pki.dir),
                   overrides={"require_certificate": "true"}) as b:
        with_cert = site_broker(b, pki, tls_cert=str(acc / "client.crt"), tls_key=str(acc / "client.key"))
        outbox = Outbox(tmp_path / "with.db")
        outbox.put("cityops/edge-a/incident/cam0", b'{"m": 1}')
        pub = Publisher(with_cert, "edge-a", outbox, **FAST)  # type: ignore[arg-type]
        pub.start()
        try:
            assert pub.wait_connected(10), pub.stats().last_error
            assert wait_for(lambda: outbox.pending_count() == 0, 5)  # delivered over mutual TLS
        finally:
            pub.stop(0.5)
            outbox.close()
        outbox = Outbox(tmp_path / "without.db")
        pub = Publisher(site_broker(b, pki), "edge-a", outbox, **FAST)  # type: ignore[arg-type]
        pub.start()
        try:
            assert wait_for(lambda: pub.refused is not None, 5), pub.stats().last_error
            assert "requires a client certificate" in (pub.refused or "") and "tls_cert" in (pub.refused or "")
            assert not pub.connected
        finally:
            pub.stop(0.5)
            outbox.close()


def test_no_secret_in_the_broker_log_or_any_message(broker: Mosquitto, pki: Pki, centre_watch: Client) -> None:
    """Runs last: the broker logged everything (log_type all) for every test above; the centre saw every message
    any test got through."""
    log = broker.log
    assert "New client connected" in log and "u'centre'" in log  # user names are logged (not secret) ...
    assert_no_secret(pki, log, "the Mosquitto log")  # ... passwords and keys never
    assert_no_secret(pki, "\n".join(f"{t} {p!r}" for t, p in centre_watch.messages), "a delivered message")
    assert os.environ.get("SECURITY_TEST_EDGE_PW") is None  # monkeypatch undid it
