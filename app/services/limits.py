"""What a request may cost: the estimate of every job (``ctrw.cost``) against the budget.

Global budgets now (``CTRW_MAX_JOB_PFLOP`` per job, ``CTRW_MAX_SUITE_PFLOP`` per suite); per owner
once API keys exist. A request over budget is refused with a 422 that names the fields driving
the estimate and the budget, before anything is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.core.settings import Settings
from app.services.errors import InvalidInputError
from ctrw.config import EvalConfig, TrainConfig
from ctrw.cost import JobCost, attack_job_cost, format_pflop, suite_cost, total_pflop, train_job_cost
from ctrw.paper import SuiteRequest

__all__ = ["Budget", "attack_cost", "suite_costs", "train_cost"]


@dataclass(frozen=True)
class Budget:
    """The most PFLOP one job, and one suite's sub-jobs together, may be estimated at."""

    job_pflop: float = math.inf
    suite_pflop: float = math.inf

    @classmethod
    def from_settings(cls, settings: Settings) -> Budget:
        return cls(job_pflop=settings.max_job_pflop, suite_pflop=settings.max_suite_pflop)


def _check(cost: JobCost, budget: float, what: str) -> float:
    if cost.pflop > budget:
        raise InvalidInputError(
            f"{what}: estimated cost {format_pflop(cost.pflop)} exceeds the budget of {format_pflop(budget)} "
            f"per job (CTRW_MAX_JOB_PFLOP); {cost.explain()}",
            loc=("body",),
        )
    return cost.pflop


def train_cost(job_in: TrainConfig, budget: Budget) -> float:
    """The training job's estimate in PFLOP; 422 if it is over the per-job budget."""
    return _check(train_job_cost(job_in), budget.job_pflop, "this job")


def attack_cost(train_config: TrainConfig, evaluation: EvalConfig, budget: Budget) -> float:
    """An attack job's estimate (``evaluation`` of ``train_config``'s model) in PFLOP; 422 if over."""
    return _check(attack_job_cost(train_config, evaluation), budget.job_pflop, "this job")


def suite_costs(req: SuiteRequest, budget: Budget) -> dict[str, float]:
    """Every sub-job's estimate in PFLOP by key; 422 if one is over the per-job budget or all of
    them together are over the per-suite budget."""
    costs = suite_cost(req)
    for key, cost in costs.items():
        _check(cost, budget.job_pflop, f"sub-job {key}")
    total = total_pflop(costs.values())
    if total > budget.suite_pflop:
        largest = sorted(costs.items(), key=lambda kv: -kv[1].pflop)[:3]
        raise InvalidInputError(
            f"estimated cost of the suite's {len(costs)} sub-jobs {format_pflop(total)} exceeds the budget "
            f"of {format_pflop(budget.suite_pflop)} per suite (CTRW_MAX_SUITE_PFLOP); driven by model="
            f"{req.model}, epochs={req.epochs}, train_subset={req.train_subset}, test_subset="
            f"{req.test_subset}, overrides; largest: "
            + "; ".join(f"{key}: {cost.explain()}" for key, cost in largest),
            loc=("body",),
        )
    return {key: cost.pflop for key, cost in costs.items()}
