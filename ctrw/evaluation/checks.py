"""Row checks: gradient-masking warning signs computed from a table's result rows alone.

Pure functions over rows (no model, no torch), so a stored table can be re-judged anywhere.
Each groups the rows by threat model (``ctrw.config.threat_model``), compares rows within one
group only and judges each group on its own (``ctrw.evaluation.entries``: grouping, tolerance,
the entry's shape). Sentences: ``ctrw.evaluation.verdicts``; meaning: docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ctrw.config import ThreatModel, threat_model
from ctrw.evaluation import verdicts as V
from ctrw.evaluation.entries import (
    Diagnostic,
    Judged,
    Row,
    attack_params,
    by_threat,
    combine,
    diagnostic,
    label,
    not_applicable,
    row_threat,
    threat_order,
    tolerance,
)
from ctrw.evaluation.verdicts import pct, pts

__all__ = [
    "ADAPTIVE_STRONG",
    "PEER_AUTOATTACK",
    "PEER_PGD20",
    "PEER_THREAT",
    "UNBOUNDED_MAX_ACCURACY",
    "attack_ordering",
    "not_applicable",
    "peer_baseline",
    "protocol_gap",
    "steps_sweep",
    "unbounded_attacks",
]

# An unbounded attack that leaves more than this fraction correct "did not reach near 0%".
UNBOUNDED_MAX_ACCURACY = 0.10
# Plain PGD-AT ResNet18 on CIFAR-10 (evaluation-science.md): PGD-20 47-51%, AutoAttack 44-48%.
PEER_PGD20 = (0.47, 0.51)
PEER_AUTOATTACK = (0.44, 0.48)
PEER_THREAT = threat_model("pgd", {"eps": 8 / 255})
# Attacks that confirm a PGD plateau when they do not go lower at the same budget.
ADAPTIVE_STRONG = ("eotpgd", "autoattack", "autoattack_rand")


# --------------------------------------------------------------------------- attack_ordering


def _ordering_reason(strong: Row, weak: Row) -> str | None:
    """Why ``strong`` should score at most ``weak``'s accuracy, or None if no order is expected."""
    if strong["protocol"] != weak["protocol"] or row_threat(strong) != row_threat(weak):
        return None
    s, w = strong["name"], weak["name"]
    ps, pw = attack_params(strong), attack_params(weak)
    if s == "autoattack" and w == "pgd":
        return V.REASON_AUTOATTACK_PGD
    if s == "pgd" and w == "fgsm":
        return V.REASON_PGD_FGSM
    if s == "pgd" and w == "mifgsm" and ps["steps"] >= pw["steps"]:
        return V.REASON_PGD_MIFGSM.format(weak_steps=pw["steps"], strong_steps=ps["steps"])
    if s == "eotpgd" and w == "pgd" and ps["steps"] >= pw["steps"]:
        return V.REASON_EOTPGD_PGD
    if s == "pgd" and w == "pgd" and ps["steps"] > pw["steps"] and ps["step_size"] == pw["step_size"]:
        return V.REASON_PGD_STEPS
    return None


def _ordering_group(rows: Sequence[Row]) -> Judged:
    pairs = [(s, w, r) for s in rows for w in rows if s is not w and (r := _ordering_reason(s, w))]
    if not pairs:
        return V.ORDERING_NO_PAIR.format(have=", ".join(label(r) for r in rows))
    checks, violations = [], []
    for strong, weak, reason in pairs:
        excess = strong["accuracy"] - weak["accuracy"]
        tol = tolerance(strong, weak)
        checks.append(
            {
                "stronger": label(strong),
                "weaker": label(weak),
                "stronger_accuracy": strong["accuracy"],
                "weaker_accuracy": weak["accuracy"],
                "excess": excess,
                "tolerance": tol,
                "violated": excess > tol,
            }
        )
        if excess > tol:
            violations.append(
                V.ORDERING_VIOLATION.format(
                    stronger=label(strong),
                    stronger_accuracy=pct(strong["accuracy"]),
                    weaker=label(weak),
                    weaker_accuracy=pct(weak["accuracy"]),
                    excess=pts(excess),
                    tolerance=pts(tol),
                    reason=reason,
                )
            )
    if violations:
        verdict = V.ORDERING_FIRED.format(violations="; ".join(violations))
    else:
        verdict = V.ORDERING_OK.format(pairs=len(checks))
    return bool(violations), verdict, {"pairs": checks}


def attack_ordering(rows: Sequence[Row]) -> Diagnostic:
    """(a) A stronger attack scoring higher than a weaker one, beyond the CIs.

    Args:
        rows: the table's rows; pairs are compared within a protocol and a bounded threat
            model (unbounded attacks have no expected order; ``unbounded_attacks`` checks them).

    Returns:
        The diagnostic; each of ``details["groups"]`` lists its compared ``pairs``.
    """
    groups = by_threat(rows, norms=("linf", "l2"))
    return combine(
        "attack_ordering", [(t, _ordering_group(g)) for t, g in groups.items()], none=V.ORDERING_NONE
    )


