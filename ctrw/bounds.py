"""Bounds on sum(sigma) from the paper's two lemmas, or fixed numbers.

Lemma 1 (gradient similarity, lower bound A): for a fixed draw W1 and a second draw W2,
    A = (eps_r' - sum(mu)) / (alpha * sum|W1|),   eps_r' = eps_r * ||W1||_p * ||W2||_p,
with alpha < 0. Assumption: sum(mu) >> 0 (then eps_r' - sum(mu) < 0 and A > 0); when it fails
the bound is reported as not applicable (None) rather than as a meaningless number. With
mu = 1 and alpha = -1e-3 this gives A ~ 0.86 / |alpha| ~ 860 whatever the layer size, the
"~1e3" of the paper.

Lemma 2 (natural performance, upper bound B): the spread sigma' that the random weight causes
in the logits must satisfy sum(sigma') <= eps_y / (|x^{n-1} . W^n| * beta). We read
|x^{n-1} . W^n| as the mean absolute pre-bias logit over the given examples, and sigma' as the
per-logit standard deviation across draws, summed over logits and averaged over examples. The
paper only states sigma' proportional to sigma; we measure that ratio k = sum(sigma') / sum(sigma)
by Monte Carlo at the current sigma and return B = bound / k. This is a linearisation: it is
exact for a network that is linear in W and approximate otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctrw.config import BoundsConfig, FixedBound, FractionBound, Lemma1Bound, Lemma2Bound
from ctrw.models import CTRWNet
from ctrw.random_weight import RandomWeight, sampling

__all__ = ["LayerBounds", "lemma1_lower_bound", "lemma2_upper_bound", "resolve_bounds"]


@dataclass
class LayerBounds:
    lower: float | None
    upper: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {"lower": self.lower, "upper": self.upper}


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
    """Evaluate the configured lower/upper bound for one random layer."""
    n = layer.sigma.numel()
    lower = upper = None
    lb = cfg.lower
    if isinstance(lb, FixedBound):
        lower = lb.value
    elif isinstance(lb, FractionBound):
        lower = lb.value * n
    elif isinstance(lb, Lemma1Bound):
        with torch.no_grad():
            w1 = layer.mu + layer.draw() * layer.sigma
            w2 = layer.mu + layer.draw() * layer.sigma
            lower = lemma1_lower_bound(layer.mu, w1, w2, alpha=lb.alpha, eps_r=lb.eps_r, p=lb.p)
    ub = cfg.upper
    if isinstance(ub, FixedBound):
        upper = ub.value
    elif isinstance(ub, FractionBound):
        upper = ub.value * n
    elif isinstance(ub, Lemma2Bound):
        if x is None:
            raise ValueError("Lemma 2 needs example inputs")
        upper = lemma2_upper_bound(
            model, layer, x[: ub.n_examples], beta=ub.beta, eps_y=ub.eps_y, n_draws=ub.n_draws
        )
    return LayerBounds(lower, upper)
