"""Gradient-masking diagnostics for a results table, each with a plain-language verdict.

A randomized defense can look robust because the attack never sees the model it is judged on.
These checks turn the classic warning signs (Athalye et al. 2018, Carlini et al. 2019, the
AutoAttack flags) into computed entries stored with every table:

- ``attack_ordering``: a stronger attack scoring higher than a weaker one (AutoAttack > PGD,
  FGSM or 5-step MIFGSM < 20-step PGD, EOT-PGD > PGD) beyond the confidence intervals;
- ``steps_sweep``: PGD accuracy not falling as the steps grow (10/20/50/100) while a stronger
  attack reaches lower, or rising with more steps;
- ``unbounded_attacks``: unbounded L2 attacks (CW, DeepFool) not reaching near 0%;
- ``protocol_gap``: adaptive accuracy (attacker faces the deployed model) below the paper
  protocol's by more than the CI: "overestimated by X points";
- ``randomness``: repeated forwards of the same input disagree (AutoAttack's check_randomized);
- ``zero_gradients``: fraction of examples whose input gradient is exactly zero (or not finite);
- ``peer_baseline``: for ResNet18 on CIFAR-10, adaptive robustness against plain PGD adversarial
  training's published range.

Like with like: a robust accuracy means something only with its threat model (norm and eps,
``ctrw.config.threat_model``). Every row-based check groups the rows by threat model, compares
rows within one group only and judges each group on its own; its verdict names the group
("Linf eps=0.2: ..."). The PGD runs the diagnostics make themselves (the steps sweep, the PGD
probe that supplies a missing protocol) attack at each L-inf budget of the table, with the
table's step size; a table without an L-inf attack gets no such runs.

Every entry is ``{"name", "fired", "verdict", "details"}``; ``details["groups"]`` holds the
per-group results (``threat_model``, ``fired``, ``verdict`` and the group's numbers). An entry
whose inputs do not exist is still reported, with ``fired=False``, ``details["applicable"] =
False`` and a verdict saying why. Differences count as significant when they exceed
sqrt(h1^2 + h2^2), h being the two rows' CI half-widths (a conservative interval for the
difference of paired estimates).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.config import AttackSpec, ThreatModel, threat_model
from ctrw.evaluation.scoring import vote_counts
from ctrw.nn.random_weight import random_layers, sampling

__all__ = [
    "DIAGNOSTIC_NAMES",
    "Probe",
    "attack_ordering",
    "not_applicable",
    "peer_baseline",
    "protocol_gap",
    "randomness_check",
    "run_diagnostics",
    "steps_sweep",
    "unbounded_attacks",
    "zero_gradients",
]

DIAGNOSTIC_NAMES = (
    "attack_ordering",
    "steps_sweep",
    "unbounded_attacks",
    "protocol_gap",
    "randomness",
    "zero_gradients",
    "peer_baseline",
)

DEFAULT_SWEEP_STEPS = (10, 20, 50, 100)
# An unbounded attack that leaves more than this fraction correct "did not reach near 0%".
UNBOUNDED_MAX_ACCURACY = 0.10
# More than this fraction of examples with an all-zero input gradient fires zero_gradients.
ZERO_GRADIENT_MAX_FRACTION = 0.01
# Logit differences between two forwards above this (relative) tolerance mean "randomized".
RANDOMNESS_RTOL = 1e-5
# Plain PGD-AT ResNet18 on CIFAR-10 (evaluation-science.md): PGD-20 47-51%, AutoAttack 44-48%.
PEER_PGD20 = (0.47, 0.51)
PEER_AUTOATTACK = (0.44, 0.48)
PEER_THREAT = threat_model("pgd", {"eps": 8 / 255})
# The PGD probe's steps when the budget has no PGD row; its step size is then the budget's
# other attacks' step size, or eps / 4 (the paper's 2/255 at 8/255).
PROBE_STEPS = 20
# Attacks that confirm a PGD plateau when they do not go lower at the same budget.
ADAPTIVE_STRONG = ("eotpgd", "autoattack", "autoattack_rand")

Row = dict[str, Any]
Diagnostic = dict[str, Any]
# A per-group judgement: (fired, verdict, details), or the reason the group cannot be judged.
_Judged = tuple[bool, str, dict[str, Any]] | str

_NORM_ORDER = {"linf": 0, "l2": 1, "unbounded-l2": 2}


@dataclass
class Probe:
    """What the diagnostics need for their extra runs (only when diagnostics are enabled).

    Attributes:
        model: the evaluated model (parameters frozen, eval mode).
        x: diagnostic subset of the inputs on the device, (m, C, H, W).
        y: its labels, (m,).
        run_row: evaluates an attack under a protocol on (x, y) and returns a row; its third
            argument is the progress detail.
        draws: K, fresh draws for the randomness check.
        max_rows: largest batch of stacked copies in one forward.
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    run_row: Callable[[AttackSpec, str, str], Row]
    draws: int
    max_rows: int


