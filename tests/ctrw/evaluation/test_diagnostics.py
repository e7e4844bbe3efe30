"""Gradient-masking diagnostics: silent on an honest deterministic model, loud on a masked one."""

import pytest
import torch
from torch import nn

from ctrw.config import AttackSpec, EvalConfig, threat_model
from ctrw.evaluation.checks import (
    attack_ordering,
    peer_baseline,
    protocol_gap,
    steps_sweep,
    unbounded_attacks,
)
from ctrw.evaluation.diagnostics import DIAGNOSTIC_NAMES
from ctrw.evaluation.evaluate import evaluate, evaluation_mode
from ctrw.evaluation.model_checks import randomness_check, zero_gradients
from ctrw.evaluation.scoring import wilson_interval
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


# --------------------------------------------------------------------------- row checks


def _row(
    attack: str, name: str, acc: float, *, protocol: str = "paper", n: int = 10_000, **params: object
) -> dict:
    low, high = wilson_interval(acc * n, n)
    base = AttackSpec(name=name).resolved()
    return {
        "attack": attack,
        "name": name,
        "protocol": protocol,
        "accuracy": acc,
        "n": n,
        "ci_low": low,
        "ci_high": high,
        "params": {**base, **params},
    }


# The paper's Table 1 (ResNet18, CIFAR-10, published protocol).
PAPER_TABLE = [
    _row("clean", "clean", 0.8369),
    _row("pgd20", "pgd", 0.6948),
    _row("fgsm", "fgsm", 0.6649),
    _row("autoattack", "autoattack", 0.7356),
    _row("cw", "cw", 0.8293),
    _row("mifgsm", "mifgsm", 0.6547),
    _row("deepfool", "deepfool", 0.8245),
]


def test_paper_table_red_flags() -> None:
    order = attack_ordering(PAPER_TABLE)
    assert order["fired"]
    [group] = order["details"]["groups"]
    violated = {(p["stronger"], p["weaker"]) for p in group["pairs"] if p["violated"]}
    assert violated == {
        ("autoattack (paper)", "pgd20 (paper)"),
        ("pgd20 (paper)", "fgsm (paper)"),
        ("pgd20 (paper)", "mifgsm (paper)"),
    }
    unbounded = unbounded_attacks(PAPER_TABLE)
    assert unbounded["fired"] and "c = 0.0001" in unbounded["verdict"]
    assert not protocol_gap(PAPER_TABLE)["details"]["applicable"]


def test_orderings_that_hold_do_not_fire() -> None:
    rows = [_row("pgd20", "pgd", 0.50), _row("fgsm", "fgsm", 0.56), _row("autoattack", "autoattack", 0.49)]
    assert not attack_ordering(rows)["fired"]
    # Differences within the CIs are noise, not a red flag.
    small = [_row("pgd20", "pgd", 0.50, n=100), _row("autoattack", "autoattack", 0.53, n=100)]
    assert not attack_ordering(small)["fired"]
    # Attacks with different budgets are not compared.
    other_eps = [_row("pgd20", "pgd", 0.50), _row("fgsm", "fgsm", 0.40, eps=4 / 255)]
    assert not attack_ordering(other_eps)["details"]["applicable"]


def test_protocol_gap_reports_the_overestimate() -> None:
    rows = [
        _row("pgd20", "pgd", 0.60),
        _row("pgd20", "pgd", 0.58, protocol="adaptive"),
        _row("eotpgd100", "eotpgd", 0.59, steps=100),
        _row("eotpgd100", "eotpgd", 0.42, protocol="adaptive", steps=100),
    ]
    gap = protocol_gap(rows)
    assert gap["fired"] and "overestimated by 17.0 points" in gap["verdict"]
    assert gap["details"]["overestimated_by"] == pytest.approx(0.17)
    same = [_row("pgd20", "pgd", 0.60), _row("pgd20", "pgd", 0.595, protocol="adaptive")]
    assert not protocol_gap(same)["fired"]


def test_steps_sweep_verdicts() -> None:
    def sweep(*accs: float) -> list[dict]:
        return [
            _row(f"pgd{s}", "pgd", a, n=1000, steps=s) for s, a in zip((10, 20, 50, 100), accs, strict=True)
        ]

    rising = steps_sweep(sweep(0.60, 0.65, 0.70, 0.75), [])
    assert rising["fired"] and "rises" in rising["verdict"]
    falling = steps_sweep(sweep(0.60, 0.50, 0.45, 0.44), [])
    assert not falling["fired"] and "falls" in falling["verdict"]
    flat = sweep(0.69, 0.69, 0.68, 0.69)
    assert not steps_sweep(flat, [])["fired"]  # converged, nothing says otherwise
    eot = _row("eotpgd100", "eotpgd", 0.42, protocol="adaptive", steps=100)
    plateau = steps_sweep(flat, [eot])
    assert plateau["fired"] and "eotpgd100 (adaptive)" in plateau["verdict"]
    assert not steps_sweep(None, [eot])["details"]["applicable"]


def test_peer_baseline() -> None:
    info = {"model": "resnet18", "dataset": "cifar10"}
    weak = [_row("eotpgd100", "eotpgd", 0.30, protocol="adaptive", steps=100)]
    assert peer_baseline(weak, info)["fired"]
    strong = [_row("eotpgd100", "eotpgd", 0.50, protocol="adaptive", steps=100)]
    assert not peer_baseline(strong, info)["fired"]
    assert not peer_baseline(weak, {"model": "small_cnn", "dataset": "digits"})["details"]["applicable"]
    assert not peer_baseline(PAPER_TABLE, info)["details"]["applicable"]


