"""Figure 3c: robust accuracy of the CTRW model under PGD of increasing strength (10..100
steps), under both protocols: one attack sub-job on the Table 1 model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctrw.paper import values as pv
from ctrw.paper.common import MODEL_LABELS, attack
from ctrw.paper.registry import Built, Experiment
from ctrw.render import Column, Row, Table

if TYPE_CHECKING:
    from ctrw.paper.assembly import Results
    from ctrw.paper.keys import SubJobKey
    from ctrw.paper.planner import Planner
    from ctrw.paper.request import SuiteRequest

# PGD steps 10..100 (0 = natural accuracy).
STEPS = tuple(range(10, 101, 10))
SMOKE_STEPS = (1, 2, 3)


def _steps(req: SuiteRequest) -> tuple[int, ...]:
    return SMOKE_STEPS if req.smoke else STEPS


def _key(req: SuiteRequest, model: str) -> SubJobKey:
    return req.sub_job_key(model).evaluated("pgd_steps")


def plan(p: Planner, model: str) -> None:
    key = _key(p.req, model)
    p.train(key.train)
    attacks = [attack(p.req, "natural")] + [attack(p.req, "pgd20", steps=n) for n in _steps(p.req)]
    p.attack(key, attacks, protocol="both")


def build(req: SuiteRequest, res: Results) -> Built:
    columns = [
        Column(key="paper", label="paper protocol", protocol="paper"),
        Column(key="adaptive", label="adaptive protocol", paper=False, protocol="adaptive"),
    ]
    band = pv.FIG3["fig3c"]
    rows, figures = [], {}
    for model in req.models:
        key = _key(req, model)
        series: dict[str, list[float | None]] = {"paper": [], "adaptive": []}
        ci_low: dict[str, list[float | None]] = {"paper": [], "adaptive": []}
        ci_high: dict[str, list[float | None]] = {"paper": [], "adaptive": []}
        steps = (0, *_steps(req))
        for n in steps:
            cells = {}
            for c in columns:
                spec: dict[str, Any] = {"protocol": c.key}
                if n:
                    spec["steps"] = n
                paper_mid = sum(band["band"]) / 2 if (model == "resnet18" and c.key == "paper"
                                                      and n > band["more_than_steps"]) else None  # fmt: skip
                cell = res.accuracy(key, "natural" if n == 0 else "pgd20", paper=paper_mid, **spec)
                if paper_mid is not None:
                    cell.paper_std = (band["band"][1] - band["band"][0]) / 2
                cells[c.key] = cell
                series[c.key].append(cell.ours)
                ci_low[c.key].append(cell.ci_low)
                ci_high[c.key].append(cell.ci_high)
            labels = {"model": MODEL_LABELS[model], "PGD steps": str(n) + (" (natural)" if n == 0 else "")}
            rows.append(Row(labels=labels, sub_jobs=[str(key)], cells=cells))
        figures[f"fig3c_{model}" if len(req.models) > 1 else "fig3c"] = {
            "kind": "pgd_steps",
            "model": MODEL_LABELS[model],
            "steps": list(steps),
            "series": series,
            "ci_low": ci_low,
            "ci_high": ci_high,
            "paper": band if model == "resnet18" else None,
        }
    table = Table(
        name="fig3c",
        title="Figure 3c: robust accuracy (%) under PGD of increasing strength, both protocols",
        row_keys=["model", "PGD steps"],
        columns=columns,
        rows=rows,
    )
    return {"fig3c": table}, figures


EXPERIMENT = Experiment(name="fig3c", plan=plan, build=build)
