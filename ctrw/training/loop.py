"""Black-box adversarial training (Algorithm 1) with exact resume, top to bottom.

``train``: set up, resume from ``last`` if there is one, then per epoch: the batches (one
Algorithm 1 step each, ``ctrw.training.step``), validation, the epoch record, the checkpoint.
Metrics are accumulated on the device and read once per epoch; nothing in the batch loop
synchronises with the host. The checkpoint is written on a background thread while the next
epoch starts, and the epoch is reported (``hooks.on_epoch``) once it is durable
(``ctrw.training.writer``).
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ctrw.config import TrainConfig
from ctrw.data import iterate_batches, num_batches
from ctrw.hooks import Cancelled, Hooks, Progress
from ctrw.nn.sigma_policy import recompute_every_epoch
from ctrw.records import EpochRecord
from ctrw.training import distributed, setup
from ctrw.training.state import BEST, LAST, TrainState, settle_checkpoints
from ctrw.training.validate import sigma_summary
from ctrw.training.writer import CheckpointWriter, DeferredHooks

__all__ = ["epoch_record", "train", "train_epoch"]

log = logging.getLogger(__name__)


def train(config: TrainConfig, *, run_dir: Path, hooks: Hooks | None = None) -> dict[str, Any]:
    """Train (or resume) a model; checkpoints go to ``run_dir``.

    Resumes from ``run_dir/last.safetensors`` when it exists and was written for the same config.
    Every finished epoch calls ``hooks.on_epoch(record)``; on resume the stored history is
    re-emitted first, so a caller that lost some records catches up (the calls are idempotent
    by epoch number).

    Returns:
        {"best_checkpoint", "last_checkpoint", "epochs_done", "best_epoch", "stopped_early"}.
    """
    caller_hooks = hooks or Hooks()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = TrainState.create(config)
    state.dist = distributed.attach(state)  # one rank of several (ctrw.training.distributed)
    main = state.dist is None or state.dist.rank == 0
    writer = CheckpointWriter() if main else distributed.NoCheckpoints()
    hooks = DeferredHooks(caller_hooks, writer)
    if (run_dir / LAST).is_file():
        state.restore(run_dir / LAST)
        if main:
            settle_checkpoints(run_dir)
        log.info("resumed %s at epoch %d", run_dir, state.epoch)
        for rec in state.history:
            hooks.on_epoch(rec)
    try:
        stopped_early = _epochs(state, run_dir, hooks, writer)
    finally:
        writer.wait()  # the last checkpoint is durable (and reported) before train returns or raises
    return {
        "best_checkpoint": str(run_dir / BEST),
        "last_checkpoint": str(run_dir / LAST),
        "epochs_done": state.epoch,
        "best_epoch": state.best_epoch,
        "stopped_early": stopped_early,
    }


def _epochs(state: TrainState, run_dir: Path, hooks: Hooks, writer: CheckpointWriter) -> bool:
    """The epochs left; True when stopped early."""
    config = state.config
    has_val = state.data.val is not None
    while state.epoch < config.optim.epochs:
        t0 = time.perf_counter()
        metrics: dict[str, Any] = state.train_epoch(hooks)
        metrics.update(state.validate(hooks))
        if recompute_every_epoch(config):
            state.recompute_bounds()
        state.epoch += 1
        metric = (
            metrics["val_pgd_acc"] if metrics.get("val_pgd_acc") is not None else metrics.get("val_clean_acc")
        )
        # Without a validation split every epoch is "best" (i.e. the last one is used).
        is_best = (not has_val) or metric is None or metric > state.best_metric
        if is_best:
            state.best_metric = metric if metric is not None else state.best_metric
            state.best_epoch = state.epoch
        record = epoch_record(state, metrics, seconds=time.perf_counter() - t0, is_best=is_best)
        state.bound_events = []
        state.history.append(record)
        writer.submit(
            state.checkpoint_writer(run_dir, best=is_best), done=functools.partial(_report, hooks, record)
        )
        patience = config.optim.early_stop_patience
        if patience and has_val and state.epoch - state.best_epoch >= patience:
            return True
    return False


def _report(hooks: Hooks, record: dict[str, Any]) -> None:
    """An epoch whose checkpoint is durable: now it counts as done."""
    hooks.on_epoch(record)
    log.info("epoch %d: %s", record["epoch"], {k: v for k, v in record.items() if k != "bounds"})


def train_epoch(state: TrainState, hooks: Hooks) -> dict[str, float]:
    """One pass over the training split, one Algorithm 1 step per batch (drop_last: fixed shapes)."""
    cfg, dev = state.config, state.device
    lr = setup.lr_at(cfg, state.epoch)
    for g in state.optimizer.param_groups:
        g["lr"] = lr
    state.model.train()
    n_b = num_batches(state.data.train, cfg.optim.batch_size, drop_last=True)
    loss_sum = torch.zeros((), device=dev)
    adv_correct = torch.zeros((), device=dev, dtype=torch.long)
    clean_correct = torch.zeros((), device=dev, dtype=torch.long)
    seen = clean_seen = 0
    every = setup.clean_acc_every(cfg, dev)
    batches = (iterate_batches if state.dist is None else state.dist.batches)(
        state.data.train,
        cfg.optim.batch_size,
        device=dev,
        shuffle=True,
        generator=state.data_gen,
        drop_last=True,
        augment=state.data.augment,
        num_workers=cfg.data.imagenet_workers,
    )
    for i, (x, y) in enumerate(batches, start=1):
        if setup.uses_channels_last(cfg, dev):
            x = x.contiguous(memory_format=torch.channels_last)
        measure_clean = (i - 1) % every == 0
        loss, adv_ok, clean_ok = state.train_step(x, y, measure_clean=measure_clean)
        loss_sum += loss * y.shape[0]
        adv_correct += adv_ok
        clean_correct += clean_ok
        seen += y.shape[0]
        clean_seen += y.shape[0] if measure_clean else 0
        hooks.on_progress(Progress("train", state.epoch + 1, cfg.optim.epochs, i, n_b))
        if hooks.should_cancel():
            raise Cancelled(f"cancelled during epoch {state.epoch + 1}")
    if state.dist is not None:  # the global batch's metrics
        loss_sum, adv_correct, clean_correct, seen, clean_seen = state.dist.sum(
            loss_sum, adv_correct, clean_correct, seen, clean_seen
        )
    seen, clean_seen = max(seen, 1), max(clean_seen, 1)
    return {
        "lr": lr,
        "train_loss": float(loss_sum) / seen,
        "train_adv_acc": float(adv_correct) / seen,
        # On the batches measured (every ``clean_acc_every``-th, the first included): an unbiased
        # sample of the epoch's batches, each measured with the weights before its update.
        "train_clean_acc": float(clean_correct) / clean_seen,
    }


def epoch_record(
    state: TrainState, metrics: dict[str, Any], *, seconds: float, is_best: bool
) -> dict[str, Any]:
    """The one place an epoch's record is put together (``state.epoch`` already counts this epoch).

    ``metrics``: what ``train_epoch`` and ``validate`` measured; σ statistics and bounds are added.
    Its fields are ``ctrw.records.EpochRecord``'s (a new metric is declared there first).
    """
    return EpochRecord(
        epoch=state.epoch,
        **metrics,
        **sigma_summary(state.model),
        bound_lower=state.bounds[0].lower if state.bounds else None,
        bound_upper=state.bounds[0].upper if state.bounds else None,
        bounds=[b.as_dict() for b in state.bounds],
        # Bounds that could not be computed (lemmas): never a silently missing bound.
        bound_events=state.bound_events,
        seconds=seconds,
        is_best=is_best,
    ).model_dump()
