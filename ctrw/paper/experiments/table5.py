"""Table 5: the randomness of the results: the CTRW model evaluated several times, mean +- std."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctrw.paper import values as pv
from ctrw.paper.common import COLUMN_LABELS, MODEL_LABELS, attack
from ctrw.paper.registry import Built, Experiment
from ctrw.render import Column, Row, Table

if TYPE_CHECKING:
    from ctrw.paper.assembly import Results
    from ctrw.paper.keys import SubJobKey
    from ctrw.paper.planner import Planner
    from ctrw.paper.request import SuiteRequest

REPEATS, SMOKE_REPEATS = 5, 2


def _repeats(req: SuiteRequest) -> int:
    return SMOKE_REPEATS if req.smoke else REPEATS


def _key(req: SuiteRequest, model: str) -> SubJobKey:
    return req.sub_job_key(model).evaluated(f"repeats{_repeats(req)}")


def plan(p: Planner, model: str) -> None:
    key = _key(p.req, model)
    p.train(key.train)
    attacks = [attack(p.req, "natural"), attack(p.req, "pgd20")]
    p.attack(key, attacks, protocol="paper", repeats=_repeats(p.req))


def build(req: SuiteRequest, res: Results) -> Built:
    columns = [Column(key=c, label=COLUMN_LABELS[c], kind="mean_std") for c in ("natural", "pgd20")]
    rows = []
    for model in req.models:
        key = _key(req, model)
        cells = {}
        for c in columns:
            paper = pv.TABLE5.get((model, "ctrw"), {}).get(c.key, {})
            cell = res.accuracy(key, c.key, paper=paper.get("mean"))
            cell.paper_std = paper.get("std")
            cells[c.key] = cell
        rows.append(Row(labels={"model": MODEL_LABELS[model]}, sub_jobs=[str(key)], cells=cells))
    table = Table(
        name="table5",
        title=f"Table 5: randomness of results on CIFAR10, mean +- std (%) over {_repeats(req)} evaluations",
        row_keys=["model"],
        columns=columns,
        rows=rows,
    )
    return {"table5": table}, {}


EXPERIMENT = Experiment(name="table5", plan=plan, build=build)
