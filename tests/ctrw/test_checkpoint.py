"""One self-describing checkpoint file: round trip, refusal of corrupted or edited files, and
training killed at every write step of the epoch-end checkpoint ending as if never killed."""

from __future__ import annotations

import copy
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from ctrw.checkpoint import (
    CRASH_EXIT_CODE,
    CheckpointError,
    copy_checkpoint,
    link_checkpoint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from ctrw.config import TrainConfig
from ctrw.hooks import Hooks
from ctrw.training import load_trained_model, settle_checkpoints, train
from tests.support.configs import TINY_TRAIN

# The service tests' tiny digits job without its evaluation: 3 epochs, epoch 2 not the best,
# epoch 3 (the last) the best, so kills hit a best and a non-best epoch end.
CONFIG: dict[str, Any] = {**copy.deepcopy(TINY_TRAIN), "evaluation": None}


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(3, 4, generator=g),
        "half": torch.randn(5, generator=g).to(torch.bfloat16),
        "flags": torch.tensor([True, False]),
        "count": torch.tensor(7),
        "empty": torch.zeros(0, 2),
        "strided": torch.randn(4, 6, generator=g).t(),  # not contiguous
    }


def test_one_file_holds_tensors_and_metadata(tmp_path: Path) -> None:
    meta = {"epoch": 2, "config": {"name": "x"}, "history": [{"loss": 0.5}, {"loss": float("nan")}]}
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, _tensors(), meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]  # no sidecar, no temp
    tensors, got = load_checkpoint(path)
    assert tensors.keys() == _tensors().keys()
    for k, v in _tensors().items():
        assert torch.equal(tensors[k], v) and tensors[k].dtype == v.dtype, k
    assert got["epoch"] == 2 and got["config"] == {"name": "x"} and got["history"][1]["loss"] != 0.5
    assert read_meta(path)["epoch"] == 2  # the header alone
    copy_checkpoint(path, tmp_path / "copy.safetensors")
    assert load_checkpoint(tmp_path / "copy.safetensors")[1]["epoch"] == 2


def test_best_is_a_hard_link_that_a_later_last_leaves_alone(tmp_path: Path) -> None:
    """``best`` is published by a link (no second copy of the bytes); the next ``last`` is a new
    file renamed into place, so the linked ``best`` keeps its epoch."""
    last, best = tmp_path / "last.safetensors", tmp_path / "best.safetensors"
    save_checkpoint(last, _tensors(), {"epoch": 1})
    link_checkpoint(last, best)
    assert os.stat(last).st_ino == os.stat(best).st_ino
    save_checkpoint(last, _tensors(), {"epoch": 2})
    assert read_meta(best)["epoch"] == 1 and read_meta(last)["epoch"] == 2
    assert os.stat(last).st_ino != os.stat(best).st_ino
    link_checkpoint(last, best)  # replaces an existing best
    assert read_meta(best)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "last.safetensors"]


def _header_span(data: bytes) -> tuple[int, int]:
    (n,) = struct.unpack("<Q", data[:8])
    return 8, 8 + n


@pytest.mark.parametrize("damage", ["tensor-byte", "metadata-epoch", "recorded-digest", "truncated"])
def test_a_corrupted_or_edited_checkpoint_is_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, _tensors(), {"epoch": 1, "best_epoch": 1})
    data = bytearray(path.read_bytes())
    start, end = _header_span(bytes(data))
    if damage == "tensor-byte":  # one bit of the data section
        data[end + 5] ^= 0x01
    elif damage == "metadata-epoch":  # the header still parses; only the stored epoch differs
        old = data[start:end].decode()
        new = old.replace('\\"epoch\\": 1', '\\"epoch\\": 2')
        assert new != old and len(new) == len(old)
        data[start:end] = new.encode()
    elif damage == "recorded-digest":
        header = json.loads(bytes(data[start:end]))
        digest = header["__metadata__"]["sha256"]
        data[start:end] = bytes(data[start:end]).replace(digest.encode(), digest[::-1].encode())
    else:
        data = data[: len(data) - 3]
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_files_that_are_not_checkpoints_are_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))  # safetensors, but no ctrw metadata
    with pytest.raises(CheckpointError, match="not a ctrw-v2 checkpoint"):
        load_checkpoint(plain)
    old = tmp_path / "old.safetensors"
    save_file({"w": torch.zeros(2)}, str(old), metadata={"format": "ctrw-v1"})  # the two-file format
    with pytest.raises(CheckpointError, match="older version"):
        read_meta(old)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        read_meta(garbage)


# --------------------------------------------------------------------------- kills
class _Records(Hooks):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_epoch(self, r: dict[str, Any]) -> None:
        self.epochs.append(r["epoch"])