# --------------------------------------------------------------------------- unbounded_attacks


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
    found = by_threat(rows, norms=("unbounded-l2",))
    if not found:
        return not_applicable(name, V.UNBOUNDED_NONE)
    [(threat, found_rows)] = found.items()
    clean = {r["protocol"]: r["accuracy"] for r in rows if r["name"] == "clean"}
    high = [r for r in found_rows if r["accuracy"] > max_accuracy]
    details = {
        "applicable": True,
        "threat_model": threat.label,
        "threshold": max_accuracy,
        "rows": [{"attack": label(r), "accuracy": r["accuracy"]} for r in found_rows],
    }
    if not high:
        listing = ", ".join(
            V.UNBOUNDED_ROW.format(attack=label(r), accuracy=pct(r["accuracy"])) for r in found_rows
        )
        return diagnostic(name, fired=False, verdict=V.UNBOUNDED_OK.format(rows=listing), details=details)
    parts = []
    for r in high:
        ref = clean.get(r["protocol"])
        vs = V.UNBOUNDED_CLEAN.format(accuracy=pct(ref)) if ref is not None else ""
        parts.append(V.UNBOUNDED_HIGH_ROW.format(attack=label(r), accuracy=pct(r["accuracy"]), clean=vs))
    verdict = V.UNBOUNDED_FIRED.format(rows="; ".join(parts))
    weak_cw = [r for r in high if r["name"] == "cw" and attack_params(r)["c"] < 1e-2]
    if weak_cw:
        verdict += V.UNBOUNDED_WEAK_CW.format(c=attack_params(weak_cw[0])["c"])
    return diagnostic(name, fired=True, verdict=verdict, details=details)


# --------------------------------------------------------------------------- protocol_gap


def _lowest(row: Row) -> dict[str, Any]:
    out = {"attack": row["attack"], "accuracy": row["accuracy"], "n": row["n"]}
    if row.get("probe"):
        out["probe"] = True
    return out


def _source(row: Row) -> str:
    """The row's column, said plainly when it is the diagnostics' own probe run."""
    if row.get("probe"):
        return V.PROBE_SOURCE.format(attack=row["attack"], steps=attack_params(row)["steps"], n=row["n"])
    return row["attack"]


def _gap_group(rows: Sequence[Row]) -> Judged:
    paper = {r["attack"]: r for r in rows if r["protocol"] == "paper"}
    adaptive = {r["attack"]: r for r in rows if r["protocol"] == "adaptive"}
    if not paper or not adaptive:
        return V.GAP_MISSING.format(missing="adaptive" if paper else "paper")
    columns = []
    for col in sorted(set(paper) & set(adaptive)):
        p, a = paper[col], adaptive[col]
        columns.append(
            {
                "attack": col,
                "paper": p["accuracy"],
                "adaptive": a["accuracy"],
                "gap": p["accuracy"] - a["accuracy"],
                "tolerance": tolerance(p, a),
            }
        )
    p_min = min(paper.values(), key=lambda r: r["accuracy"])
    a_min = min(adaptive.values(), key=lambda r: r["accuracy"])
    headline = p_min["accuracy"] - a_min["accuracy"]
    tol = tolerance(p_min, a_min)
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
    column = (
        V.GAP_COLUMN.format(
            attack=worst["attack"], paper=pct(worst["paper"]), adaptive=pct(worst["adaptive"])
        )
        if worst is not None
        else ""
    )
    lowest = {"paper": pct(p_min["accuracy"]), "adaptive": pct(a_min["accuracy"])}
    sources = {"paper_source": _source(p_min), "adaptive_source": _source(a_min)}
    if headline_fired:
        verdict = V.GAP_FIRED.format(**lowest, **sources, over=pts(over), tolerance=pts(tol))
        if column_fired and worst["gap"] > headline:  # type: ignore[index]
            verdict += V.GAP_LARGEST_COLUMN.format(column=column)
    elif column_fired:
        assert worst is not None
        verdict = V.GAP_COLUMN_FIRED.format(
            attack=worst["attack"], column=column, over=pts(over), tolerance=pts(worst["tolerance"]), **lowest
        )
    else:
        verdict = V.GAP_OK.format(**lowest, **sources, difference=pts(headline), tolerance=pts(tol))
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
    groups = by_threat(rows)
    out = combine("protocol_gap", [(t, _gap_group(g)) for t, g in groups.items()], none=V.GAP_NONE)
    if out["details"]["applicable"]:
        judged = [g for g in out["details"]["groups"] if g["applicable"]]
        top = max(judged, key=lambda g: g["overestimated_by"])
        out["details"]["overestimated_by"] = top["overestimated_by"]
        out["details"]["threat_model"] = top["threat_model"] if top["overestimated_by"] > 0 else None
    return out


