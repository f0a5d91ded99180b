"""A real Mosquitto broker and a collecting subscriber for the integration tests.

`Mosquitto` starts the broker with the production configuration, broker_config/mosquitto.conf, rendered by
`render_conf`: the TLS listener moves to a free loopback port (or goes, without certificates), a plain
loopback listener is added on another free port, and the file paths (password file, ACL, certificates,
persistence, log) point into a temp dir — every other setting is the production one. The ACL is
broker_config/acl unless a test passes its own text. Users come from a `{name: password}` dict (hashed with
`mosquitto_passwd`) and/or an existing password file (broker_config/add_edge.sh). `stop()` (SIGTERM: the
broker saves its persistence file), `kill()` (SIGKILL) and `start()` (same ports, same persistence) let a
test take the broker away and bring it back.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
import secret_watch
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_CONF = ROOT / "broker_config" / "mosquitto.conf"
PRODUCTION_ACL = ROOT / "broker_config" / "acl"
# directives that belong to a listener block (dropped with the production listeners when a test runs
# without certificates)
_LISTENER_KEYS = {"cafile", "capath", "certfile", "keyfile", "tls_version", "require_certificate", "crlfile",
                  "use_identity_as_username", "use_subject_as_username", "use_username_as_clientid", "ciphers",
                  "ciphers_tls1.3", "protocol", "mount_point", "max_connections", "max_qos", "bind_interface",
                  "socket_domain", "max_topic_alias", "http_dir", "psk_hint"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, timeout: float = 0.1) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class TlsFiles:
    """The broker's CA, certificate and key (as made by broker_config/make_certs.sh OUTDIR)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_dir(cls, outdir: Path) -> "TlsFiles":
        return cls(outdir / "ca.crt", outdir / "server.crt", outdir / "server.key")


def production_listeners(production: str) -> list[int]:
    """The ports of the production file's listeners, in order (8883 for the boxes, 8884 for the centre)."""
    return [int(line.split()[1]) for line in production.splitlines()
            if line.strip().startswith("listener ") and len(line.split()) >= 2]


def render_conf(production: str, *, port: int, tls_ports: dict[int, int] | None, tls: TlsFiles | None,
                password_file: Path, acl_file: Path, persistence_dir: Path, run_as_root: bool,
                overrides: dict[str, str | None] | None = None) -> str:
    """The production mosquitto.conf with only its ports and paths changed.

    Each production listener (TLS) listens on loopback at `tls_ports[its port]` with the `tls` files; without
    `tls` the production listeners and their options are left out. A plain listener on `port`, loopback only,
    is appended (the production file's optional one). password_file, acl_file, persistence_location, log_dest
    (stderr) and `user` (root when we are root: it cannot read a 0700 temp dir otherwise) are replaced.
    `overrides` replaces the value of a global directive (None removes it) — for a test that must differ from
    production, visibly. Raises ValueError if the production file lacks a directive we replace, so the two
    cannot drift apart unnoticed.
    """
    paths = {"password_file": str(password_file), "acl_file": str(acl_file),
             "persistence_location": f"{persistence_dir}/"}
    if tls is not None:
        paths.update(cafile=str(tls.ca), certfile=str(tls.cert), keyfile=str(tls.key))
    overrides = dict(overrides or {})
    seen: set[str] = set()
    out: list[str] = []
    for line in production.splitlines():
        key, _, value = line.strip().partition(" ")
        if not key or key.startswith("#"):
            out.append(line)
            continue
        seen.add(key)
        if key == "listener":
            if tls is not None:
                assert tls_ports is not None
                out.append(f"listener {tls_ports[int(value.split()[0])]} 127.0.0.1")
            continue
        if key in _LISTENER_KEYS and tls is None:
            continue
        if key == "log_dest":
            if "log_dest" not in paths:
                out.append("log_dest stderr")  # stdout is block-buffered when redirected
                paths["log_dest"] = "stderr"
            continue
        if key == "user":
            continue
        if key in paths:
            out.append(f"{key} {paths[key]}")
        elif key in overrides:
            if overrides[key] is not None:
                out.append(f"{key} {overrides[key]}")
        else:
            out.append(line)
    missing = sorted({"password_file", "acl_file", "persistence_location", "log_dest", "listener"} - seen)
    if missing:
        raise ValueError(f"{PRODUCTION_CONF} has no {', '.join(missing)}: update render_conf with it")
    head = [f"{k} {v}" for k, v in overrides.items() if k not in seen and v is not None]
    if run_as_root:
        head.append("user root")
    # global settings go before the listeners: right after per_listener_settings
    first = next(i for i, line in enumerate(out) if line.strip().startswith("per_listener_settings"))
    out[first + 1:first + 1] = head
    out.append(f"listener {port} 127.0.0.1")
    return "\n".join(out) + "\n"