def _comparable(meta: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's metadata without what legitimately differs between processes (wall time)."""
    return {**meta, "history": [{k: v for k, v in r.items() if k != "seconds"} for r in meta["history"]]}


def _assert_same_checkpoint(got: Path, want: Path) -> None:
    (a, meta_a), (b, meta_b) = load_checkpoint(got), load_checkpoint(want)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{got.name}: {k} differs from the uninterrupted run"
    assert _comparable(meta_a) == _comparable(meta_b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    train(TrainConfig.model_validate(CONFIG), run_dir=run_dir)
    best = [r["epoch"] for r in read_meta(run_dir / "last.safetensors")["history"] if r["is_best"]]
    assert best == [1, 3], best  # the kill points below assume this (see CONFIG)
    return run_dir


# <epoch>:<file>:<stage>: every step of the final (best) epoch's checkpoint, a non-best epoch's
# last (before and after its rename), and epoch 1's last published with no best yet.
KILLS = [f"3:last.safetensors:{s}" for s in ("written", "fsynced", "renamed", "dir-fsynced")]
KILLS += [f"3:best.safetensors:{s}" for s in ("linked", "renamed", "dir-fsynced")]
KILLS += ["2:last.safetensors:written", "2:last.safetensors:renamed", "1:last.safetensors:renamed"]


@pytest.mark.slow
@pytest.mark.parametrize("kill", KILLS)
def test_training_killed_at_a_checkpoint_step_resumes_to_the_uninterrupted_result(
    tmp_path: Path, uninterrupted: Path, kill: str
) -> None:
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(json.dumps(CONFIG))
    run_dir = tmp_path / "run"
    env = {**os.environ, "CTRW_TEST_CRASH_AT": kill, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run(
        [sys.executable, "-m", "ctrw.cli", "train", str(cfg_file), "--run-dir", str(run_dir), "--no-eval"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == CRASH_EXIT_CODE, f"not killed at {kill}:\n{proc.stderr[-3000:]}"
    epoch, name, stage = kill.split(":")
    last, best = run_dir / "last.safetensors", run_dir / "best.safetensors"
    if name == "best.safetensors":
        # Killed at the final epoch before best was brought up to date: last records epoch 3 as
        # the best, best.safetensors on disk may still be epoch 1. The worker records checkpoints
        # through settle_checkpoints, which must never hand out that stale best.
        assert read_meta(last)["best_epoch"] == 3
        if stage == "linked":
            assert read_meta(best)["epoch"] == 1
        settled = tmp_path / "settled"
        shutil.copytree(run_dir, settled)
        paths = settle_checkpoints(settled)
        _assert_same_checkpoint(paths["best"], uninterrupted / "best.safetensors")
        assert sorted(p.name for p in settled.iterdir()) == ["best.safetensors", "last.safetensors"]

    hooks = _Records()  # resumed in this process, a new one
    summary = train(TrainConfig.model_validate(CONFIG), run_dir=run_dir, hooks=hooks)
    assert summary["epochs_done"] == 3 and summary["best_epoch"] == 3
    assert hooks.epochs == [1, 2, 3]
    _assert_same_checkpoint(last, uninterrupted / "last.safetensors")
    _assert_same_checkpoint(best, uninterrupted / "best.safetensors")
    model, _, meta = load_trained_model(best)  # what the evaluation attacks
    assert meta["epoch"] == 3
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.safetensors", "last.safetensors"]


def test_a_best_that_no_kill_explains_is_an_error(tmp_path: Path) -> None:
    """Only a kill between last and best can leave them apart, and only at a best epoch."""
    meta = {"epoch": 2, "best_epoch": 1, "history": [{"epoch": 1, "loss": float("nan")}, {"epoch": 2}]}
    save_checkpoint(tmp_path / "last.safetensors", _tensors(), meta)
    with pytest.raises(CheckpointError, match="does not hold epoch 1"):
        settle_checkpoints(tmp_path)  # best missing, and last cannot stand in for epoch 1
    save_checkpoint(tmp_path / "best.safetensors", _tensors(), {**meta, "epoch": 2})
    with pytest.raises(CheckpointError, match="does not hold epoch 1"):
        settle_checkpoints(tmp_path)
    save_checkpoint(
        tmp_path / "best.safetensors", _tensors(), {**meta, "epoch": 1, "history": meta["history"][:1]}
    )
    assert settle_checkpoints(tmp_path)["best"] == tmp_path / "best.safetensors"


def test_resume_refuses_a_tampered_last_checkpoint(tmp_path: Path) -> None:
    cfg = TrainConfig.model_validate({**CONFIG, "optim": {**CONFIG["optim"], "epochs": 1}})
    train(cfg, run_dir=tmp_path)
    last = tmp_path / "last.safetensors"
    data = bytearray(last.read_bytes())
    data[-1] ^= 0xFF
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or was modified"):
        train(cfg, run_dir=tmp_path)