# --------------------------------------------------------------------------- steps_sweep


def _sweep_group(swept: Sequence[Row], rows: Sequence[Row]) -> Judged:
    if len(swept) < 2:
        return V.SWEEP_TOO_FEW
    swept = sorted(swept, key=lambda r: attack_params(r)["steps"])
    first, last = swept[0], swept[-1]
    steps = [attack_params(r)["steps"] for r in swept]
    curve = [
        {"steps": s, "accuracy": r["accuracy"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
        for s, r in zip(steps, swept, strict=True)
    ]
    rise = max(
        (
            (swept[j]["accuracy"] - swept[i]["accuracy"], i, j)
            for i in range(len(swept))
            for j in range(i + 1, len(swept))
        ),
        key=lambda t: t[0] - tolerance(swept[t[1]], swept[t[2]]),
    )
    rising = rise[0] > tolerance(swept[rise[1]], swept[rise[2]])
    flat = last["accuracy"] > first["accuracy"] - tolerance(first, last)
    # Any other attack at this budget, except PGD in the sweep's protocol with no more steps.
    protocol, most = last["protocol"], steps[-1]
    others = [
        r
        for r in rows
        if not (r["name"] == "pgd" and r["protocol"] == protocol and attack_params(r)["steps"] <= most)
    ]
    best = min(others, key=lambda r: r["accuracy"], default=None)
    lower = best is not None and best["accuracy"] < last["accuracy"] - tolerance(best, last)
    details = {
        "protocol": last["protocol"],
        "step_size": attack_params(last)["step_size"],
        "n": last["n"],
        "curve": curve,
        "rising": rising,
        "flat": flat,
        "strongest_other": None if best is None else {"attack": label(best), "accuracy": best["accuracy"]},
    }
    span = V.SWEEP_SPAN.format(
        first=pct(first["accuracy"]), n0=steps[0], last=pct(last["accuracy"]), n1=most, protocol=protocol
    )
    if rising:
        i, j = rise[1], rise[2]
        low, high = pct(swept[i]["accuracy"]), pct(swept[j]["accuracy"])
        verdict = V.SWEEP_RISING.format(low=low, n0=steps[i], high=high, n1=steps[j], protocol=protocol)
    elif flat and lower:
        assert best is not None
        verdict = V.SWEEP_PLATEAU.format(span=span, best=label(best), best_accuracy=pct(best["accuracy"]))
    elif flat:
        verdict = V.SWEEP_FLAT.format(span=span)
        if best is not None and any(r["name"] in ADAPTIVE_STRONG for r in rows):
            verdict += V.SWEEP_FLAT_CONFIRMED.format(best=label(best), best_accuracy=pct(best["accuracy"]))
        else:
            verdict += V.SWEEP_FLAT_UNCONFIRMED
    else:
        verdict = V.SWEEP_FALLING.format(span=span)
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
        return not_applicable(name, V.SWEEP_DISABLED)
    table = by_threat(rows, norms=("linf", "l2"))
    swept = by_threat(sweep, norms=("linf",))
    judged: list[tuple[ThreatModel, Judged]] = []
    for t in sorted(set(table) | set(swept), key=threat_order):
        if t.norm != "linf":
            judged.append((t, V.SWEEP_LINF_ONLY))
        else:
            judged.append((t, _sweep_group(swept.get(t, []), table.get(t, []))))
    return combine(name, judged, none=V.SWEEP_NONE)


# --------------------------------------------------------------------------- peer_baseline


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
        return not_applicable(name, V.PEER_OTHER_MODEL)
    adaptive = [r for r in rows if r["protocol"] == "adaptive" and row_threat(r) == PEER_THREAT]
    if not adaptive:
        return not_applicable(name, V.PEER_NO_ROWS)
    best = min(adaptive, key=lambda r: r["accuracy"])
    where = PEER_THREAT.label  # type: ignore[union-attr]
    details = {
        "applicable": True,
        "threat_model": where,
        "adaptive_lowest": {"attack": best["attack"], "accuracy": best["accuracy"]},
        "pgd_at_pgd20": list(PEER_PGD20),
        "pgd_at_autoattack": list(PEER_AUTOATTACK),
    }
    fired = best["ci_high"] < PEER_AUTOATTACK[0]
    low, high = (pct(v) for v in PEER_AUTOATTACK)
    verdict = (V.PEER_FIRED if fired else V.PEER_OK).format(
        where=where, accuracy=pct(best["accuracy"]), attack=best["attack"], low=low, high=high
    )
    return diagnostic(name, fired=fired, verdict=verdict, details=details)
