"""Bounds on sum(sigma): the paper's fixed numbers (default), the paper's two lemmas, or fixed numbers.

The paper's numbers (kind 'paper'): A = 1000 and B = 2400 for CIFAR at position 0, whose layer has
3 x 32 x 32 = 3072 sigma elements, and the same per element for any other layer size
(``ctrw.config.paper_bound_sum``). These are the values the paper's experiments use (Section 4.1
"estimated as 1x10^3", Section 4.2 "B ~ 2400", Figure 3b).

Lemma 1 (gradient similarity, lower bound A): for a fixed draw W1 and a second draw W2,
    A = (eps_r' - sum(mu)) / (alpha * sum|W1|),   eps_r' = eps_r * ||W1||_p * ||W2||_p,
with alpha < 0. Assumption: sum(mu) >> 0 (then eps_r' - sum(mu) < 0 and A > 0); when it fails
the bound is reported as not applicable (None) rather than as a meaningless number. With
mu = 1 and alpha = -1e-3 this gives A ~ 820-850 (sigma = 1) whatever the layer size, near the
"~1e3" of the paper. It depends on mu and on the draw W1, W2, so it moves as mu trains when
recomputed every epoch. What the lemma does NOT deliver: with mu = 1 and sum(sigma) = 1000 >= A
over 3072 elements, the measured P(cos(W1, W2) <= eps_r) is 0, not > F(alpha) ~ 0.5
(``ctrw.evaluation.sigma_stats.lemma1_check`` reports this beside every model's Table 6 statistic).

Lemma 2 (natural performance, upper bound B): the spread sigma' that the random weight causes
in the logits must satisfy sum(sigma') <= eps_y / (|x^{n-1} . W^n| * beta). We read
|x^{n-1} . W^n| as the mean absolute pre-bias logit over the given examples, and sigma' as the
per-logit standard deviation across draws, summed over logits and averaged over examples. The
paper only states sigma' proportional to sigma; we measure that ratio k = sum(sigma') / sum(sigma)
by Monte Carlo at the current sigma and return B = bound / k. This is a linearisation: it is
exact for a network that is linear in W and approximate otherwise. On an untrained network the
logits are tiny and B is huge (3e8 for an untrained CIFAR ResNet18 on random images): no upper
bound in effect.

A lemma bound that cannot be computed comes back as None with the reason in ``LayerBounds.notes``;
the training loop turns it into an error (at the start) or a recorded event (later), never a
silently missing bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ctrw.config import (
    BoundsConfig,
    FixedBound,
    FractionBound,
    Lemma1Bound,
    Lemma2Bound,
    PaperBound,
    paper_bound_sum,
)
from ctrw.nn.models import CTRWNet
from ctrw.nn.random_weight import RandomWeight, sampling

__all__ = ["LayerBounds", "fixed_sigma_sum", "lemma1_lower_bound", "lemma2_upper_bound", "resolve_bounds"]


@dataclass
class LayerBounds:
    """The bounds A (lower) and B (upper) on sum(sigma) of one random layer.

    ``notes`` says why a configured bound is None (not stored with the bounds).
    """

    lower: float | None
    upper: float | None
    notes: dict[str, str] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, float | None]:
        return {"lower": self.lower, "upper": self.upper}


def fixed_sigma_sum(at: str, bounds: LayerBounds) -> float:
    """sum(sigma) of a fixed-sigma model (fixed_std: 'lower'; Table 7: 'lower', 'upper', 'mid').

    Raises:
        ValueError: the bound it needs is missing.
    """
    need = ("lower",) if at == "lower" else ("upper",) if at == "upper" else ("lower", "upper")
    missing = [s for s in need if getattr(bounds, s) is None]
    if missing:
        why = "; ".join(bounds.notes.get(s, f"no {s} bound configured") for s in missing)
        raise ValueError(f"sigma fixed at '{at}' needs bounds.{' and bounds.'.join(missing)}: {why}")
    if at == "lower":
        return float(bounds.lower)  # type: ignore[arg-type]
    if at == "upper":
        return float(bounds.upper)  # type: ignore[arg-type]
    return (float(bounds.lower) + float(bounds.upper)) / 2  # type: ignore[arg-type]


def lemma1_lower_bound(
    mu: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, *, alpha: float, eps_r: float, p: float = 2.0
) -> float | None:
    """Lemma 1's lower bound A on sum(sigma); None when its assumption sum(mu) >> 0 fails."""
    if alpha >= 0:
        raise ValueError("Lemma 1 needs alpha < 0")
    mu64, w1_64, w2_64 = mu.double(), w1.double(), w2.double()
    eps_r_prime = eps_r * torch.linalg.vector_norm(w1_64, ord=p) * torch.linalg.vector_norm(w2_64, ord=p)
    numerator = eps_r_prime - mu64.sum()
    if numerator >= 0:
        return None
    return float(numerator / (alpha * w1_64.abs().sum()))


