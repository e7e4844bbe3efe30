"""What each training variant does with σ, in one place.

| variant       | bounds it needs at the start     | σ at the start            | after every update      |
|---------------|----------------------------------|---------------------------|-------------------------|
| baseline      | none (no random weight)          | -                         | -                       |
| unconstrained | none                             | learned from its init     | nothing                 |
| fixed_std     | lower                            | uniform at the lower bound, frozen | nothing        |
| fixed_sigma   | ``fixed_sigma_at`` (lower/upper/mid) | uniform there, frozen | nothing                 |
| ctrw          | lower and upper (floor rule: lower) | learned                | sum or floor rule       |

A bound a variant needs that cannot be computed at the start is an error; any other is recorded
as an event, never silently missing.
"""

from __future__ import annotations

import torch
from torch import nn

from ctrw.catalog import DEFENSES
from ctrw.config import TrainConfig
from ctrw.nn.bounds import LayerBounds, fixed_sigma_sum
from ctrw.nn.constraint import apply_floor_rule, apply_sum_rule
from ctrw.nn.random_weight import random_layers

__all__ = [
    "bounds_used",
    "check_initial_bounds",
    "constrain_sigma",
    "freeze_fixed_sigma",
    "recompute_every_epoch",
]


def bounds_used(config: TrainConfig) -> tuple[str, ...]:
    """The bound sides (``lower``, ``upper``) the variant of ``config`` relies on."""
    at = {"ctrw": "both", "fixed_std": "lower", "fixed_sigma": config.fixed_sigma_at}.get(config.variant)
    if config.variant == "ctrw" and config.bounds.rule == "floor":
        at = "lower"
    return {"both": ("lower", "upper"), "mid": ("lower", "upper"), None: ()}.get(at, (at,))


def check_initial_bounds(config: TrainConfig, bounds: list[LayerBounds]) -> list[str]:
    """The events of the bounds that could not be computed at the start of training.

    Raises:
        ValueError: a bound the variant uses could not be computed.
    """
    used, events = bounds_used(config), []
    for i, b in enumerate(bounds):
        for side, why in b.notes.items():
            if side in used:
                raise ValueError(f"bounds.{side}: {why} at the start of training (random layer {i})")
            events.append(f"start: bounds.{side} of random layer {i}: {why}")
    return events


def freeze_fixed_sigma(config: TrainConfig, model: nn.Module, bounds: list[LayerBounds]) -> None:
    """fixed_std / fixed_sigma: σ uniform at the chosen bound and frozen (other variants: nothing)."""
    v = config.variant
    if v not in ("fixed_std", "fixed_sigma"):
        return
    at = "lower" if v == "fixed_std" else config.fixed_sigma_at
    for layer, b in zip(random_layers(model), bounds, strict=True):
        try:
            total = fixed_sigma_sum(at, b)
        except ValueError as e:
            raise ValueError(f"variant {v}: {e}") from None
        with torch.no_grad():
            layer.sigma.fill_(float(total) / layer.sigma.numel())
        layer.sigma.requires_grad_(False)


def constrain_sigma(config: TrainConfig, model: nn.Module, bounds: list[LayerBounds]) -> None:
    """ctrw: put σ back inside its bounds (sum or floor rule); the other variants leave σ alone."""
    if config.variant != "ctrw":
        return
    rule = config.bounds.rule
    for layer, b in zip(random_layers(model), bounds, strict=True):
        if rule == "floor":
            apply_floor_rule(layer.sigma.data, b.lower)  # type: ignore[arg-type]
        else:
            apply_sum_rule(layer.sigma.data, b.lower, b.upper)


def recompute_every_epoch(config: TrainConfig) -> bool:
    """Lemma bounds depend on the weights, so they are recomputed at each epoch end when asked
    (only for a variant whose network carries a random weight: the bounds are σ's)."""
    b = config.bounds
    lemma = any(getattr(x, "kind", None) in ("lemma1", "lemma2") for x in (b.lower, b.upper))
    return b.recompute_every_epoch and lemma and DEFENSES[config.variant].random_weight
