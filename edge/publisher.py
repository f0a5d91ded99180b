"""MQTT publisher: drains the durable outbox to the broker, QoS 1, in order, nothing lost.

```
 pipeline ──put──► Outbox (SQLite) ──sender thread──► paho client ──► broker
                        ▲                                   │ PUBACK (on_publish, network thread)
                        └──────────── mark_sent ◄───────────┘ only when the reason code is a success
```

Delivery rules:
- A row leaves the outbox only after the broker's PUBACK. With MQTT v5 a PUBACK can carry a failure
  reason (0x87 not authorised: an ACL denies the topic); that row is **not** delivered: the problem is
  logged once and the sender backs off and retries (the head of the queue waits, so order is kept). A
  refusal that cannot heal by itself (0x87 not authorised, 0x90 topic name invalid, 0x95 packet too large,
  0x99 payload format invalid) is retried `refusals_before_set_aside` times, then the row is moved to the
  outbox's `set_aside` table with the reason (kept, counted in the edge status, re-queued by
  `run_edge.py outbox --requeue`), so one bad row cannot stall every camera behind it. MQTT 3.1.1 cannot
  say so — a broker acknowledges a denied publish and drops it — so prefer v5.
- About once a second the sender applies the outbox limits (`Outbox.prune`, the drop policy is there);
  when something was dropped or set aside, a fresh retained edge status carries the counts.
- The sender publishes up to `window` rows, then waits for their acknowledgements in order. If the
  connection drops meanwhile, paho keeps those messages and re-sends them (DUP) after reconnecting;
  the sender keeps waiting for *those* acks rather than publishing the rows again.
- Delivery is at-least-once: a PUBACK lost with the connection, or a crash between the PUBACK and
  `mark_sent`, means the message is sent again. The centre deduplicates on `message_id`.
- Acknowledgements are read from the `on_publish` callback (mid → reason code), not from
  `MQTTMessageInfo.is_published()`: the info object does not carry the v5 reason code, and an info
  created while the link was down keeps `rc = MQTT_ERR_NO_CONN` — its `is_published()` raises even after
  paho re-sent the message and the broker acked it.

Connection:
- Client id = edge id (one connection per box; two clients with one id kick each other off forever).
- MQTT v5: `clean_start=False` + a session expiry interval (without one the broker keeps nothing);
  3.1.1: `clean_session=False`. Commands queued for us while offline then survive a reconnect.
- LWT: retained `offline` on `{prefix}/{edge_id}/status`; retained `online` is published on every
  connect. `stop()` flushes, publishes a retained `offline` (reason "stopped") itself and disconnects
  cleanly, so the broker discards the LWT; if that last publish cannot be confirmed, a v5 client
  disconnects with reason 0x04 so the broker sends the LWT instead.
- A refused connection (bad credentials, CONNACK failure), a failed TLS handshake (the broker's certificate
  is not signed by `tls_ca`, or does not name the host) or an unreachable broker is logged once as one
  line naming host:port and the reason — never the password — and `connected` stays False; paho
  retries with exponential backoff (`reconnect_delay`). `refused` reports the first two: configuration
  errors an operator must fix, not network blips.
"""
from __future__ import annotations

import logging
import os
import re
import ssl
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import Broker, ConfigError, read_secret_file
from edge.messages import edge_status_message, encode_message
from edge.outbox import Outbox, OutboxRow
from edge.problems import ProblemLog
from edge.topics import Topics

__all__ = ["Publisher", "PublisherStats", "broker_credentials"]

logger = logging.getLogger(__name__)
_paho_logger = logging.getLogger(f"{__name__}.paho")


@dataclass(frozen=True)
class PublisherStats:
    acked: int  # outbox rows the broker acknowledged (since start)
    pending: int  # rows still in the outbox
    connected: bool
    rejected: int  # PUBACKs with a failure reason code (rows kept, retried)
    last_error: str | None  # the last connection / delivery problem, None once it cleared
    set_aside: int = 0  # rows the broker refused for good, moved out of the queue (outbox, persistent)
    dropped: dict[str, int] | None = None  # rows dropped by the outbox limits, by kind (persistent)


