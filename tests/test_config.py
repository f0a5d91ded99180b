"""Every bad input a user can give in a site or rule file gets one clear line naming file, line and key."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.config import ConfigError, Rules, expand_env, load_rules, load_site, mask_url, read_secret_file

GOOD_SITE = """edge_id: e1
cameras:
  - id: cam1
    url: rtsp://user:${CAM_PW}@10.0.0.5/stream
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, expect", [
    (GOOD_SITE, None),
    ("edge_id: e1\ncameras: [\n", "malformed YAML"),
    ("- just\n- a list\n", "expected a mapping"),
    ("edge_id: e1\ncameras: []\n", "cameras"),
    ("edge_id: e1\ncamreas: []\n", "camreas: unknown key"),
    ("edge_id: e/1\ncameras:\n  - {id: c, url: x.mp4}\n", "edge_id"),
    ("edge_id: e1\ncameras:\n  - {id: c, url: x.mp4, scan_interval_s: 0}\n", ":3: cameras[0].scan_interval_s"),
    ("edge_id: e1\ncameras:\n  - {id: c, url: x.mp4}\n  - {id: c, url: y.mp4}\n", "camera ids must be unique"),
    ("edge_id: e1\nbroker: {port: 99999}\ncameras:\n  - {id: c, url: x.mp4}\n", "broker.port"),
])
def test_site_errors(tmp_path, text, expect):
    p = write(tmp_path, "site.yaml", text)
    if expect is None:
        assert load_site(p).cameras[0].id == "cam1"
        return
    with pytest.raises(ConfigError) as e:
        load_site(p)
    msg = str(e.value)
    assert str(p) in msg and expect in msg, msg
    assert "Traceback" not in msg


@pytest.mark.parametrize("text, expect", [
    ("zones:\n  - name: road\n    polygon: [[0, 0], [1, 0], [1, 1]]\n", None),
    ("zones:\n  - name: road\n    polygon: [[0, 0], [1.4, 0], [1, 1]]\n", "lie outside the image"),
    ("zones:\n  - name: road\n    polygon: [[0, 0], [1, 0]]\n", "at least 3 points"),
    ("classes:\n  ponding: {min_area: 0.5, max_area: 0.1}\n", "min_area"),
    ("classes:\n  ponding: {threshold: 2}\n", ":2: classes.ponding.threshold"),
    ("persistence: {window: 30}\n", "persistence.window: unknown key"),
])
def test_rule_errors(tmp_path, text, expect):
    p = write(tmp_path, "cam1.yaml", text)
    if expect is None:
        assert isinstance(load_rules(p), Rules)
        return
    with pytest.raises(ConfigError) as e:
        load_rules(p)
    assert str(p) in str(e.value) and expect in str(e.value), str(e.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_site(tmp_path / "nope.yaml")


def test_secrets_stay_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("CAM_PW", "s3cr3t")
    url = expand_env("rtsp://user:${CAM_PW}@10.0.0.5/stream", "camera cam1 url")
    assert url == "rtsp://user:s3cr3t@10.0.0.5/stream"
    assert "s3cr3t" not in mask_url(url)
    monkeypatch.delenv("CAM_PW")
    with pytest.raises(ConfigError, match="CAM_PW is not set"):
        expand_env("rtsp://user:${CAM_PW}@h/s", "camera cam1 url")
    f = tmp_path / "pw"
    f.write_text("hunter2\n")
    os.chmod(f, 0o644)
    with pytest.raises(ConfigError, match="chmod 600") as e:
        read_secret_file(f, "broker.password_file")
    assert "hunter2" not in str(e.value)
    os.chmod(f, 0o600)
    assert read_secret_file(f, "broker.password_file") == "hunter2"


def test_committed_json_schemas_match_the_code():
    import json

    from edge.config import json_schemas

    root = Path(__file__).resolve().parents[1] / "streams"
    for name, schema in json_schemas().items():
        assert json.loads((root / name).read_text()) == schema, f"streams/{name} is stale: run export-schema"
