"""Shared fixtures: paths of the shipped model and the real data."""
from __future__ import annotations

from pathlib import Path

import pytest
from secret_watch import pytest_configure, pytest_sessionfinish, pytest_terminal_summary  # noqa: F401 (hooks)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "models" / "cityops_det_n416.onnx"


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    assert SHIPPED_MODEL.exists(), f"the shipped model {SHIPPED_MODEL} is missing"
    return SHIPPED_MODEL


@pytest.fixture(scope="session")
def shared_data() -> Path:
    from edge.synth.realdata import data_dir

    d = data_dir()
    assert d is not None, "../shared/data is missing (set CITYOPS_DATA)"
    return d
