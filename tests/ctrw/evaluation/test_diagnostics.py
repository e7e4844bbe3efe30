"""Gradient-masking diagnostics: silent on an honest deterministic model, loud on a masked one."""

import pytest
import torch
from torch import nn

from ctrw.config import AttackSpec, EvalConfig
from ctrw.evaluation.diagnostics import DIAGNOSTIC_NAMES
from ctrw.evaluation.evaluate import evaluate, evaluation_mode
from ctrw.evaluation.model_checks import randomness_check, zero_gradients
from ctrw.nn.random_weight import RandomWeight
from tests.support.models import NUM_CLASSES, prototype_data, trained_small_cnn

EPS = 0.1  # large enough that PGD breaks the undefended toy model


class ShatteredNet(nn.Module):
    """A deliberately masked model: base logits plus a tiny random term with a huge gradient.

    ``amp * sin(freq * P(x * delta))`` changes the logits by at most ``amp`` but, with a new
    ``delta`` per draw, its input gradient is large and points somewhere new every draw. An
    attacker that sees one draw follows noise; averaging the gradient over draws (EOT) cancels the
    noise and recovers the base model's gradient.
    """

    def __init__(self, base: nn.Module, amp: float = 0.05, freq: float = 1e4) -> None:
        super().__init__()
        self.base = base
        self.random = RandomWeight((1, 8, 8), mu_init=0.0, sigma_init=1.0)
        self.random.manual_seed(0)
        self.proj = nn.Linear(64, NUM_CLASSES, bias=False)
        self.amp, self.freq = amp, freq

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8) -> (B, K)
        z = self.proj(self.random(x).flatten(1))  # (B, K)
        return self.base(x) + self.amp * torch.sin(self.freq * z)


@pytest.fixture(scope="module")
def base_model() -> nn.Module:
    return trained_small_cnn(None)


def _spec(name: str, **kw: object) -> AttackSpec:
    return AttackSpec(name=name, eps=EPS, step_size=EPS / 4, **kw)


def _evaluate(model: nn.Module, attacks: list[AttackSpec], protocol: str = "both") -> dict:
    x, y = prototype_data(64, seed=3)
    # 8 batches: the CIs' t has 7 df (2 batches would give t = 12.7 and CIs too wide to separate rows).
    cfg = EvalConfig(attacks=attacks, protocol=protocol, batch_size=8, score_draws=4, diagnostics=True)
    return evaluate(model, x, y, cfg, num_classes=NUM_CLASSES, sweep_steps=(5, 10), diagnostic_examples=64)


def _by_name(result: dict) -> dict[str, dict]:
    return {d["name"]: d for d in result["diagnostics"]}


# --------------------------------------------------------------------------- end to end


def test_deterministic_model_eot_agrees_with_pgd_and_nothing_fires(base_model: nn.Module) -> None:
    attacks = [
        AttackSpec(name="clean"),
        _spec("pgd", steps=10),
        AttackSpec(name="fgsm", eps=EPS),
        _spec("eotpgd", steps=10, eot_draws=4),
        AttackSpec(name="deepfool", steps=20),
    ]
    result = _evaluate(base_model, attacks)
    rows = {(r["attack"], r["protocol"]): r for r in result["rows"]}
    for protocol in ("paper", "adaptive"):
        pgd, eot = rows[("pgd10", protocol)], rows[("eotpgd10", protocol)]
        assert abs(pgd["accuracy"] - eot["accuracy"]) <= max(pgd["ci_high"] - pgd["accuracy"], 0.05)
    assert rows[("clean", "paper")]["accuracy"] > 0.9 and rows[("pgd10", "paper")]["accuracy"] < 0.5
    diags = result["diagnostics"]
    assert [d["name"] for d in diags] == list(DIAGNOSTIC_NAMES)
    fired = [d["name"] for d in diags if d["fired"]]
    assert fired == []
    applicable = [d["name"] for d in diags if d["details"]["applicable"]]
    assert applicable == [n for n in DIAGNOSTIC_NAMES if n != "peer_baseline"]
    assert all(isinstance(d["verdict"], str) and d["verdict"] for d in diags)


def test_masked_model_is_caught(base_model: nn.Module) -> None:
    masked = ShatteredNet(base_model).eval()
    attacks = [AttackSpec(name="clean"), _spec("pgd", steps=10), _spec("eotpgd", steps=10, eot_draws=32)]
    result = _evaluate(masked, attacks)
    rows = {(r["attack"], r["protocol"]): r for r in result["rows"]}
    paper_pgd = rows[("pgd10", "paper")]
    adaptive_eot = rows[("eotpgd10", "adaptive")]
    # The paper protocol reports robustness that an attacker facing the deployed model removes.
    assert adaptive_eot["accuracy"] < paper_pgd["accuracy"] - 0.3
    assert adaptive_eot["ci_high"] < paper_pgd["ci_low"]
    d = _by_name(result)
    assert d["protocol_gap"]["fired"] and "overestimated by" in d["protocol_gap"]["verdict"]
    assert d["protocol_gap"]["details"]["overestimated_by"] > 0.3
    assert d["randomness"]["fired"]
    assert d["steps_sweep"]["fired"]
    assert not d["zero_gradients"]["fired"]


