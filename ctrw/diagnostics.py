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

Every entry is ``{"name", "fired", "verdict", "details"}``. An entry whose inputs do not exist
is still reported, with ``fired=False``, ``details["applicable"] = False`` and a verdict saying
why. Differences count as significant when they exceed sqrt(h1^2 + h2^2), h being the two
rows' CI half-widths (a conservative interval for the difference of paired estimates).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.config import AttackSpec
from ctrw.random_weight import random_layers, sampling
from ctrw.scoring import vote_counts

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

LINF_ATTACKS = ("pgd", "fgsm", "mifgsm", "eotpgd", "transfer_mean", "autoattack", "autoattack_rand")
UNBOUNDED_ATTACKS = ("cw", "deepfool")

Row = dict[str, Any]
Diagnostic = dict[str, Any]


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


def not_applicable(name: str, why: str) -> Diagnostic:
    """An entry for a diagnostic whose inputs do not exist."""
    return {
        "name": name,
        "fired": False,
        "verdict": f"Not applicable: {why}",
        "details": {"applicable": False},
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


def _linf_eps(row: Row) -> float | None:
    """eps of an L-inf attack row, None for other rows."""
    p = row.get("params") or {}
    if row["name"] not in LINF_ATTACKS or p.get("norm", "Linf") != "Linf":
        return None
    return p.get("eps")


def _same_eps(a: Row, b: Row) -> bool:
    ea, eb = _linf_eps(a), _linf_eps(b)
    return ea is not None and eb is not None and abs(ea - eb) < 1e-9


def _ordering_reason(strong: Row, weak: Row) -> str | None:
    """Why ``strong`` should score at most ``weak``'s accuracy, or None if no order is expected."""
    if strong["protocol"] != weak["protocol"] or not _same_eps(strong, weak):
        return None
    s, w = strong["name"], weak["name"]
    ps, pw = strong["params"], weak["params"]
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


def attack_ordering(rows: Sequence[Row]) -> Diagnostic:
    """(a) A stronger attack scoring higher than a weaker one, beyond the CIs.

    Args:
        rows: the table's rows; pairs are compared within a protocol and at equal L-inf eps.

    Returns:
        The diagnostic; ``details["pairs"]`` lists every compared pair.
    """
    name = "attack_ordering"
    pairs = [(s, w, r) for s in rows for w in rows if s is not w and (r := _ordering_reason(s, w))]
    if not pairs:
        return not_applicable(
            name,
            "needs a PGD row and an AutoAttack, FGSM, MIFGSM or EOT-PGD row with the same eps and protocol",
        )
    checks, violations = [], []
    for strong, weak, reason in pairs:
        excess = strong["accuracy"] - weak["accuracy"]
        tol = _tolerance(strong, weak)
        entry = {
            "stronger": _label(strong),
            "weaker": _label(weak),
            "stronger_accuracy": strong["accuracy"],
            "weaker_accuracy": weak["accuracy"],
            "excess": excess,
            "tolerance": tol,
            "violated": excess > tol,
        }
        checks.append(entry)
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
    return {
        "name": name,
        "fired": bool(violations),
        "verdict": verdict,
        "details": {"applicable": True, "pairs": checks},
    }


def unbounded_attacks(rows: Sequence[Row], *, max_accuracy: float = UNBOUNDED_MAX_ACCURACY) -> Diagnostic:
    """(c) Unbounded L2 attacks (CW, DeepFool) should drive accuracy to near 0%.

    Args:
        rows: the table's rows.
        max_accuracy: accuracy above which an unbounded attack "did not reach near 0%".

    Returns:
        The diagnostic.
    """
    name = "unbounded_attacks"
    found = [r for r in rows if r["name"] in UNBOUNDED_ATTACKS]
    if not found:
        return not_applicable(name, "no CW or DeepFool row in this table")
    clean = {r["protocol"]: r["accuracy"] for r in rows if r["name"] == "clean"}
    high = [r for r in found if r["accuracy"] > max_accuracy]
    details = {
        "applicable": True,
        "threshold": max_accuracy,
        "rows": [{"attack": _label(r), "accuracy": r["accuracy"]} for r in found],
    }
    if not high:
        listing = ", ".join(f"{_label(r)} {_pct(r['accuracy'])}" for r in found)
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
    weak_cw = [r for r in high if r["name"] == "cw" and r["params"].get("c", 1.0) < 1e-2]
    if weak_cw:
        verdict += (
            f" Note CW's c = {weak_cw[0]['params']['c']:g}: the misclassification term carries almost no weight, "
            "so part of this failure is the attack's setting, not robustness."
        )
    return {"name": name, "fired": True, "verdict": verdict, "details": details}


def protocol_gap(rows: Sequence[Row]) -> Diagnostic:
    """(d) Adaptive accuracy below the paper protocol's by more than the CI.

    Compares the lowest accuracy under each protocol over all its attacks (the robustness each
    protocol would report: adaptive-only attacks such as EOT-PGD count for the adaptive side),
    and the attacks present under both protocols one by one.

    Args:
        rows: the table's rows (both protocols).

    Returns:
        The diagnostic; ``details["overestimated_by"]`` is the significant gap (0 if none).
    """
    name = "protocol_gap"
    paper = {r["attack"]: r for r in rows if r["protocol"] == "paper" and r["name"] != "clean"}
    adaptive = {r["attack"]: r for r in rows if r["protocol"] == "adaptive" and r["name"] != "clean"}
    if not paper or not adaptive:
        return not_applicable(name, "needs attacks under both the paper and the adaptive protocol")
    matched = sorted(set(paper) & set(adaptive))
    columns = []
    for col in matched:
        p, a = paper[col], adaptive[col]
        gap = p["accuracy"] - a["accuracy"]
        columns.append(
            {
                "attack": col,
                "paper": p["accuracy"],
                "adaptive": a["accuracy"],
                "gap": gap,
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
    fired = headline_fired or column_fired
    over = headline if headline_fired else (worst["gap"] if column_fired else 0.0)
    details = {
        "applicable": True,
        "columns": columns,
        "paper_lowest": {"attack": p_min["attack"], "accuracy": p_min["accuracy"]},
        "adaptive_lowest": {"attack": a_min["attack"], "accuracy": a_min["accuracy"]},
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
            f"({p_min['attack']}) while an attacker facing the deployed model gets {_pct(a_min['accuracy'])} "
            f"({a_min['attack']}): overestimated by {_pts(over)} (CI {_pts(tol)})."
        )
        if column_fired and worst["gap"] > headline:
            verdict += f" Largest gap for one attack: {single}."
    elif column_fired:
        verdict = (
            f"The paper protocol overestimates the robustness to {worst['attack']}: {single}, overestimated by "
            f"{_pts(over)} (CI {_pts(worst['tolerance'])}). The lowest accuracies over all attacks "
            f"({_pct(p_min['accuracy'])} paper, {_pct(a_min['accuracy'])} adaptive) agree within the CIs."
        )
    else:
        verdict = (
            f"Adaptive and paper-protocol accuracies agree within the CIs (lowest: paper {_pct(p_min['accuracy'])}, "
            f"adaptive {_pct(a_min['accuracy'])}): no sign that the paper protocol overestimates robustness."
        )
    return {"name": name, "fired": fired, "verdict": verdict, "details": details}


def steps_sweep(sweep: Sequence[Row] | None, rows: Sequence[Row]) -> Diagnostic:
    """(b) PGD accuracy should fall (or converge to the best attack's level) as steps grow.

    Fires when accuracy rises with more steps, or when it does not fall while another attack
    at the same eps reaches lower (the plateau is then not the model's robustness).

    Args:
        sweep: PGD rows at increasing step counts on the same examples (None: did not run).
        rows: the table's rows (the reference for "another attack reaches lower").

    Returns:
        The diagnostic; ``details["curve"]`` holds the sweep.
    """
    name = "steps_sweep"
    if not sweep or len(sweep) < 2:
        return not_applicable(
            name, "the PGD steps sweep did not run (diagnostics disabled or fewer than 2 step counts)"
        )
    pts = sorted(sweep, key=lambda r: r["params"]["steps"])
    first, last = pts[0], pts[-1]
    curve = [
        {
            "steps": r["params"]["steps"],
            "accuracy": r["accuracy"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
        }
        for r in pts
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
    # Any other attack at the same eps, except PGD in the sweep's protocol with no more steps.
    others = [
        r
        for r in rows
        if r["name"] != "clean"
        and _same_eps(r, last)
        and not (
            r["name"] == "pgd"
            and r["protocol"] == last["protocol"]
            and r["params"]["steps"] <= last["params"]["steps"]
        )
    ]
    best = min(others, key=lambda r: r["accuracy"], default=None)
    lower = best is not None and best["accuracy"] < last["accuracy"] - _tolerance(best, last)
    details = {
        "applicable": True,
        "protocol": last["protocol"],
        "n": last["n"],
        "curve": curve,
        "rising": rising,
        "flat": flat,
        "strongest_other": None if best is None else {"attack": _label(best), "accuracy": best["accuracy"]},
    }
    span = f"{_pct(first['accuracy'])} at {first['params']['steps']} steps to {_pct(last['accuracy'])} at {last['params']['steps']}"
    if rising:
        i, j = rise[1], rise[2]
        verdict = (
            f"PGD accuracy rises with more steps ({_pct(pts[i]['accuracy'])} at {pts[i]['params']['steps']} -> "
            f"{_pct(pts[j]['accuracy'])} at {pts[j]['params']['steps']} steps, {last['protocol']} protocol): more "
            "iterations should never help the defender, so the gradient the attack follows is not informative (masking)."
        )
    elif flat and lower:
        assert best is not None
        verdict = (
            f"PGD accuracy does not fall beyond the CIs ({span} steps, {last['protocol']} protocol) while "
            f"{_label(best)} reaches "
            f"{_pct(best['accuracy'])}: the plateau is the limit of an attack that cannot see the right gradient, "
            "not the model's robustness."
        )
    elif flat:
        verdict = (
            f"PGD accuracy does not fall beyond the CIs ({span} steps) and no stronger attack in this table goes "
            "lower: consistent with a converged attack (run EOT-PGD or AutoAttack to confirm)."
        )
    else:
        verdict = f"PGD accuracy falls as steps grow ({span} steps): the attack keeps making progress."
    return {"name": name, "fired": rising or (flat and lower), "verdict": verdict, "details": details}


def peer_baseline(rows: Sequence[Row], model_info: dict[str, Any] | None) -> Diagnostic:
    """Adaptive robustness of a ResNet18 on CIFAR-10 against plain PGD-AT's published range.

    Args:
        rows: the table's rows.
        model_info: ``{"model": ..., "dataset": ...}`` of the evaluated model.

    Returns:
        The diagnostic (fires when the lowest adaptive accuracy is below PGD-AT's AutoAttack range).
    """
    name = "peer_baseline"
    info = model_info or {}
    if info.get("dataset") != "cifar10" or info.get("model") != "resnet18":
        return not_applicable(name, "the published PGD-AT reference exists for ResNet18 on CIFAR-10 only")
    adaptive = [
        r
        for r in rows
        if r["protocol"] == "adaptive" and _linf_eps(r) is not None and abs(_linf_eps(r) - 8 / 255) < 1e-6
    ]
    if not adaptive:
        return not_applicable(name, "needs an adaptive-protocol L-inf attack at eps 8/255")
    best = min(adaptive, key=lambda r: r["accuracy"])
    low = PEER_AUTOATTACK[0]
    details = {
        "applicable": True,
        "adaptive_lowest": {"attack": best["attack"], "accuracy": best["accuracy"]},
        "pgd_at_pgd20": list(PEER_PGD20),
        "pgd_at_autoattack": list(PEER_AUTOATTACK),
    }
    if best["ci_high"] < low:
        verdict = (
            f"Under adaptive attack this model keeps {_pct(best['accuracy'])} ({best['attack']}), below plain PGD "
            f"adversarial training of the same ResNet18 ({_pct(PEER_AUTOATTACK[0])}-{_pct(PEER_AUTOATTACK[1])} "
            "AutoAttack): the random weight has bought no real robustness."
        )
        return {"name": name, "fired": True, "verdict": verdict, "details": details}
    verdict = (
        f"Adaptive robust accuracy {_pct(best['accuracy'])} ({best['attack']}) is not below plain PGD adversarial "
        f"training's range ({_pct(PEER_AUTOATTACK[0])}-{_pct(PEER_AUTOATTACK[1])} AutoAttack)."
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


def _pgd_spec(rows: Sequence[Row], *, steps: int | None = None, label: str | None = None) -> AttackSpec:
    """PGD with the table's first PGD row's parameters (or the paper's), optionally other steps."""
    first = next((r for r in rows if r["name"] == "pgd"), None)
    base = first["params"] if first else AttackSpec(name="pgd").resolved()
    return AttackSpec(
        name="pgd",
        label=label or (first["attack"] if first and steps is None else None),
        eps=base["eps"],
        step_size=base["step_size"],
        steps=steps or base["steps"],
        random_start=base["random_start"],
    )


def run_diagnostics(
    rows: Sequence[Row],
    *,
    protocols: Sequence[str],
    probe: Probe | None,
    model_info: dict[str, Any] | None = None,
    sweep_steps: Sequence[int] = DEFAULT_SWEEP_STEPS,
) -> list[Diagnostic]:
    """All diagnostics for one table.

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
        sweep = [
            probe.run_row(
                _pgd_spec(rows, steps=s, label=f"pgd{s}_sweep"), main, f"diagnostics: pgd{s} sweep ({main})"
            )
            for s in sorted(set(sweep_steps))
        ]
        if len(set(protocols)) == 1:
            # protocol_gap needs both protocols: run the table's PGD under the other one too.
            other = "adaptive" if main == "paper" else "paper"
            spec = _pgd_spec(rows)
            have = {(r["attack"], r["protocol"]) for r in rows}
            gap_rows = rows + [
                probe.run_row(spec, p, f"diagnostics: {spec.column} ({p})")
                for p in (main, other)
                if (spec.column, p) not in have
            ]
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
