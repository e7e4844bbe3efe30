"""The ImageNet experiment (Section 4.1, Table 3's ImageNet columns): ResNet50 with the paper's
recipe (``ctrw.config.presets.imagenet_preset``: batch 1024, lr 0.02 cosine, 90 epochs, PGD-2
training at 4/255), the baseline and CTRW, evaluated with PGD-10 and PGD-50 at 4/255 (and EOT-PGD
under the adaptive protocol).

The smoke version keeps the network and the data set (an ImageFolder under the worker's data
directory, ``train/`` and ``val/``): a few images, one epoch, 2- and 3-step PGD; the test builds
a tiny ImageFolder for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctrw.config import AttackSpec
from ctrw.config.presets import imagenet_preset
from ctrw.paper import values as pv
from ctrw.paper.common import COLUMN_LABELS, MODEL_LABELS, VARIANT_LABELS
from ctrw.paper.registry import Built, Experiment
from ctrw.render import Cell, Column, Row, Table, result_cell

if TYPE_CHECKING:
    from ctrw.paper.assembly import Results
    from ctrw.paper.planner import Planner
    from ctrw.paper.request import SuiteRequest

VARIANTS = ("baseline", "ctrw")
EPS_4, STEP_1 = 4 / 255, 1 / 255
# PGD-10 and PGD-50 (the paper), 2 and 3 steps in the smoke version.
STEPS = {"pgd10": 10, "pgd50": 50}
SMOKE_STEPS = {"pgd10": 2, "pgd50": 3}
SMOKE: dict[str, Any] = {
    "data": {"train_subset": 8, "test_subset": 4, "imagenet_workers": 0},
    "optim": {"epochs": 1, "batch_size": 4},
    "attack": {"steps": 1},
    "val_pgd_steps": 1,
    "evaluation": {"batch_size": 4, "score_draws": 2, "diagnostics": False},
    "distributed": {"nproc_per_node": 1},
    "amp": False,
}  # fmt: skip


def base(req: SuiteRequest, model: str) -> dict[str, Any]:
    """The paper's ImageNet recipe (its smoke version: a few images, one epoch)."""
    cfg = imagenet_preset(**(SMOKE if req.smoke else {}))
    return cfg.model_dump(mode="json", exclude_defaults=True, exclude={"evaluation": {"attacks"}})


def _steps(req: SuiteRequest) -> dict[str, int]:
    return SMOKE_STEPS if req.smoke else STEPS


def _pgd(req: SuiteRequest, column: str) -> dict[str, Any]:
    return {"name": "pgd", "eps": EPS_4, "step_size": STEP_1, "steps": _steps(req)[column]}


def _eot(req: SuiteRequest) -> dict[str, Any]:
    smoke = {"steps": 2, "eot_draws": 2} if req.smoke else {}
    return {"name": "eotpgd", "protocol": "adaptive", "eps": EPS_4, "step_size": STEP_1, **smoke}


def plan(p: Planner, model: str) -> None:
    attacks = [{"name": "clean"}, _pgd(p.req, "pgd10"), _pgd(p.req, "pgd50")]
    if p.req.adaptive:
        attacks.append(_eot(p.req))
    for variant in VARIANTS:
        p.train(p.key(model, "imagenet", variant=variant), attacks=attacks)


def build(req: SuiteRequest, res: Results) -> Built:
    names = ("natural", "pgd10", "pgd50", *(("eotpgd",) if req.adaptive else ()))
    labels = {"natural": "Natural", "pgd10": "PGD-10", "pgd50": "PGD-50", "eotpgd": COLUMN_LABELS["eotpgd"]}
    columns = [Column(key=n, label=labels[n], paper=n in ("pgd10", "pgd50"),
                      protocol="adaptive" if n == "eotpgd" else "paper") for n in names]  # fmt: skip
    specs = {"natural": {"name": "clean"}, "pgd10": _pgd(req, "pgd10"), "pgd50": _pgd(req, "pgd50"),
             "eotpgd": _eot(req)}  # fmt: skip
    attacks = {n: (AttackSpec.model_validate(s).column, s.get("protocol", "paper")) for n, s in specs.items()}
    rows = []
    for model in req.models:
        for variant in VARIANTS:
            key = req.sub_job_key(model, "imagenet", variant=variant)
            paper = pv.IMAGENET.get((model, variant), {})
            cells = {}
            for c in columns:
                r = res.row(key, *attacks[c.key])
                cells[c.key] = (Cell(paper=paper.get(c.key)) if r is None else
                                result_cell(r, diagnostics=res.diagnostics(key), paper=paper.get(c.key)))  # fmt: skip
            row_labels = {"model": MODEL_LABELS[model], "method": VARIANT_LABELS[variant]}
            rows.append(Row(labels=row_labels, sub_jobs=[str(key)], cells=cells))
    table = Table(
        name="imagenet",
        title="ImageNet: robust accuracy (%) of ResNet50 under PGD at 4/255",
        row_keys=["model", "method"],
        columns=columns,
        rows=rows,
    )
    if req.smoke:
        table.notes.append(f"Smoke version: PGD-{_steps(req)['pgd10']} and PGD-{_steps(req)['pgd50']} stand in "
                           "for PGD-10 and PGD-50, on a few images.")  # fmt: skip
    return {"imagenet": table}, {}


EXPERIMENT = Experiment(
    name="imagenet",
    plan=plan,
    build=build,
    datasets=("imagenet",),
    models=("resnet50",),
    base=base,
    smoke_dataset="imagenet",
)
