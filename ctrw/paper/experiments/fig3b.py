"""Figure 3b: accuracy over a fixed sum(sigma) = k x image size (H x W), beside the trained CTRW
model and its bounds A and B."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ctrw.paper import values as pv
from ctrw.paper.common import DEFAULT_COLUMNS, MODEL_LABELS, accuracy_columns, image_area
from ctrw.paper.keys import fraction_label
from ctrw.paper.registry import Built, Experiment
from ctrw.render import Row, Table

if TYPE_CHECKING:
    from ctrw.paper.assembly import Results
    from ctrw.paper.planner import Planner
    from ctrw.paper.request import SuiteRequest

# sum(sigma) = k x image size (H x W); k = 0 is set to sum = 1, as in the paper.
GRID = tuple(Fraction(k) for k in ("0", "1/3", "2/3", "1", "3/2", "2", "5/2", "3", "4", "5", "6"))
SMOKE_GRID = tuple(Fraction(k) for k in ("0", "1/2", "1", "2", "4", "6"))


def _grid(req: SuiteRequest) -> tuple[Fraction, ...]:
    return SMOKE_GRID if req.smoke else GRID


def plan(p: Planner, model: str) -> None:
    p.train(p.key(model))
    for k in _grid(p.req):
        p.train(p.key(model, variant="fixed_sigma", fixed_sum=k))


def _ours(row: Row) -> dict[str, Any]:
    """A figure point: ours per column (percent) and, for the error bars, its 95% CI."""
    return {
        **{c: cell.ours for c, cell in row.cells.items()},
        "ci_low": {c: cell.ci_low for c, cell in row.cells.items()},
        "ci_high": {c: cell.ci_high for c, cell in row.cells.items()},
    }


def build(req: SuiteRequest, res: Results) -> Built:
    columns = accuracy_columns(DEFAULT_COLUMNS, req)
    paper = pv.FIG3["fig3b"]
    rows, figures = [], {}
    paper_by_k = {0: paper["points"][0], 1: paper["points"][1]}
    for model in req.models:
        ref = req.sub_job_key(model)
        ref_layer = res.layer(ref) or {}
        last = res.last_epoch(ref)
        bounds = {
            "lower": ref_layer.get("bound_lower", last.get("bound_lower")),
            "upper": ref_layer.get("bound_upper", last.get("bound_upper")),
        }
        points: list[dict[str, Any]] = []
        ref_config = res.plan.jobs[str(ref)].config
        area = image_area(ref_config) if ref_config is not None else None
        for k in _grid(req):
            key = req.sub_job_key(model, variant="fixed_sigma", fixed_sum=k)
            p = paper_by_k.get(k) if model == "resnet18" else None
            label = f"{fraction_label(k)} x H x W" + (" (= 1)" if k == 0 else "")
            row = res.accuracy_row(key, columns, {"model": MODEL_LABELS[model], "sum(sigma)": label}, p)
            layer = res.layer(key) or {}
            rows.append(row)
            points.append({"k": float(k), "sigma_sum": layer.get("sigma_sum"), **_ours(row)})
        ref_row = res.accuracy_row(
            ref, columns, {"model": MODEL_LABELS[model], "sum(sigma)": "CTRW (trained)"}
        )
        rows.append(ref_row)
        figures[f"fig3b_{model}" if len(req.models) > 1 else "fig3b"] = {
            "kind": "sigma_sweep",
            "model": MODEL_LABELS[model],
            "image_area": area,
            "points": points,
            "bounds": bounds,
            "ctrw": {"sigma_sum": ref_layer.get("sigma_sum"), **_ours(ref_row)},
            "paper": paper if model == "resnet18" else None,
        }
    table = Table(
        name="fig3b",
        title="Figure 3b: accuracy (%) over a fixed sum(sigma) = k x image size (H x W)",
        row_keys=["model", "sum(sigma)"],
        columns=columns,
        rows=rows,
        notes=[
            "Bounds A and B on the figure are the CTRW model's (its last epoch): the paper's "
            "A = 1000 and B = 2400 over 3 x 32 x 32, the same per sigma element on other shapes."
        ],
    )
    return {"fig3b": table}, figures


EXPERIMENT = Experiment(name="fig3b", plan=plan, build=build)