@torch.no_grad()
def lemma2_upper_bound(
    model: CTRWNet, layer: RandomWeight, x: torch.Tensor, *, beta: float, eps_y: float, n_draws: int = 8
) -> float | None:
    """Lemma 2's upper bound B on sum(sigma) of ``layer`` (see module docstring).

    Returns None when sigma is all zero (the ratio sigma'/sigma cannot be measured).
    """
    sigma_sum = float(layer.sigma.double().sum())
    if sigma_sum <= 0:
        return None
    was_training = model.training
    model.eval()
    try:
        with sampling(model, "mean"):
            feats = model.forward_features(x).double()  # (N, C): x^{n-1} at W = mu
        logits_nb = feats @ model.head.fc.weight.double().T  # (N, K) pre-bias logits
        scale = float(logits_nb.abs().mean())
        with sampling(model, "per_forward"):
            draws = torch.stack([model(x).double() for _ in range(n_draws)])  # (D, N, K)
        sigma_prime = float(draws.std(dim=0).sum(dim=1).mean())
    finally:
        model.train(was_training)
    if scale <= 0 or sigma_prime <= 0:
        return None
    bound_prime = eps_y / (scale * beta)
    return bound_prime / (sigma_prime / sigma_sum)


def resolve_bounds(
    cfg: BoundsConfig, model: CTRWNet, layer: RandomWeight, x: torch.Tensor | None
) -> LayerBounds:
    """Evaluate the configured lower/upper bound for one random layer.

    A lemma bound that does not exist at the current weights is None, with the reason in
    ``notes`` under "lower" / "upper".
    """
    n = layer.sigma.numel()
    lower = upper = None
    notes: dict[str, str] = {}
    lb = cfg.lower
    if isinstance(lb, PaperBound):
        lower = paper_bound_sum("lower", n)
    elif isinstance(lb, FixedBound):
        lower = lb.value
    elif isinstance(lb, FractionBound):
        lower = lb.value * n
    elif isinstance(lb, Lemma1Bound):
        with torch.no_grad():
            w1 = layer.mu + layer.draw() * layer.sigma
            w2 = layer.mu + layer.draw() * layer.sigma
            lower = lemma1_lower_bound(layer.mu, w1, w2, alpha=lb.alpha, eps_r=lb.eps_r, p=lb.p)
            if lower is None:
                eps_r_prime = lb.eps_r * float(
                    torch.linalg.vector_norm(w1.double(), ord=lb.p)
                    * torch.linalg.vector_norm(w2.double(), ord=lb.p)
                )
                notes["lower"] = (
                    f"Lemma 1 has no bound here: its assumption sum(mu) >> 0 fails "
                    f"(sum(mu) = {float(layer.mu.double().sum()):.4g} <= eps_r' = {eps_r_prime:.4g})"
                )
    ub = cfg.upper
    if isinstance(ub, PaperBound):
        upper = paper_bound_sum("upper", n)
    elif isinstance(ub, FixedBound):
        upper = ub.value
    elif isinstance(ub, FractionBound):
        upper = ub.value * n
    elif isinstance(ub, Lemma2Bound):
        if x is None:
            raise ValueError("Lemma 2 needs example inputs")
        upper = lemma2_upper_bound(
            model, layer, x[: ub.n_examples], beta=ub.beta, eps_y=ub.eps_y, n_draws=ub.n_draws
        )
        if upper is None:
            notes["upper"] = (
                "Lemma 2 has no bound here: sigma is all zero or the network's logits do not vary "
                "(the ratio sigma'/sigma cannot be measured)"
            )
    return LayerBounds(lower, upper, notes)
