"""Overall progress and ETA of an evaluation, across every attack, protocol, repeat and the
diagnostics' extra runs.

Attacks differ in cost by orders of magnitude (FGSM: 2 forward-equivalents per image, AutoAttack:
thousands), so counting batches says little. Every batch is weighted by its cost in units of F
(one forward pass on one image, ``ctrw.cost``): (attack passes + the judging forward + K scoring
draws) x examples. The ETA is the elapsed time times the planned work left over the work done,
so it is a number from the first batch on and tracks the attacks' real speed as they run. The
cost model is an upper bound (DeepFool and AutoAttack stop early on fooled images), so the ETA
is pessimistic while such an attack runs, and corrects itself at the next one.

The diagnostics' runs are planned from the attack specs (the steps sweep and the PGD probe of
``ctrw.evaluation.diagnostics.run_diagnostics``, per L-inf budget); their real count can differ
slightly (a budget whose rows lack a protocol), so the fraction is capped below 1 until the end
and never goes back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ctrw.config import AttackSpec, EvalConfig, threat_model
from ctrw.cost import attack_passes

__all__ = ["EvalProgress", "batch_units", "planned_units"]

# The fraction reported before the last batch is done never reaches 1 (the plan is an estimate).
_CAP = 0.999
# The gap probe's PGD steps when the table's rows give none (ctrw.catalog's PGD default).
_PROBE_STEPS = 20


def batch_units(spec: AttackSpec, examples: int, *, num_classes: int, draws: int) -> float:
    """Cost of one batch in F: the attack, the judging forward and the K scoring draws."""
    return (attack_passes(spec, num_classes) + 1 + draws) * examples


def planned_units(
    cfg: EvalConfig,
    *,
    n: int,
    num_classes: int,
    todo: Sequence[AttackSpec],
    table: Sequence[tuple[str, dict[str, Any] | None, str]],
    diagnostic_examples: int,
    sweep_steps: Sequence[int],
) -> float:
    """Planned work of an evaluation in F.

    Args:
        cfg: the evaluation (repeats, scoring draws, diagnostics switch).
        n: examples evaluated.
        num_classes: number of classes.
        todo: the attack of every row still to run (one entry per protocol).
        table: (attack name, params, protocol) of every row of the table, done ones included:
            the diagnostics' runs follow its L-inf budgets.
        diagnostic_examples: examples of the diagnostics' runs (at most ``n``).
        sweep_steps: PGD step counts of the steps sweep.
    """
    draws = cfg.score_draws
    total = sum(cfg.repeats * batch_units(s, n, num_classes=num_classes, draws=draws) for s in todo)
    if cfg.diagnostics:
        m = min(diagnostic_examples, n)
        per_sweep = sum(2 * s + 1 + draws for s in set(sweep_steps)) * m
        probe = (2 * _PROBE_STEPS + 1 + draws) * m
        groups: dict[Any, set[str]] = {}
        for name, params, protocol in table:
            t = threat_model(name, params)
            if t is not None and t.norm == "linf":
                groups.setdefault(t, set()).add(protocol)
        # Per budget: the sweep, and PGD under each protocol the budget's rows lack.
        total += sum(per_sweep + probe * (2 - len(got & {"paper", "adaptive"})) for got in groups.values())
    return total


class EvalProgress:
    """Cost-weighted fraction done and ETA; ``advance`` after every batch."""

    def __init__(self, total_units: float) -> None:
        self.total = max(float(total_units), 1e-9)
        self.done = 0.0
        self.fraction = 0.0
        self.start = time.perf_counter()

    def advance(self, units: float) -> tuple[float, float]:
        """Count ``units`` of F as done; returns (fraction done in [0, 1), ETA in seconds)."""
        self.done += units
        # Monotone and below 1 while work remains, whatever the plan's error.
        self.fraction = max(self.fraction, min(self.done / self.total, _CAP))
        elapsed = time.perf_counter() - self.start
        eta = elapsed * (1 - self.fraction) / self.fraction if self.fraction > 0 else 0.0
        return self.fraction, eta