# --------------------------------------------------------------------------- helpers


def not_applicable(name: str, why: str, **details: Any) -> Diagnostic:
    """An entry for a diagnostic whose inputs do not exist."""
    return {
        "name": name,
        "fired": False,
        "verdict": f"Not applicable: {why}",
        "details": {"applicable": False, **details},
    }


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _pts(v: float) -> str:
    return f"{100 * v:.1f} points"


def _half_width(row: Row) -> float:
    return (row["ci_high"] - row["ci_low"]) / 2


def _tolerance(a: Row, b: Row) -> float:
    return math.hypot(_half_width(a), _half_width(b))


def _label(row: Row) -> str:
    return f"{row['attack']} ({row['protocol']})"


def _params(row: Row) -> dict[str, Any]:
    """The row's attack parameters, the paper's defaults filled in (stored rows may be partial)."""
    return {**AttackSpec(name=row["name"]).resolved(), **(row.get("params") or {})}


def _threat(row: Row) -> ThreatModel | None:
    return threat_model(row["name"], row.get("params"))


def _threat_order(t: ThreatModel) -> tuple[int, float]:
    return _NORM_ORDER[t.norm], t.eps or 0.0


def _by_threat(
    rows: Sequence[Row], norms: Sequence[str] = tuple(_NORM_ORDER)
) -> dict[ThreatModel, list[Row]]:
    """Attack rows (clean has no threat model) grouped by threat model, in norm and eps order."""
    groups: dict[ThreatModel, list[Row]] = {}
    for r in rows:
        t = _threat(r)
        if t is not None and t.norm in norms:
            groups.setdefault(t, []).append(r)
    return {t: groups[t] for t in sorted(groups, key=_threat_order)}


def _combine(name: str, judged: Sequence[tuple[ThreatModel, _Judged]], *, none: str) -> Diagnostic:
    """One entry from per-group judgements: fired if any group fired; the verdict names the groups.

    Args:
        name: the diagnostic.
        judged: (threat model, judgement or the reason it could not be judged) per group.
        none: why the diagnostic does not apply when the table has no group at all.
    """
    if not judged:
        return not_applicable(name, none)
    done = [(t, j) for t, j in judged if not isinstance(j, str)]
    skipped = [(t, j) for t, j in judged if isinstance(j, str)]
    groups: list[dict[str, Any]] = []
    for t, j in judged:
        entry = {"threat_model": t.label, "norm": t.norm, "eps": t.eps}
        if isinstance(j, str):
            entry.update(applicable=False, fired=False, verdict=f"Not applicable: {j}")
        else:
            entry.update(applicable=True, fired=j[0], verdict=j[1], **j[2])
        groups.append(entry)
    if not done:
        why = "; ".join(f"{t.label}: {j}" for t, j in skipped)
        return not_applicable(name, why, groups=groups)
    verdict = " ".join(f"{t.label}: {j[1]}" for t, j in done)  # type: ignore[index]
    if skipped:
        verdict += " Not judged: " + "; ".join(f"{t.label} ({j})" for t, j in skipped) + "."
    fired = any(j[0] for _, j in done)  # type: ignore[index]
    return {
        "name": name,
        "fired": fired,
        "verdict": verdict,
        "details": {"applicable": True, "groups": groups},
    }


