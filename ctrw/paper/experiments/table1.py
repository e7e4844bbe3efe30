"""Table 1: robust accuracy of the four variants (baseline, without constraint, fixed std, CTRW)
on CIFAR-10, every attack of the paper plus the adaptive EOT-PGD column."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ctrw.paper import values as pv
from ctrw.paper.common import DATASET_LABELS, MODEL_LABELS, TABLE1_COLUMNS, VARIANT_LABELS, accuracy_columns
from ctrw.paper.keys import REFERENCE_VARIANTS
from ctrw.paper.registry import Built, Experiment
from ctrw.render import Table

if TYPE_CHECKING:
    from ctrw.paper.assembly import Results
    from ctrw.paper.planner import Planner
    from ctrw.paper.request import SuiteRequest


def plan(p: Planner, model: str) -> None:
    for variant in REFERENCE_VARIANTS:
        p.train(p.key(model, p.req.roles[0], variant=variant))


def build(
    req: SuiteRequest, res: Results, *, paper: Mapping[tuple[str, str], dict[str, float | None]] = pv.TABLE1
) -> Built:
    """Table 1, or Table 2 with its ``paper`` values (the same rows on another data set)."""
    role = req.roles[0]
    columns = accuracy_columns(TABLE1_COLUMNS, req)
    rows = []
    for model in req.models:
        for variant in REFERENCE_VARIANTS:
            key = req.sub_job_key(model, role, variant=variant)
            labels = {"model": MODEL_LABELS[model], "method": VARIANT_LABELS[variant]}
            rows.append(res.accuracy_row(key, columns, labels, paper.get((model, variant))))
    title = f"Table {req.suite[-1]}: robust accuracy (%) on {DATASET_LABELS[role]}"
    table = Table(name=req.suite, title=title, row_keys=["model", "method"], columns=columns, rows=rows)
    return {req.suite: table}, {}


EXPERIMENT = Experiment(name="table1", plan=plan, build=build, datasets=("cifar10",))
