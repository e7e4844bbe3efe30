"""The robust-accuracy table of a job: rows = model/variant, columns = attack x protocol, cells =
accuracy with n and a 95% confidence interval. CSV, Markdown and LaTeX come from `ctrw.report`
(pure Python), so the CLI and the service print the same tables."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy.orm import Session

from app.models import Job, JobKind, JobStatus, Result
from app.schemas import ResultCell, ResultColumn, ResultRow, ResultsTable, SuiteResults
from app.services import jobs, records, suites
from app.services.errors import ConflictError
from ctrw import report
from ctrw.config import EvalConfig
from ctrw.suites import render_suite_table

__all__ = ["TableFormat", "build_table", "get_results", "get_results_table", "render_results", "render_table"]

TableFormat = Literal["json", "csv", "markdown", "latex"]
_PROTOCOL_ORDER = {"paper": 0, "adaptive": 1}


def get_results(*, session: Session, job_id: str, table: str | None = None) -> ResultsTable | SuiteResults:
    """A job's robust-accuracy table, or a suite's tables in the paper's layout (``table``: one)."""
    job = jobs.get_job(session=session, job_id=job_id)
    if job.kind is JobKind.SUITE:
        return suites.get_suite_results(session=session, job_id=job_id, table=table)
    return get_results_table(session=session, job_id=job_id)


def render_results(results: ResultsTable | SuiteResults, fmt: Literal["csv", "markdown", "latex"]) -> str:
    if isinstance(results, ResultsTable):
        return render_table(results, fmt)
    # CSV holds one table: the first unless `table` chose one; markdown and LaTeX hold them all.
    tables = list(results.tables.values())
    if fmt == "csv":
        return render_suite_table(tables[0], "csv")
    return "\n".join(render_suite_table(t, fmt) for t in tables)


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
    cells = {
        report.column_name(r.attack, r.protocol): ResultCell(
            accuracy=r.accuracy, n=r.n, ci_low=r.ci_low, ci_high=r.ci_high, std=r.std, repeats=r.repeats
        )
        for r in results
    }
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


def render_table(table: ResultsTable, fmt: Literal["csv", "markdown", "latex"]) -> str:
    rows = [
        {"model": r.model, "variant": r.variant, "checkpoint": r.checkpoint,
         "cells": {k: c.model_dump() for k, c in r.cells.items()}}
        for r in table.rows
    ]  # fmt: skip
    text = report.render_table({"columns": [c.key for c in table.columns], "rows": rows}, fmt)
    if fmt != "markdown":
        return text
    lines = [text, "Accuracy in % [95% confidence interval]."]
    lines += [
        f"- {d['name']}: {'FIRED: ' if d.get('fired') else ''}{d.get('verdict', '')}"
        for d in table.diagnostics
    ]
    return "\n".join(lines) + "\n"
