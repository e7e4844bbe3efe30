"""Table 6: positive samples, cos(Wr1, Wr2) <= eps_r between two draws of the random weight, with
and without the constraint, on both CIFARs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctrw.paper import values as pv
from ctrw.paper.common import DATASET_LABELS, MODEL_LABELS
from ctrw.paper.registry import Built, Experiment
from ctrw.render import Cell, Column, Row, Table

if TYPE_CHECKING:
    from ctrw.paper.assembly import Results
    from ctrw.paper.planner import Planner
    from ctrw.paper.request import SuiteRequest


def plan(p: Planner, model: str) -> None:
    """The constrained (CTRW) and unconstrained models on each data set (Figure 3a's too)."""
    for role in p.req.roles:
        for variant in ("ctrw", "unconstrained"):
            p.train(p.key(model, role, variant=variant))


def build(req: SuiteRequest, res: Results) -> Built:
    columns = [
        Column(key="positive", label="Number of PS", kind="count"),
        Column(key="ratio", label="Ratio of PS", kind="ratio"),
        Column(key="min_cos", label="min cos(Wr1, Wr2)", kind="cosine"),
        Column(key="acc", label="Acc", kind="accuracy", protocol="paper"),
    ]
    rows = []
    for model in req.models:
        for role in req.roles:
            for constrained in (True, False):
                key = req.sub_job_key(model, role, variant="ctrw" if constrained else "unconstrained")
                paper = pv.TABLE6.get((model, role, constrained), {})
                stat = (res.layer(key) or {}).get("table6") or {}
                cells = {
                    name: Cell(ours=stat.get(name), n=stat.get("n_pairs"), paper=paper.get(name))
                    for name in ("positive", "ratio", "min_cos")
                }
                cells["acc"] = res.accuracy(key, "pgd20", paper=paper.get("acc"))
                labels = {
                    "model": MODEL_LABELS[model],
                    "dataset": DATASET_LABELS[role],
                    "constrain": "with (ours)" if constrained else "without",
                }
                rows.append(Row(labels=labels, sub_jobs=[str(key)], cells=cells))
    table = Table(
        name="table6",
        title="Table 6: positive samples cos(Wr1, Wr2) <= eps_r with and without the constraint",
        row_keys=["model", "dataset", "constrain"],
        columns=columns,
        rows=rows,
    )
    return {"table6": table}, {}


EXPERIMENT = Experiment(name="table6", plan=plan, build=build, datasets=("cifar10", "cifar100"))
