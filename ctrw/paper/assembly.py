"""A suite's tables and figure data from its sub-jobs' stored results (``assemble_suite``).

The tables are ``ctrw.render`` tables (the one writer for jobs and suites): accuracies in percent,
the paper's own numbers (``ctrw.paper.values``) beside ours, each row with its sub-jobs'
diagnostics; the figure data is drawn on the worker by ``ctrw.figures``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from ctrw import render
from ctrw.paper import values as pv
from ctrw.paper.common import attack_column
from ctrw.paper.experiments import EXPERIMENTS
from ctrw.paper.keys import SubJobKey
from ctrw.paper.planner import Planner, plan_suite
from ctrw.paper.request import SuiteRequest

__all__ = ["Results", "SuiteAssembly", "assemble_suite"]

Key = SubJobKey | str


class SuiteAssembly(BaseModel):
    suite: str
    scale: dict[str, Any]
    tables: dict[str, render.Table]
    figures: dict[str, dict[str, Any]]
    missing: list[str] = Field(default_factory=list, description="sub-jobs without a succeeded result")


class Results:
    """Lookups into the sub-jobs' stored results, by sub-job key."""

    def __init__(self, req: SuiteRequest, plan: Planner, results: Mapping[str, Mapping[str, Any]]) -> None:
        self.req = req
        self.plan = plan
        self.results = results

    def ok(self, key: Key) -> bool:
        return (self.results.get(str(key)) or {}).get("status") == "succeeded"

    def row(self, key: Key, attack: str, protocol: str) -> Mapping[str, Any] | None:
        if not self.ok(key):
            return None
        for r in self.results[str(key)].get("rows") or []:
            if r["attack"] == attack and r["protocol"] == protocol:
                return r
        return None

    def accuracy(self, key: Key, column: str, *, paper: float | None = None, **spec: Any) -> render.Cell:
        """The cell of paper ``column`` (``spec``: the attack's settings and protocol, if not the
        column's own) in the sub-job's results, beside the paper's value."""
        attack, protocol = attack_column(self.req, column, **spec)
        r = self.row(key, attack, protocol)
        if r is None:
            return render.Cell(paper=paper)
        return render.result_cell(r, diagnostics=self.diagnostics(key), paper=paper)

    def diagnostics(self, key: Key) -> list[Mapping[str, Any]]:
        """The sub-job's diagnostics (``ctrw.evaluation.diagnostics`` entries), [] if it did not succeed."""
        return list((self.results[str(key)].get("diagnostics") or []) if self.ok(key) else [])

    def accuracy_row(
        self,
        key: Key,
        columns: list[render.Column],
        labels: dict[str, str],
        paper: Mapping[str, float | None] | None = None,
    ) -> render.Row:
        """One sub-job's row: its accuracy in every column, beside the paper's value where given."""
        paper = paper or {}
        cells = {c.key: self.accuracy(key, c.key, paper=paper.get(c.key)) for c in columns}
        return render.Row(labels=labels, sub_jobs=[str(key)], cells=cells)

    def layer(self, key: Key) -> Mapping[str, Any] | None:
        """The sub-job's (first) random layer's sigma statistics."""
        if not self.ok(key):
            return None
        layers = (self.results[str(key)].get("sigma") or {}).get("layers") or []
        return layers[0] if layers else None

    def last_epoch(self, key: Key) -> Mapping[str, Any]:
        epochs = (self.results.get(str(key)) or {}).get("epochs") or []
        return epochs[-1] if epochs else {}


def _scale(req: SuiteRequest, plan: Planner) -> dict[str, Any]:
    first = next((j.config for j in plan.jobs.values() if j.config is not None), None)
    scale: dict[str, Any] = {"smoke": req.smoke, "models": list(req.models), "adaptive": req.adaptive}
    if first is not None:
        scale.update(
            datasets=sorted({j.config.data.dataset for j in plan.jobs.values() if j.config}),
            widths={j.config.model.name: j.config.model.width for j in plan.jobs.values() if j.config},
            epochs=first.optim.epochs,
            train_subset=first.data.train_subset,
            test_subset=first.data.test_subset,
            evaluation_examples=first.evaluation.n_examples if first.evaluation else None,
        )
    return scale


def _scale_note(req: SuiteRequest, scale: Mapping[str, Any]) -> list[str]:
    if (
        not req.smoke
        and req.dataset is None
        and req.epochs is None
        and not req.train_subset
        and not req.test_subset
    ):
        return []

    def images(n: int | None) -> str:
        return "all" if n is None else str(n)

    return [
        f"Ours ran at a smaller scale than the paper ({'smoke, ' if req.smoke else ''}data "
        f"{', '.join(scale.get('datasets', []))}, {scale.get('epochs')} epochs, training images "
        f"{images(scale.get('train_subset'))}, test images {images(scale.get('test_subset'))}): "
        "compare the shape, not the numbers."
    ]


def assemble_suite(req: SuiteRequest, results: Mapping[str, Mapping[str, Any]]) -> SuiteAssembly:
    """The paper's table(s) and figure data from the sub-jobs' results.

    Args:
        req: the suite request.
        results: per sub-job key: ``status`` (job status), ``rows`` (result rows as stored:
            attack, protocol, accuracy, ci_low, ci_high, n, std, repeats, scoring), ``sigma``
            (``{"layers": [...]}``, the sigma statistics), ``epochs`` (the training curve) and
            ``diagnostics`` (the evaluation's ``ctrw.evaluation.diagnostics`` entries). Sub-jobs that did
            not succeed leave their cells empty.

    Returns:
        A ``SuiteAssembly``: ``tables`` with exactly the paper's rows and columns (ours beside the
        paper's values, plus the adaptive column where asked; every row with the diagnostics of
        its sub-jobs, every cell with the fired ones that name it) and ``figures`` (plot data).
    """
    plan = plan_suite(req)
    res = Results(req, plan, results)
    scale = _scale(req, plan)
    tables, figures = EXPERIMENTS[req.suite].build(req, res)
    for table in tables.values():
        table.notes = [*pv.NOTES.get(req.suite, []), *_scale_note(req, scale), *table.notes]
        for row in table.rows:
            row.complete = all(res.ok(k) for k in row.sub_jobs)
            row.diagnostics = [
                d for k in row.sub_jobs for d in render.table_diagnostics(k, res.diagnostics(k))
            ]
    for (table_name, row_key, column), note in pv.DERIVED.items():
        if table_name in tables and row_key[0] in req.models:
            tables[table_name].notes.append(f"{'/'.join(row_key)} {column}: {note}")
    missing = [k for k in plan.jobs if not res.ok(k)]
    return SuiteAssembly(suite=req.suite, scale=scale, tables=tables, figures=figures, missing=missing)
