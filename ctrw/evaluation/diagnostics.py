"""Gradient-masking diagnostics of a results table: the extra runs and the seven entries in order.

A randomized defense can look robust because the attack never sees the model it is judged on.
``run_diagnostics`` turns the classic warning signs (Athalye et al. 2018, Carlini et al. 2019,
the AutoAttack flags) into computed entries stored with every table, in ``DIAGNOSTIC_NAMES``
order. The checks live in ``ctrw.evaluation.checks`` (pure, over rows) and
``ctrw.evaluation.model_checks`` (they need the model); their sentences in
``ctrw.evaluation.verdicts``; what each means in docs/evaluation.md ("Diagnostics").

With a probe, the diagnostics make their own PGD runs at each L-inf budget of the table, with
the table's step size: the steps sweep, and a PGD probe that supplies a missing protocol for
``protocol_gap``. A table without an L-inf attack gets no such runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ctrw.config import AttackSpec, ThreatModel
from ctrw.evaluation.checks import (
    attack_ordering,
    peer_baseline,
    protocol_gap,
    steps_sweep,
    unbounded_attacks,
)
from ctrw.evaluation.entries import Diagnostic, Row, attack_params, by_threat, not_applicable, row_threat
from ctrw.evaluation.model_checks import randomness_check, zero_gradients
from ctrw.evaluation.verdicts import DISABLED

__all__ = ["DEFAULT_SWEEP_STEPS", "DIAGNOSTIC_NAMES", "PROBE_STEPS", "Probe", "run_diagnostics"]

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
# The PGD probe's steps when the budget has no PGD row; its step size is then the budget's
# other attacks' step size, or eps / 4 (the paper's 2/255 at 8/255).
PROBE_STEPS = 20


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
    group = [r for r in rows if row_threat(r) == threat]
    pgd = next((r for r in group if r["name"] == "pgd"), None)
    if pgd is not None:
        p = attack_params(pgd)
        eps, step_size, base_steps, start = p["eps"], p["step_size"], p["steps"], p["random_start"]
    else:
        params = [attack_params(r) for r in group]
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
        for threat, group in by_threat(rows, norms=("linf",)).items():
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
        out += [not_applicable("randomness", DISABLED), not_applicable("zero_gradients", DISABLED)]
    else:
        out += [
            randomness_check(probe.model, probe.x, draws=probe.draws, max_rows=probe.max_rows),
            zero_gradients(probe.model, probe.x, probe.y),
        ]
    out.append(peer_baseline(rows, model_info))
    return out
