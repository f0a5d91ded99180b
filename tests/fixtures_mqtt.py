"""A real Mosquitto broker and a collecting subscriber for the integration tests.

`Mosquitto` writes broker_config/mosquitto.test.conf.template into a temp dir (loopback listener on a free
port, no anonymous clients, a password file made with `mosquitto_passwd`, persistence in the temp dir),
runs `mosquitto -c` as a subprocess and waits until the port accepts. `stop()` (SIGTERM: the broker saves
its persistence file), `kill()` (SIGKILL) and `start()` (same port, same persistence) let a test take the
broker away and bring it back.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import string
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "broker_config" / "mosquitto.test.conf.template"


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


class Mosquitto:
    """A Mosquitto subprocess with users (name → password) and an optional ACL file text."""

    def __init__(self, workdir: Path, users: dict[str, str], *, acl: str | None = None, port: int | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.users = dict(users)
        self.log_path = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        pw = self.dir / "passwd"
        for i, (user, password) in enumerate(self.users.items()):
            flags = ["-c", "-b"] if i == 0 else ["-b"]
            subprocess.run(["mosquitto_passwd", *flags, str(pw), user, password], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pw.chmod(0o600)
        acl_line = ""
        if acl is not None:
            (self.dir / "acl").write_text(acl)
            (self.dir / "acl").chmod(0o600)
            acl_line = f"acl_file {self.dir / 'acl'}"
        (self.dir / "data").mkdir(exist_ok=True)
        conf = string.Template(TEMPLATE.read_text()).substitute(
            port=self.port, password_file=pw, acl_line=acl_line, persistence_dir=self.dir / "data",
            user_line="user root" if os.geteuid() == 0 else "")
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
            if port_open(self.port):
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
