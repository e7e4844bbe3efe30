"""Checkpoints written on a background thread: an epoch counts as done only once its checkpoint is
durable. The kills at every stage of a write are in tests/ctrw/test_checkpoint.py."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from safetensors import SafetensorError

from ctrw.checkpoint import read_meta
from ctrw.hooks import Cancelled, Hooks
from ctrw.training import train
from ctrw.training.writer import CheckpointWriter
from tests.support.models import train_config


def tiny(**over):
    base = {
        "model": {"name": "small_cnn", "width": 0.25},
        "data": {
            "dataset": "synthetic",
            "image_size": 8,
            "channels": 1,
            "synthetic_train": 64,
            "synthetic_test": 32,
        },
        "optim": {"epochs": 3, "batch_size": 16, "milestones": [2]},
        "attack": {"steps": 1},
        "val_pgd_steps": 1,
        "val_examples": 16,
        "bounds": {"lower": {"kind": "fraction", "value": 0.5}, "upper": {"kind": "fraction", "value": 1.5}},
        "evaluation": None,
        "amp": False,
    }
    return train_config(base, over)


class Watch(Hooks):
    """Checks, at every report, that what is reported is already on disk."""

    def __init__(self, run_dir: Path, cancel_at_epoch: int | None = None) -> None:
        self.run_dir, self.cancel_at = run_dir, cancel_at_epoch
        self.epochs: list[int] = []
        self.progress_epochs: list[int] = []

    def durable_epoch(self) -> int:
        last = self.run_dir / "last.safetensors"
        return read_meta(last)["epoch"] if last.is_file() else 0

    def on_epoch(self, r) -> None:
        assert self.durable_epoch() >= r["epoch"], "an epoch was reported before its checkpoint was durable"
        assert not (self.run_dir / "last.safetensors.tmp").exists()
        self.epochs.append(r["epoch"])

    def on_progress(self, p) -> None:
        # Progress of epoch e only once epoch e-1 is durable and reported.
        assert self.durable_epoch() >= p.epoch - 1 and (self.epochs[-1:] or [0])[0] >= p.epoch - 1
        self.progress_epochs.append(p.epoch)

    def should_cancel(self) -> bool:
        return (
            self.cancel_at is not None
            and bool(self.progress_epochs)
            and self.progress_epochs[-1] >= self.cancel_at
        )


def test_an_epoch_is_reported_only_once_its_checkpoint_is_durable(tmp_path):
    hooks = Watch(tmp_path)
    summary = train(tiny(), run_dir=tmp_path, hooks=hooks)
    assert hooks.epochs == [1, 2, 3] and summary["epochs_done"] == 3
    assert read_meta(tmp_path / "last.safetensors")["epoch"] == 3
    best = read_meta(tmp_path / "best.safetensors")
    assert best["epoch"] == summary["best_epoch"]
    if summary["best_epoch"] == 3:  # best published by a hard link to last
        assert os.stat(tmp_path / "best.safetensors").st_ino == os.stat(tmp_path / "last.safetensors").st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "last.safetensors"]
    assert not any(t.name == "ctrw-checkpoint" for t in threading.enumerate())  # nothing left running


def test_a_cancel_while_a_write_is_in_flight_keeps_and_reports_the_finished_epoch(tmp_path):
    hooks = Watch(tmp_path, cancel_at_epoch=2)
    with pytest.raises(Cancelled):
        train(tiny(), run_dir=tmp_path, hooks=hooks)
    assert hooks.epochs == [1] and read_meta(tmp_path / "last.safetensors")["epoch"] == 1
    resumed = Watch(tmp_path)
    assert train(tiny(), run_dir=tmp_path, hooks=resumed)["epochs_done"] == 3
    assert resumed.epochs == [1, 2, 3]  # the stored history, then the epochs left


def test_a_failed_write_fails_the_run_and_its_epoch_is_never_reported(tmp_path):
    (tmp_path / "last.safetensors.tmp").mkdir()  # the write of the first checkpoint cannot succeed
    hooks = Watch(tmp_path)
    with pytest.raises((OSError, SafetensorError)):  # raised on the training thread
        train(tiny(optim={"epochs": 1}), run_dir=tmp_path, hooks=hooks)
    assert hooks.epochs == [] and not (tmp_path / "last.safetensors").exists()


def test_the_writer_runs_one_write_at_a_time_and_reports_on_the_callers_thread():
    writer, log = CheckpointWriter(), []
    release = threading.Event()
    caller = threading.get_ident()
    writer.submit(
        lambda: (release.wait(10), log.append("write 1")),
        done=lambda: log.append(("done 1", threading.get_ident())),
    )
    assert writer.in_flight and not writer.poll()  # still writing: nothing reported
    release.set()
    writer.submit(lambda: log.append("write 2"), done=lambda: log.append(("done 2", threading.get_ident())))
    writer.wait()
    assert log == ["write 1", ("done 1", caller), "write 2", ("done 2", caller)]
    assert writer.poll() and not writer.in_flight