def test_single_protocol_runs_the_other_one_for_the_gap_check(base_model: nn.Module) -> None:
    result = _evaluate(ShatteredNet(base_model).eval(), [_spec("pgd", steps=10)], protocol="paper")
    assert [(r["attack"], r["protocol"]) for r in result["rows"]] == [("pgd10", "paper")]
    gap = _by_name(result)["protocol_gap"]
    assert gap["details"]["applicable"]
    [group] = gap["details"]["groups"]
    assert group["threat_model"] == "Linf eps=0.1"
    assert {c["attack"] for c in group["columns"]} == {"pgd10"}


def test_disabled_diagnostics_report_why(base_model: nn.Module) -> None:
    x, y = prototype_data(16, seed=4)
    cfg = EvalConfig(attacks=[AttackSpec(name="clean")], batch_size=16, score_draws=2, diagnostics=False)
    d = _by_name(evaluate(base_model, x, y, cfg, num_classes=NUM_CLASSES))
    for name in ("steps_sweep", "randomness", "zero_gradients"):
        assert not d[name]["fired"] and not d[name]["details"]["applicable"]
        assert d[name]["verdict"].startswith("Not applicable")


# --------------------------------------------------------------------------- model checks


def test_randomness_check(base_model: nn.Module) -> None:
    x, _ = prototype_data(32, seed=5)
    with evaluation_mode(base_model):
        assert not randomness_check(base_model, x, draws=4, max_rows=128)["fired"]
    masked = ShatteredNet(base_model).eval()
    with evaluation_mode(masked):
        r = randomness_check(masked, x, draws=4, max_rows=128)
    assert r["fired"] and r["details"]["max_logit_difference"] > 1e-3


class _Saturated(nn.Module):
    """Logits scaled so far that softmax is exactly one-hot in fp32: the CE gradient vanishes."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1e4 * self.base(x)


def test_zero_gradients_fire_when_the_loss_saturates(base_model: nn.Module) -> None:
    x, y = prototype_data(32, seed=6)
    with evaluation_mode(base_model):
        assert not zero_gradients(base_model, x, y)["fired"]
    saturated = _Saturated(base_model).eval()
    with evaluation_mode(saturated):
        z = zero_gradients(saturated, x, y)
    assert z["fired"] and z["details"]["zero_fraction_ce"] > 0.5
    assert z["details"]["zero_fraction_margin"] == 0.0 and "margin" in z["verdict"]


# --------------------------------------------------------------------------- threat models

BIG = 0.2  # the README's digits budget, far from the 8/255 default


def _big(name: str, **kw: object) -> AttackSpec:
    return AttackSpec(name=name, eps=BIG, step_size=BIG / 4, **kw)


def test_eot_only_table_probes_at_the_tables_eps(base_model: nn.Module) -> None:
    """The README's attack job: only EOT-PGD at eps 0.2, adaptive. The diagnostics' own PGD runs
    (protocol-gap probe, steps sweep) must attack at eps 0.2, not at the 8/255 default: on a
    deterministic model the two protocols are the same attack, so there is no gap at all."""
    result = _evaluate(base_model, [_big("eotpgd", steps=10, eot_draws=2)], protocol="adaptive")
    eot = result["rows"][0]
    assert eot["accuracy"] < 0.2  # eps 0.2 breaks the undefended toy model
    d = _by_name(result)
    gap = d["protocol_gap"]
    assert gap["details"]["applicable"] and not gap["fired"], gap["verdict"]
    assert gap["details"]["overestimated_by"] == 0.0
    assert "Linf eps=0.2" in gap["verdict"]
    [group] = gap["details"]["groups"]
    assert group["paper_lowest"]["accuracy"] < 0.2  # the probe attacked at eps 0.2
    sweep = d["steps_sweep"]
    assert sweep["details"]["applicable"] and "Linf eps=0.2" in sweep["verdict"]
    [curve] = sweep["details"]["groups"]
    assert curve["eps"] == pytest.approx(BIG) and curve["step_size"] == pytest.approx(BIG / 4)
    assert all(p["accuracy"] < 0.2 for p in curve["curve"])  # at 8/255 the toy model keeps ~all


def test_table_without_linf_attack_runs_no_default_probe(base_model: nn.Module) -> None:
    """A DeepFool-only table has no L-inf budget: no PGD sweep or gap probe at a made-up eps."""
    result = _evaluate(base_model, [AttackSpec(name="clean"), AttackSpec(name="deepfool", steps=20)], "paper")
    d = _by_name(result)
    for name in ("steps_sweep", "protocol_gap", "attack_ordering"):
        assert not d[name]["details"]["applicable"], d[name]["verdict"]
        assert d[name]["verdict"].startswith("Not applicable")
    assert "L-inf" in d["steps_sweep"]["verdict"]
    assert d["unbounded_attacks"]["details"]["applicable"]
