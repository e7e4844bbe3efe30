"""sigma bounds and the two constraint rules."""

import math

import pytest
import torch

from ctrw.nn.bounds import lemma1_lower_bound
from ctrw.nn.constraint import apply_floor_rule, apply_sum_rule


def test_sum_rule_raises_to_lower_bound_by_average_bias():
    sigma = torch.tensor([0.1, 0.2, 0.3, 0.4])
    apply_sum_rule(sigma, lower=2.0, upper=None)
    assert sigma.sum().item() == pytest.approx(2.0)
    assert torch.allclose(sigma, torch.tensor([0.35, 0.45, 0.55, 0.65]))  # each + (2 - 1) / 4


def test_sum_rule_shrinks_above_upper_bound_and_keeps_sigma_nonnegative():
    sigma = torch.tensor([-1.0, 3.0, 5.0, 12.0])
    apply_sum_rule(sigma, lower=1.0, upper=10.0)
    assert (sigma >= 0).all()
    assert sigma.sum().item() == pytest.approx(10.0)


def test_sum_rule_leaves_sigma_inside_bounds_alone():
    sigma = torch.tensor([1.0, 2.0])
    apply_sum_rule(sigma, lower=1.0, upper=10.0)
    assert torch.equal(sigma, torch.tensor([1.0, 2.0]))


def test_floor_rule_matches_the_published_semantics():
    # N = 4, lower = 2 -> floor f = 0.5; min = 0.1 -> elements below f get + 0.4
    sigma = torch.tensor([0.1, 0.45, 0.6, 2.0])
    apply_floor_rule(sigma, lower=2.0)
    assert torch.allclose(sigma, torch.tensor([0.5, 0.85, 0.6, 2.0]))
    untouched = torch.tensor([0.5, 0.7, 0.9, 1.0])
    apply_floor_rule(untouched, lower=2.0)
    assert torch.equal(untouched, torch.tensor([0.5, 0.7, 0.9, 1.0]))


@pytest.mark.parametrize("rule", ["sum", "floor"])
def test_constraint_holds_after_every_step_even_when_a_step_pushes_sigma_far_out(rule):
    torch.manual_seed(0)
    sigma = torch.nn.Parameter(torch.ones(3, 8, 8))
    opt = torch.optim.SGD([sigma], lr=1.0)
    lower, upper = 100.0, 150.0
    n = sigma.numel()
    for step in range(20):
        opt.zero_grad()
        # alternate huge pushes down and up, plus noise
        sign = 1.0 if step % 2 else -1.0
        (sign * 50.0 * sigma.sum() + (torch.randn_like(sigma) * 100 * sigma).sum()).backward()
        opt.step()
        if rule == "sum":
            apply_sum_rule(sigma.data, lower, upper)
            assert lower - 1e-3 <= sigma.sum().item() <= upper + 1e-3
            assert (sigma >= 0).all()
        else:
            apply_floor_rule(sigma.data, lower)
            assert sigma.min().item() >= lower / n - 1e-6
            assert sigma.sum().item() >= lower - 1e-3


def test_lemma1_matches_the_formula_and_the_papers_order_of_magnitude():
    torch.manual_seed(0)
    mu, sigma = torch.ones(3072), torch.ones(3072)
    w1, w2 = mu + torch.randn(3072) * sigma, mu + torch.randn(3072) * sigma
    a = lemma1_lower_bound(mu, w1, w2, alpha=-1e-3, eps_r=0.01)
    expected = (0.01 * w1.norm() * w2.norm() - mu.sum()) / (-1e-3 * w1.abs().sum())
    assert a == pytest.approx(float(expected), rel=1e-5)
    assert 500 < a < 1000  # "estimated as 1e3" and below 1/|alpha|


def test_lemma1_reports_not_applicable_when_sum_mu_is_not_large():
    mu = torch.zeros(100)
    w = torch.randn(100)
    assert lemma1_lower_bound(mu, w, torch.randn(100), alpha=-1e-3, eps_r=0.01) is None
    with pytest.raises(ValueError):
        lemma1_lower_bound(torch.ones(4), torch.ones(4), torch.ones(4), alpha=1e-3, eps_r=0.0)
    assert math.isfinite(
        lemma1_lower_bound(torch.ones(4) * 10, torch.ones(4), torch.ones(4), alpha=-0.5, eps_r=0.0)
    )
