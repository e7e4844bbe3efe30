"""Stochastic scoring of a randomized classifier and the confidence intervals of every row.

The accuracy of a randomized model on a fixed set of (adversarial) inputs is itself a random
variable. Each input is therefore judged under K fresh draws of the random layers and three
numbers are reported:

- ``mean``: accuracy averaged over examples and draws (the expected accuracy of the deployed
  model), with a 95% interval (below);
- ``worst_case``: fraction of examples classified correctly under all K draws;
- ``majority``: fraction of examples whose plurality vote over the K predictions is correct
  (ties go to the lowest class index), i.e. the accuracy of a K-draw voting ensemble.

Intervals (all Wilson score intervals, evaluated at an effective sample size):

- ``wilson_interval``: Wilson score interval for a binomial proportion.
- ``clustered_interval``: for a mean over n examples x T trials. The variance of the mean is
  estimated as var(per-example scores) / n (examples are clusters of trials: Kish's design
  effect, as Korn & Graubard 1998 use it for clustered proportions) plus, when given, the
  variance that draws shared by a whole batch add (``draw_variance``). The Wilson interval is
  then evaluated at n_eff = p(1 - p) / variance, capped at n * T. With one trial per example
  and no shared draws it is exactly the Wilson interval; when all draws of an example agree it
  is as wide as the per-example binomial interval; it narrows towards the n * T binomial only
  as far as the draw-to-draw variation allows.

Why the shared-draw term: the published layer draws one delta for the whole mini-batch, so the
judging draw B of the paper protocol (and each of the K scoring draws) moves the accuracy of a
whole batch up or down together. Examples are then not independent given the draws. The
spread of the K scoring draws' batch accuracies estimates that variance (it also contains a
little binomial noise, which errs on the wide side). For a deterministic model it is zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.random_weight import RandomConv2d, eot_groups, sampling

__all__ = [
    "Z95",
    "RepeatScores",
    "clustered_interval",
    "grouped_draws_supported",
    "score_batch",
    "summarize",
    "vote_counts",
    "wilson_interval",
]

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


def grouped_draws_supported(model: nn.Module) -> bool:
    """Whether k stacked copies of a batch get k independent draws in one forward (``eot_groups``).

    True for every ``RandomWeight`` applied as a module; False when a ``RandomConv2d`` with
    insertion 'filters' is present, since its kernel multiplier is drawn once per forward for
    the whole batch. Batched EOT and batched scoring then fall back to one draw per forward.
    """
    return not any(isinstance(m, RandomConv2d) and m.rw_filter is not None for m in model.modules())


@torch.no_grad()
def _draw_predictions(
    model: nn.Module, x: torch.Tensor, draws: int, *, max_rows: int
) -> Iterator[tuple[torch.Tensor, int]]:
    """Predicted classes of ``x`` under ``draws`` fresh draws: chunks (k, B) and the class count."""
    b = x.shape[0]
    chunk = max(1, min(draws, max_rows // max(b, 1))) if grouped_draws_supported(model) else 1
    with sampling(model, "per_forward"), torch.autocast(x.device.type, enabled=False):
        done = 0
        while done < draws:
            k = min(chunk, draws - done)
            inp = x.repeat(k, 1, 1, 1) if k > 1 else x  # (k*B, C, H, W)
            with eot_groups(model, k):
                logits = model(inp)  # (k*B, num_classes)
            yield logits.argmax(1).view(k, b), logits.shape[1]
            done += k


def vote_counts(model: nn.Module, x: torch.Tensor, draws: int, *, max_rows: int) -> torch.Tensor:
    """Predicted-class counts of ``x`` under ``draws`` fresh draws of the random layers.

    The draws are batched: up to ``max_rows // B`` stacked copies of x go through one forward
    with one draw per copy (``eot_groups``), so memory stays bounded for any K (one forward
    per draw where grouped draws are not supported). A model without random layers simply
    predicts the same class K times.

    Args:
        x: inputs, shape (B, C, H, W).
        draws: K, the number of fresh draws.
        max_rows: largest number of rows in one forward (at least B are used).

    Returns:
        Integer counts of shape (B, num_classes) whose rows sum to K.
    """
    counts: torch.Tensor | None = None
    for pred, num_classes in _draw_predictions(model, x, draws, max_rows=max_rows):
        votes = F.one_hot(pred, num_classes).sum(0)  # (B, num_classes)
        counts = votes if counts is None else counts + votes
    assert counts is not None
    return counts


def score_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    draws: int,
    max_rows: int,
    single_correct: torch.Tensor | None = None,
) -> RepeatScores:
    """Judge one batch of (adversarial) inputs under ``draws`` fresh draws.

    Args:
        x: inputs, (B, C, H, W); y: labels, (B,).
        draws: K fresh draws (batched as in ``vote_counts``).
        max_rows: largest number of rows in one forward.
        single_correct: correctness under the paper protocol's judging draw B, (B,), if any.

    Returns:
        The batch's ``RepeatScores`` (still on the device).
    """
    counts: torch.Tensor | None = None
    draw_acc = []
    for pred, num_classes in _draw_predictions(model, x, draws, max_rows=max_rows):
        draw_acc.append((pred == y).double().mean(1))  # (k,): batch accuracy of each draw
        votes = F.one_hot(pred, num_classes).sum(0)  # (B, num_classes)
        counts = votes if counts is None else counts + votes
    assert counts is not None
    acc = torch.cat(draw_acc)  # (K,)
    return RepeatScores(
        single_correct=single_correct,
        draw_correct=counts.gather(1, y.view(-1, 1)).squeeze(1),
        majority_correct=counts.argmax(1) == y,
        batch_sizes=torch.tensor([x.shape[0]]),  # on the host: no device round trip
        batch_draw_var=acc.var(unbiased=True).view(1) if draws > 1 else acc.new_zeros(1),
    )


@dataclass
class RepeatScores:
    """Per-example results of one pass over the data (one repeat of one row).

    Attributes:
        single_correct: prediction under the judging draw B is correct, shape (n,); the
            paper protocol's single-draw accuracy (None for the adaptive protocol).
        draw_correct: number of the K scoring draws that classify correctly, shape (n,).
        majority_correct: plurality vote over the K draws is correct, shape (n,).
        batch_sizes: examples per batch, shape (batches,).
        batch_draw_var: per batch, the variance over the K draws of the batch accuracy, shape
            (batches,): what one draw shared by the batch adds to the uncertainty.
    """

    single_correct: torch.Tensor | None
    draw_correct: torch.Tensor
    majority_correct: torch.Tensor
    batch_sizes: torch.Tensor
    batch_draw_var: torch.Tensor

    @classmethod
    def concat(cls, parts: Sequence[RepeatScores]) -> RepeatScores:
        """Join per-batch scores into one pass, moved to the CPU (one host sync)."""
        singles = [p.single_correct for p in parts if p.single_correct is not None]
        return cls(
            single_correct=torch.cat(singles).cpu() if len(singles) == len(parts) else None,
            draw_correct=torch.cat([p.draw_correct for p in parts]).cpu(),
            majority_correct=torch.cat([p.majority_correct for p in parts]).cpu(),
            batch_sizes=torch.cat([p.batch_sizes for p in parts]).cpu(),
            batch_draw_var=torch.cat([p.batch_draw_var for p in parts]).cpu(),
        )

    def shared_draw_variance(self) -> float:
        """Variance of the accuracy over all n examples caused by ONE draw per batch.

        sum_b (n_b / n)^2 * var_b: batches have independent draws, a draw moves its batch.
        """
        w = self.batch_sizes.double() / self.batch_sizes.sum()
        return float((w * w * self.batch_draw_var.double()).sum())


def summarize(
    repeats: Sequence[RepeatScores], *, draws: int, protocol: str, seeds: Sequence[int]
) -> dict[str, Any]:
    """The numbers of one results row from its repeats.

    Args:
        repeats: one ``RepeatScores`` per repeat, all over the same n examples.
        draws: K, the scoring draws per example and repeat.
        protocol: ``"paper"`` (accuracy = single draw B) or ``"adaptive"`` (accuracy = K-draw mean).
        seeds: the per-repeat seeds (recorded in the scoring block).

    Returns:
        A dict with accuracy, n, ci_low, ci_high, repeats, std and scoring.
    """
    n = int(repeats[0].draw_correct.numel())
    r = len(repeats)
    draw_frac = torch.stack([s.draw_correct.double() / draws for s in repeats])  # (r, n)
    worst = torch.stack([(s.draw_correct == draws).double() for s in repeats])  # (r, n)
    major = torch.stack([s.majority_correct.double() for s in repeats])  # (r, n)
    # One shared draw per batch and repeat; averaging r * K independent draws divides it.
    one_draw_var = sum(s.shared_draw_variance() for s in repeats) / r
    mean, mean_lo, mean_hi = clustered_interval(
        draw_frac.mean(0), trials=r * draws, draw_variance=one_draw_var / (r * draws)
    )
    if protocol == "paper":
        single = torch.stack(
            [s.single_correct.double() for s in repeats if s.single_correct is not None]
        )  # (r, n)
        per_repeat = single.mean(1)
        acc, lo, hi = clustered_interval(single.mean(0), trials=r, draw_variance=one_draw_var / r)
    else:
        per_repeat = draw_frac.mean(1)
        acc, lo, hi = mean, mean_lo, mean_hi
    return {
        "accuracy": acc,
        "n": n,
        "ci_low": lo,
        "ci_high": hi,
        "repeats": [float(v) for v in per_repeat],
        "std": float(per_repeat.std(unbiased=True)) if r > 1 else None,
        "scoring": {
            "draws": draws,
            "mean": mean,
            "ci_low": mean_lo,
            "ci_high": mean_hi,
            "worst_case": float(worst.mean()),
            "majority": float(major.mean()),
            "per_repeat_mean": [float(v) for v in draw_frac.mean(1)],
            "draw_std": math.sqrt(one_draw_var),
            "seeds": [int(s) for s in seeds],
        },
    }
