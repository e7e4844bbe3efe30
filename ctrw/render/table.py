"""Result tables as data (``Table``: rows of cells in percent, each row with the diagnostics of
the job(s) behind it) and the builders: a result row as a cell (``result_cell``), a job's table
(``job_table``). Pure Python and pydantic (no torch)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "Cell",
    "Column",
    "Row",
    "Table",
    "TableDiagnostic",
    "cell_flags",
    "column_name",
    "job_table",
    "result_cell",
    "table_diagnostics",
    "to_percent",
]


def column_name(attack: str, protocol: str) -> str:
    """A result column: ``pgd20 (paper)``. The diagnostics name rows the same way."""
    return f"{attack} ({protocol})"


def to_percent(x: float | None) -> float | None:
    """A fraction in [0, 1] as percent, rounded to 1e-4 points (far below any CI)."""
    return None if x is None else round(100.0 * float(x), 4)


# --------------------------------------------------------------------------- the data


class TableDiagnostic(BaseModel):
    """A diagnostic of the job behind a row (a ``ctrw.evaluation.diagnostics`` entry without its details)."""

    source: str = Field(..., description="the job behind the row: a suite's sub-job key, or the job id")
    name: str
    fired: bool
    applicable: bool = True
    verdict: str


class Cell(BaseModel):
    """Ours (accuracies in percent, with a 95% CI and n) beside the paper's value."""

    ours: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    std: float | None = None
    n: int | None = None
    worst_case: float | None = Field(None, description="correct under all K scoring draws (%)")
    majority: float | None = Field(None, description="majority vote over the K scoring draws correct (%)")
    paper: float | None = None
    paper_std: float | None = None
    note: str | None = None
    flags: list[str] = Field(
        default_factory=list, description="fired diagnostics of the row's job whose verdict names this cell"
    )


class Column(BaseModel):
    key: str
    label: str
    kind: Literal["accuracy", "mean_std", "count", "ratio", "cosine", "number"] = "accuracy"
    paper: bool = Field(True, description="the paper's table has this column (its value beside ours)")
    protocol: str | None = None


class Row(BaseModel):
    labels: dict[str, str]
    sub_jobs: list[str] = Field(default_factory=list, description="sub-job keys behind the row")
    complete: bool = True
    cells: dict[str, Cell] = Field(default_factory=dict)
    diagnostics: list[TableDiagnostic] = Field(
        default_factory=list, description="every diagnostic of the jobs behind the row, with its verdict"
    )


class Table(BaseModel):
    name: str
    title: str
    unit: Literal["percent"] = Field(
        "percent", description="accuracy cells (ours, ci_low, ci_high, std, worst_case, majority, paper)"
    )
    row_keys: list[str]
    columns: list[Column]
    rows: list[Row]
    notes: list[str] = Field(default_factory=list)


# A diagnostics entry: as the evaluation returns it (a dict) or as a record (``ctrw.records.Diagnostic``).
Entry = Mapping[str, Any] | BaseModel


def _entries(entries: Iterable[Entry] | None) -> list[Mapping[str, Any]]:
    return [e.model_dump() if isinstance(e, BaseModel) else e for e in entries or []]


def table_diagnostics(source: str, entries: Iterable[Entry] | None) -> list[TableDiagnostic]:
    """``ctrw.evaluation.diagnostics`` entries of one job as a row's diagnostics."""
    return [
        TableDiagnostic(
            source=source,
            name=d["name"],
            fired=bool(d.get("fired")),
            applicable=(d.get("details") or {}).get("applicable", True) is not False,
            verdict=d.get("verdict", ""),
        )
        for d in _entries(entries)
    ]


def cell_flags(entries: Iterable[Entry] | None, attack: str, protocol: str) -> list[str]:
    """Names of the fired diagnostics whose verdict or details name the result ``attack (protocol)``.

    The diagnostics name rows as ``column_name`` does; the match is on whole names, so
    ``pgd2 (paper)`` does not match ``eotpgd2 (paper)``.
    """
    pattern = re.compile(r"(?<![\w.@-])" + re.escape(column_name(attack, protocol)))

    def names_cell(judged: Mapping[str, Any]) -> bool:
        return bool(pattern.search(judged.get("verdict", "")) or pattern.search(json.dumps(judged)))

    def implicates(d: Mapping[str, Any]) -> bool:
        groups = (d.get("details") or {}).get("groups")
        if groups:  # per-threat-model entries: only the groups that fired implicate their rows
            return any(g.get("fired") and names_cell(g) for g in groups)
        return names_cell({"verdict": d.get("verdict", ""), "details": d.get("details") or {}})

    return [d["name"] for d in _entries(entries) if d.get("fired") and implicates(d)]


def result_cell(
    r: Mapping[str, Any],
    *,
    diagnostics: Iterable[Entry] | None = None,
    paper: float | None = None,
) -> Cell:
    """One result row (attack, protocol, accuracy, ci_low, ci_high, n, std as fractions; worst_case
    and majority, or a ``scoring`` holding them) as a cell in percent, flagged by the fired
    ``diagnostics`` that name it, beside the paper's value."""
    scoring = r.get("scoring") or {}
    return Cell(
        ours=to_percent(r["accuracy"]),
        ci_low=to_percent(r.get("ci_low")),
        ci_high=to_percent(r.get("ci_high")),
        std=to_percent(r.get("std")),
        n=r.get("n"),
        worst_case=to_percent(r.get("worst_case", scoring.get("worst_case"))),
        majority=to_percent(r.get("majority", scoring.get("majority"))),
        paper=paper,
        flags=cell_flags(diagnostics, r["attack"], r["protocol"]),
    )


def job_table(
    rows: Iterable[Mapping[str, Any]],
    *,
    labels: Mapping[str, Any],
    diagnostics: Iterable[Entry] | None = None,
    source: str = "job",
    title: str = "Robust accuracy (%) by attack (protocol)",
) -> Table:
    """One job's table: one row (``labels``), one column per result row, in the given order.

    Args:
        rows: result rows as the evaluation reports them (attack, protocol, accuracy, ci_low,
            ci_high, n, std as fractions; ``scoring`` with worst_case and majority).
        labels: the row's labels (model, variant, ...), in display order.
        diagnostics: the job's ``ctrw.evaluation.diagnostics`` entries.
        source: what to call the job in the notes (its id in the service).
        title: the table's title.
    """
    entries = _entries(diagnostics)
    columns: list[Column] = []
    cells: dict[str, Cell] = {}
    for r in rows:
        key = column_name(r["attack"], r["protocol"])
        columns.append(Column(key=key, label=key, paper=False, protocol=r["protocol"]))
        cells[key] = result_cell(r, diagnostics=entries)
    row = Row(
        labels={k: str(v) for k, v in labels.items()},
        sub_jobs=[source],
        cells=cells,
        diagnostics=table_diagnostics(source, entries),
    )
    return Table(
        name="results", title=title, row_keys=list(labels), columns=columns, rows=[row] if cells else []
    )
