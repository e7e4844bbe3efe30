"""Stochastic scoring of a randomized classifier and the confidence intervals of every row.

The accuracy of a randomized model on a fixed set of (adversarial) inputs is itself a random
variable. Each input is therefore judged under K fresh draws of the random layers and three
numbers are reported:

- ``mean``: accuracy averaged over examples and draws (the expected accuracy of the deployed
  model), with a 95% interval (below);
- ``worst_case``: fraction of examples classified correctly under all K draws;
- ``majority``: fraction of examples whose plurality vote over the K predictions is correct
  (ties go to the lowest class index), i.e. the accuracy of a K-draw voting ensemble.

Intervals. The 95% interval of every row covers ALL randomness of the evaluation: the choice of
test examples, the attacker's draws (draw A of the paper protocol, an adaptive attack's
per-forward and EOT draws), the attack's random starts, the judging draw B and the K scoring
draws. The published layer draws one delta per mini-batch and every random stream is seeded per
batch (``ctrw.evaluation.evaluate``): examples of one batch share randomness, different batches do
not. Batches are therefore the clusters: with two or more batches ``summarize`` uses the
cluster-robust ``batch_interval`` (``ctrw.evaluation.intervals``, which has the formulas).
It uses the example-level ``clustered_interval`` only when the evaluation has a single batch, and
then says so (``scoring.ci.covers_attack_randomness`` is false). That interval is what every row
reported before: in simulations with a strong draw-A effect its 95% intervals covered the truth
51-87% of the time (tests/ctrw/evaluation/test_scoring.py), where the batch interval stays within
93-97%.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.evaluation.intervals import batch_interval, clustered_interval
from ctrw.nn.randomness import eot_groups, grouped_draws_supported, sampling

__all__ = ["RepeatScores", "score_batch", "summarize", "vote_counts"]


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
    hits = []
    for pred, num_classes in _draw_predictions(model, x, draws, max_rows=max_rows):
        hits.append(pred == y)  # (k, B)
        votes = F.one_hot(pred, num_classes).sum(0)  # (B, num_classes)
        counts = votes if counts is None else counts + votes
    assert counts is not None
    return RepeatScores.of_batch(torch.cat(hits), counts.argmax(1) == y, single_correct)


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
            (batches,): how much one draw shared by the batch moves it (``draw_std``; part of the
            interval only for a single-batch evaluation, where batch totals cannot show it).
    """

    single_correct: torch.Tensor | None
    draw_correct: torch.Tensor
    majority_correct: torch.Tensor
    batch_sizes: torch.Tensor
    batch_draw_var: torch.Tensor

    @classmethod
    def of_batch(
        cls, hits: torch.Tensor, majority_correct: torch.Tensor, single_correct: torch.Tensor | None
    ) -> RepeatScores:
        """One batch's scores from its per-draw correctness.

        Args:
            hits: prediction under scoring draw k is correct, shape (K, B).
            majority_correct: plurality vote over the K draws is correct, shape (B,).
            single_correct: correctness under the judging draw B, shape (B,), or None.
        """
        acc = hits.double().mean(1)  # (K,): batch accuracy of each draw
        return cls(
            single_correct=single_correct,
            draw_correct=hits.sum(0),
            majority_correct=majority_correct,
            batch_sizes=torch.tensor([hits.shape[1]]),  # on the host: no device round trip
            batch_draw_var=acc.var(unbiased=True).view(1) if hits.shape[0] > 1 else acc.new_zeros(1),
        )

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
        A dict with accuracy, n, ci_low, ci_high, repeats, std and scoring; ``scoring.ci``
        says how the intervals were computed and whether they cover the attack's randomness.
    """
    n = int(repeats[0].draw_correct.numel())
    r = len(repeats)
    sizes = repeats[0].batch_sizes
    if any(not torch.equal(s.batch_sizes, sizes) for s in repeats):
        raise ValueError("repeats must split the examples into the same batches")
    draw_frac = torch.stack([s.draw_correct.double() / draws for s in repeats])  # (r, n)
    worst = torch.stack([(s.draw_correct == draws).double() for s in repeats])  # (r, n)
    major = torch.stack([s.majority_correct.double() for s in repeats])  # (r, n)
    # One shared draw per batch and repeat; averaging r * K independent draws divides it.
    one_draw_var = sum(s.shared_draw_variance() for s in repeats) / r

    def interval(scores: torch.Tensor, trials: int, draw_var: float) -> tuple[float, float, float, dict]:
        if sizes.numel() >= 2:
            return batch_interval(scores, sizes, trials)
        # One batch shares one draw A / one set of attack draws: nothing measures their effect.
        mean, low, high = clustered_interval(scores, trials, draw_variance=draw_var)
        info = {
            "method": "examples as clusters of draws (one batch: no between-batch spread to measure)",
            "clusters": 1,
            "covers_attack_randomness": False,
            "note": "the randomness the batch shares (draw A, the attack's draws and random starts) is "
            "not in this interval; evaluate at least 2 batches (n_examples > batch_size)",
        }
        return mean, low, high, info

    mean, mean_lo, mean_hi, info = interval(draw_frac.mean(0), r * draws, one_draw_var / (r * draws))
    if protocol == "paper":
        single = torch.stack(
            [s.single_correct.double() for s in repeats if s.single_correct is not None]
        )  # (r, n)
        per_repeat = single.mean(1)
        acc, lo, hi, info = interval(single.mean(0), r, one_draw_var / r)
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
            "ci": info,
        },
    }
