"""The results of a job or a suite: as JSON (``ResultsTable``: a job's robust-accuracy table in
fractions; ``SuiteResults``: a suite's paper tables) and as text. Every text rendering (CSV,
Markdown, LaTeX) is ``ctrw.render``'s, from its ``Table`` (in percent): a job's through
``ctrw.render.job_table``, the same builder the CLI uses, so the CLI, the jobs and the suites print
the same tables."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy.orm import Session

from app.models import Job, JobKind, JobStatus, Result
from app.schemas import ResultCell, ResultColumn, ResultRow, ResultsTable, SuiteResults
from app.services import jobs, records, suites
from app.services.errors import ConflictError
from ctrw import render as report
from ctrw.config import EvalConfig

__all__ = ["TableFormat", "build_table", "get_results", "get_results_table", "render_results"]

TableFormat = Literal["json", "csv", "markdown", "latex"]
_PROTOCOL_ORDER = {"paper": 0, "adaptive": 1}


def get_results(*, session: Session, job_id: str, table: str | None = None) -> ResultsTable | SuiteResults:
    """A job's robust-accuracy table, or a suite's tables in the paper's layout (``table``: one)."""
    job = jobs.get_job(session=session, job_id=job_id)
    if job.kind is JobKind.SUITE:
        return suites.get_suite_results(session=session, job_id=job_id, table=table)
    return get_results_table(session=session, job_id=job_id)


def render_results(results: ResultsTable | SuiteResults, fmt: Literal["csv", "markdown", "latex"]) -> str:
    """A job's or a suite's results as text. A suite's CSV holds one table: the first unless the
    request's ``table`` chose one; its Markdown and LaTeX hold them all."""
    if isinstance(results, ResultsTable):
        return report.render_table(_render_form(results), fmt)
    return report.render_tables(list(results.tables.values()), fmt)


def get_results_table(*, session: Session, job_id: str) -> ResultsTable:
    """The job's table once it has finished (a cancelled or failed job shows what it finished)."""
    job = jobs.get_job(session=session, job_id=job_id)
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        raise ConflictError(
            f"job {job_id} is {job.status}; results are available once it has finished", status=job.status
        )
    train_job = (
        job if job.kind is JobKind.TRAIN else jobs.get_job(session=session, job_id=job.train_job_id or "")
    )
    results = records.list_results(session=session, job_id=job_id)
    return build_table(job=job, train_config=train_job.config, results=results)


def build_table(*, job: Job, train_config: dict[str, Any], results: list[Result]) -> ResultsTable:
    """One row for the job's model; columns in the order the evaluation config lists attacks."""
    evaluation = EvalConfig.model_validate(job.config["evaluation"]) if job.config.get("evaluation") else None
    order = {spec.column: i for i, spec in enumerate(evaluation.attacks)} if evaluation else {}
    results = sorted(
        results, key=lambda r: (order.get(r.attack, len(order)), _PROTOCOL_ORDER.get(r.protocol, 2), r.id)
    )
    columns = [
        ResultColumn(
            key=report.column_name(r.attack, r.protocol),
            attack=r.attack,
            name=r.name,
            protocol=r.protocol,
            params=r.params,
        )
        for r in results
    ]
    cells = {report.column_name(r.attack, r.protocol): _cell(r) for r in results}
    model = train_config["model"]
    name = model["name"] if model.get("width", 1.0) == 1.0 else f"{model['name']} (width {model['width']:g})"
    row = ResultRow(
        model=name,
        variant=train_config["variant"],
        checkpoint=evaluation.checkpoint if evaluation else "best",
        cells=cells,
    )
    return ResultsTable(
        job_id=job.id,
        kind=job.kind,
        status=job.status,
        config_hash=job.config_hash,
        columns=columns,
        rows=[row] if results else [],
        diagnostics=(job.summary or {}).get("diagnostics") or [],
        environment=job.environment,
    )


def _cell(r: Result) -> ResultCell:
    scoring = r.scoring or {}
    return ResultCell(
        accuracy=r.accuracy,
        n=r.n,
        ci_low=r.ci_low,
        ci_high=r.ci_high,
        std=r.std,
        repeats=r.repeats,
        draws=scoring.get("draws"),
        worst_case=scoring.get("worst_case"),
        majority=scoring.get("majority"),
        # Rows stored before the CI recorded its method say nothing: None, not a guess.
        ci_covers_attack_randomness=(scoring.get("ci") or {}).get("covers_attack_randomness"),
    )


def _render_form(table: ResultsTable) -> report.Table:
    """The job's table as ``ctrw.render`` builds it from result rows (percent, the job's
    diagnostics on its row)."""
    rows = [{"attack": c.attack, "protocol": c.protocol, **table.rows[0].cells[c.key].model_dump()}
            for c in table.columns] if table.rows else []  # fmt: skip
    labels = {k: getattr(table.rows[0], k) for k in ("model", "variant", "checkpoint")} if table.rows else {}
    return report.job_table(
        rows,
        labels=labels,
        diagnostics=table.diagnostics,
        source=table.job_id,
        title=f"Robust accuracy (%) of job {table.job_id}",
    )
