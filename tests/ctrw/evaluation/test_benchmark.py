"""``ctrw.evaluate_model``: any nn.Module under both protocols; randomness outside ctrw's layers
is detected and reported."""

from __future__ import annotations

import torch
from torch import nn

import ctrw
from ctrw.evaluation.benchmark import OUTSIDE_NOTES

SMALL = [
    "clean",
    {"name": "pgd", "steps": 2},
    {"name": "eotpgd", "steps": 2, "eot_draws": 2},
    {"name": "autoattack_rand", "steps": 2, "eot_draws": 2},
]


class Linear(nn.Module):
    """A fixed linear classifier on 1 x 8 x 8 images; ``noise``: Gaussian input noise drawn with
    torch's global RNG on every forward (randomness ctrw's layers know nothing of)."""

    def __init__(self, noise: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 4)
        self.noise = noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise:
            x = x + self.noise * torch.randn_like(x)
        return self.fc(x.flatten(1))


def _data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = Linear()(x).argmax(1)
    return x, y


def test_a_randomized_module_is_evaluated_under_both_protocols_and_its_randomness_reported() -> None:
    x, y = _data()
    model = Linear(noise=0.5)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    report = ctrw.evaluate_model(model, x, y, attacks=SMALL, eps=0.1, score_draws=3, batch_size=16)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is left alone
    cols = {(r["attack"], r["protocol"]) for r in report.rows}
    assert {("clean", "paper"), ("pgd2", "paper"), ("pgd2", "adaptive"), ("eotpgd2", "adaptive")} <= cols
    assert any(a.startswith("autoattack_rand") for a, _ in cols)
    assert report.randomized and report.randomness_outside and report.random_layers == 0
    assert report.notes[: len(OUTSIDE_NOTES)] == list(OUTSIDE_NOTES)
    randomness = next(d for d in report.diagnostics if d["name"] == "randomness")
    assert randomness["fired"] and randomness["details"]["random_layers"] == 0
    assert set(report.robust_accuracy) == {"paper", "adaptive"}
    assert all(0.0 <= v <= 1.0 for v in report.robust_accuracy.values())
    for r in report.rows:
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"] and r["n"] == 32
    table = report.table("markdown")
    assert "eotpgd2" in table.lower() or "EOT" in table
    # Same seed, same numbers (the randomness outside follows the global seed evaluate_model sets).
    again = ctrw.evaluate_model(Linear(noise=0.5), x, y, attacks=SMALL, eps=0.1, score_draws=3, batch_size=16)
    assert [r["accuracy"] for r in again.rows] == [r["accuracy"] for r in report.rows]


def test_a_deterministic_module_is_reported_deterministic() -> None:
    x, y = _data(16)
    report = ctrw.evaluate_model(Linear(), x, y, attacks=SMALL[:2], diagnostics=False, score_draws=2)
    assert not report.randomized and not report.randomness_outside
    clean = next(r for r in report.rows if r["attack"] == "clean")
    assert clean["accuracy"] == 1.0  # the labels are this model's predictions
    assert "deterministic" in report.notes[0]
