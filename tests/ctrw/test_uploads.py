"""Bring your own model (``ctrw.uploads``): a safetensors state dict checked against its
architecture and turned into a checkpoint that evaluates like a trained one."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ctrw.config import TrainConfig
from ctrw.training import load_trained_model
from ctrw.uploads import UploadRejected, expected_shapes, import_state_dict
from tests.support.configs import TINY_TRAIN


def _config(variant: str = "ctrw") -> TrainConfig:
    return TrainConfig.model_validate({**TINY_TRAIN, "variant": variant})


def _state_dict(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    # BatchNorm's counters are integers; everything else gets random floats (sigma kept positive).
    return {
        k: torch.zeros(s, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.rand(s) + 0.1
        for k, s in expected_shapes(cfg).items()
    }


def test_a_fitting_state_dict_becomes_a_checkpoint(tmp_path: Path) -> None:
    cfg = _config()
    sd = _state_dict(cfg)
    src = tmp_path / "model.safetensors"
    save_file(sd, str(src))
    last = import_state_dict(cfg, src, tmp_path / "run", source={"filename": "model.safetensors"})
    assert last.is_file() and (tmp_path / "run" / "best.safetensors").is_file()
    model, loaded_cfg, meta = load_trained_model(last)
    assert loaded_cfg == cfg and meta["uploaded"] == {"filename": "model.safetensors"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k].to(v.dtype)), k


def test_wrong_shapes_and_names_are_named(tmp_path: Path) -> None:
    cfg = _config()
    sd = _state_dict(cfg)
    name = next(k for k in sd if k.endswith("conv.weight"))
    sd[name] = torch.zeros(1, 1, 1, 1)
    sd["extra.weight"] = torch.zeros(2)
    del sd[next(k for k in sd if k.endswith("bias"))]
    src = tmp_path / "bad.safetensors"
    save_file(sd, str(src))
    with pytest.raises(UploadRejected, match="wrong shapes") as e:
        import_state_dict(cfg, src, tmp_path / "run", source={})
    assert name in str(e.value) and "extra.weight" in str(e.value) and "missing tensors" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_a_pickle_is_never_loaded(tmp_path: Path) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    with pytest.raises(UploadRejected, match="not a readable safetensors file"):
        import_state_dict(_config(), src, tmp_path / "run", source={})
