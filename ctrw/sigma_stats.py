"""sigma statistics: summaries, histograms, the Table 6 statistic and input-gradient similarity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.random_weight import RandomWeight, random_layers, resample, sampling

__all__ = ["gradient_cosine", "histogram", "sigma_report", "table6_statistic"]


def histogram(t: torch.Tensor, bins: int = 30) -> dict[str, list[float]]:
    v = t.detach().double().flatten().cpu()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + 1e-12
    counts = torch.histc(v, bins=bins, min=lo, max=hi)
    edges = torch.linspace(lo, hi, bins + 1)
    return {"edges": edges.tolist(), "counts": [int(c) for c in counts.tolist()]}


@torch.no_grad()
def table6_statistic(
    mu: torch.Tensor,
    sigma: torch.Tensor,
    *,
    n_pairs: int = 100_000,
    eps_r: float = 0.01,
    chunk: int = 1024,
    generator: torch.Generator | None = None,
) -> dict[str, float | int]:
    """Over ``n_pairs`` independent pairs W1, W2 ~ N(mu, sigma^2): how many have
    cos(W1, W2) <= eps_r ("positive samples"), their ratio, and the minimum cosine.

    Pairs are drawn in chunks so memory stays at ~2 * chunk * numel floats.
    """
    mu_f, sig_f = mu.detach().flatten().float(), sigma.detach().flatten().float()  # (m,)
    m = mu_f.numel()
    positive, min_cos, done = 0, float("inf"), 0
    while done < n_pairs:
        b = min(chunk, n_pairs - done)
        z = torch.randn((2, b, m), generator=generator, device=mu_f.device)
        w = mu_f + z * sig_f  # (2, b, m)
        cos = F.cosine_similarity(w[0].double(), w[1].double(), dim=1)  # (b,)
        positive += int((cos <= eps_r).sum())
        min_cos = min(min_cos, float(cos.min()))
        done += b
    return {
        "n_pairs": n_pairs,
        "eps_r": eps_r,
        "positive": positive,
        "ratio": positive / n_pairs,
        "min_cos": min_cos,
    }


def gradient_cosine(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float | int]:
    """Eq. 6 on real inputs: cosine between the input gradients under two independent draws."""
    was_training = model.training
    model.eval()
    grads = []
    try:
        with sampling(model, "fixed"):
            for _ in range(2):
                resample(model)
                xr = x.detach().clone().requires_grad_(True)
                loss = F.cross_entropy(model(xr), y, reduction="sum")
                (g,) = torch.autograd.grad(loss, xr)
                grads.append(g.flatten(1))
    finally:
        model.train(was_training)
    cos = F.cosine_similarity(grads[0].double(), grads[1].double(), dim=1)  # (B,)
    return {
        "mean": float(cos.mean()),
        "min": float(cos.min()),
        "max": float(cos.max()),
        "n": int(cos.numel()),
    }


def _layer_names(model: nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules() if isinstance(m, RandomWeight)}


def sigma_report(
    model: nn.Module,
    *,
    bounds: Sequence[dict[str, float | None]] | None = None,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    n_pairs: int = 100_000,
    eps_r: float = 0.01,
    bins: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything the service shows about sigma, per random layer (empty for a baseline model)."""
    names = _layer_names(model)
    layers = random_layers(model)
    out: list[dict[str, Any]] = []
    grad_cos = gradient_cosine(model, x, y) if (layers and x is not None and y is not None) else None
    for i, layer in enumerate(layers):
        s, mu = layer.sigma.detach().double(), layer.mu.detach().double()
        gen = torch.Generator(device=layer.mu.device).manual_seed(seed + i)
        b = bounds[i] if bounds and i < len(bounds) else {"lower": None, "upper": None}
        out.append(
            {
                "name": names[id(layer)],
                "shape": list(layer.shape),
                "numel": s.numel(),
                "sigma_sum": float(s.sum()),
                "sigma_min": float(s.min()),
                "sigma_mean": float(s.mean()),
                "sigma_max": float(s.max()),
                "mu_mean": float(mu.mean()),
                "mu_sum": float(mu.sum()),
                "hist_sigma": histogram(s, bins),
                "hist_mu": histogram(mu, bins),
                "bound_lower": b.get("lower"),
                "bound_upper": b.get("upper"),
                "table6": table6_statistic(
                    layer.mu, layer.sigma, n_pairs=n_pairs, eps_r=eps_r, generator=gen
                ),
                "grad_cos": grad_cos,
            }
        )
    return {"layers": out}
