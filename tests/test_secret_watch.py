"""The suite-wide secret watch (tests/secret_watch.py) really catches a leak — else its silence means nothing."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

import secret_watch


def test_a_secret_in_a_debug_log_line_is_caught() -> None:
    w = secret_watch.watch()
    secret = "Watch-Me-s3cret-41"
    w.register(secret)
    before = len(w.leaks)
    logging.getLogger("edge.some.module").debug("connecting with %s", secret)  # DEBUG too: the root is open
    try:
        assert len(w.leaks) == before + 1 and "log record edge.some.module DEBUG" in w.leaks[-1]
        assert secret not in w.leaks[-1]  # the report itself does not repeat it
    finally:
        del w.leaks[before:]  # this leak was planted
        w.secrets.discard(secret)


def test_files_are_scanned_but_secret_files_are_not(tmp_path: Path) -> None:
    w = secret_watch.SecretWatch()
    w.register("file-Secret-9931", "short")
    (tmp_path / "run.log").write_text("… rtsp://admin:file-Secret-9931@10.0.0.5/ch1 …")
    keep = tmp_path / "mqtt.password"
    keep.write_text("file-Secret-9931\n")
    keep.chmod(0o600)  # the product requires 0600 for a secret file: that one holds it on purpose
    (tmp_path / "outbox.sqlite").write_bytes(b"\x00SQLite\x00" + b"file-Secret-9931")
    w.scan_tree(tmp_path)
    assert sorted(x.split(":")[0] for x in w.leaks) == [f"file {tmp_path / 'outbox.sqlite'}", f"file {tmp_path / 'run.log'}"]
    assert "short" not in w.secrets  # too short to watch


def test_monkeypatched_secret_variables_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_BROKER_PASSWORD", "env-Secret-5521")
    monkeypatch.setenv("SOME_CAMERA_HOST", "camera-host-name")
    assert "env-Secret-5521" in secret_watch.watch().secrets
    assert "camera-host-name" not in secret_watch.watch().secrets
