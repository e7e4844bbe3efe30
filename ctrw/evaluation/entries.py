"""Diagnostic entries and the row helpers every row check shares.

``diagnostic`` is the one place a diagnostic's JSON shape ``{"name", "fired", "verdict",
"details"}`` is written (``not_applicable`` and ``combine`` go through it). Rows are grouped by
threat model (``by_threat``) and judged per group (``combine``); two rows differ significantly
when the difference exceeds ``tolerance``: sqrt(h1^2 + h2^2), h being their CI half-widths (a
conservative interval for the difference of paired estimates). Pure: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ctrw import records
from ctrw.catalog import NORMS
from ctrw.config import AttackSpec, ThreatModel, threat_model
from ctrw.evaluation import verdicts as V

__all__ = [
    "Diagnostic",
    "Judged",
    "Row",
    "attack_params",
    "by_threat",
    "combine",
    "diagnostic",
    "label",
    "not_applicable",
    "row_threat",
    "threat_order",
    "tolerance",
]

Row = dict[str, Any]
Diagnostic = dict[str, Any]
# A per-group judgement: (fired, verdict, details), or the reason the group cannot be judged.
Judged = tuple[bool, str, dict[str, Any]] | str

_NORM_ORDER = {norm: i for i, norm in enumerate(NORMS)}


# --------------------------------------------------------------------------- entries


def diagnostic(name: str, *, fired: bool, verdict: str, details: dict[str, Any]) -> Diagnostic:
    """One diagnostic entry: the only place one is built (its shape: ``ctrw.records.Diagnostic``)."""
    return records.Diagnostic(name=name, fired=fired, verdict=verdict, details=details).model_dump()


def not_applicable(name: str, why: str, **details: Any) -> Diagnostic:
    """An entry for a diagnostic whose inputs do not exist."""
    return diagnostic(
        name, fired=False, verdict=V.NOT_APPLICABLE.format(why=why), details={"applicable": False, **details}
    )


# --------------------------------------------------------------------------- row helpers


def _half_width(row: Row) -> float:
    return (row["ci_high"] - row["ci_low"]) / 2


def tolerance(a: Row, b: Row) -> float:
    """How far apart two rows' accuracies may be by chance: sqrt(h1^2 + h2^2)."""
    return math.hypot(_half_width(a), _half_width(b))


def label(row: Row) -> str:
    """A row as the verdicts name it: "pgd20 (paper)"."""
    return f"{row['attack']} ({row['protocol']})"


def attack_params(row: Row) -> dict[str, Any]:
    """The row's attack parameters, the paper's defaults filled in (stored rows may be partial)."""
    return {**AttackSpec(name=row["name"]).resolved(), **(row.get("params") or {})}


def row_threat(row: Row) -> ThreatModel | None:
    """The row's threat model (None for clean)."""
    return threat_model(row["name"], row.get("params"))


def threat_order(t: ThreatModel) -> tuple[int, float]:
    """Sort key of threat models: L-inf, L2, unbounded L2, then by eps."""
    return _NORM_ORDER[t.norm], t.eps or 0.0


def by_threat(rows: Sequence[Row], norms: Sequence[str] = tuple(_NORM_ORDER)) -> dict[ThreatModel, list[Row]]:
    """Attack rows (clean has no threat model) grouped by threat model, in norm and eps order."""
    groups: dict[ThreatModel, list[Row]] = {}
    for r in rows:
        t = row_threat(r)
        if t is not None and t.norm in norms:
            groups.setdefault(t, []).append(r)
    return {t: groups[t] for t in sorted(groups, key=threat_order)}


def combine(name: str, judged: Sequence[tuple[ThreatModel, Judged]], *, none: str) -> Diagnostic:
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
            entry.update(applicable=False, fired=False, verdict=V.NOT_APPLICABLE.format(why=j))
        else:
            entry.update(applicable=True, fired=j[0], verdict=j[1], **j[2])
        groups.append(entry)
    if not done:
        why = "; ".join(V.GROUP_SKIPPED.format(label=t.label, why=j) for t, j in skipped)
        return not_applicable(name, why, groups=groups)
    verdict = " ".join(V.GROUP.format(label=t.label, verdict=j[1]) for t, j in done)  # type: ignore[index]
    if skipped:
        listing = "; ".join(V.NOT_JUDGED_GROUP.format(label=t.label, why=j) for t, j in skipped)
        verdict += V.NOT_JUDGED.format(groups=listing)
    fired = any(j[0] for _, j in done)  # type: ignore[index]
    return diagnostic(name, fired=fired, verdict=verdict, details={"applicable": True, "groups": groups})
