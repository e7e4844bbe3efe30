"""API models (JobCreate / JobPublic / JobsPublic naming). Job bodies are ctrw.config models; epochs,
σ layers, result cells and diagnostics derive from the library's records (ctrw.records).

A little over 400 lines on purpose: every model the OpenAPI document names is in this one file."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field

from app.cli.main import DEMO_CONFIG
from app.models import JobKind, JobStatus
from ctrw import records
from ctrw.config import AttackJobConfig
from ctrw.paper import SuiteTable

__all__ = [
    "ATTACK_EXAMPLES",
    "JOB_ID_PATTERN",
    "SUITE_EXAMPLES",
    "TRAIN_EXAMPLES",
    "AttackJobCreate",
    "DiagnosticPublic",
    "EpochPublic",
    "ErrorPublic",
    "EpochsPublic",
    "JobLinks",
    "JobPublic",
    "JobSummary",
    "JobsPublic",
    "ProgressPublic",
    "ReadyPublic",
    "RequeuePublic",
    "ResultCell",
    "ResultColumn",
    "ResultRow",
    "ResultsTable",
    "SigmaEpoch",
    "SigmaLayerPublic",
    "SigmaPublic",
    "SubJobPublic",
    "SuiteProgress",
    "SuiteResults",
]


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored timestamp is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UTCDatetime = Annotated[datetime, AfterValidator(_as_utc)]

# Job ids are uuid4 hex; anything else is refused by the schema (a NUL character would reach
# PostgreSQL, which cannot store one). Wider than hex so an unknown id is a 404, not a 422.
JOB_ID_PATTERN = r"^[0-9A-Za-z_-]{1,64}$"

# An absolute POSIX path of at least two components, not part of a URL ("redis://h:6379/0").
_ABS_PATH = re.compile(r"(?<![\w.~:/-])(?:/[\w.@+~-]+)+/([\w.@+~-]+)")


def redact_paths(value: Any) -> Any:
    """``value`` with every absolute server path (in strings, dicts and lists) cut to its last
    component: "/srv/runs/ab12/best.safetensors" -> ".../best.safetensors". The full text stays in
    the database and the logs for operators."""
    if isinstance(value, str):
        return _ABS_PATH.sub(r".../\1", value)
    if isinstance(value, dict):
        return {k: redact_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_paths(v) for v in value]
    return value


def worker_alias(name: str | None) -> str | None:
    """A worker as clients see it: a stable pseudonym ("worker-3fa2c19b0e4d") that tells workers
    apart without naming the host; the name itself stays in the database for operators."""
    if name is None:
        return None
    return "worker-" + hashlib.sha256(name.encode()).hexdigest()[:12]


def _public_environment(env: dict[str, Any] | None) -> dict[str, Any] | None:
    if env is None:
        return None
    return redact_paths({k: v for k, v in env.items() if k != "hostname"})


PublicText = Annotated[str, AfterValidator(redact_paths)]
PublicDict = Annotated[dict[str, Any], AfterValidator(redact_paths)]
PublicEnvironment = Annotated[dict[str, Any], AfterValidator(_public_environment)]
WorkerAlias = Annotated[
    str,
    AfterValidator(worker_alias),
    Field(description="pseudonym of the worker that ran the job (equal: the same worker process)"),
]


# Request examples for the docs (/docs "Try it out", ReDoc): small jobs that run as they are on a
# CPU, not the paper's 200-epoch CIFAR default.
TRAIN_EXAMPLES: dict[str, dict[str, Any]] = {
    "digits": {
        "summary": "CTRW on the offline digits data (about a minute on 2 CPU cores)",
        "description": "What `ctrw-service demo` submits: 30 epochs of PGD training of a small CNN "
        "on 8x8 digits (eps 0.2), then clean, FGSM, PGD-20, MI-FGSM and EOT-PGD under both protocols.",
        "value": DEMO_CONFIG,
    }
}
ATTACK_EXAMPLES: dict[str, dict[str, Any]] = {
    "digits": {
        "summary": "Re-evaluate a digits training job with stronger attacks",
        "description": "Replace `train_job_id` with the id of a succeeded job from POST /jobs/train "
        "(an unknown id: 404; one that has not succeeded: 409).",
        "value": {
            "train_job_id": "replace-with-a-train-job-id",
            "evaluation": {
                "checkpoint": "best",
                "attacks": [
                    {"name": "clean"},
                    {"name": "pgd", "eps": 0.2, "step_size": 0.05, "steps": 50},
                    {"name": "eotpgd", "eps": 0.2, "step_size": 0.05, "steps": 20, "eot_draws": 10},
                ],
                "protocol": "both",
                "score_draws": 4,
                "batch_size": 30,
            },
        },
    }
}
SUITE_EXAMPLES: dict[str, dict[str, Any]] = {
    "fig3b-smoke": {
        "summary": "Figure 3b, the digits version (smoke): tiny networks and attacks",
        "description": "Full scale instead: drop `smoke` (CIFAR-10, ResNet18, 200 epochs per sub-job).",
        "value": {"suite": "fig3b", "smoke": True},
    }
}


class ErrorPublic(BaseModel):
    """An error: what went wrong; for 409, the job's current status."""

    detail: str
    status: str | None = None