def test_protocol_gap_counts_adaptive_only_attacks() -> None:
    """An EOT column run only under the adaptive protocol is what the adaptive attacker reports."""
    rows = [
        _row("pgd20", "pgd", 0.75, n=10_000),
        _row("eotpgd20", "eotpgd", 0.60, protocol="adaptive", n=10_000),
    ]
    gap = protocol_gap(rows)
    [group] = gap["details"]["groups"]
    assert gap["fired"] and group["adaptive_lowest"]["attack"] == "eotpgd20"
    assert gap["details"]["overestimated_by"] == pytest.approx(0.15)
    assert not protocol_gap([_row("pgd20", "pgd", 0.75)])["details"]["applicable"]


# --------------------------------------------------------------------------- threat models

BIG = 0.2  # the README's digits budget, far from the 8/255 default


def _big(name: str, **kw: object) -> AttackSpec:
    return AttackSpec(name=name, eps=BIG, step_size=BIG / 4, **kw)


def test_threat_model_of_each_attack() -> None:
    assert AttackSpec(name="clean").threat_model is None
    assert AttackSpec(name="pgd").threat_model == threat_model("fgsm", {"eps": 8 / 255})
    assert AttackSpec(name="pgd").threat_model.label == "Linf eps=8/255"  # type: ignore[union-attr]
    assert _big("eotpgd").threat_model.label == "Linf eps=0.2"  # type: ignore[union-attr]
    l2 = AttackSpec(name="autoattack", norm="L2", eps=0.5).threat_model
    assert l2 is not None and l2.label == "L2 eps=0.5" and l2 != threat_model("pgd", {"eps": 0.5})
    assert AttackSpec(name="cw").threat_model == AttackSpec(name="deepfool").threat_model
    assert threat_model("deepfool").label == "unbounded L2"  # type: ignore[union-attr]


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


def test_protocol_gap_never_compares_two_budgets() -> None:
    """Paper PGD at 8/255 against adaptive EOT-PGD at 0.2 says nothing about the protocols."""
    rows = [
        _row("pgd20", "pgd", 0.70),
        _row("eotpgd20", "eotpgd", 0.30, protocol="adaptive", eps=BIG, step_size=BIG / 4, steps=20),
    ]
    gap = protocol_gap(rows)
    assert not gap["fired"] and not gap["details"]["applicable"]
    assert "Linf eps=8/255" in gap["verdict"] and "Linf eps=0.2" in gap["verdict"]


def test_two_budgets_are_judged_per_group() -> None:
    small = {"eps": 8 / 255}
    big = {"eps": BIG, "step_size": BIG / 4}
    # At 8/255 the adaptive EOT-PGD is 15 points below the paper protocol; at 0.2 the protocols
    # agree. Mixing the budgets (lowest paper 40% vs lowest adaptive 39%) would hide the gap.
    rows = [
        _row("pgd20", "pgd", 0.70, **small),
        _row("pgd20", "pgd", 0.69, protocol="adaptive", **small),
        _row("eotpgd20", "eotpgd", 0.55, protocol="adaptive", steps=20, **small),
        _row("pgd20_big", "pgd", 0.40, **big),
        _row("eotpgd20_big", "eotpgd", 0.39, protocol="adaptive", steps=20, **big),
    ]
    gap = protocol_gap(rows)
    assert gap["fired"] and gap["details"]["overestimated_by"] == pytest.approx(0.15)
    groups = {g["threat_model"]: g for g in gap["details"]["groups"]}
    assert set(groups) == {"Linf eps=8/255", "Linf eps=0.2"}
    assert groups["Linf eps=8/255"]["fired"] and not groups["Linf eps=0.2"]["fired"]
    assert "Linf eps=8/255: The paper protocol overestimates" in gap["verdict"]
    # Ordering: FGSM at 0.2 below PGD at 0.2 is a violation, FGSM at 0.2 below PGD at 8/255 is not.
    order = attack_ordering([*rows, _row("fgsm_big", "fgsm", 0.30, eps=BIG)])  # PGD at 0.2: 40% > 30%
    assert order["fired"] and "Linf eps=0.2" in order["verdict"]
    pairs = {
        (p["stronger"], p["weaker"]): p["violated"] for g in order["details"]["groups"] for p in g["pairs"]
    }
    assert pairs == {
        ("eotpgd20 (adaptive)", "pgd20 (adaptive)"): False,
        ("pgd20_big (paper)", "fgsm_big (paper)"): True,
    }


def test_steps_sweep_compares_only_its_own_budget() -> None:
    sweep = [_row(f"pgd{s}", "pgd", 0.69, n=1000, steps=s) for s in (10, 20, 50, 100)]  # 8/255
    elsewhere = _row("eotpgd20", "eotpgd", 0.10, protocol="adaptive", eps=BIG, step_size=BIG / 4, steps=20)
    d = steps_sweep(sweep, [elsewhere])
    assert not d["fired"] and "Linf eps=8/255" in d["verdict"]
    same = _row("eotpgd20", "eotpgd", 0.10, protocol="adaptive", steps=20)
    assert steps_sweep(sweep, [same])["fired"]


def test_peer_baseline_uses_the_threat_model() -> None:
    info = {"model": "resnet18", "dataset": "cifar10"}
    l2 = [_row("aa_l2", "autoattack", 0.30, protocol="adaptive", norm="L2", eps=8 / 255)]
    assert not peer_baseline(l2, info)["details"]["applicable"]
