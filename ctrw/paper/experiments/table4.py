"""Table 4: where in the first convolution the random weight goes (in-channels, out-channels,
both, filters)."""

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

INSERTION_LABELS = {
    "in_channels": "in-channels",
    "out_channels": "out-channels",
    "both": "both in- and out-channels",
    "filters": "filters",
}


def plan(p: Planner, model: str) -> None:
    for insertion in INSERTION_LABELS:
        p.train(p.key(model, insertion=insertion))


def build(req: SuiteRequest, res: Results) -> Built:
    columns = accuracy_columns(DEFAULT_COLUMNS, req)
    rows = []
    for model in req.models:
        for insertion, label in INSERTION_LABELS.items():
            key = req.sub_job_key(model, insertion=insertion)
            labels = {"model": MODEL_LABELS[model], "position in one layer": label}
            rows.append(res.accuracy_row(key, columns, labels, pv.TABLE4.get((model, insertion))))
    table = Table(
        name="table4",
        title="Table 4: position study (%), random weight around the first convolution",
        row_keys=["model", "position in one layer"],
        columns=columns,
        rows=rows,
    )
    return {"table4": table}, {}


EXPERIMENT = Experiment(name="table4", plan=plan, build=build)
