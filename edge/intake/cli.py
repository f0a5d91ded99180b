"""`run_edge.py intake`: the reference intake for the centre (also `python -m edge.intake`).

Exit status: 0 after a clean stop (SIGINT/SIGTERM or `--duration`); 2 for a mistake the user can fix (bad
option, unset variable, unreadable secret file, unwritable database, broker unreachable at start-up); 3 when
the broker refuses the login. Each is one line on stderr; no credential is ever printed.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["add_intake_parser", "cmd_intake", "main", "parse_broker"]

log = logging.getLogger("edge.intake")


def parse_broker(text: str, tls: bool = False) -> tuple[str, int]:
    """`host:port`, `[v6addr]:port` or `host` (1883, or 8883 with TLS) → (host, port); ValueError otherwise."""
    default = 8883 if tls else 1883
    text = text.strip()
    port_s: str | None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else (None if not rest else "bad")
    elif text.count(":") == 1:
        host, port_s = text.split(":")
    elif ":" not in text:
        host, port_s = text, None
    else:
        raise ValueError(f"--broker {text!r}: write HOST:PORT (an IPv6 address as [ADDR]:PORT)")
    if not host:
        raise ValueError(f"--broker {text!r}: write HOST:PORT")
    if port_s is None:
        return host, default
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"--broker {text!r}: port must be 1..65535")
    return host, int(port_s)


def add_intake_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `intake` on an argparse subparsers object."""
    s = sub.add_parser("intake", help="the centre's reference intake: subscribe (shared), validate, store once, "
                       "merge into cases, export GeoJSON/CSV")
    s.add_argument("--broker", required=True, help="HOST:PORT of the MQTT broker (MQTT v5)")
    s.add_argument("--db", default="intake.sqlite", help="SQLite file (WAL); created if missing")
    s.add_argument("--username-env", metavar="VAR", help="environment variable holding the user name")
    s.add_argument("--username", help="the user name itself (not a secret; the password never goes on the "
                   "command line)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
    g.add_argument("--password-file", metavar="F", help="file (mode 0600) holding the password")
    s.add_argument("--tls-ca", metavar="F", help="CA certificate: connect with TLS and verify the broker")
    s.add_argument("--tls-cert", metavar="F", help="client certificate (brokers that require one)")
    s.add_argument("--tls-key", metavar="F", help="client certificate key")
    s.add_argument("--group", help="share the load with the other intakes of this group (MQTT v5 shared "
                   "subscription; they must share the database). Needs Mosquitto >= 2.0.12: older ones forget shared "
                   "subscriptions at a restart and drop what arrives before the intake is back. Default: a plain "
                   "durable subscription, one intake")
    s.add_argument("--client-id", help="MQTT client id; default cityops-intake-<group|single>-<hostname>. Keep it "
                   "stable (the broker keeps our session under it) and distinct per intake")
    s.add_argument("--prefix", default="cityops", help="topic prefix of the edges")
    s.add_argument("--merge-radius-m", type=float, default=10.0, help="incidents of one class this close (metres) "
                   "are one case")
    s.add_argument("--session-expiry", type=int, default=7 * 86_400, metavar="S", help="how long the broker keeps "
                   "our session (and queues for us) while we are away, seconds")
    s.add_argument("--export-geojson", metavar="F", help="write the open cases as GeoJSON (periodically and at exit)")
    s.add_argument("--export-csv", metavar="F", help="write the open cases as CSV (periodically and at exit)")
    s.add_argument("--export-interval", type=float, default=60.0, metavar="S", help="seconds between exports")
    s.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help="give up at start-up when the "
                   "broker cannot be reached for this long (later outages are waited out)")
    s.add_argument("--duration", type=float, metavar="S", help="stop after this many seconds (tests)")
    s.set_defaults(func=cmd_intake)
    return s


def _error(text: str, code: int) -> int:
    print(f"error: {text}", file=sys.stderr)
    return code


