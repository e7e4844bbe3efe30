"""Result rows as the worker stores them, for the table tests (library and service): a job's PGD
and clean rows, and a whole suite's sub-job results."""

from __future__ import annotations

from typing import Any

from ctrw.evaluation.checks import attack_ordering, not_applicable, unbounded_attacks
from ctrw.paper import SuiteRequest, expand_suite

# A job's PGD row with an asymmetric interval (a Wilson interval near 0 or 1 is asymmetric).
PGD = {"attack": "pgd2", "name": "pgd", "protocol": "paper", "accuracy": 0.5, "ci_low": 0.40, "ci_high": 0.55,
       "n": 64, "std": None, "params": {"steps": 2}, "scoring": {"worst_case": 0.25, "majority": 0.5}}  # fmt: skip
CLEAN = {**PGD, "attack": "clean", "name": "clean", "accuracy": 0.75, "ci_low": 0.63, "ci_high": 0.84}


def suite_results(req: SuiteRequest, unbounded: float) -> dict[str, dict[str, Any]]:
    """Every sub-job succeeded at 50% (CW and DeepFool at ``unbounded``), with the diagnostics that
    ``ctrw.evaluation.diagnostics`` computes from those rows, as the worker stores them."""
    out: dict[str, dict[str, Any]] = {}
    for job in expand_suite(req):
        evaluation = job.config.evaluation if job.config is not None else job.evaluation
        assert evaluation is not None
        rows = []
        for spec in evaluation.attacks:
            acc = unbounded if spec.name in ("cw", "deepfool") else 0.5
            protocol = spec.protocol or evaluation.protocol
            for p in ("paper", "adaptive") if protocol == "both" else (protocol,):
                rows.append({"attack": spec.column, "name": spec.name, "protocol": p, "accuracy": acc,
                             "ci_low": max(0.0, acc - 0.08), "ci_high": min(1.0, acc + 0.05), "n": 64,
                             "std": None, "params": spec.model_dump(exclude_none=True)})  # fmt: skip
        diagnostics = [
            attack_ordering(rows),
            unbounded_attacks(rows),
            not_applicable("randomness", "diagnostics are disabled for this evaluation (no extra runs)"),
        ]
        out[job.key] = {"status": "succeeded", "rows": rows, "diagnostics": diagnostics}
    return out
