"""The intake's MQTT side: a shared subscription that stores every incident message once, acknowledged only
after it is on disk.

```
 broker ──PUBLISH (QoS 1)──► paho network thread ──queue──► writer thread ──ingest (one transaction)──► Store
    ▲                                                                                 │ commit (fsync)
    └──────────────────────────── PUBACK (manual ack, after the commit) ◄─────────────┘
```

- MQTT v5, QoS 1, subscriptions `<prefix>/+/incident/#` and `<prefix>/+/evidence/#` — or, with a `group`,
  the shared subscriptions `$share/<group>/<prefix>/+/incident/#` and `$share/<group>/<prefix>/+/evidence/#`:
  several intakes with one group split the messages; each must have its own client id (two clients with one
  id kick each other off forever) and all of them must write to one store (one SQLite file, or PostgreSQL).
- Why a single intake does not use a shared subscription: Mosquitto before 2.0.12 (Debian 12 ships 2.0.11)
  does not restore `$share` subscriptions from its persistence file. After a broker restart, everything the
  edges publish until the intake has reconnected and subscribed again matches no subscription and is
  dropped — after the broker acknowledged it to the edge (measured: 0 of 10 messages published after a
  restart reached a shared-subscription session, 10 of 10 a plain one; the outage test lost 120 of 1,701).
  A plain durable subscription is restored, and queues for us. Use a group only with a broker ≥ 2.0.12.
- Sharing is not failover either: Mosquitto 2.0 deals the messages round-robin to every member's session,
  also to a member that is down (measured: with one of two intakes down, half the messages waited in its
  session until it came back). Nothing is lost, but a member must come back (run each under a supervisor)
  before its session expires.
- Durable session: `clean_start=False` + a session expiry (without one Mosquitto keeps nothing), so what
  the broker queued for us while we were down arrives when we come back. Mosquitto's
  `max_queued_messages` (default 1000 per client!) bounds that queue: set it to fit the longest outage of
  the centre (broker_config/).
- Manual acknowledgement: a message is PUBACKed only after the batch holding it committed. A crash before
  the commit means the broker sends it again (same session); the store drops the repeat by `message_id`.
  Acknowledgements of a connection that dropped are never sent on the next one (the broker re-sends those
  messages instead). `Receive Maximum` (default 200) bounds the messages the broker streams to us before our
  acknowledgements: enough to keep the writer busy with whole batches, few enough that a burst never buries
  the keep-alive answer (paho reads one packet per loop turn; with thousands in flight behind a slow writer
  the PINGRESP came too late and the connection dropped, and everything unacknowledged came again). The
  rest waits in the broker's queue for us: `max_queued_messages` must fit it (50000 in broker_config/).
- A refused login (bad credentials, not authorised) is logged once and exposed as :attr:`Intake.refused`;
  an unreachable broker is logged once per outage. Neither the password nor the user name is ever logged.
"""
from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.problems import ProblemLog
from edge.topics import Topics

from .records import parse_message
from .store import CaseRow, EventRow, IncidentRow, InvalidRow, SQLiteStore, Store

__all__ = ["Intake", "IntakeStats", "default_client_id", "subscriptions"]

logger = logging.getLogger(__name__)


def subscriptions(group: str | None, prefix: str = "cityops") -> list[str]:
    """The topic filters of an intake: plain, or shared by the intakes of `group`."""
    Topics(prefix, "x")  # checks the prefix
    filters = [f"{prefix}/+/incident/#", f"{prefix}/+/evidence/#"]
    if group is None:
        return filters
    if not group or any(c in group for c in "/+#\x00"):
        raise ValueError(f"group {group!r} must be a non-empty name without / + # or NUL")
    return [f"$share/{group}/{f}" for f in filters]


def default_client_id(group: str | None) -> str:
    """Stable across restarts (the durable session is found again), distinct per host."""
    return f"cityops-intake-{group or 'single'}-{socket.gethostname()}"[:64]


@dataclass(frozen=True)
class IntakeStats:
    received: int  # messages handed to us by the broker (repeats included)
    stored: int  # incident messages stored for the first time
    duplicates: int  # repeats dropped by message_id
    invalid: int  # kept aside with the reason
    evidence: int  # evidence pictures stored (evidence_duplicates: repeats)
    evidence_duplicates: int
    acked: int
    pending: int  # received, not yet stored
    connected: bool
    subscribed: bool
    connections: int  # successful connects so far
    last_error: str | None


@dataclass(frozen=True)
class _Item:
    gen: int  # connection generation it arrived on
    mid: int
    qos: int
    topic: str
    payload: bytes


