"""Interval math: Wilson, Student's t quantiles, the clustered and the batch (cluster-robust) interval.

Their coverage over whole simulated evaluations is checked in test_scoring.py."""

import math

import pytest
import torch

from ctrw.evaluation.intervals import Z95, batch_interval, clustered_interval, t_quantile, wilson_interval


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(1, 0)


def test_clustered_interval_is_wilson_for_one_trial_and_narrows_with_varying_draws() -> None:
    binary = torch.tensor([1.0] * 30 + [0.0] * 10)
    mean, low, high = clustered_interval(binary, trials=1)
    assert mean == 0.75 and (low, high) == pytest.approx(wilson_interval(30, 40))
    # Draws that all agree per example carry no more information than one draw each.
    assert clustered_interval(binary, trials=10)[1:] == pytest.approx((low, high))
    # Per-example scores strictly between 0 and 1: averaging over draws reduces the variance.
    spread = torch.tensor([0.7, 0.8] * 20)
    m, lo, hi = clustered_interval(spread, trials=10)
    assert lo <= m <= hi and hi - lo < high - low
    assert 0.0 <= lo and hi <= 1.0


def test_t_quantile_matches_the_tables() -> None:
    table = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 7: 2.3646, 10: 2.2281, 30: 2.0423, 120: 1.9799}
    for df, t in table.items():
        assert t_quantile(df) == pytest.approx(t, abs=1e-4)
    assert t_quantile(9, 0.90) == pytest.approx(1.8331, abs=1e-4)
    assert t_quantile(10**7) == pytest.approx(Z95, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile(0)


def test_batch_interval_is_the_t_interval_on_batch_totals_and_wilson_at_the_edges() -> None:
    # Eight batches of 100 with batch accuracies spread around 0.5: the t interval, p +- t sqrt(V).
    correct = [40, 55, 50, 45, 60, 50, 52, 48]
    acc = torch.tensor(correct, dtype=torch.float64) / 100
    scores = torch.cat([(torch.arange(100) < c).double() for c in correct])
    p, lo, hi, info = batch_interval(scores, [100] * 8, trials=1)
    var = (acc - acc.mean()).pow(2).sum().item() / (7 * 8)  # G/(G-1) * sum((T_g - p n_g)^2) / n^2
    half = t_quantile(7) * math.sqrt(var)
    assert p == pytest.approx(acc.mean().item())
    assert (lo, hi) == pytest.approx((p - half, p + half), abs=2e-3)  # Wilson's small shift off the centre
    assert info["df"] == 7 and info["covers_attack_randomness"] is True
    # All wrong: no spread to measure; the interval is Wilson over the examples, widened by (t/z)^2.
    p, lo, hi, _ = batch_interval(torch.zeros(300), [100] * 3, trials=10)
    n_adj = 300 * (Z95 / t_quantile(2)) ** 2
    assert p == 0.0 and lo == 0.0 and hi == pytest.approx(wilson_interval(0, n_adj)[1]) and hi > 0.01
    # Two batches that disagree completely: as wide as a mean of [0, 1] scores can be.
    _, lo, hi, _ = batch_interval(torch.cat([torch.ones(64), torch.zeros(64)]), [64, 64], trials=1)
    assert lo < 0.05 and hi > 0.95
    with pytest.raises(ValueError, match="at least 2 batches"):
        batch_interval(torch.ones(10), [10], trials=1)
    with pytest.raises(ValueError, match="sum to"):
        batch_interval(torch.ones(10), [4, 4], trials=1)
