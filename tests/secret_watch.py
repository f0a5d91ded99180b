"""A pytest plugin that watches the whole suite for leaked secrets.

Every password, token and RTSP credential a test configures is registered here (`register`), by the broker
fixture for its accounts, by `monkeypatch.setenv` for any variable named like a secret, and by hand where a
test builds one itself. The watch then sees:

- every log record of the test process, at every level (the root logger is opened to DEBUG for it);
- every MQTT message a test subscriber receives (tests/fixtures_mqtt.py and the security tests call `scan`);
- at the end of the session, every file the suite left in pytest's temp dir — the runtime's and intake's logs
  written by subprocesses, the broker's log, outbox and intake databases (the messages as stored), event
  files — except the files that hold a secret on purpose (mode 0600 secret files, the broker's password file).

A secret found anywhere fails the session with the place it was found. Secrets shorter than 6 characters are
not watched (they would match ordinary text).
"""
from __future__ import annotations

import logging
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MIN_LEN = 6
_SECRET_NAME = re.compile(r"(PW|PASS|PASSWORD|SECRET|TOKEN)", re.IGNORECASE)
_SKIP_NAMES = {"passwd", "password", "pw"}  # files that store a secret by design (plus any 0600 file)


@dataclass
class SecretWatch:
    secrets: set[str] = field(default_factory=set)
    leaks: list[str] = field(default_factory=list)
    scanned: int = 0  # texts and files looked at (the session summary prints it)

    def register(self, *values: str | None) -> None:
        self.secrets.update(v for v in values if v and len(v) >= MIN_LEN)

    def scan(self, where: str, text: str | bytes) -> list[str]:
        """Record and return the secrets found in `text`."""
        self.scanned += 1
        found = []
        for s in self.secrets:
            needle: str | bytes = s.encode() if isinstance(text, bytes) else s
            if needle in text:  # type: ignore[operator]
                found.append(s)
                self.leaks.append(f"{where}: contains the secret {s[:2]}…{s[-1:]} ({len(s)} chars)")
        return found

    def scan_tree(self, root: Path) -> None:
        for p in root.rglob("*"):
            try:
                st = p.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or p.name in _SKIP_NAMES or p.suffix in (".key", ".pw"):
                continue
            if stat.S_IMODE(st.st_mode) & 0o077 == 0:  # 0600: a secret file, as the product demands
                continue
            if st.st_size > 64 * 1024 * 1024:
                continue
            self.scan(f"file {p}", p.read_bytes())


class _Handler(logging.Handler):
    def __init__(self, watch: SecretWatch):
        super().__init__(logging.DEBUG)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string is another test's failure, not ours
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += f"\n{record.exc_info[1]!r}"
        self.watch.scan(f"log record {record.name} {record.levelname}", text)


_WATCH = SecretWatch()  # one per test session (pytest runs one session per process)


def watch() -> SecretWatch:
    return _WATCH


def register(*values: str | None) -> None:
    _WATCH.register(*values)


def scan(where: str, text: str | bytes) -> list[str]:
    return _WATCH.scan(where, text)


# ------------------------------------------------------------------------------------------- pytest hooks
def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    root.addHandler(_Handler(_WATCH))
    root.setLevel(logging.DEBUG)
    original = pytest.MonkeyPatch.setenv

    def setenv(self: pytest.MonkeyPatch, name: str, value: str, prepend: str | None = None) -> None:
        if _SECRET_NAME.search(name):
            _WATCH.register(value)
        original(self, name, value, prepend)

    pytest.MonkeyPatch.setenv = setenv  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        try:
            _WATCH.scan_tree(factory.getbasetemp())
        except OSError:
            pass
    if _WATCH.leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    w = _WATCH
    if w.leaks:
        terminalreporter.section("secrets leaked", sep="=", red=True, bold=True)
        for line in sorted(set(w.leaks))[:50]:
            terminalreporter.write_line(line)
    else:
        terminalreporter.write_line(f"secret watch: {len(w.secrets)} secrets, {w.scanned} log records, messages and "
                                    f"files scanned, none leaked")
