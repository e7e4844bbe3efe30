"""Lean L-inf PGD used by training and by our own evaluation paths.

Lean means: only the input gradient is requested (`torch.autograd.grad(loss, delta)`), so no
weight gradients are computed (~2 forward-equivalents per step instead of ~3), and nothing
leaves the device. The loss is summed over the batch so a sign step does not depend on the
batch size, and any loss scale is exact for sign-based steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.nn.random_weight import eot_groups

__all__ = ["pgd_linf"]


def pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    eot_draws: int = 1,
    autocast_dtype: torch.dtype | None = None,
    eot_chunk: int | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy inside an eps L-inf ball around x.

    Args:
        x: clean images in [0, 1], shape (B, C, H, W).
        eot_draws: > 1 averages the gradient over that many draws, batched as one forward of
            eot_draws stacked copies (the random layers must be in 'per_forward' mode for the
            draws to differ).
        autocast_dtype: run forwards under autocast (bf16 on CUDA); the sign step is unaffected.
        eot_chunk: at most this many stacked copies per forward (memory bound for many draws);
            the gradients of the chunks are summed. None = all eot_draws copies in one forward.

    Returns:
        Detached adversarial images in [0, 1].
    """
    x = x.detach()
    if steps == 0 or eps == 0:
        return x.clone()
    if random_start:
        delta = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
        delta = (x + delta).clamp(0, 1) - x
    else:
        delta = torch.zeros_like(x)
    chunk = eot_draws if eot_chunk is None else max(1, min(eot_chunk, eot_draws))
    sizes = [min(chunk, eot_draws - i) for i in range(0, eot_draws, chunk)]  # copies per forward
    for _ in range(steps):
        delta.requires_grad_(True)
        grad: torch.Tensor | None = None
        for k in sizes:
            inp = x + delta
            if k > 1:
                inp = inp.repeat(k, 1, 1, 1)  # (k*B, C, H, W)
            with torch.autocast(
                x.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
            ):
                if k > 1:
                    with eot_groups(model, k):
                        logits = model(inp)
                else:
                    logits = model(inp)
            loss = F.cross_entropy(logits.float(), y.repeat(k) if k > 1 else y, reduction="sum")
            g = torch.autograd.grad(loss, delta)[0]
            grad = g if grad is None else grad + g  # no extra buffer for the usual single chunk
        with torch.no_grad():
            delta = (delta + step_size * grad.sign()).clamp(-eps, eps)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()
