"""Table 7: sigma fixed at the lower bound, the upper bound and their mid value, against CTRW."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctrw.paper import values as pv
from ctrw.paper.common import MODEL_LABELS, VARIANT_LABELS, accuracy_columns
from ctrw.paper.registry import Built, Experiment
from ctrw.render import Table

if TYPE_CHECKING:
    from ctrw.paper.assembly import Results
    from ctrw.paper.keys import SubJobKey
    from ctrw.paper.planner import Planner
    from ctrw.paper.request import SuiteRequest

FIXED_LABELS = {
    "lower": "Fixed to lower bound",
    "upper": "Fixed to upper bound",
    "mid": "Fixed to mid value",
    "ctrw": VARIANT_LABELS["ctrw"],
}


def _key(req: SuiteRequest, model: str, at: str) -> SubJobKey:
    # Fixed to the lower bound is Table 1's 'fixed std' model (the same sub-job).
    if at == "lower":
        return req.sub_job_key(model, variant="fixed_std")
    if at == "ctrw":
        return req.sub_job_key(model)
    return req.sub_job_key(model, variant="fixed_sigma", fixed_sigma_at=at)


def plan(p: Planner, model: str) -> None:
    for at in FIXED_LABELS:
        p.train(_key(p.req, model, at))


def build(req: SuiteRequest, res: Results) -> Built:
    columns = accuracy_columns(("pgd20", "eotpgd"), req)
    rows = []
    sums = []
    for model in req.models:
        for at, label in FIXED_LABELS.items():
            key = _key(req, model, at)
            labels = {"model": MODEL_LABELS[model], "value of sigma": label}
            rows.append(res.accuracy_row(key, columns, labels, pv.TABLE7.get((model, at))))
            layer = res.layer(key) or {}
            if at != "ctrw" and layer.get("sigma_sum") is not None and layer.get("numel"):
                per = layer["sigma_sum"] / layer["numel"]
                sums.append(f"{MODEL_LABELS[model]} {at}: {layer['sigma_sum']:.4g} ({per:.3f} per element)")
    table = Table(
        name="table7",
        title="Table 7: robust accuracy (%) for different values of sigma",
        row_keys=["model", "value of sigma"],
        columns=columns,
        rows=rows,
        notes=[
            "Fixed to lower bound is the Table 1 'fixed std' model (the same sub-job).",
            "sigma is fixed at the paper's bounds (Sections 4.1-4.2): A = 1000, B = 2400 and "
            "(A + B) / 2 = 1700 over 3 x 32 x 32, i.e. 0.326, 0.781 and 0.553 per sigma element.",
            *(["Measured sum(sigma): " + "; ".join(sums) + "."] if sums else []),
        ],
    )
    return {"table7": table}, {}


EXPERIMENT = Experiment(name="table7", plan=plan, build=build)