# a TLS alert in paho's "failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] ..." line
_TLS_ALERT = re.compile(r"\[SSL: ([A-Z0-9_]*ALERT[A-Z0-9_]*)\]")

# PUBACK reasons that retrying cannot fix: the broker's configuration or the message itself must change
_PERMANENT = {0x87, 0x90, 0x95, 0x99}


def broker_credentials(broker: Broker, edge_id: str) -> tuple[str | None, str | None]:
    """(user, password) from the environment or the 0600 file; (None, None) for an anonymous broker.

    The user name comes from `username_env`, else it is the edge id (the ACL patterns use %u); the
    password from `password_env`, else `password_file`. A variable that is named but unset is a
    ConfigError naming the variable.
    """
    def env(var: str, key: str) -> str:
        value = os.environ.get(var)
        if value is None:
            raise ConfigError(f"broker.{key}: environment variable {var} is not set")
        return value

    user = env(broker.username_env, "username_env") if broker.username_env else None
    password = None
    if broker.password_env:
        password = env(broker.password_env, "password_env")
    elif broker.password_file:
        password = read_secret_file(Path(broker.password_file), "broker.password_file")
    if password is not None and user is None:
        user = edge_id
    if user is not None and user != edge_id:
        # the production ACL (broker_config/acl) grants topics by user name (%u): another name publishes
        # under someone else's prefix, or nowhere
        logger.warning("broker user name %r is not the edge id %r: the broker's ACL grants cityops/<user>/..., so "
                       "this box's messages (cityops/%s/...) will be refused unless the ACL was changed", user,
                       edge_id, edge_id)
    return user, password


def _hint(reason: ReasonCode) -> str:
    """What to check for a refused CONNACK (v5 0x86/0x87; 3.1.1 codes 4/5 arrive converted to these)."""
    if reason.getName() in ("Bad user name or password", "Not authorized"):
        return " — check the user name and the password (broker.password_env / password_file)"
    return ""


