"""Figure 3d: accuracy by the position of the random weight in the network (0 = the input, the
last = before the fully connected layer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctrw.paper import values as pv
from ctrw.paper.common import DEFAULT_COLUMNS, MODEL_LABELS, accuracy_columns
from ctrw.paper.registry import Built, Experiment
from ctrw.render import Table

if TYPE_CHECKING:
    from ctrw.paper.assembly import Results
    from ctrw.paper.planner import Planner
    from ctrw.paper.request import SuiteRequest


def _positions(model: str) -> range:
    return range(6) if model == "resnet18" else range(5)


def plan(p: Planner, model: str) -> None:
    for position in _positions(model):
        p.train(p.key(model, position=position))


def build(req: SuiteRequest, res: Results) -> Built:
    columns = accuracy_columns(DEFAULT_COLUMNS, req)
    rows, figures = [], {}
    for model in req.models:
        series: dict[str, list[float | None]] = {c.key: [] for c in columns}
        ci_low: dict[str, list[float | None]] = {c.key: [] for c in columns}
        ci_high: dict[str, list[float | None]] = {c.key: [] for c in columns}
        positions = list(_positions(model))
        for position in positions:
            key = req.sub_job_key(model, position=position)
            row = res.accuracy_row(key, columns, {"model": MODEL_LABELS[model], "position": str(position)})
            for c in columns:
                series[c.key].append(row.cells[c.key].ours)
                ci_low[c.key].append(row.cells[c.key].ci_low)
                ci_high[c.key].append(row.cells[c.key].ci_high)
            rows.append(row)
        figures[f"fig3d_{model}" if len(req.models) > 1 else "fig3d"] = {
            "kind": "positions",
            "model": MODEL_LABELS[model],
            "positions": positions,
            "series": series,
            "ci_low": ci_low,
            "ci_high": ci_high,
            "labels": {c.key: c.label for c in columns},
            "paper": pv.FIG3["fig3d"],
        }
    for c in columns:
        c.paper = False  # the paper's Figure 3d has no numbers in its text
    table = Table(
        name="fig3d",
        title="Figure 3d: accuracy (%) by position of the random weight (0 = input, last = before the FC)",
        row_keys=["model", "position"],
        columns=columns,
        rows=rows,
    )
    return {"fig3d": table}, figures


EXPERIMENT = Experiment(name="fig3d", plan=plan, build=build)
