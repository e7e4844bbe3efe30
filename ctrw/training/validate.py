"""Epoch-end measurements: clean and PGD accuracy on the validation split, and σ statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ctrw.attacks.pgd import pgd_linf
from ctrw.data import TensorSplit, iterate_batches, num_batches
from ctrw.hooks import Hooks, Progress
from ctrw.nn.random_weight import random_layers, resample
from ctrw.training import setup
from ctrw.training.step import autocast_once

if TYPE_CHECKING:
    from ctrw.training.state import TrainState

__all__ = ["sigma_summary", "validate"]


@torch.no_grad()
def _predict(state: TrainState, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(state.device.type, dtype=torch.bfloat16, enabled=state.autocast_dtype() is not None):
        return state.model(x).argmax(1)


def validate(state: TrainState, hooks: Hooks) -> dict[str, float | None]:
    """Clean and PGD accuracy on the validation split, paper protocol (draw A / draw B), in
    batches of ``setup.val_batch_size`` (large on CUDA)."""
    cfg, model, device = state.config, state.model, state.device
    split = state.data.val
    if split is None:
        return {"val_clean_acc": None, "val_pgd_acc": None}
    if isinstance(split, TensorSplit):
        split = split.head(cfg.val_examples)
    model.eval()
    bs = setup.val_batch_size(cfg, device)
    clean = torch.zeros((), device=device, dtype=torch.long)
    robust = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    n_b = num_batches(split, bs, drop_last=False)
    for i, (x, y) in enumerate(iterate_batches(split, bs, device=device, shuffle=False), start=1):
        if n >= (cfg.val_examples or float("inf")):
            break
        resample(model)
        clean += (_predict(state, x) == y).sum()
        if cfg.val_pgd_steps > 0:
            resample(model)  # draw A attacks
            with autocast_once(state):
                x_adv = pgd_linf(
                    model,
                    x,
                    y,
                    eps=cfg.attack.eps,
                    step_size=cfg.attack.step_size,
                    steps=cfg.val_pgd_steps,
                    random_start=True,
                    generator=state.attack_gen,
                    autocast_dtype=state.autocast_dtype(),
                )
            resample(model)  # draw B judges
            robust += (_predict(state, x_adv) == y).sum()
        n += y.shape[0]
        hooks.on_progress(Progress("validate", state.epoch + 1, cfg.optim.epochs, i, n_b))
    model.train()
    n = max(n, 1)
    return {
        "val_clean_acc": float(clean) / n,
        "val_pgd_acc": float(robust) / n if cfg.val_pgd_steps > 0 else None,
    }


def sigma_summary(model: nn.Module) -> dict[str, float | None]:
    """Sum, min, mean and max of σ and the mean of μ over all random layers (None without any)."""
    layers = random_layers(model)
    if not layers:
        return {k: None for k in ("sigma_sum", "sigma_min", "sigma_mean", "sigma_max", "mu_mean")}
    s = torch.cat([m.sigma.detach().flatten() for m in layers]).double()
    mu = torch.cat([m.mu.detach().flatten() for m in layers]).double()
    return {
        "sigma_sum": float(s.sum()),
        "sigma_min": float(s.min()),
        "sigma_mean": float(s.mean()),
        "sigma_max": float(s.max()),
        "mu_mean": float(mu.mean()),
    }