def _credentials(a: argparse.Namespace) -> tuple[str | None, str | None]:
    from edge.config import ConfigError, read_secret_file

    user = a.username
    if a.username_env:
        user = os.environ.get(a.username_env)
        if user is None:
            raise ConfigError(f"--username-env: environment variable {a.username_env} is not set")
    password = None
    if a.password_env:
        password = os.environ.get(a.password_env)
        if password is None:
            raise ConfigError(f"--password-env: environment variable {a.password_env} is not set")
    elif a.password_file:
        password = read_secret_file(Path(a.password_file), "--password-file")
    if password is not None and user is None:
        raise ConfigError("a password needs a user name: add --username-env VAR (or --username NAME)")
    return user, password


def _export(store: Any, a: argparse.Namespace) -> str:
    from .export import write_csv, write_geojson

    done = []
    try:
        if a.export_geojson:
            done.append(f"{write_geojson(store, a.export_geojson)} open cases to {a.export_geojson}")
        if a.export_csv:
            done.append(f"{write_csv(store, a.export_csv)} open cases to {a.export_csv}")
    except OSError as e:
        log.error("intake: export failed: %s", e)
        return f"export failed: {e}"
    return "; ".join(done)


def cmd_intake(a: argparse.Namespace) -> int:
    from edge.config import ConfigError

    import importlib.util

    if importlib.util.find_spec("jsonschema") is None:  # validate_message needs it
        return _error("the intake validates messages with 'jsonschema': pip install 'cityops-edge[intake]'", 2)
    from .client import Intake
    from .store import SQLiteStore, StoreError

    try:
        host, port = parse_broker(a.broker, tls=bool(a.tls_ca))
    except ValueError as e:
        return _error(str(e), 2)
    if not a.merge_radius_m > 0:
        return _error(f"--merge-radius-m must be > 0, got {a.merge_radius_m}", 2)
    try:
        user, password = _credentials(a)
    except ConfigError as e:
        return _error(str(e), 2)
    try:
        store = SQLiteStore(a.db, merge_radius_m=a.merge_radius_m)
    except StoreError as e:
        return _error(str(e), 2)
    try:
        intake = Intake(store, host=host, port=port, username=user, password=password, tls_ca=a.tls_ca,
                        tls_cert=a.tls_cert, tls_key=a.tls_key, group=a.group, prefix=a.prefix,
                        client_id=a.client_id, merge_radius_m=a.merge_radius_m, session_expiry_s=a.session_expiry)
    except (ConfigError, ValueError) as e:
        store.close()
        return _error(str(e), 2)
    del password

    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        return _run(a, intake, store, stop, host, port)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(a: argparse.Namespace, intake: Any, store: Any, stop: threading.Event, host: str, port: int) -> int:
    intake.start()
    deadline = time.monotonic() + a.connect_timeout
    while not intake.ever_connected and not stop.is_set():
        if intake.refused:
            intake.stop(timeout=0.5)
            store.close()
            return _error(intake.refused, 3)
        if time.monotonic() >= deadline:
            why = intake.last_error or "no answer"
            intake.stop(timeout=0.5)
            store.close()
            return _error(f"cannot reach MQTT broker {host}:{port} within {a.connect_timeout:g} s ({why})", 2)
        time.sleep(0.05)

    t0 = time.monotonic()
    next_export = t0 + a.export_interval
    while not stop.is_set():
        now = time.monotonic()
        if a.duration is not None and now - t0 >= a.duration:
            break
        if (a.export_geojson or a.export_csv) and now >= next_export:
            _export(store, a)
            next_export = now + a.export_interval
        stop.wait(0.2)
    intake.stop()
    exported = _export(store, a) if (a.export_geojson or a.export_csv) else ""
    s, c = intake.stats(), store.counts()
    store.close()
    print(f"intake: {s.received} messages received, {s.stored} stored, {s.duplicates} duplicates dropped, "
          f"{s.invalid} invalid kept aside, {s.evidence} evidence pictures; database {a.db}: {c['events']} events, "
          f"{c['open_cases']} open cases of {c['cases']}" + (f"; exported {exported}" if exported else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.intake")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    add_intake_parser(sub)
    args = p.parse_args(["intake", *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return int(args.func(args))
