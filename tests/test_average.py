"""`average-weights`: the shipped model is the average of two stages, so the averaging must be exact and must
refuse checkpoints that are not of one model."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.train

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "cityops_det_n416.pt"


def _state(path: Path) -> dict:
    ck = torch.load(str(path), map_location="cpu", weights_only=False)
    return (ck.get("ema") or ck["model"]).state_dict()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    from edge.train import offline_ultralytics

    offline_ultralytics(tmp_path_factory.mktemp("ul"))  # unpickling the checkpoint imports ultralytics
    return torch.load(str(SHIPPED), map_location="cpu", weights_only=False)


def _save_shifted(ck: dict, dst: Path, shift: float) -> Path:
    c = copy.deepcopy(ck)
    m = c.get("ema") or c["model"]
    with torch.no_grad():
        for t in m.state_dict().values():
            if t.is_floating_point():
                t.add_(shift)
    torch.save(c, dst)
    return dst


def test_average_is_the_midpoint_of_the_weights(shipped, tmp_path):
    from edge.train import average_checkpoints

    a = _save_shifted(shipped, tmp_path / "a.pt", 0.0)
    b = _save_shifted(shipped, tmp_path / "b.pt", 0.25)
    out = average_checkpoints([a, b], tmp_path / "avg.pt", tmp_path / "ul")
    sa, sm = _state(a), _state(out)
    floats = [k for k in sa if sa[k].is_floating_point()]
    assert floats
    for k in floats:
        assert torch.allclose(sm[k].float(), sa[k].float() + 0.125, rtol=2e-3, atol=2e-3), k  # fp16: one ulp
    # an average of a checkpoint with itself is that checkpoint
    same = _state(average_checkpoints([a, a], tmp_path / "same.pt", tmp_path / "ul"))
    assert all(torch.equal(same[k], sa[k]) for k in sa)


def test_checkpoints_of_different_models_are_refused(shipped, tmp_path):
    from edge.train import average_checkpoints

    a = _save_shifted(shipped, tmp_path / "a.pt", 0.0)
    c = copy.deepcopy(shipped)
    m = c.get("ema") or c["model"]
    last_conv = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)][-1]
    last_conv.weight = torch.nn.Parameter(torch.zeros(last_conv.weight.shape[0] + 1, *last_conv.weight.shape[1:],
                                                      dtype=last_conv.weight.dtype))
    torch.save(c, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not the same architecture"):
        average_checkpoints([a, tmp_path / "other.pt"], tmp_path / "avg.pt", tmp_path / "ul")
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([a], tmp_path / "avg.pt", tmp_path / "ul")
