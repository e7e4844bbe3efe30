"""Figure 3a: the final sigma of the unconstrained and the constrained (CTRW) models, Table 6's
models, as histograms."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctrw.paper import values as pv
from ctrw.paper.common import DATASET_LABELS, MODEL_LABELS
from ctrw.paper.experiments import table6
from ctrw.paper.registry import Built, Experiment
from ctrw.render import Cell, Column, Row, Table

if TYPE_CHECKING:
    from ctrw.paper.assembly import Results
    from ctrw.paper.request import SuiteRequest

_COLUMNS = (
    ("sigma_sum", "sum(sigma)"),
    ("sigma_mean", "mean"),
    ("sigma_min", "min"),
    ("sigma_max", "max"),
    ("bound_lower", "A"),
    ("bound_upper", "B"),
)


def build(req: SuiteRequest, res: Results) -> Built:
    columns = [Column(key=k, label=label, kind="number", paper=False) for k, label in _COLUMNS]
    rows, panels = [], []
    number = 0
    for constrained in (False, True):
        for role in req.roles:
            for model in req.models:
                number += 1
                key = req.sub_job_key(model, role, variant="ctrw" if constrained else "unconstrained")
                layer = res.layer(key) or {}
                labels = {
                    "number": str(number),
                    "model": MODEL_LABELS[model],
                    "dataset": DATASET_LABELS[role],
                    "constrain": "with (CTRW)" if constrained else "without",
                }
                cells = {c.key: Cell(ours=layer.get(c.key)) for c in columns}
                rows.append(Row(labels=labels, sub_jobs=[str(key)], cells=cells))
                panels.append(
                    {**labels, "key": str(key), "hist": layer.get("hist_sigma"), "numel": layer.get("numel")}
                )
    table = Table(
        name="fig3a",
        title="Figure 3a: final sigma of the unconstrained (1-) and constrained (CTRW) models",
        row_keys=["number", "model", "dataset", "constrain"],
        columns=columns,
        rows=rows,
    )
    figure = {"kind": "sigma_histograms", "panels": panels, "paper": pv.FIG3["fig3a"]}
    return {"fig3a": table}, {"fig3a": figure}


EXPERIMENT = Experiment(name="fig3a", plan=table6.plan, build=build, datasets=table6.EXPERIMENT.datasets)
