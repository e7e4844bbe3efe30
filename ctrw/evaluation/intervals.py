"""95% intervals for accuracies: Wilson, Student's t, clustered and cluster-robust (batch) intervals.

Which interval a row gets and why is decided in ``ctrw.evaluation.scoring.summarize``; the
reasoning (what randomness each interval covers, the coverage simulations) is in
docs/evaluation.md and ``ctrw.evaluation.scoring``'s docstring.

- ``batch_interval`` (two or more batches): the variance of the mean is the cluster-robust
  (sandwich) variance of the batch totals, ``G / (G - 1) * sum_g (T_g - p n_g)^2 / n^2`` (batch g
  holds n_g examples whose scores, averaged over repeats, total T_g; a batch keeps its examples in
  every repeat, so its repeats belong to the same cluster). With G batches that estimate has G - 1
  degrees of freedom, so the quantile is Student's t with G - 1 df, not z. The interval is Wilson's
  at the effective sample size p(1 - p) / variance shrunk by (z / t)^2: the t interval away from 0
  and 1, Wilson's behaviour near them (inside [0, 1], never of zero width at 0% or 100%). Few
  batches give wide intervals on purpose (3 batches: t = 4.30 instead of 1.96).
- ``clustered_interval``: examples as clusters of their trials (Kish's design effect, as Korn &
  Graubard 1998 use it for clustered proportions), plus the variance the K scoring draws show
  between them (``draw_variance``). It cannot see the attacker's randomness, which a batch shares
  entirely.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["Z95", "batch_interval", "clustered_interval", "t_quantile", "wilson_interval"]

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Args:
        successes: number of successes (may be fractional when n is an effective size).
        n: number of trials, > 0.
        z: normal quantile (1.96 for 95%).

    Returns:
        (low, high), clipped to [0, 1] and always containing successes / n.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    p = min(max(successes / n, 0.0), 1.0)
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    return max(0.0, min(center - half, p)), min(1.0, max(center + half, p))


def clustered_interval(
    scores: torch.Tensor | Sequence[float], trials: int, *, draw_variance: float = 0.0, z: float = Z95
) -> tuple[float, float, float]:
    """Mean of per-example scores in [0, 1] with a 95% interval for clustered trials.

    Examples are taken as independent: randomness shared by a batch is in the interval only as far
    as ``draw_variance`` puts it there. ``summarize`` uses it for a single batch only (and flags
    it); with two or more batches it uses ``batch_interval``.

    Args:
        scores: per-example fraction of correct trials, shape (n,).
        trials: trials behind each score (draws x repeats).
        draw_variance: variance of the mean caused by draws shared across examples (0 when
            every example has its own draws).
        z: normal quantile.

    Returns:
        (mean, low, high).
    """
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    n = s.numel()
    if n == 0:
        raise ValueError("no scores")
    p = float(s.mean())
    var_mean = float(s.var(unbiased=False)) / n + max(draw_variance, 0.0)
    binom = p * (1.0 - p)
    if binom <= 0.0:
        n_eff = float(n)  # every example agrees on every trial: uncertainty is over examples
    elif var_mean <= 0.0:
        n_eff = float(n * trials)
    else:
        n_eff = min(max(binom / var_mean, 1.0), float(n * trials))
    low, high = wilson_interval(p * n_eff, n_eff, z)
    return p, low, high


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df (Abramowitz & Stegun 26.7.3-4, a finite sum)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    term, total = 1.0, 1.0
    if df % 2 == 0:
        for k in range(2, df - 1, 2):  # 1 + (1/2) c^2 + (1*3)/(2*4) c^4 + ... up to c^(df-2)
            term *= (k - 1) / k * c2
            total += term
        return math.sin(theta) * total
    if df == 1:
        return 2.0 * theta / math.pi
    for k in range(3, df - 1, 2):  # 1 + (2/3) c^2 + (2*4)/(3*5) c^4 + ... up to c^(df-3)
        term *= (k - 1) / k * c2
        total += term
    return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


@functools.lru_cache(maxsize=256)
def t_quantile(df: int, level: float = 0.95) -> float:
    """Two-sided quantile of Student's t: P(|T| <= t) = level (t_{df, 0.975} for level 0.95).

    Args:
        df: degrees of freedom, >= 1.
        level: central probability, in (0, 1).

    Returns:
        t > 0 (12.706 for df = 1, 4.303 for df = 2, 1.96 as df grows).
    """
    if df < 1:
        raise ValueError(f"df must be at least 1, got {df}")
    df = min(df, 100_000)  # the finite sum grows with df; by then t equals z to 1e-5
    low, high = 0.0, 1.0
    while _t_two_sided_mass(high, df) < level:
        high *= 2.0
    for _ in range(100):  # bisection to double precision; the mass is increasing in t
        mid = 0.5 * (low + high)
        if _t_two_sided_mass(mid, df) < level:
            low = mid
        else:
            high = mid
    return high


def batch_interval(
    scores: torch.Tensor | Sequence[float],
    batch_sizes: torch.Tensor | Sequence[int],
    trials: int,
    *,
    z: float = Z95,
) -> tuple[float, float, float, dict[str, Any]]:
    """Mean of per-example scores with a 95% interval that treats batches as clusters.

    Covers everything a batch shares (draws, attack randomness) and the choice of examples;
    see the module docstring for the formula.

    Args:
        scores: per-example scores in [0, 1] (already averaged over repeats and draws), in batch
            order, shape (n,).
        batch_sizes: examples per batch, summing to n; at least two batches.
        trials: trials behind each score (repeats x draws); the sample size when every batch
            total is the same (no spread to measure).
        z: normal quantile of the level (1.96 for 95%; the t quantile is taken at the same level).

    Returns:
        (mean, low, high, info); info records the method, clusters, df and t.
    """
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    sizes = torch.as_tensor(batch_sizes, dtype=torch.int64).flatten()
    g = sizes.numel()
    n = s.numel()
    if g < 2:
        raise ValueError(f"a cluster-robust interval needs at least 2 batches, got {g}")
    if int(sizes.sum()) != n:
        raise ValueError(f"batch sizes sum to {int(sizes.sum())}, but there are {n} scores")
    p = float(s.mean())
    ends = sizes.cumsum(0)
    cum = torch.cat([s.new_zeros(1), s.cumsum(0)])
    totals = cum[ends] - cum[ends - sizes]  # (G,): each batch's total score
    resid = totals - p * sizes.double()
    var_mean = g / (g - 1) * float((resid * resid).sum()) / (n * n)
    level = 2.0 * _normal_cdf(z) - 1.0
    t = t_quantile(g - 1, level)
    binom = p * (1.0 - p)
    if binom <= 0.0:
        # Every score is 0 (or 1): no spread to measure. The examples are the sample size.
        n_eff = float(n)
    elif var_mean <= 0.0:
        # Identical batch totals (possible with few batches): at most every trial counts once.
        n_eff = float(n * trials)
    else:
        # No cap at n * trials: t already prices in the estimate's noise, so capping (flooring the
        # variance) would make the interval too wide. At least 1: no mean of [0, 1] scores has a
        # variance above p(1 - p).
        n_eff = max(binom / var_mean, 1.0)
    n_adj = n_eff * (z / t) ** 2  # Wilson at z on n_adj has the t interval's half-width
    low, high = wilson_interval(p * n_adj, n_adj, z)
    info = {
        "method": "batches as clusters (cluster-robust variance, t with G - 1 df, Wilson form)",
        "clusters": g,
        "df": g - 1,
        "t": t,
        "covers_attack_randomness": True,
    }
    return p, low, high, info


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))