def _ordering_reason(strong: Row, weak: Row) -> str | None:
    """Why ``strong`` should score at most ``weak``'s accuracy, or None if no order is expected."""
    if strong["protocol"] != weak["protocol"] or _threat(strong) != _threat(weak):
        return None
    s, w = strong["name"], weak["name"]
    ps, pw = _params(strong), _params(weak)
    if s == "autoattack" and w == "pgd":
        return "AutoAttack contains a full APGD run plus three further attacks"
    if s == "pgd" and w == "fgsm":
        return "a single FGSM step is a weaker version of PGD"
    if s == "pgd" and w == "mifgsm" and ps["steps"] >= pw["steps"]:
        return f"{pw['steps']}-step MIFGSM is not stronger than {ps['steps']}-step PGD"
    if s == "eotpgd" and w == "pgd" and ps["steps"] >= pw["steps"]:
        return "EOT-PGD with at least as many steps only averages more gradient samples"
    if s == "pgd" and w == "pgd" and ps["steps"] > pw["steps"] and ps["step_size"] == pw["step_size"]:
        return "more PGD steps should never help the defender"
    return None


# --------------------------------------------------------------------------- row checks


def _ordering_group(rows: Sequence[Row]) -> _Judged:
    pairs = [(s, w, r) for s in rows for w in rows if s is not w and (r := _ordering_reason(s, w))]
    if not pairs:
        have = ", ".join(_label(r) for r in rows)
        return (
            "needs a PGD row and an AutoAttack, FGSM, MIFGSM or EOT-PGD row under the same protocol "
            f"(this budget has {have})"
        )
    checks, violations = [], []
    for strong, weak, reason in pairs:
        excess = strong["accuracy"] - weak["accuracy"]
        tol = _tolerance(strong, weak)
        checks.append(
            {
                "stronger": _label(strong),
                "weaker": _label(weak),
                "stronger_accuracy": strong["accuracy"],
                "weaker_accuracy": weak["accuracy"],
                "excess": excess,
                "tolerance": tol,
                "violated": excess > tol,
            }
        )
        if excess > tol:
            violations.append(
                f"{_label(strong)} scores {_pct(strong['accuracy'])}, above {_label(weak)} at "
                f"{_pct(weak['accuracy'])} by {_pts(excess)} (CI {_pts(tol)}), although {reason}"
            )
    if violations:
        verdict = (
            "A stronger attack does worse than a weaker one: "
            + "; ".join(violations)
            + ". The attacks are not optimizing against the model that judges them (gradient masking): "
            "these robust accuracies are overestimates."
        )
    else:
        verdict = f"Stronger attacks score at most as high as weaker ones ({len(checks)} pairs checked, within the CIs)."
    return bool(violations), verdict, {"pairs": checks}


def attack_ordering(rows: Sequence[Row]) -> Diagnostic:
    """(a) A stronger attack scoring higher than a weaker one, beyond the CIs.

    Args:
        rows: the table's rows; pairs are compared within a protocol and a bounded threat
            model (unbounded attacks have no expected order; ``unbounded_attacks`` checks them).

    Returns:
        The diagnostic; each of ``details["groups"]`` lists its compared ``pairs``.
    """
    groups = _by_threat(rows, norms=("linf", "l2"))
    return _combine(
        "attack_ordering",
        [(t, _ordering_group(g)) for t, g in groups.items()],
        none="no eps-bounded attack in this table (attacks are ordered only at one norm and eps)",
    )


def unbounded_attacks(rows: Sequence[Row], *, max_accuracy: float = UNBOUNDED_MAX_ACCURACY) -> Diagnostic:
    """(c) Unbounded L2 attacks (CW, DeepFool) should drive accuracy to near 0%.

    Args:
        rows: the table's rows (only the unbounded-L2 ones are judged; clean accuracy is
            quoted beside them).
        max_accuracy: accuracy above which an unbounded attack "did not reach near 0%".

    Returns:
        The diagnostic.
    """
    name = "unbounded_attacks"
    found = _by_threat(rows, norms=("unbounded-l2",))
    if not found:
        return not_applicable(name, "no CW or DeepFool row in this table")
    [(threat, found_rows)] = found.items()
    clean = {r["protocol"]: r["accuracy"] for r in rows if r["name"] == "clean"}
    high = [r for r in found_rows if r["accuracy"] > max_accuracy]
    details = {
        "applicable": True,
        "threat_model": threat.label,
        "threshold": max_accuracy,
        "rows": [{"attack": _label(r), "accuracy": r["accuracy"]} for r in found_rows],
    }
    if not high:
        listing = ", ".join(f"{_label(r)} {_pct(r['accuracy'])}" for r in found_rows)
        verdict = f"Unbounded attacks reach near 0% ({listing}), as they should."
        return {"name": name, "fired": False, "verdict": verdict, "details": details}
    parts = []
    for r in high:
        ref = clean.get(r["protocol"])
        vs = f" (clean accuracy {_pct(ref)})" if ref is not None else ""
        parts.append(f"{_label(r)} leaves {_pct(r['accuracy'])} correct{vs}")
    verdict = (
        "Unbounded attacks should reach ~0% since they may move an image as far as needed, but "
        + "; ".join(parts)
        + ". Either the attack never sees a useful gradient (masking) or it is configured too weakly."
    )
    weak_cw = [r for r in high if r["name"] == "cw" and _params(r)["c"] < 1e-2]
    if weak_cw:
        verdict += (
            f" Note CW's c = {_params(weak_cw[0])['c']:g}: the misclassification term carries almost no weight, "
            "so part of this failure is the attack's setting, not robustness."
        )
    return {"name": name, "fired": True, "verdict": verdict, "details": details}


