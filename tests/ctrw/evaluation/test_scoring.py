"""Coverage of the reported 95% intervals, checked by simulating whole evaluations.

No model is needed: each simulated evaluation draws per-example correctness from a model of the
evaluation's randomness and goes through the same code the evaluation uses (one
``RepeatScores`` per batch as ``score_batch`` builds it, ``RepeatScores.concat``, ``summarize``).

The simulated randomness, on the logit of "this example is classified correctly":

- example difficulty a_i ~ N(mu, s_example), fixed across repeats (the test set);
- the attacker's draw A, one per batch and repeat, ~ N(0, s_attack): it moves a whole batch;
- the attack's random start, one per example and repeat, ~ N(0, s_start);
- the judging draw B and each of the K scoring draws, one per batch, ~ N(0, s_draw).

The estimand is the expected accuracy over all of it, E[sigmoid(N(mu, s^2))] with s^2 the sum of
the four variances, for the single-draw accuracy (paper protocol) and the K-draw mean alike.

How many simulated evaluations: with SIMS = 3000 the standard error of an estimated coverage near
95% is sqrt(0.95 * 0.05 / 3000) = 0.40 points, so the acceptance window [93%, 97%] is +-5 standard
errors: an interval whose true coverage is 95% fails the check with probability < 1e-6, and one whose
true coverage is 91% or less (the example-level interval below is far under that) passes it with
probability < P(Z > 2 / 0.52) < 1e-4. Every scenario checks two intervals (single draw, K-draw mean).
The generators are seeded, so the test is deterministic; the arithmetic says the seed is not lucky.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from ctrw.evaluation.intervals import clustered_interval
from ctrw.evaluation.scoring import RepeatScores, summarize

SIMS = 3000
LOW, HIGH = 0.93, 0.97


@dataclass(frozen=True)
class Scenario:
    n: int
    batch_size: int
    mu: float = 0.0
    s_example: float = 1.5
    s_attack: float = 0.0
    s_start: float = 0.3
    s_draw: float = 0.0
    repeats: int = 1
    draws: int = 9

    def truth(self) -> float:
        """E[sigmoid(N(mu, s^2))] by quadrature on a fine grid."""
        s = math.sqrt(self.s_example**2 + self.s_attack**2 + self.s_start**2 + self.s_draw**2)
        x = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
        w = torch.exp(-0.5 * x * x)
        return float((torch.sigmoid(self.mu + s * x) * w).sum() / w.sum())


NO_SHARED = Scenario(n=1000, batch_size=128)
STRONG = Scenario(n=1000, batch_size=128, s_attack=0.5, s_draw=0.2)
STRONG_SMALL_BATCHES = Scenario(n=500, batch_size=64, mu=1.0, s_attack=0.6, s_draw=0.3, repeats=2)
FEW_BATCHES = Scenario(n=384, batch_size=128, s_attack=0.5, s_draw=0.2)  # 3 batches
TWO_BATCHES = Scenario(n=256, batch_size=128, s_attack=0.5, s_draw=0.2)


def simulate(sc: Scenario, gen: torch.Generator) -> list[RepeatScores]:
    """One simulated evaluation: a RepeatScores per repeat, built batch by batch."""
    g_count = math.ceil(sc.n / sc.batch_size)
    sizes = [min(sc.batch_size, sc.n - g * sc.batch_size) for g in range(g_count)]
    batch_of = torch.repeat_interleave(torch.arange(g_count), torch.tensor(sizes))  # (n,)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def bernoulli(logit: torch.Tensor) -> torch.Tensor:
        return torch.rand(logit.shape, generator=gen, dtype=torch.float64) < torch.sigmoid(logit)

    difficulty = sc.mu + sc.s_example * normal(sc.n)
    passes = []
    for _ in range(sc.repeats):
        attacked = difficulty + sc.s_attack * normal(g_count)[batch_of] + sc.s_start * normal(sc.n)
        single = bernoulli(attacked + sc.s_draw * normal(g_count)[batch_of])  # draw B
        hits = bernoulli(attacked + sc.s_draw * normal(sc.draws, g_count)[:, batch_of])  # (K, n)
        parts = []
        start = 0
        for size in sizes:
            h = hits[:, start : start + size]
            parts.append(RepeatScores.of_batch(h, h.sum(0) * 2 > sc.draws, single[start : start + size]))
            start += size
        passes.append(RepeatScores.concat(parts))
    return passes


def coverage(sc: Scenario, seed: int) -> tuple[float, float, float]:
    """Coverage of the accuracy (draw B) interval and of the K-draw-mean interval, mean width."""
    gen = torch.Generator().manual_seed(seed)
    truth = sc.truth()
    single = mean = 0
    width = 0.0
    for _ in range(SIMS):
        row = summarize(simulate(sc, gen), draws=sc.draws, protocol="paper", seeds=list(range(sc.repeats)))
        single += row["ci_low"] <= truth <= row["ci_high"]
        mean += row["scoring"]["ci_low"] <= truth <= row["scoring"]["ci_high"]
        width += row["ci_high"] - row["ci_low"]
    return single / SIMS, mean / SIMS, width / SIMS


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "seed"),
    [(NO_SHARED, 1), (STRONG, 2), (STRONG_SMALL_BATCHES, 3), (FEW_BATCHES, 4), (TWO_BATCHES, 5)],
    ids=[
        "no-shared-randomness",
        "strong-attack-draw",
        "strong-64-batches-2-repeats",
        "3-batches",
        "2-batches",
    ],
)
def test_the_95_interval_covers_all_randomness_of_the_evaluation(scenario: Scenario, seed: int) -> None:
    """Fails on the example-level interval every row reported before (99%, 80%, 87%, 79% for draw B)."""
    single, mean, width = coverage(scenario, seed)
    print(f"{scenario}: coverage draw B {single:.4f}, K-draw mean {mean:.4f}, mean width {width:.4f}")
    assert LOW <= single <= HIGH
    assert LOW <= mean <= HIGH


@pytest.mark.slow
def test_the_example_level_interval_misses_a_strong_attack_draw_effect() -> None:
    """Why a single-batch evaluation is flagged: the old interval, which it still uses, undercovers.

    1000 simulated evaluations: at a true coverage of 85% the standard error is 1.1 points, so the
    measured ~80% (draw B) and ~51% (K-draw mean) are far below the 90% bound checked here.
    """
    gen = torch.Generator().manual_seed(6)
    truth = STRONG.truth()
    sims = 1000
    single = mean = 0
    for _ in range(sims):
        (scores,) = simulate(STRONG, gen)
        assert scores.single_correct is not None
        shared = scores.shared_draw_variance()  # what the K scoring draws show of a batch's draw
        _, lo, hi = clustered_interval(scores.single_correct.double(), 1, draw_variance=shared)
        single += lo <= truth <= hi
        frac = scores.draw_correct.double() / STRONG.draws
        _, lo, hi = clustered_interval(frac, STRONG.draws, draw_variance=shared / STRONG.draws)
        mean += lo <= truth <= hi
    print(f"example-level interval: coverage draw B {single / sims:.3f}, K-draw mean {mean / sims:.3f}")
    assert single / sims < 0.9 and mean / sims < 0.9


def test_one_batch_falls_back_to_the_example_level_interval_and_says_so() -> None:
    gen = torch.Generator().manual_seed(8)
    one_batch = Scenario(n=100, batch_size=128, s_attack=0.5, s_draw=0.2)
    passes = simulate(one_batch, gen)
    row = summarize(passes, draws=9, protocol="paper", seeds=[0])
    ci = row["scoring"]["ci"]
    assert ci["clusters"] == 1 and ci["covers_attack_randomness"] is False and "2 batches" in ci["note"]
    single = passes[0].single_correct
    assert single is not None
    expected = clustered_interval(single.double(), 1, draw_variance=passes[0].shared_draw_variance())
    assert (row["accuracy"], row["ci_low"], row["ci_high"]) == pytest.approx(expected)
    two = summarize(simulate(FEW_BATCHES, gen), draws=9, protocol="adaptive", seeds=[0])["scoring"]["ci"]
    assert two["clusters"] == 3 and two["df"] == 2 and two["covers_attack_randomness"] is True
    assert two["t"] == pytest.approx(4.3027, abs=1e-4)


def test_summarize_refuses_repeats_with_different_batches() -> None:
    gen = torch.Generator().manual_seed(9)
    a = simulate(Scenario(n=256, batch_size=128), gen)[0]
    b = simulate(Scenario(n=256, batch_size=64), gen)[0]
    with pytest.raises(ValueError, match="same batches"):
        summarize([a, b], draws=9, protocol="adaptive", seeds=[0, 1])


def test_diagnostic_probe_rows_get_enough_batches_for_their_intervals() -> None:
    """The probe attacks the diagnostic subset in at least 8 batches whatever the evaluation's batch
    size: with the default 256 its 512 examples would be 2 batches, CIs 6.5 times as wide (t = 12.7)."""
    from ctrw.config import AttackSpec, EvalConfig, RandomWeightConfig
    from ctrw.evaluation.evaluate import evaluate
    from ctrw.hooks import Hooks, Progress
    from tests.support.models import NUM_CLASSES, prototype_data, trained_small_cnn

    class Batches(Hooks):
        def __init__(self) -> None:
            self.seen: dict[str, int] = {}

        def on_progress(self, progress: Progress) -> None:
            self.seen[progress.detail] = progress.batches

    x, y = prototype_data(64, seed=3)
    cfg = EvalConfig(
        attacks=[AttackSpec(name="clean"), AttackSpec(name="pgd", eps=0.1, steps=2)],
        protocol="paper",
        batch_size=64,
        score_draws=2,
    )
    hooks = Batches()
    result = evaluate(
        trained_small_cnn(RandomWeightConfig(sigma_init=0.6)),
        x,
        y,
        cfg,
        num_classes=NUM_CLASSES,
        hooks=hooks,
        sweep_steps=(2, 4),
        diagnostic_examples=64,
    )
    assert all(r["scoring"]["ci"]["clusters"] == 1 for r in result["rows"])  # the table: one batch of 64
    probes = {
        detail: n for detail, n in hooks.seen.items() if detail not in ("clean (paper)", "pgd2 (paper)")
    }
    assert probes and set(probes.values()) == {8}, hooks.seen
