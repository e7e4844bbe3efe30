"""What the library reports, as typed records: one definition per record.

Pure (pydantic only, never torch), so the API's schemas can derive from these and the tests can
check the database columns against them (tests/service/unit/test_records_contract.py).

- ``EpochRecord``: one finished training epoch (``ctrw.training``: ``hooks.on_epoch``, the
  checkpoint's history). Its ``EpochMetrics`` part is what the service stores as columns and
  serves at the top level of GET /jobs/{id}/epochs; every other field goes to ``extra``.
- ``SigmaLayer``: σ statistics of one random-weight layer (``ctrw.evaluation.sigma_stats``); its
  ``SigmaLayerStats`` part is stored and served per layer by GET /jobs/{id}/sigma.
- ``ResultRow``: one attack under one protocol (``ctrw.evaluation.evaluate``); the service stores
  it as a ``result`` row and serves its ``Estimate`` part as a table cell.
- ``Diagnostic``: one gradient-masking check of a results table (``ctrw.evaluation.diagnostics``).

Producers build the record and hand on ``record.model_dump()`` (plain dicts cross the hooks, the
checkpoints and the queue). ``extra="forbid"``: a key a producer adds without adding it here is
an error in the tests, not a silent new column of nobody's schema.

Field order is the order of the JSON the API serves.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Diagnostic",
    "EpochMetrics",
    "EpochRecord",
    "Estimate",
    "ResultRow",
    "Scoring",
    "SigmaLayer",
    "SigmaLayerStats",
]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- training


class EpochMetrics(_Record):
    """The headline numbers of a finished epoch: one column each in the service's ``epoch`` table.

    Accuracies are fractions in [0, 1]. None: not measured (no validation split, no PGD
    validation, or no random layer for the σ numbers).
    """

    epoch: int = Field(..., description="1-based")
    lr: float | None
    train_loss: float | None
    train_clean_acc: float | None
    train_adv_acc: float | None = Field(..., description="on the training attack's examples (Algorithm 1)")
    val_clean_acc: float | None
    val_pgd_acc: float | None = Field(..., description="PGD accuracy on the validation split, paper protocol")
    sigma_sum: float | None = Field(..., description="sum(sigma) over every random-weight layer")
    sigma_min: float | None
    sigma_mean: float | None
    sigma_max: float | None
    bound_lower: float | None = Field(..., description="bound A on sum(sigma) (first random layer)")
    bound_upper: float | None = Field(..., description="bound B on sum(sigma) (first random layer)")
    seconds: float | None
    is_best: bool = Field(..., description="the best epoch so far (validation PGD, else clean, accuracy)")


class EpochRecord(EpochMetrics):
    """Everything training reports per epoch. Fields past ``EpochMetrics`` are kept in the
    service's ``epoch.extra`` (JSON) and served under ``extra``."""

    mu_mean: float | None
    bounds: list[dict[str, float | None]] = Field(..., description="{lower, upper} per random layer")
    # Bounds that could not be computed (lemmas) since the previous record: never a silently missing bound.
    bound_events: list[str]


# --------------------------------------------------------------------------- σ statistics


class SigmaLayerStats(_Record):
    """σ and μ statistics of one random-weight layer, as stored and served."""

    numel: int
    sigma_sum: float
    sigma_min: float
    sigma_mean: float
    sigma_max: float
    mu_mean: float | None
    bound_lower: float | None
    bound_upper: float | None
    hist_sigma: dict[str, Any] | None
    hist_mu: dict[str, Any] | None
    table6: dict[str, Any] | None = Field(None, description="Table 6 statistic (gradient-direction pairs)")
    grad_cos: dict[str, Any] | None


class SigmaLayer(SigmaLayerStats):
    """``SigmaLayerStats`` plus what the library's report alone carries. ``name`` is the module
    path in the model; the service stores and serves it as ``layer``."""

    name: str
    shape: list[int]
    mu_sum: float


# --------------------------------------------------------------------------- evaluation


class Estimate(_Record):
    """An accuracy with its 95% confidence interval (fractions in [0, 1])."""

    accuracy: float = Field(..., description="fraction in [0, 1]")
    n: int
    ci_low: float
    ci_high: float
    std: float | None = None
    repeats: list[float] | None = None


class Scoring(_Record):
    """Every adversarial example judged under K fresh draws (``ctrw.evaluation.scoring.summarize``)."""

    draws: int
    mean: float
    ci_low: float
    ci_high: float
    worst_case: float
    majority: float
    per_repeat_mean: list[float]
    draw_std: float
    seeds: list[int]
    ci: dict[str, Any] = Field(..., description="how the intervals were computed (covers_attack_randomness)")
    seed_rule: str


class ResultRow(Estimate):
    """One attack (``attack``: its column label, e.g. pgd20) under one protocol. Rows are
    fractions; ``std`` is over repeats (None for one repeat)."""

    attack: str
    name: str = Field(..., description="the attack family, e.g. pgd")
    protocol: str
    scoring: Scoring
    seconds: float
    params: dict[str, Any]


class Diagnostic(_Record):
    """One gradient-masking check; ``details["groups"]`` holds its per-threat-model results."""

    name: str
    fired: bool
    verdict: str
    details: dict[str, Any]