def _lowest(row: Row) -> dict[str, Any]:
    out = {"attack": row["attack"], "accuracy": row["accuracy"], "n": row["n"]}
    if row.get("probe"):
        out["probe"] = True
    return out


def _source(row: Row) -> str:
    """The row's column, said plainly when it is the diagnostics' own probe run."""
    if row.get("probe"):
        p = _params(row)
        return f"{row['attack']}: the diagnostics' PGD-{p['steps']} at this budget on {row['n']} examples"
    return row["attack"]


def _gap_group(rows: Sequence[Row]) -> _Judged:
    paper = {r["attack"]: r for r in rows if r["protocol"] == "paper"}
    adaptive = {r["attack"]: r for r in rows if r["protocol"] == "adaptive"}
    if not paper or not adaptive:
        missing = "adaptive" if paper else "paper"
        return f"no {missing}-protocol attack at this budget to compare with"
    columns = []
    for col in sorted(set(paper) & set(adaptive)):
        p, a = paper[col], adaptive[col]
        columns.append(
            {
                "attack": col,
                "paper": p["accuracy"],
                "adaptive": a["accuracy"],
                "gap": p["accuracy"] - a["accuracy"],
                "tolerance": _tolerance(p, a),
            }
        )
    p_min = min(paper.values(), key=lambda r: r["accuracy"])
    a_min = min(adaptive.values(), key=lambda r: r["accuracy"])
    headline = p_min["accuracy"] - a_min["accuracy"]
    tol = _tolerance(p_min, a_min)
    worst = max(columns, key=lambda c: c["gap"] - c["tolerance"]) if columns else None
    headline_fired = headline > tol
    column_fired = worst is not None and worst["gap"] > worst["tolerance"]
    over = headline if headline_fired else (worst["gap"] if column_fired else 0.0)  # type: ignore[index]
    details = {
        "columns": columns,
        "paper_lowest": _lowest(p_min),
        "adaptive_lowest": _lowest(a_min),
        "overestimated_by": over,
        "tolerance": tol,
    }
    single = (
        f"{worst['attack']}: {_pct(worst['paper'])} under the paper protocol vs {_pct(worst['adaptive'])} adaptive"
        if worst is not None
        else ""
    )
    if headline_fired:
        verdict = (
            f"The paper protocol overestimates robustness: its lowest robust accuracy is {_pct(p_min['accuracy'])} "
            f"({_source(p_min)}) while an attacker facing the deployed model gets {_pct(a_min['accuracy'])} "
            f"({_source(a_min)}): overestimated by {_pts(over)} (CI {_pts(tol)})."
        )
        if column_fired and worst["gap"] > headline:  # type: ignore[index]
            verdict += f" Largest gap for one attack: {single}."
    elif column_fired:
        verdict = (
            f"The paper protocol overestimates the robustness to {worst['attack']}: {single}, overestimated by "  # type: ignore[index]
            f"{_pts(over)} (CI {_pts(worst['tolerance'])}). The lowest accuracies over all attacks "  # type: ignore[index]
            f"({_pct(p_min['accuracy'])} paper, {_pct(a_min['accuracy'])} adaptive) agree within the CIs."
        )
    else:
        verdict = (
            f"Adaptive and paper-protocol accuracies agree within the CIs (lowest: paper {_pct(p_min['accuracy'])} "
            f"({_source(p_min)}), adaptive {_pct(a_min['accuracy'])} ({_source(a_min)}); difference {_pts(headline)}, "
            f"CI {_pts(tol)}): no significant sign that the paper protocol overestimates robustness."
        )
    return headline_fired or column_fired, verdict, details


