"""Row checks: pure functions over result rows (no model), judged per threat model."""

import subprocess
import sys

import pytest

from ctrw.config import AttackSpec, threat_model
from ctrw.evaluation.checks import (
    attack_ordering,
    peer_baseline,
    protocol_gap,
    steps_sweep,
    unbounded_attacks,
)
from ctrw.evaluation.intervals import wilson_interval


def test_row_checks_do_not_import_torch() -> None:
    """A stored table can be re-judged where torch is absent (the API process)."""
    code = (
        "import sys; import ctrw.evaluation.checks, ctrw.evaluation.verdicts; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


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
