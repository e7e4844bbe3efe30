"""Keeping sigma inside its bounds after every optimizer step.

Both rules are written without data-dependent Python branches, so applying them never
forces a host-device sync inside the training loop.
"""

from __future__ import annotations

import torch

__all__ = ["apply_floor_rule", "apply_sum_rule"]


@torch.no_grad()
def apply_sum_rule(sigma: torch.Tensor, lower: float | None, upper: float | None) -> None:
    """The paper's rule (Eq. 5): sum(sigma) in [lower, upper], sigma >= 0, in place.

    Above the upper bound sigma is shrunk proportionally (stays >= 0); below the lower bound the
    average bias (lower - sum) / N is added to every element. If the bounds cross, the lower
    bound wins (it is the one that keeps the defense random).
    """
    sigma.clamp_(min=0)
    if upper is not None:
        total = sigma.sum()
        sigma.mul_(torch.where(total > upper, upper / total.clamp_min(1e-30), torch.ones_like(total)))
    if lower is not None:
        total = sigma.sum()
        sigma.add_((lower - total).clamp_min(0) / sigma.numel())


@torch.no_grad()
def apply_floor_rule(sigma: torch.Tensor, lower: float) -> None:
    """The published code's rule: floor f = lower / N; if min(sigma) < f, every element below f
    is raised by f - min(sigma). Afterwards min(sigma) >= f, hence sum(sigma) >= lower."""
    floor = lower / sigma.numel()
    lift = (floor - sigma.min()).clamp_min(0)
    sigma.add_(torch.where(sigma < floor, lift, torch.zeros_like(sigma)))
    sigma.clamp_(min=floor)  # only removes float rounding of min + (f - min) below f