class AttackJobCreate(AttackJobConfig):
    """Evaluate a succeeded training job's checkpoint (evaluation.checkpoint: best | last)."""

    train_job_id: str = Field(
        ..., pattern=JOB_ID_PATTERN, description="the succeeded training job whose checkpoint is evaluated"
    )


class ProgressPublic(BaseModel):
    phase: str
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    detail: PublicText = ""
    percent: float | None = Field(None, description="progress of the current phase, 0..100")
    eta_seconds: float | None = Field(None, description="estimated seconds left in the current phase")
    last_metrics: PublicDict | None = Field(None, description="the last finished epoch's metrics")


class JobLinks(BaseModel):
    self: str
    results: str
    epochs: str
    sigma: str
    checkpoint: str
    cancel: str


class SubJobPublic(BaseModel):
    key: str = Field(..., description="what the sub-job computes, e.g. resnet18/cifar10/ctrw")
    job_id: str
    kind: JobKind
    status: JobStatus
    label: dict[str, Any]
    created_by_suite: bool = Field(
        ..., description="false: an existing job with the same config hash, reused"
    )
    worker: WorkerAlias | None
    started_at: UTCDatetime | None
    finished_at: UTCDatetime | None
    error: PublicText | None


class SuiteProgress(BaseModel):
    total: int
    done: int = Field(..., description="sub-jobs that have finished (succeeded, failed or cancelled)")
    percent: float
    counts: dict[str, int] = Field(..., description="sub-jobs per status")
    sub_jobs: list[SubJobPublic]
    figures: dict[str, dict[str, str]] = Field(default_factory=dict, description="figure -> format -> URL")


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: JobKind
    status: JobStatus
    owner: str = Field("local", description="the owner of the API key that submitted it (no key: local)")
    train_job_id: str | None
    parent_id: str | None = Field(None, description="the suite that created this job")
    config: dict[str, Any]
    config_hash: str
    cancel_requested: bool
    attempts: int
    worker: WorkerAlias | None
    progress: ProgressPublic | None
    error: PublicText | None
    environment: PublicEnvironment | None
    summary: PublicDict | None
    cost_pflop: float | None = Field(
        None,
        description="estimated cost at submission in PFLOP (1e15 FLOPs; ctrw.cost); a suite: the sum "
        "over its sub-jobs. Refused above CTRW_MAX_JOB_PFLOP / CTRW_MAX_SUITE_PFLOP",
    )
    created_at: UTCDatetime
    updated_at: UTCDatetime
    started_at: UTCDatetime | None
    finished_at: UTCDatetime | None
    heartbeat_at: UTCDatetime | None
    suite: SuiteProgress | None = Field(None, description="a suite's sub-jobs and their aggregate progress")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def links(self) -> JobLinks:
        return _links(self.id)


def _links(job_id: str) -> JobLinks:
    base = f"/jobs/{job_id}"
    return JobLinks(
        self=base,
        results=f"{base}/results",
        epochs=f"{base}/epochs",
        sigma=f"{base}/sigma",
        checkpoint=f"{base}/checkpoint",
        cancel=f"{base}/cancel",
    )


class JobSummary(BaseModel):
    """A row of the job list: what the job is and how far it got. The config, environment and
    results summary are on the job's own page (`links.self`)."""

    id: str
    kind: JobKind
    status: JobStatus
    name: str | None = Field(None, description="the train job's name (an attack job: its train job's)")
    model: str | None = Field(None, description="the network (an attack job: its train job's)")
    dataset: str | None = Field(None, description="the data set (a suite: None = the paper's)")
    variant: str | None = Field(None, description="ctrw, unconstrained, ... (an attack job: its train job's)")
    suite: str | None = Field(None, description="a suite's experiment, e.g. table1")
    owner: str = Field("local", description="the owner of the API key that submitted it (no key: local)")
    train_job_id: str | None
    parent_id: str | None = Field(None, description="the suite that created this job")
    config_hash: str
    cancel_requested: bool
    attempts: int
    progress: ProgressPublic | None
    error: PublicText | None
    created_at: UTCDatetime
    updated_at: UTCDatetime
    started_at: UTCDatetime | None
    finished_at: UTCDatetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def links(self) -> JobLinks:
        return _links(self.id)