def protocol_gap(rows: Sequence[Row]) -> Diagnostic:
    """(d) Adaptive accuracy below the paper protocol's by more than the CI, per threat model.

    Within each threat model, compares the lowest accuracy under each protocol over all its
    attacks (the robustness each protocol would report: adaptive-only attacks such as EOT-PGD
    count for the adaptive side), and the attacks present under both protocols one by one.
    Rows marked ``probe`` are the diagnostics' own PGD runs on the diagnostic subset.

    Args:
        rows: the table's rows (both protocols).

    Returns:
        The diagnostic; ``details["overestimated_by"]`` is the largest significant gap over the
        groups (0 if none) and ``details["threat_model"]`` its group.
    """
    groups = _by_threat(rows)
    out = _combine(
        "protocol_gap",
        [(t, _gap_group(g)) for t, g in groups.items()],
        none="no attack rows in this table",
    )
    if out["details"]["applicable"]:
        judged = [g for g in out["details"]["groups"] if g["applicable"]]
        top = max(judged, key=lambda g: g["overestimated_by"])
        out["details"]["overestimated_by"] = top["overestimated_by"]
        out["details"]["threat_model"] = top["threat_model"] if top["overestimated_by"] > 0 else None
    return out


def _sweep_group(pts: Sequence[Row], rows: Sequence[Row]) -> _Judged:
    if len(pts) < 2:
        return "the sweep has fewer than 2 step counts at this budget"
    pts = sorted(pts, key=lambda r: _params(r)["steps"])
    first, last = pts[0], pts[-1]
    steps = [_params(r)["steps"] for r in pts]
    curve = [
        {"steps": s, "accuracy": r["accuracy"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
        for s, r in zip(steps, pts, strict=True)
    ]
    rise = max(
        (
            (pts[j]["accuracy"] - pts[i]["accuracy"], i, j)
            for i in range(len(pts))
            for j in range(i + 1, len(pts))
        ),
        key=lambda t: t[0] - _tolerance(pts[t[1]], pts[t[2]]),
    )
    rising = rise[0] > _tolerance(pts[rise[1]], pts[rise[2]])
    flat = last["accuracy"] > first["accuracy"] - _tolerance(first, last)
    # Any other attack at this budget, except PGD in the sweep's protocol with no more steps.
    others = [
        r
        for r in rows
        if not (r["name"] == "pgd" and r["protocol"] == last["protocol"] and _params(r)["steps"] <= steps[-1])
    ]
    best = min(others, key=lambda r: r["accuracy"], default=None)
    lower = best is not None and best["accuracy"] < last["accuracy"] - _tolerance(best, last)
    details = {
        "protocol": last["protocol"],
        "step_size": _params(last)["step_size"],
        "n": last["n"],
        "curve": curve,
        "rising": rising,
        "flat": flat,
        "strongest_other": None if best is None else {"attack": _label(best), "accuracy": best["accuracy"]},
    }
    span = (
        f"{_pct(first['accuracy'])} at {steps[0]} steps to {_pct(last['accuracy'])} at {steps[-1]} steps, "
        f"{last['protocol']} protocol"
    )
    if rising:
        i, j = rise[1], rise[2]
        verdict = (
            f"PGD accuracy rises with more steps ({_pct(pts[i]['accuracy'])} at {steps[i]} -> "
            f"{_pct(pts[j]['accuracy'])} at {steps[j]} steps, {last['protocol']} protocol): more "
            "iterations should never help the defender, so the gradient the attack follows is not informative (masking)."
        )
    elif flat and lower:
        assert best is not None
        verdict = (
            f"PGD accuracy does not fall beyond the CIs ({span}) while "
            f"{_label(best)} reaches {_pct(best['accuracy'])}: the plateau is the limit of an attack that cannot "
            "see the right gradient, not the model's robustness."
        )
    elif flat:
        verdict = f"PGD accuracy does not fall beyond the CIs ({span}) and no other attack at this budget goes lower"
        if best is not None and any(r["name"] in ADAPTIVE_STRONG for r in rows):
            verdict += (
                f" (lowest: {_label(best)} {_pct(best['accuracy'])}): consistent with a converged attack."
            )
        else:
            verdict += (
                ": consistent with a converged attack (run EOT-PGD or AutoAttack at this budget to confirm)."
            )
    else:
        verdict = f"PGD accuracy falls as steps grow ({span}): the attack keeps making progress."
    return rising or (flat and lower), verdict, details


def steps_sweep(sweep: Sequence[Row] | None, rows: Sequence[Row]) -> Diagnostic:
    """(b) PGD accuracy should fall (or converge to the best attack's level) as steps grow.

    Judged per L-inf budget: fires when accuracy rises with more steps, or when it does not fall
    while another attack at the same budget reaches lower (the plateau is then not the model's
    robustness).

    Args:
        sweep: PGD rows at increasing step counts on the same examples, at one or more L-inf
            budgets (None: did not run).
        rows: the table's rows (the reference for "another attack reaches lower").

    Returns:
        The diagnostic; each of ``details["groups"]`` holds its ``curve``.
    """
    name = "steps_sweep"
    if sweep is None:
        return not_applicable(name, "the PGD steps sweep did not run (diagnostics are disabled)")
    table = _by_threat(rows, norms=("linf", "l2"))
    swept = _by_threat(sweep, norms=("linf",))
    judged: list[tuple[ThreatModel, _Judged]] = []
    for t in sorted(set(table) | set(swept), key=_threat_order):
        if t.norm != "linf":
            judged.append((t, "the PGD steps sweep is L-inf only"))
        else:
            judged.append((t, _sweep_group(swept.get(t, []), table.get(t, []))))
    return _combine(
        name,
        judged,
        none="no L-inf attack in this table: the sweep runs PGD at the table's own L-inf budget, and there is none",
    )


def peer_baseline(rows: Sequence[Row], model_info: dict[str, Any] | None) -> Diagnostic:
    """Adaptive robustness of a ResNet18 on CIFAR-10 against plain PGD-AT's published range.

    Args:
        rows: the table's rows (only adaptive rows at L-inf eps 8/255, the reference's budget,
            count).
        model_info: ``{"model": ..., "dataset": ...}`` of the evaluated model.

    Returns:
        The diagnostic (fires when the lowest adaptive accuracy is below PGD-AT's AutoAttack range).
    """
    name = "peer_baseline"
    info = model_info or {}
    if info.get("dataset") != "cifar10" or info.get("model") != "resnet18":
        return not_applicable(name, "the published PGD-AT reference exists for ResNet18 on CIFAR-10 only")
    adaptive = [r for r in rows if r["protocol"] == "adaptive" and _threat(r) == PEER_THREAT]
    if not adaptive:
        return not_applicable(
            name, "needs an adaptive-protocol L-inf attack at eps 8/255 (the reference's budget)"
        )
    best = min(adaptive, key=lambda r: r["accuracy"])
    low = PEER_AUTOATTACK[0]
    details = {
        "applicable": True,
        "threat_model": PEER_THREAT.label,  # type: ignore[union-attr]
        "adaptive_lowest": {"attack": best["attack"], "accuracy": best["accuracy"]},
        "pgd_at_pgd20": list(PEER_PGD20),
        "pgd_at_autoattack": list(PEER_AUTOATTACK),
    }
    where = PEER_THREAT.label  # type: ignore[union-attr]
    if best["ci_high"] < low:
        verdict = (
            f"{where}: under adaptive attack this model keeps {_pct(best['accuracy'])} ({best['attack']}), below "
            f"plain PGD adversarial training of the same ResNet18 ({_pct(PEER_AUTOATTACK[0])}-"
            f"{_pct(PEER_AUTOATTACK[1])} AutoAttack): the random weight has bought no real robustness."
        )
        return {"name": name, "fired": True, "verdict": verdict, "details": details}
    verdict = (
        f"{where}: adaptive robust accuracy {_pct(best['accuracy'])} ({best['attack']}) is not below plain PGD "
        f"adversarial training's range ({_pct(PEER_AUTOATTACK[0])}-{_pct(PEER_AUTOATTACK[1])} AutoAttack)."
    )
    return {"name": name, "fired": False, "verdict": verdict, "details": details}


# --------------------------------------------------------------------------- model checks


@torch.no_grad()
def randomness_check(model: nn.Module, x: torch.Tensor, *, draws: int, max_rows: int) -> Diagnostic:
    """(e) Do repeated forwards of the same input disagree (the deployed, per-forward model)?

    Like AutoAttack's ``check_randomized``: two forwards are compared, and the predictions of
    ``draws`` fresh draws show how often the predicted class changes.

    Args:
        model: the model (eval mode).
        x: clean inputs, (m, C, H, W).
        draws: fresh draws for the prediction-change rate (at least 2).
        max_rows: largest batch of stacked copies in one forward.

    Returns:
        The diagnostic.
    """
    draws = max(draws, 2)
    with sampling(model, "per_forward"), torch.autocast(x.device.type, enabled=False):
        a = model(x)  # (m, K)
        b = model(x)
    max_diff = float((a - b).abs().max())
    scale = float(a.abs().max())
    votes = vote_counts(model, x, draws, max_rows=max_rows)  # (m, K)
    split = float((votes.max(1).values < draws).double().mean())
    randomized = max_diff > RANDOMNESS_RTOL * (1.0 + scale)
    n_layers = len(random_layers(model))
    details = {
        "applicable": True,
        "max_logit_difference": max_diff,
        "prediction_changes_fraction": split,
        "draws": draws,
        "n": int(x.shape[0]),
        "random_layers": n_layers,
    }
    if not randomized:
        verdict = "Repeated forwards give the same output: the model is deterministic, EOT is not needed."
        return {"name": "randomness", "fired": False, "verdict": verdict, "details": details}
    verdict = (
        f"The model is randomized: two forwards of the same input differ by up to {max_diff:.3g} in the logits and the "
        f"predicted class changes between draws for {_pct(split)} of clean examples ({draws} draws). Its accuracy is a "
        "random variable: single-draw attacks and single-draw scoring are unreliable; trust adaptive rows (EOT, "
        "AutoAttack 'rand') scored over many draws."
    )
    if n_layers == 0:
        verdict += " The randomness is outside ctrw's random layers, so the protocols cannot control it."
    return {"name": "randomness", "fired": True, "verdict": verdict, "details": details}


def zero_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_fraction: float = ZERO_GRADIENT_MAX_FRACTION
) -> Diagnostic:
    """(f) Fraction of examples whose input gradient is all zero (CE and margin loss) or not finite.

    Args:
        model: the model (eval mode, parameters frozen); its random layers draw per forward.
        x: clean inputs, (m, C, H, W).
        y: labels, (m,).
        max_fraction: fraction of all-zero gradients above which the diagnostic fires.

    Returns:
        The diagnostic.
    """
    with sampling(model, "per_forward"), torch.autocast(x.device.type, enabled=False):
        xr = x.detach().clone().requires_grad_(True)
        logits = model(xr).float()  # (m, K)
        ce = F.cross_entropy(logits, y, reduction="sum")
        (g_ce,) = torch.autograd.grad(ce, xr, retain_graph=True)
        true = logits.gather(1, y.view(-1, 1)).squeeze(1)
        other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
        (g_margin,) = torch.autograd.grad((other - true).sum(), xr)
    flat_ce, flat_m = g_ce.flatten(1), g_margin.flatten(1)
    zero_ce = float((flat_ce == 0).all(1).double().mean())
    zero_margin = float((flat_m == 0).all(1).double().mean())
    nonfinite = float((~torch.isfinite(flat_ce).all(1) | ~torch.isfinite(flat_m).all(1)).double().mean())
    fired = zero_ce > max_fraction or zero_margin > max_fraction or nonfinite > 0
    details = {
        "applicable": True,
        "zero_fraction_ce": zero_ce,
        "zero_fraction_margin": zero_margin,
        "nonfinite_fraction": nonfinite,
        "threshold": max_fraction,
        "n": int(x.shape[0]),
    }
    if not fired:
        verdict = (
            f"Input gradients are informative: {_pct(zero_ce)} of examples have an all-zero cross-entropy gradient, "
            f"{_pct(zero_margin)} an all-zero margin gradient, none are NaN/inf."
        )
    else:
        verdict = (
            f"Gradients are missing: {_pct(zero_ce)} of examples have an all-zero cross-entropy gradient, "
            f"{_pct(zero_margin)} an all-zero margin gradient and {_pct(nonfinite)} a NaN/inf gradient. "
            "Gradient attacks cannot move these points, so their robust accuracy is not evidence of robustness"
        )
        verdict += (
            " (the cross-entropy saturates while the margin still has a gradient: use margin losses such as APGD-DLR or CW)."
            if zero_ce > max_fraction and zero_margin <= max_fraction
            else "."
        )
    return {"name": "zero_gradients", "fired": fired, "verdict": verdict, "details": details}


# --------------------------------------------------------------------------- orchestration


def _probe_spec(
    rows: Sequence[Row], threat: ThreatModel, *, steps: int | None = None, label: str | None = None
) -> AttackSpec:
    """PGD at an L-inf budget of the table: the budget's first PGD row's parameters, or the
    budget's eps with its attacks' step size (eps / 4 if none has one) and ``PROBE_STEPS``.

    Args:
        rows: the table's rows.
        threat: an L-inf threat model present in ``rows``.
        steps: other steps than the row's (the sweep).
        label: the probe's column name (default: the PGD row's, else "pgd<steps>_probe").
    """
    group = [r for r in rows if _threat(r) == threat]
    pgd = next((r for r in group if r["name"] == "pgd"), None)
    if pgd is not None:
        p = _params(pgd)
        eps, step_size, base_steps, start = p["eps"], p["step_size"], p["steps"], p["random_start"]
    else:
        params = [_params(r) for r in group]
        eps = params[0]["eps"]
        step_size = next((p["step_size"] for p in params if "step_size" in p), eps / 4)
        base_steps, start = PROBE_STEPS, True
    n = steps or base_steps
    if label is None and steps is None:
        label = pgd["attack"] if pgd is not None else f"pgd{n}_probe"
    return AttackSpec(name="pgd", label=label, eps=eps, step_size=step_size, steps=n, random_start=start)


def run_diagnostics(
    rows: Sequence[Row],
    *,
    protocols: Sequence[str],
    probe: Probe | None,
    model_info: dict[str, Any] | None = None,
    sweep_steps: Sequence[int] = DEFAULT_SWEEP_STEPS,
) -> list[Diagnostic]:
    """All diagnostics for one table.

    With a probe, for every L-inf budget (norm and eps) of the table: the PGD steps sweep under
    the table's main protocol, and, when the budget's rows lack one protocol, a PGD probe under
    both so that ``protocol_gap`` can compare like with like. A table without an L-inf attack
    gets no extra PGD runs.

    Args:
        rows: the table's rows (every protocol).
        protocols: the protocols the evaluation ran ("paper", "adaptive").
        probe: the model and a data subset for the extra runs (steps sweep, the missing
            protocol for ``protocol_gap``, randomness and zero-gradient checks); None when
            diagnostics are disabled, in which case only the row-based checks run.
        model_info: ``{"model", "dataset", ...}`` of the evaluated model (peer baseline).
        sweep_steps: PGD step counts of the sweep.

    Returns:
        One entry per name in ``DIAGNOSTIC_NAMES``, in that order.
    """
    rows = list(rows)
    gap_rows = rows
    sweep: list[Row] | None = None
    if probe is not None:
        main = "paper" if "paper" in protocols else "adaptive"
        sweep = []
        gap_rows = list(rows)
        have = {(r["attack"], r["protocol"]) for r in rows}
        for threat, group in _by_threat(rows, norms=("linf",)).items():
            where = threat.label
            for s in sorted(set(sweep_steps)):
                spec = _probe_spec(rows, threat, steps=s, label=f"pgd{s}_sweep")
                sweep.append(probe.run_row(spec, main, f"diagnostics: pgd{s} sweep ({main}, {where})"))
            if {r["protocol"] for r in group} >= {"paper", "adaptive"}:
                continue
            # protocol_gap needs both protocols at this budget: PGD under both, on the probe subset.
            spec = _probe_spec(rows, threat)
            for p in ("paper", "adaptive"):
                if (spec.column, p) not in have:
                    row = probe.run_row(spec, p, f"diagnostics: {spec.column} ({p}, {where})")
                    gap_rows.append({**row, "probe": True})
    out = [
        attack_ordering(rows),
        steps_sweep(sweep, rows),
        unbounded_attacks(rows),
        protocol_gap(gap_rows),
    ]
    if probe is None:
        why = "diagnostics are disabled for this evaluation (no extra runs)"
        out += [not_applicable("randomness", why), not_applicable("zero_gradients", why)]
    else:
        out += [
            randomness_check(probe.model, probe.x, draws=probe.draws, max_rows=probe.max_rows),
            zero_gradients(probe.model, probe.x, probe.y),
        ]
    out.append(peer_baseline(rows, model_info))
    return out
