"""sigma statistics: summaries, histograms, the Table 6 statistic, a check of Lemma 1's promise
against the measured statistic, and input-gradient similarity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.nn.bounds import lemma1_lower_bound
from ctrw.nn.random_weight import RandomWeight, random_layers, resample, sampling
from ctrw.paper.values import TABLE6
from ctrw.records import SigmaLayer

__all__ = ["gradient_cosine", "histogram", "lemma1_check", "sigma_report", "table6_statistic"]

# The paper's experiments: |alpha| = 1e-3 (Section 4.1).
PAPER_ALPHA = -1e-3


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


def _std_normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval for k successes in n trials (sensible at k = 0 and k = n)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@torch.no_grad()
def lemma1_check(
    mu: torch.Tensor,
    sigma: torch.Tensor,
    table6: dict[str, float | int],
    *,
    alpha: float = PAPER_ALPHA,
    p: float = 2.0,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Lemma 1's promise beside what the Table 6 statistic measured, with a verdict.

    Lemma 1 promises P(cos(W1, W2) <= eps_r) > F(alpha) whenever sum(sigma) >= A (Eq. 10). Here
    A is evaluated at this layer's mu for one draw W1, W2 ~ N(mu, sigma^2), and the measured P is
    the Table 6 ratio with a 95% Wilson interval. The paper's formulas are unchanged;
    this only reports whether they hold for this layer.

    Args:
        mu, sigma: the layer's parameters.
        table6: the result of ``table6_statistic`` for the same layer (its eps_r is used).
        alpha: Lemma 1's alpha (< 0); the paper's experiments use -1e-3.
        p: the norm in eps_r'.
        generator: for the draw W1, W2 of A.

    Returns:
        alpha, eps_r, promised_p (F(alpha)), bound_A (None where the lemma's assumption
        sum(mu) >> 0 fails), sigma_sum, condition_met (sum(sigma) >= A), measured_p, its 95%
        interval, holds (True / False / None when the lemma promises nothing), the paper's own
        Table 6 ratios and a plain-language verdict.
    """
    mu_f, sig_f = mu.detach().flatten().double(), sigma.detach().flatten().double()
    z = torch.randn((2, mu_f.numel()), generator=generator, device=mu.device).double()
    w1, w2 = mu_f + z[0] * sig_f, mu_f + z[1] * sig_f
    eps_r = float(table6["eps_r"])
    bound = lemma1_lower_bound(mu_f, w1, w2, alpha=alpha, eps_r=eps_r, p=p)
    promised = _std_normal_cdf(alpha)
    k, n = int(table6["positive"]), int(table6["n_pairs"])
    measured = k / n
    lo, hi = _wilson(k, n)
    total = float(sig_f.sum())
    condition = bound is not None and total >= bound
    paper = {f"{m}/{d}": v["ratio"] for (m, d, c), v in TABLE6.items() if c}
    paper_text = ", ".join(f"{r:.4f} ({key.split('/')[1]})" for key, r in paper.items())

    def _p(v: float) -> str:  # small probabilities keep their magnitude
        return f"{v:.4f}" if v == 0 or v >= 1e-3 else f"{v:.1e}"

    measured_text = (
        f"measured P(cos(W1, W2) <= {eps_r:g}) = {_p(measured)} (95% CI [{_p(lo)}, {_p(hi)}], {n} pairs)"
    )
    promise_text = f"F(alpha) = F({alpha:g}) = {promised:.4f}"
    if bound is None:
        holds = None
        verdict = (
            f"Lemma 1 promises nothing here: its assumption sum(mu) >> 0 fails (sum(mu) = "
            f"{float(mu_f.sum()):.4g}), so it gives no bound A. For reference, {measured_text}."
        )
    elif not condition:
        holds = None
        verdict = (
            f"Lemma 1 promises nothing here: sum(sigma) = {total:.4g} is below its bound A = {bound:.4g}. "
            f"For reference, {measured_text}; the lemma would promise more than {promise_text} above A."
        )
    elif hi < promised:
        holds = False
        verdict = (
            f"Lemma 1 does not hold here: sum(sigma) = {total:.4g} >= A = {bound:.4g}, so the lemma "
            f"promises P > {promise_text}, but {measured_text}. Do not read the bound A as a "
            f"guarantee of dissimilar draws."
        )
    else:
        holds = True
        verdict = (
            f"Consistent with Lemma 1: sum(sigma) = {total:.4g} >= A = {bound:.4g} and {measured_text}, "
            f"not below the promised {promise_text}."
        )
    verdict += (
        f" The paper's own Table 6 ratios, {paper_text}, are below F({alpha:g}) = {promised:.4f} too."
        if all(r < promised for r in paper.values())
        else ""
    )
    return {
        "alpha": alpha,
        "eps_r": eps_r,
        "promised_p": promised,
        "bound_A": bound,
        "sigma_sum": total,
        "condition_met": condition,
        "measured_p": measured,
        "measured_ci": [lo, hi],
        "holds": holds,
        "paper_table6_ratios": paper,
        "verdict": verdict,
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
    alpha: float = PAPER_ALPHA,
) -> dict[str, Any]:
    """Everything the service shows about sigma, per random layer (empty for a baseline model).

    Each layer's ``table6`` carries ``lemma1``: Lemma 1's promise (with ``alpha``) beside the
    measured statistic, with a verdict (see ``lemma1_check``).
    """
    names = _layer_names(model)
    layers = random_layers(model)
    out: list[dict[str, Any]] = []
    grad_cos = gradient_cosine(model, x, y) if (layers and x is not None and y is not None) else None
    for i, layer in enumerate(layers):
        s, mu = layer.sigma.detach().double(), layer.mu.detach().double()
        gen = torch.Generator(device=layer.mu.device).manual_seed(seed + i)
        b = bounds[i] if bounds and i < len(bounds) else {"lower": None, "upper": None}
        t6 = table6_statistic(layer.mu, layer.sigma, n_pairs=n_pairs, eps_r=eps_r, generator=gen)
        # Stored inside table6 (the service keeps that dict as it is), so the API serves it too.
        t6["lemma1"] = lemma1_check(layer.mu, layer.sigma, t6, alpha=alpha, generator=gen)
        out.append(
            SigmaLayer(
                name=names[id(layer)],
                shape=list(layer.shape),
                numel=s.numel(),
                sigma_sum=float(s.sum()),
                sigma_min=float(s.min()),
                sigma_mean=float(s.mean()),
                sigma_max=float(s.max()),
                mu_mean=float(mu.mean()),
                mu_sum=float(mu.sum()),
                hist_sigma=histogram(s, bins),
                hist_mu=histogram(mu, bins),
                bound_lower=b.get("lower"),
                bound_upper=b.get("upper"),
                table6=t6,
                grad_cos=grad_cos,
            ).model_dump()
        )
    return {"layers": out}