class JobsPublic(BaseModel):
    data: list[JobSummary]
    count: int = Field(
        ..., description="jobs matching the filters (cursor, limit and offset aside); counting stops at a cap"
    )
    count_exact: bool = Field(..., description="false: counting stopped at the cap, more jobs match")
    next_cursor: str | None = Field(
        None, description="pass as `cursor` (same filters) for the next page; null on the last page"
    )


# The public models below subclass ctrw.records and leave out what the library alone sees; they
# accept and ignore unknown input like any API model (the records forbid it, for the producers).
_PUBLIC = ConfigDict(from_attributes=True, extra="ignore")


class EpochPublic(records.EpochMetrics):
    """One finished training epoch; whatever else training reported for it is under ``extra``."""

    model_config = _PUBLIC

    extra: dict[str, Any] | None
    created_at: UTCDatetime


class EpochsPublic(BaseModel):
    job_id: str
    status: JobStatus
    data: list[EpochPublic]
    count: int


# The σ columns of records.EpochMetrics (tests/service/unit/test_records_contract.py checks they agree).
class SigmaEpoch(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    epoch: int
    sigma_sum: float | None
    sigma_min: float | None
    sigma_mean: float | None
    sigma_max: float | None
    bound_lower: float | None = Field(None, description="bound A on sum(sigma)")
    bound_upper: float | None = Field(None, description="bound B on sum(sigma)")


class _LayerName(BaseModel):
    layer: str = Field(..., description="the random-weight layer's module path (the library's ``name``)")


# _LayerName last: pydantic puts the fields of later bases first, so "layer" leads the JSON as before.
class SigmaLayerPublic(records.SigmaLayerStats, _LayerName):
    model_config = _PUBLIC


class SigmaPublic(BaseModel):
    job_id: str
    status: JobStatus
    epochs: list[SigmaEpoch] = Field(..., description="sum(sigma) and bounds A, B per training epoch")
    layers: list[SigmaLayerPublic] = Field(..., description="final statistics per random-weight layer")


class ResultCell(records.Estimate):
    """One attack under one protocol: the accuracy with its 95% CI and the K-draw scoring's headline numbers."""

    model_config = _PUBLIC

    draws: int | None = Field(None, description="K, the fresh draws each adversarial example is judged under")
    worst_case: float | None = Field(None, description="fraction of examples correct under all K draws")
    majority: float | None = Field(None, description="accuracy of the plurality vote over the K draws")
    ci_covers_attack_randomness: bool | None = Field(
        None, description="false: one batch, the CI leaves out what the batch shares (draw A, attack draws)"
    )


class ResultColumn(BaseModel):
    key: str
    attack: str
    name: str
    protocol: str
    params: dict[str, Any] | None = None


class DiagnosticPublic(records.Diagnostic):
    # Served as stored: a key the record does not know (none today) passes through.
    model_config = ConfigDict(extra="allow")


# A table row: one model's cells. Not records.ResultRow, which is one cell's full record.
class ResultRow(BaseModel):
    model: str
    variant: str
    checkpoint: str
    cells: dict[str, ResultCell]


class ResultsTable(BaseModel):
    job_id: str
    kind: JobKind
    status: JobStatus
    config_hash: str
    unit: Literal["fraction"] = Field(
        "fraction",
        description="cells' accuracy, ci_low, ci_high, std, worst_case, majority in [0, 1] (csv/markdown/latex: percent)",
    )
    columns: list[ResultColumn]
    rows: list[ResultRow]
    diagnostics: list[DiagnosticPublic] = Field(default_factory=list)
    environment: PublicEnvironment | None = None


class SuiteResults(BaseModel):
    """A suite's tables in the paper's layout: ours (accuracy in %, 95% CI) beside the paper's."""

    job_id: str
    kind: JobKind
    status: JobStatus
    config_hash: str
    suite: str
    scale: dict[str, Any] = Field(..., description="what ours ran at (data, widths, epochs, subsets)")
    tables: dict[str, SuiteTable]
    figures: dict[str, dict[str, str]] = Field(default_factory=dict, description="figure -> format -> URL")
    missing: list[str] = Field(default_factory=list, description="sub-jobs that did not succeed")
    sub_jobs: dict[str, str] = Field(default_factory=dict, description="sub-job key -> job id")
    error: PublicText | None = None


class ReadyPublic(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, PublicText]


class RequeuePublic(BaseModel):
    """What a reconciliation changed (job ids)."""

    requeued: list[str]
    failed: list[str] = Field(default_factory=list, description="lost their worker CTRW_MAX_ATTEMPTS times")
    promoted: list[str] = Field(default_factory=list, description="waiting jobs queued: dependencies done")
    redispatched: list[str] = Field(default_factory=list, description="queued jobs whose message was lost")