class Publisher:
    """Drains an :class:`Outbox` to one MQTT broker. Single use: `start()` once, `stop()` once."""

    def __init__(
        self,
        broker: Broker,
        edge_id: str,
        outbox: Outbox,
        *,
        client_id: str | None = None,
        utc_offset: str = "+08:00",
        window: int = 20,
        session_expiry_s: int = 86_400,
        reconnect_delay: tuple[float, float] = (1.0, 30.0),
        retry_delay: tuple[float, float] = (1.0, 60.0),
        on_command: Callable[[str, bytes], None] | None = None,
        refusals_before_set_aside: int = 3,
    ):
        """
        Args:
            window: messages in flight before waiting for their acks. Larger drains a backlog faster over a
                slow link (one round trip per window, not per message), but more may be re-sent after a drop.
            session_expiry_s: how long the broker keeps our session (and commands queued for us) while we are
                away. Longer survives longer outages, but keeps stale commands.
            reconnect_delay: (first, max) seconds between connection attempts, doubling.
            retry_delay: (first, max) seconds before re-sending a message the broker rejected, doubling.
            refusals_before_set_aside: permanent refusals (0x87, 0x90, 0x95, 0x99) of one row before it is set aside.
            on_command: called as `on_command(command, payload)` for each message on this box's command topics
                (`{prefix}/{edge_id}/cmd/{command}`, subscribed QoS 1 on every connect). It runs on paho's network
                thread: hand the work to another thread and return at once.
        """
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.broker = broker
        self.edge_id = edge_id
        self.topics = Topics(broker.topic_prefix, edge_id)
        self.endpoint = f"{broker.host}:{broker.port}"
        self._outbox = outbox
        self._utc_offset = utc_offset
        self._window = window
        self._retry_delay = retry_delay
        self._user, password = broker_credentials(broker, edge_id)
        self._client_id = client_id or edge_id
        self._v5 = broker.protocol == "5"

        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            clean_session=None if self._v5 else False,
        )
        self._client.on_log = self._on_log  # not enable_logger(): see _on_log
        self._client.max_inflight_messages_set(window)
        self._client.reconnect_delay_set(*reconnect_delay)  # type: ignore[arg-type]  # floats work
        if self._user is not None:
            self._client.username_pw_set(self._user, password)
        if broker.tls_ca or broker.tls_cert:
            try:
                self._client.tls_set(ca_certs=broker.tls_ca, certfile=broker.tls_cert, keyfile=broker.tls_key)
            except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                raise ConfigError(f"broker TLS files (tls_ca/tls_cert/tls_key): {e}") from None
        self._client.will_set(self.topics.status, encode_message(
            edge_status_message(edge_id, "offline", reason="connection lost")), qos=1, retain=True)
        self._connect_props: Properties | None = None
        if self._v5:
            self._connect_props = Properties(PacketTypes.CONNECT)
            self._connect_props.SessionExpiryInterval = int(session_expiry_s)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._on_command = on_command
        if on_command is not None:
            self._client.on_message = self._on_message

        self._connected = threading.Event()
        self._stop = threading.Event()
        self._acks: dict[int, ReasonCode] = {}  # mid → PUBACK reason, filled on the network thread
        self._ignore_mids: set[int] = set()  # our own "online" publishes: nobody waits for them
        self._ack_cond = threading.Condition()
        self._problems = ProblemLog(logger)  # the connection's problem now
        self._publish_problem: str | None = None  # the last publish refusal's text, until its topic is accepted
        self._rejected_topics: set[str] = set()
        self._acked = 0
        self._rejected = 0
        self._refusals: dict[int, int] = {}  # outbox id → permanent refusals so far
        self._max_refusals = max(1, refusals_before_set_aside)
        self._counts_published: tuple[int, dict[str, int]] | None = None  # what the last edge status said
        self._inflight: deque[tuple[OutboxRow, int]] = deque()  # (row, mid) handed to paho, oldest first
        self._started = False
        self._thread = threading.Thread(target=self._run, name=f"mqtt-sender-{edge_id}", daemon=True)

    # -------------------------------------------------------------------------------------- public
    def start(self) -> None:
        if self._started:
            raise RuntimeError("Publisher is single use: start() was already called")
        self._started = True
        self._outbox.prune()
        logger.info("connecting to MQTT broker %s as %s (MQTT %s%s), %d messages pending", self.endpoint,
                    self._client_id, self.broker.protocol, ", TLS" if self.broker.tls_ca or self.broker.tls_cert
                    else "", self._outbox.pending_count())
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s,
                                   clean_start=False, properties=self._connect_props)
        self._client.loop_start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what can be flushed within `timeout`, mark the box offline and disconnect cleanly."""
        deadline = time.monotonic() + timeout
        while (self._outbox.pending_count() and self._connected.is_set() and self._thread.is_alive()
               and time.monotonic() < deadline):
            time.sleep(0.02)
        self._stop.set()
        with self._ack_cond:
            self._ack_cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

        offline_confirmed = False
        if self._connected.is_set():
            info = self._client.publish(self.topics.status, encode_message(edge_status_message(
                self.edge_id, "offline", ts=time.time(), utc_offset=self._utc_offset, reason="stopped")),
                qos=1, retain=True)
            reason = self._wait_ack(info.mid, until=max(deadline, time.monotonic() + 2.0), honour_stop=False)
            offline_confirmed = reason is not None and not reason.is_failure
            # rows the sender left in flight were acked before that (one connection keeps order): mark them
            if not self._thread.is_alive():
                acks = [(row, self._take_ack(mid)) for row, mid in self._inflight]
                self._mark([row.id for row, r in acks if r is not None and not r.is_failure])
        if self._connected.is_set() and not offline_confirmed and self._v5:
            # could not confirm our own "offline": let the broker publish the LWT instead
            self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        else:
            self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        left = self._outbox.pending_count()
        logger.info("MQTT publisher stopped (%d acknowledged%s)", self._acked,
                    f"; {left} messages stay in the outbox for the next start" if left else "")

    def publish(self, topic: str, payload: bytes | dict[str, Any], *, qos: int = 1) -> int:
        """Queue a message through the outbox (durable); returns its outbox id."""
        return self._outbox.put(topic, self._bytes(payload), qos=qos)

    def publish_retained(self, topic: str, payload: bytes | dict[str, Any]) -> int:
        """Queue a retained message (statuses) through the outbox; older pending ones of the topic coalesce."""
        return self._outbox.put(topic, self._bytes(payload), qos=1, retain=True)

    @property
    def refused(self) -> str | None:
        """The broker's last refusal of our login (bad credentials, not authorised), None if it never refused
        or we connected since: a configuration error the operator must fix, not a network blip."""
        return self._problems.text if (self._problems.key or "").startswith("refused:") else None

    def wait_connected(self, timeout: float) -> bool:
        """True once the broker accepted the connection (CONNACK success), False after `timeout`."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stats(self) -> PublisherStats:
        return PublisherStats(acked=self._acked, pending=self._outbox.pending_count(),
                              set_aside=len(self._outbox.set_aside_rows()), dropped=self._outbox.drop_counts(),
                              connected=self._connected.is_set(), rejected=self._rejected,
                              last_error=self._problems.text or self._publish_problem)

    # ------------------------------------------------------------------------------ sender thread
    def _run(self) -> None:
        """Sender thread: keep up to `window` rows in flight, retire them in order as their PUBACKs arrive.

        A continuous pipeline rather than publish-a-batch-then-wait: a broker without TCP_NODELAY (Mosquitto's
        default) holds back all but the first PUBACK of a burst until the client's delayed TCP ACK, ≈ 40 ms per
        batch; a steady stream of publishes carries those ACKs at once (measured: ≈ 450 → several thousand msg/s).
        """
        inflight = self._inflight
        done: list[int] = []  # acknowledged, not yet marked sent (marked in groups, always before blocking)
        last_id = 0  # highest outbox id handed to paho; the next fill reads after it
        rejected = False  # a row was refused: stop filling, let the window empty, back off, restart from it
        delay = self._retry_delay[0]
        next_prune = time.monotonic() + 1.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + 1.0
                    self._outbox.prune()
                    self._publish_counts_if_changed()
                if not rejected and len(inflight) < self._window and self._connected.is_set():
                    for row in self._outbox.next_batch(self._window - len(inflight), after_id=last_id):
                        if not self._connected.is_set():
                            break  # what paho already holds, it re-sends after reconnecting
                        info = self._client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
                        inflight.append((row, info.mid))
                        last_id = row.id
                if not inflight:
                    done = self._mark(done)
                    if rejected:
                        self._stop.wait(delay)
                        delay = min(delay * 2, self._retry_delay[1])
                        rejected, last_id = False, 0
                    elif self._connected.is_set():
                        self._outbox.wait(0.25)
                    else:
                        self._connected.wait(0.25)
                    continue
                row, mid = inflight[0]
                reason = self._take_ack(mid)
                if reason is None:
                    done = self._mark(done)  # record progress before blocking
                    reason = self._wait_ack(mid, until=time.monotonic() + 0.25)
                    if reason is None:
                        continue  # not yet (reconnecting, or a slow link): refill if there is room, check stop
                inflight.popleft()
                if reason.is_failure:
                    self._rejected += 1
                    if reason.value in _PERMANENT:
                        self._refusals[row.id] = self._refusals.get(row.id, 0) + 1
                        if self._refusals[row.id] >= self._max_refusals:
                            self._set_aside(row, reason)
                            continue  # the rows behind it go on
                    rejected = True
                    self._reject(row, reason)
                    continue
                done.append(row.id)
                if len(done) >= 256:
                    done = self._mark(done)
                if not rejected:
                    delay = self._retry_delay[0]
                if row.topic in self._rejected_topics:
                    self._rejected_topics.discard(row.topic)
                    self._publish_problem = None
                    logger.info("MQTT broker %s accepts publishes to %s again", self.endpoint, row.topic)
            except Exception:  # never let the sender die silently: log, back off, go on
                logger.exception("MQTT sender: unexpected error; retrying in %.1f s", delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self._retry_delay[1])
        self._mark(done)  # rows still in flight stay in the outbox: sent again by the next start

    def _mark(self, ids: list[int]) -> list[int]:
        """Delete acknowledged rows; returns a fresh empty list for the caller's next group."""
        if ids:
            self._outbox.mark_sent_many(ids)
            self._acked += len(ids)
        return []

    def _reject(self, row: OutboxRow, reason: ReasonCode) -> None:
        text = (f"MQTT broker {self.endpoint} rejected the publish to {row.topic}: {reason} "
                f"(reason code 0x{reason.value:02X}); the message stays in the outbox and is retried with backoff"
                + (f" — check the broker ACL for user {self._user!r}" if reason.value == 0x87 else ""))
        self._publish_problem = text
        if row.topic not in self._rejected_topics:
            self._rejected_topics.add(row.topic)
            logger.error(text)
        else:
            logger.debug(text)

    def _set_aside(self, row: OutboxRow, reason: ReasonCode) -> None:
        text = (f"MQTT broker {self.endpoint} refused the publish to {row.topic} {self._refusals.get(row.id, 1)} times: "
                f"{reason} (reason code 0x{reason.value:02X}); set aside in the outbox (python run_edge.py outbox "
                "--requeue puts it back)" + (f" — check the broker ACL for user {self._user!r}" if reason.value == 0x87
                                             else ""))
        self._refusals.pop(row.id, None)
        self._outbox.set_aside(row.id, f"0x{reason.value:02X} {reason}")
        self._publish_problem = text
        logger.error(text)
        self._publish_counts_if_changed()

    def _outbox_counts(self) -> tuple[int, dict[str, int]]:
        return len(self._outbox.set_aside_rows()), self._outbox.drop_counts()

    def _status(self) -> dict[str, Any]:
        """The retained `online` edge status, with the outbox's drop and set-aside counts when there are any."""
        msg = edge_status_message(self.edge_id, "online", ts=time.time(), utc_offset=self._utc_offset)
        set_aside, dropped = self._counts_published = self._outbox_counts()
        if set_aside or dropped:
            msg["outbox"] = {"dropped": dropped, "set_aside": set_aside}
        return msg

    def _publish_counts_if_changed(self) -> None:
        """A fresh retained status when a drop or a set-aside changed the counts (the centre watches them)."""
        if self._connected.is_set() and self._outbox_counts() != self._counts_published:
            info = self._client.publish(self.topics.status, encode_message(self._status()), qos=1, retain=True)
            with self._ack_cond:
                self._ignore_mids.add(info.mid)

    def _take_ack(self, mid: int) -> ReasonCode | None:
        with self._ack_cond:
            return self._acks.pop(mid, None)

    def _wait_ack(self, mid: int, until: float | None = None, honour_stop: bool = True) -> ReasonCode | None:
        """The PUBACK reason of `mid`; None when stopping (or past `until`). Survives reconnects: paho re-sends."""
        with self._ack_cond:
            while mid not in self._acks:
                if (honour_stop and self._stop.is_set()) or (until is not None and time.monotonic() >= until):
                    return None
                self._ack_cond.wait(0.2)
            return self._acks.pop(mid)

    @staticmethod
    def _bytes(payload: bytes | dict[str, Any]) -> bytes:
        return encode_message(payload) if isinstance(payload, dict) else payload

    # ------------------------------------------------------------- paho callbacks (network thread)
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode,
                    properties: Properties | None) -> None:
        if reason.is_failure:
            self._connected.clear()
            self._problems.report(
                f"refused:{reason.value}", logging.ERROR,
                f"MQTT broker {self.endpoint} refused the connection: {reason} "
                f"(user {self._user!r}, client id {self._client_id!r}){_hint(reason)}; retrying with backoff")
            return
        was = self._problems.clear()
        logger.info("connected to MQTT broker %s (session present: %s)%s", self.endpoint, flags.session_present,
                    f" after: {was}" if was else "")
        info = client.publish(self.topics.status, encode_message(self._status()), qos=1, retain=True)
        with self._ack_cond:  # its PUBACK is handled later on this same thread: no race
            self._ignore_mids.add(info.mid)
        if self._on_command is not None:  # the session may keep it, but a broker restart without persistence may not
            client.subscribe(self.topics.cmd_filter, qos=1)
        self._connected.set()

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        """paho's own log lines, to `edge.publisher.paho`. paho 2.2 logs an ERROR "Client is not connected" each
        time its loop runs on a closed socket — after every clean disconnect() and during every reconnect — so
        that line is debug here; our own one-line reports (refused, unreachable, lost) say what matters."""
        py_level = mqtt.LOGGING_LEVEL.get(level, logging.DEBUG)
        if text.startswith("Client is not connected"):
            py_level = logging.DEBUG
        alert = _TLS_ALERT.search(text) if text.startswith("failed to receive on socket") else None
        if alert is not None:
            # TLS 1.3: the broker's verdict on our client certificate arrives after the handshake, as an alert on
            # the first read — paho then only logs it, once per retry. Name the cause once, as a refusal.
            py_level = logging.DEBUG
            name = alert.group(1)
            cause = ("requires a client certificate — set broker.tls_cert and broker.tls_key (broker_config/"
                     "add_edge.sh --client-cert makes them)" if "CERTIFICATE_REQUIRED" in name else
                     "rejected our client certificate — check that broker.tls_cert / tls_key were signed by the "
                     "broker's CA and are this box's")
            self._problems.report(
                "refused:tls", logging.ERROR, f"TLS with MQTT broker {self.endpoint}: the broker {cause} "
                f"(TLS alert {name}); retrying with backoff")
        _paho_logger.log(py_level, text)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError:` block, so the exception is still in flight here
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLCertVerificationError):
            self._problems.report(
                "refused:tls", logging.ERROR,
                f"TLS handshake with MQTT broker {self.endpoint} failed: the broker's certificate was not "
                f"accepted ({exc.verify_message}) — check broker.tls_ca (the CA that signed the broker's "
                "certificate) and that broker.host is a name in that certificate; retrying with backoff")
            return
        if isinstance(exc, ssl.SSLError):
            self._problems.report(
                "refused:tls", logging.ERROR,
                f"TLS handshake with MQTT broker {self.endpoint} failed: {exc.reason or exc} — is this a TLS "
                "listener, and do broker.tls_cert / tls_key match what it requires? retrying with backoff")
            return
        self._problems.report(
            "unreachable", logging.WARNING,
            f"cannot connect to MQTT broker {self.endpoint} (no listener, or network down); "
            "retrying with backoff; messages stay in the outbox")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason: ReasonCode,
                       properties: Properties | None) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and not self._stop.is_set():
            self._problems.report(
                f"lost:{reason}", logging.WARNING,
                f"lost the connection to MQTT broker {self.endpoint}: {reason}; reconnecting, "
                "messages stay in the outbox")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties | None) -> None:
        with self._ack_cond:
            if mid in self._ignore_mids:
                self._ignore_mids.discard(mid)
                if reason.is_failure:
                    logger.error("MQTT broker %s rejected our status on %s: %s", self.endpoint,
                                 self.topics.status, reason)
                return
            self._acks[mid] = reason
            self._ack_cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        command = self.topics.command_of(msg.topic)
        if command is None or self._on_command is None:
            logger.debug("ignoring a message on %s (not one of our command topics)", msg.topic)
            return
        try:
            self._on_command(command, bytes(msg.payload))
        except Exception:  # a handler bug must not kill paho's network thread
            logger.exception("command %r: handler failed", command)