class Intake:
    """Subscribe, validate, store, acknowledge. `start()` once, `stop()` once."""

    def __init__(
        self,
        store: Store | str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        username: str | None = None,
        password: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        group: str | None = None,
        prefix: str = "cityops",
        client_id: str | None = None,
        merge_radius_m: float = 10.0,
        session_expiry_s: int = 7 * 86_400,
        keepalive_s: int = 30,
        reconnect_delay: tuple[float, float] = (1.0, 30.0),
        receive_maximum: int = 200,
        batch_max: int = 100,
    ):
        self.topics = subscriptions(group, prefix)
        self.prefix = prefix
        self.group = group
        self.endpoint = f"{host}:{port}"
        self._host, self._port, self._keepalive = host, int(port), int(keepalive_s)
        self._own_store = not isinstance(store, Store)
        self.store: Store = SQLiteStore(store, merge_radius_m=merge_radius_m) if self._own_store else store  # type: ignore[arg-type]
        self.client_id = client_id or default_client_id(group)
        self._batch_max = int(batch_max)
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                   protocol=mqtt.MQTTv5, manual_ack=True)
        self._client.reconnect_delay_set(*reconnect_delay)  # type: ignore[arg-type]  # floats work
        if username is not None or password is not None:
            self._client.username_pw_set(username, password)
        if tls_ca or tls_cert:
            from edge.config import ConfigError

            try:
                self._client.tls_set(ca_certs=tls_ca, certfile=tls_cert, keyfile=tls_key)
            except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                if self._own_store:
                    self.store.close()
                raise ConfigError(f"intake TLS files (--tls-ca/--tls-cert/--tls-key): {e}") from None
        self._props = Properties(PacketTypes.CONNECT)
        self._props.SessionExpiryInterval = int(session_expiry_s)
        self._props.ReceiveMaximum = max(1, min(int(receive_maximum), 65_535))
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

        self._queue: queue.Queue[_Item] = queue.Queue()
        self._conn_lock = threading.Lock()  # connection generation + acks
        self._gen = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._ever_connected = threading.Event()
        self._stop = threading.Event()
        self._enqueued = 0  # messages put in the queue (network thread)
        self._processed = 0  # of those, stored (or given up at stop) by the writer
        self._problems = ProblemLog(logger)
        self._refused: str | None = None
        self._sub_mid: int | None = None
        self._n = dict(received=0, stored=0, duplicates=0, invalid=0, evidence=0, evidence_duplicates=0, acked=0,
                       connections=0)
        self._n_lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._writer = threading.Thread(target=self._write_loop, name="intake-writer", daemon=True)

    # ---------------------------------------------------------------------------------------- public
    def start(self) -> "Intake":
        if self._started:
            raise RuntimeError("Intake is single use: start() was already called")
        self._started = True
        logger.info("intake: connecting to MQTT broker %s as client %s%s", self.endpoint, self.client_id,
                    f", shared-subscription group {self.group}" if self.group else "")
        self._writer.start()
        self._client.connect_async(self._host, self._port, keepalive=self._keepalive, clean_start=False,
                                   properties=self._props)
        self._client.loop_start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Store and acknowledge what was received (within `timeout`), disconnect (the session stays).
        A second call does nothing."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        while self._enqueued > self._processed and time.monotonic() < deadline and self._writer.is_alive():
            time.sleep(0.02)
        self._stop.set()
        self._writer.join(timeout=max(0.5, deadline - time.monotonic()) + 30.0)  # at most the batch in hand
        with self._conn_lock:
            self._connected.clear()
            self._gen += 1
        self._client.disconnect()
        self._client.loop_stop()
        if self._writer.is_alive():
            logger.warning("intake: the writer is still storing a batch; the database is left open")
        elif self._own_store:
            self.store.close()
        s = self.stats()
        logger.info("intake stopped: %d received, %d stored, %d duplicates, %d invalid", s.received, s.stored,
                    s.duplicates, s.invalid)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the broker granted both subscriptions on the current connection."""
        return self._subscribed.wait(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """True once everything received so far is stored."""
        deadline = time.monotonic() + timeout
        while self._enqueued > self._processed:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def refused(self) -> str | None:
        """The broker's refusal of our login (bad credentials, not authorised), None if it never refused or we
        connected since: a configuration error, not a network blip."""
        return self._refused

    @property
    def ever_connected(self) -> bool:
        return self._ever_connected.is_set()

    @property
    def last_error(self) -> str | None:
        return self._problems.text

    def stats(self) -> IntakeStats:
        with self._n_lock:
            n = dict(self._n)
        return IntakeStats(received=n["received"], stored=n["stored"], duplicates=n["duplicates"],
                           invalid=n["invalid"], evidence=n["evidence"], evidence_duplicates=n["evidence_duplicates"],
                           acked=n["acked"], pending=self._enqueued - self._processed,
                           connected=self._connected.is_set(), subscribed=self._subscribed.is_set(),
                           connections=n["connections"], last_error=self._problems.text)

    # store queries, for tests and tools
    def events(self, edge_id: str | None = None, camera_id: str | None = None) -> list[EventRow]:
        return self.store.events(edge_id, camera_id)

    def incidents(self, edge_id: str | None = None) -> list[IncidentRow]:
        return self.store.incidents(edge_id)

    def cases(self, state: str | None = None) -> list[CaseRow]:
        return self.store.cases(state)

    def invalid(self) -> list[InvalidRow]:
        return self.store.invalid()

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    def __enter__(self) -> "Intake":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------- writer thread
    def _write_loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():  # stop(): what is still queued is not acknowledged, the broker keeps it
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self._batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [parse_message(it.topic, it.payload, self.prefix) for it in batch]
            while True:
                try:
                    outcomes = self.store.ingest(records)
                    break
                except Exception as e:  # the database itself failed: nothing acked, retry the batch
                    self._problems.report(
                        "store", logging.ERROR, f"intake: cannot store {len(batch)} messages: "
                        f"{type(e).__name__}: {e}; retrying in {delay:.1f} s (nothing acknowledged)")
                    if self._stop.wait(delay):
                        return  # not acknowledged: the broker sends them again next time
                    delay = min(delay * 2, 30.0)
            delay = 0.5
            if self._problems.key == "store":
                self._problems.clear()
                logger.info("intake: storing works again")
            self._count(outcomes, records)
            self._ack(batch)
            self._processed += len(batch)

    def _count(self, outcomes: list[str], records: list[Any]) -> None:
        with self._n_lock:
            for out, rec in zip(outcomes, records):
                key = {"stored": "stored", "duplicate": "duplicates", "invalid": "invalid", "evidence": "evidence",
                       "evidence_duplicate": "evidence_duplicates"}[out]
                self._n[key] += 1
                if out == "invalid":
                    reason = getattr(rec, "reason", "could not be stored")
                    logger.warning("intake: invalid message on %s kept aside: %s", rec.topic, reason[:300])

    def _ack(self, batch: list[_Item]) -> None:
        acked = 0
        with self._conn_lock:  # no ack of an old connection on a new one: the broker re-sends those
            if self._connected.is_set():
                for it in batch:
                    if it.gen == self._gen and it.qos > 0:
                        self._client.ack(it.mid, it.qos)
                        acked += 1
        with self._n_lock:
            self._n["acked"] += acked

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode,
                    properties: Properties | None) -> None:
        if reason.is_failure:
            hint = ""
            if reason.getName() in ("Bad user name or password", "Not authorized"):
                hint = " — check the user name and password (--username-env, --password-env / --password-file)"
            text = f"MQTT broker {self.endpoint} refused the intake's login: {reason}{hint}"
            self._refused = text
            self._problems.report(f"refused:{reason.value}", logging.ERROR, text + "; retrying with backoff")
            return
        with self._conn_lock:
            self._gen += 1
            self._connected.set()
        self._refused = None
        with self._n_lock:
            self._n["connections"] += 1
        # a storage problem is not the broker's: it stays until a batch is stored again
        was = self._problems.clear() if self._problems.key != "store" else None
        logger.info("intake connected to MQTT broker %s (session present: %s)%s", self.endpoint,
                    flags.session_present, f" after: {was}" if was else "")
        self._ever_connected.set()
        self._subscribed.clear()
        # subscribe again every time: harmless when the session kept them, needed when it did not
        rc, mid = client.subscribe([(t, 1) for t in self.topics])
        self._sub_mid = mid

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Properties | None) -> None:
        bad = [(t, r) for t, r in zip(self.topics, reasons) if r.is_failure]
        if bad:
            self._problems.report(
                "subscribe", logging.ERROR, "MQTT broker %s refused the intake's subscription: %s" % (
                    self.endpoint, "; ".join(f"{t}: {r} (0x{r.value:02X})" for t, r in bad)))
            return
        self._subscribed.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._problems.report(
            "unreachable", logging.WARNING, f"cannot connect to MQTT broker {self.endpoint} (no listener, "
            "TLS failure or network down); retrying with backoff")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason: ReasonCode,
                       properties: Properties | None) -> None:
        with self._conn_lock:
            was = self._connected.is_set()
            self._connected.clear()
            self._subscribed.clear()
        if was and not self._stop.is_set():
            self._problems.report(
                f"lost:{reason}", logging.WARNING, f"intake lost the connection to MQTT broker "
                f"{self.endpoint}: {reason}; reconnecting (the session keeps what arrives meanwhile)")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._enqueued += 1
        with self._n_lock:
            self._n["received"] += 1
        self._queue.put(_Item(self._gen, msg.mid, msg.qos, msg.topic, bytes(msg.payload)))
