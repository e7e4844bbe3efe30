"""Table 6 statistic against closed forms and brute force; Eq. 6 gradient cosine."""

import pytest
import torch
from scipy.special import betainc

from ctrw.config import RandomWeightConfig
from ctrw.evaluation.sigma_stats import gradient_cosine, lemma1_check, sigma_report, table6_statistic
from ctrw.nn.models import create_model
from ctrw.nn.random_weight import seed_random_layers


def _p_cos_below(t: float, m: int) -> float:
    """P(cos(u, v) <= t) for independent isotropic Gaussian u, v in R^m (closed form)."""
    tail = 0.5 * betainc(0.5, (m - 1) / 2, t * t)
    return 0.5 + tail if t >= 0 else 0.5 - tail


@pytest.mark.parametrize("eps_r,m", [(0.0, 50), (0.1, 50), (-0.2, 20)])
def test_zero_mean_matches_closed_form(eps_r, m):
    g = torch.Generator().manual_seed(1)
    r = table6_statistic(torch.zeros(m), torch.full((m,), 3.0), n_pairs=40_000, eps_r=eps_r, generator=g)
    p = _p_cos_below(eps_r, m)
    se = (p * (1 - p) / 40_000) ** 0.5
    assert abs(r["ratio"] - p) < 5 * se
    assert r["positive"] == round(r["ratio"] * 40_000)


def test_zero_sigma_gives_no_positive_samples():
    r = table6_statistic(torch.ones(30), torch.zeros(30), n_pairs=500, eps_r=0.01)
    assert r["positive"] == 0 and r["min_cos"] == pytest.approx(1.0)


def test_chunked_statistic_equals_brute_force_pair_loop():
    mu, sigma = torch.linspace(-1, 1, 12), torch.linspace(0.5, 2, 12)
    r = table6_statistic(
        mu, sigma, n_pairs=300, eps_r=0.05, chunk=7, generator=torch.Generator().manual_seed(3)
    )
    g = torch.Generator().manual_seed(3)
    cos = []
    done = 0
    while done < 300:
        b = min(7, 300 - done)
        z = torch.randn((2, b, 12), generator=g)
        for i in range(b):
            w1, w2 = mu + z[0, i] * sigma, mu + z[1, i] * sigma
            cos.append(float(torch.dot(w1.double(), w2.double()) / (w1.double().norm() * w2.double().norm())))
        done += b
    assert r["positive"] == sum(c <= 0.05 for c in cos)
    assert r["min_cos"] == pytest.approx(min(cos), abs=1e-9)


def test_gradient_cosine_is_one_without_randomness_and_below_one_with_it():
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    base = create_model(
        "small_cnn", num_classes=10, input_shape=(1, 8, 8), mean=[0.5], std=[0.25], width=0.25
    )
    assert gradient_cosine(base, x, y)["min"] == pytest.approx(1.0, abs=1e-6)
    rnd = create_model(
        "small_cnn",
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=[0.5],
        std=[0.25],
        width=0.25,
        random_weight=RandomWeightConfig(sigma_init=2.0),
    )
    seed_random_layers(rnd, 0)
    assert gradient_cosine(rnd, x, y)["mean"] < 0.99


def test_sigma_report_covers_every_random_layer():
    model = create_model(
        "resnet18",
        num_classes=10,
        input_shape=(3, 8, 8),
        mean=[0.5] * 3,
        std=[0.25] * 3,
        width=0.0625,
        random_weight=RandomWeightConfig(insertion="both"),
    )
    rep = sigma_report(
        model,
        bounds=[{"lower": 1.0, "upper": 2.0}],
        x=torch.rand(4, 3, 8, 8),
        y=torch.randint(0, 10, (4,)),
        n_pairs=200,
    )
    assert len(rep["layers"]) == 2
    first = rep["layers"][0]
    assert first["sigma_sum"] == pytest.approx(first["numel"]) and first["bound_lower"] == 1.0
    assert sum(first["hist_sigma"]["counts"]) == first["numel"]
    assert 0 <= first["table6"]["ratio"] <= 1


def test_lemma1_check_says_the_lemma_fails_at_its_own_bound():
    """CIFAR position 0 with mu = 1 (its start) and sigma at the paper's A: sum(sigma) = 1000 over
    3072 elements is above Lemma 1's own A there (~990), so the lemma promises
    P(cos(W1, W2) <= 0.01) > F(-1e-3) ~ 0.4996; the measured P is 0."""
    mu = torch.ones(3072)
    sigma = torch.full((3072,), 1000 / 3072)
    t6 = table6_statistic(mu, sigma, n_pairs=20_000, eps_r=0.01, generator=torch.Generator().manual_seed(1))
    check = lemma1_check(mu, sigma, t6, alpha=-1e-3, generator=torch.Generator().manual_seed(0))
    assert check["promised_p"] == pytest.approx(0.49960, abs=1e-5)
    assert 900 < check["bound_A"] < 1000 and check["sigma_sum"] == pytest.approx(1000)
    assert check["condition_met"] is True and check["measured_p"] == 0.0
    assert check["measured_ci"][1] < 1e-3 and check["holds"] is False
    v = check["verdict"]
    assert v.startswith("Lemma 1 does not hold here") and "0.4996" in v
    assert "The paper's own Table 6 ratios, 0.4558 (cifar10), 0.4124 (cifar100), are below" in v


def test_lemma1_check_consistent_and_not_applicable_cases():
    # mu small against sigma: sum(sigma) far above A and cos(W1, W2) centred near 0.
    mu, sigma = torch.full((3072,), 0.05), torch.ones(3072)
    t6 = table6_statistic(mu, sigma, n_pairs=20_000, eps_r=0.01, generator=torch.Generator().manual_seed(2))
    check = lemma1_check(mu, sigma, t6, generator=torch.Generator().manual_seed(3))
    assert check["condition_met"] and check["measured_p"] > 0.6 and check["holds"] is True
    assert check["verdict"].startswith("Consistent with Lemma 1")
    # Below A: no promise.
    low = lemma1_check(
        torch.ones(3072), torch.full((3072,), 0.1), t6, generator=torch.Generator().manual_seed(3)
    )
    assert low["holds"] is None and low["verdict"].startswith("Lemma 1 promises nothing here: sum(sigma)")
    # sum(mu) = 0: the lemma's assumption fails, no A.
    none = lemma1_check(torch.zeros(3072), sigma, t6, generator=torch.Generator().manual_seed(3))
    assert none["bound_A"] is None and none["holds"] is None and "sum(mu) >> 0 fails" in none["verdict"]


def test_sigma_report_carries_the_lemma1_verdict_for_every_layer():
    rw = RandomWeightConfig(sigma_init=0.4)
    model = create_model(
        "small_cnn", num_classes=10, input_shape=(3, 32, 32), mean=[0.5] * 3, std=[0.25] * 3, width=0.25,
        random_weight=rw,
    )  # fmt: skip
    rep = sigma_report(model, n_pairs=2_000)
    (layer,) = rep["layers"]
    check = layer["table6"]["lemma1"]
    # sum(sigma) = 0.4 * 3072 = 1229 >= A ~ 990 with mu = 1: promised ~0.5, measured 0.
    assert check["condition_met"] and check["measured_p"] == 0.0 and check["holds"] is False
    assert check["verdict"].startswith("Lemma 1 does not hold here")