class Mosquitto:
    """A Mosquitto subprocess running the production config (see `render_conf`).

    Args:
        users: name → password, hashed into the broker's password file.
        acl: ACL text; None means the production ACL, broker_config/acl, itself.
        port: the plain loopback listener (a free port by default).
        password_file: an existing password file (e.g. add_edge.sh's OUTDIR/passwd), copied, `users` added.
        tls: the broker's certificate files: the production TLS listeners, on `tls_ports` (production port →
            test port); `tls_port` is the first, the boxes' listener.
        overrides: production directives to change (`{"autosave_on_changes": "false"}`); None removes one.
        log_types: extra `log_type` lines (e.g. ["debug"]) on top of the production ones.
    """

    def __init__(self, workdir: Path, users: dict[str, str], *, acl: str | None = None, port: int | None = None,
                 password_file: Path | None = None, tls: TlsFiles | None = None,
                 overrides: dict[str, str | None] | None = None, log_types: tuple[str, ...] = ()):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        production = PRODUCTION_CONF.read_text()
        self.tls_ports = {p: free_port() for p in production_listeners(production)} if tls is not None else {}
        self.tls_port = next(iter(self.tls_ports.values()), None)
        self.tls = tls
        self.users = dict(users)
        secret_watch.register(*self.users.values())
        self.log_path = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        pw = self.dir / "passwd"
        if password_file is not None:
            shutil.copyfile(password_file, pw)
        for i, (user, password) in enumerate(self.users.items()):
            flags = ["-c", "-b"] if i == 0 and password_file is None else ["-b"]
            subprocess.run(["mosquitto_passwd", *flags, str(pw), user, password], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not pw.exists():
            pw.touch()
        pw.chmod(0o600)
        self.acl_path = PRODUCTION_ACL
        if acl is not None:
            self.acl_path = self.dir / "acl"
            self.acl_path.write_text(acl)
            self.acl_path.chmod(0o600)
        (self.dir / "data").mkdir(exist_ok=True)
        conf = render_conf(production, port=self.port, tls_ports=self.tls_ports, tls=tls,
                           password_file=pw, acl_file=self.acl_path, persistence_dir=self.dir / "data",
                           run_as_root=os.geteuid() == 0, overrides=overrides)
        if log_types:
            conf += "".join(f"log_type {t}\n" for t in log_types)
        self.conf_path = self.dir / "mosquitto.conf"
        self.conf_path.write_text(conf)

    # ------------------------------------------------------------------------------------ process
    def start(self, timeout: float = 5.0) -> "Mosquitto":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf_path)], stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log}")
            if all(port_open(p) for p in self.ports):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s:\n{self.log}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM: a clean shutdown that writes the persistence file."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: the broker dies at once (persistence only as of its last autosave)."""
        self._signal(signal.SIGKILL, 5.0)

    def _signal(self, sig: int, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def ports(self) -> list[int]:
        return [self.port, *self.tls_ports.values()]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    dup: bool
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic)

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho v5 client that collects messages on a topic filter (QoS 1, durable session across restarts)."""

    def __init__(self, port: int, topic: str, *, username: str, password: str, client_id: str | None = None):
        self.topic = topic
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"sub-{uuid.uuid4().hex[:10]}", protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        self.client.connect_async("127.0.0.1", port, keepalive=10, clean_start=False, properties=props)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            secret_watch.scan(f"MQTT message on {msg.topic}", bytes(msg.payload))
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), bool(msg.dup)))
            self._cond.notify_all()

    def start(self, timeout: float = 5.0) -> "Subscriber":
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError(f"subscriber did not subscribe to {self.topic} within {timeout}s")
        return self

    def wait_for(self, pred: int | Callable[[list[Received]], bool], timeout: float = 10.0) -> bool:
        """Until `pred` messages arrived (an int) or pred(messages) is true; False on timeout."""
        check = (lambda m: len(m) >= pred) if isinstance(pred, int) else pred
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def snapshot(self) -> list[Received]:
        with self._cond:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "Subscriber":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
