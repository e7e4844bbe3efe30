"""Paper reproduction suites: every table and figure of the paper as one request.

A suite expands (``expand_suite``) into sub-jobs: ordinary training jobs whose config carries
its own evaluation (train, attack, sigma statistics in one job), and, where a suite only needs
another evaluation of a model that another sub-job trains (Table 5's repeats, Figure 3c's PGD
steps), attack jobs on that training job. Sub-job configs depend only on what they compute, so
the same model asked for by several suites has the same config hash and is trained once: the
four Table 1 variants always carry Table 1's attacks, every other model natural + PGD-20 (+ the
adaptive EOT-PGD column). ``assemble_suite`` turns the sub-jobs' stored results back into the
paper's table, with the paper's own numbers (``ctrw.paper.values``) beside ours, and the data of
the paper's figures (rendered on the worker by ``ctrw.figures``).

Pure: pydantic, the standard library and ``ctrw.config`` only, so the API process expands
suites and renders their tables without torch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ctrw import render as report
from ctrw.config import (
    MAX_EPOCHS,
    MAX_SEED,
    MAX_TEST_IMAGES,
    MAX_TRAIN_IMAGES,
    AttackSpec,
    EvalConfig,
    TrainConfig,
    _deep_merge,
    integral_floats_to_int,
)
from ctrw.paper import values as pv

__all__ = [
    "SUITE_NAMES",
    "SubJob",
    "SuiteAssembly",
    "SuiteCell",
    "SuiteColumn",
    "SuiteRequest",
    "SuiteRow",
    "SuiteTable",
    "assemble_suite",
    "expand_suite",
    "render_suite_table",
]

SUITE_NAMES = ("table1", "table2", "table4", "table5", "table6", "table7", "fig3a", "fig3b", "fig3c", "fig3d")
MODEL_LABELS = {"resnet18": "ResNet18", "wrn34_10": "WRN34"}
DATASET_LABELS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}
# The datasets each suite's paper table/figure covers (its "roles").
PAPER_DATASETS: dict[str, tuple[str, ...]] = {
    "table1": ("cifar10",),
    "table2": ("cifar100",),
    "table6": ("cifar10", "cifar100"),
    "fig3a": ("cifar10", "cifar100"),
}
# Keys a suite sets itself: an override of them would change what the suite measures.
SUITE_CONTROLLED = (
    "variant",
    "fixed_sigma_at",
    "name",
    "random_weight.position",
    "random_weight.insertion",
    "evaluation.attacks",
    "evaluation.protocol",
    "evaluation.repeats",
)
# Table 1's columns, in the paper's order, then the adaptive column.
TABLE1_COLUMNS = (*pv.ACCURACY_COLUMNS, "eotpgd")
COLUMN_LABELS = {
    "natural": "Natural",
    "pgd20": "PGD-20",
    "fgsm": "FGSM",
    "autoattack": "AA",
    "cw": "CW-L2",
    "mifgsm": "MIFGSM",
    "deepfool": "DeepFool",
    "eotpgd": "EOT-PGD (adaptive)",
}
VARIANT_LABELS = {
    "baseline": "baseline",
    "unconstrained": "without constrain",
    "fixed_std": "fixed std",
    "ctrw": "CTRW (ours)",
}
INSERTION_LABELS = {
    "in_channels": "in-channels",
    "out_channels": "out-channels",
    "both": "both in- and out-channels",
    "filters": "filters",
}
FIXED_LABELS = {
    "lower": "Fixed to lower bound",
    "upper": "Fixed to upper bound",
    "mid": "Fixed to mid value",
    "ctrw": "CTRW (ours)",
}
# Figure 3b: sum(sigma) = k x image size (H x W); k = 0 is set to sum = 1, as in the paper.
FIG3B_GRID = tuple(Fraction(k) for k in ("0", "1/3", "2/3", "1", "3/2", "2", "5/2", "3", "4", "5", "6"))
FIG3B_SMOKE_GRID = tuple(Fraction(k) for k in ("0", "1/2", "1", "2", "4", "6"))
# Figure 3c: PGD steps 10..100 (0 = natural accuracy).
FIG3C_STEPS = tuple(range(10, 101, 10))
FIG3C_SMOKE_STEPS = (1, 2, 3)
TABLE5_REPEATS, TABLE5_SMOKE_REPEATS = 5, 2

# The smoke version: digits (8 x 8, one channel), tiny networks, a few epochs on a few hundred
# images, tiny attacks: about a second of compute per sub-job on a CPU, every suite together in
# minutes, and still far enough from chance that the tables and figures have a shape.
SMOKE_WIDTH = {"resnet18": 0.125, "wrn34_10": 0.05}
SMOKE_TRAIN: dict[str, Any] = {
    "data": {"dataset": "digits", "image_size": 8, "channels": 1, "augment": False,
             "train_subset": 500, "test_subset": 64},
    "optim": {"epochs": 6, "batch_size": 64, "milestones": [5]},
    "attack": {"steps": 1},
    "val_pgd_steps": 1,
    "val_examples": 64,
    # The paper's bounds per element like every suite (A = 1000/3072 = 0.326, B = 2400/3072 = 0.781
    # per sigma element: 20.8 and 50 for the 64-element digits layer), and sigma starting below A,
    # so that a few epochs already separate CTRW (pushed up to A) from the unconstrained model.
    "random_weight": {"sigma_init": 0.25},
    "evaluation": {"score_draws": 2, "diagnostics": False, "batch_size": 64},
    "amp": False,
}  # fmt: skip
SMOKE_ATTACKS: dict[str, dict[str, Any]] = {
    "pgd20": {"steps": 2},
    "autoattack": {"steps": 2, "queries": 10},
    "cw": {"steps": 5},
    "mifgsm": {"steps": 2},
    "deepfool": {"steps": 3},
    "eotpgd": {"steps": 2, "eot_draws": 2},
}
ATTACKS: dict[str, dict[str, Any]] = {
    "natural": {"name": "clean"},
    "pgd20": {"name": "pgd"},
    "fgsm": {"name": "fgsm"},
    "autoattack": {"name": "autoattack"},
    "cw": {"name": "cw"},
    "mifgsm": {"name": "mifgsm"},
    "deepfool": {"name": "deepfool"},
    "eotpgd": {"name": "eotpgd", "protocol": "adaptive"},
}


# --------------------------------------------------------------------------- request


class SuiteRequest(BaseModel):
    """One experiment of the paper, at the paper's scale or smaller.

    ``model``: the network (``all``: every network the paper's table has rows for, ResNet18 and
    WRN34). ``dataset``: None = the paper's (CIFAR-100 for Table 2, both CIFARs for Table 6 and
    Figure 3a, CIFAR-10 otherwise); a data set given here replaces every one of them (the rows
    keep the paper's labels). ``epochs``, ``train_subset``, ``test_subset``: scale knobs (None =
    the paper's; the learning-rate milestones scale with the epochs). ``smoke``: the digits
    version with tiny networks and attacks. ``adaptive``: add an EOT-PGD column under the
    adaptive protocol. ``overrides``: deep-merged into every training config (not the keys the
    suite sets itself).
    """

    # Strict and finite like the job configs (ctrw.config._Strict).
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    suite: Literal[
        "table1", "table2", "table4", "table5", "table6", "table7", "fig3a", "fig3b", "fig3c", "fig3d"
    ] = Field(..., description="the experiment of the paper")
    model: Literal["resnet18", "wrn34_10", "all"] = Field(
        "resnet18", description="the network (all: every network the paper's table has rows for)"
    )
    dataset: Literal["cifar10", "cifar100", "digits"] | None = Field(
        None,
        description="null: the paper's data sets; given: replaces every one of them (rows keep the paper's labels)",
    )
    epochs: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="training epochs per sub-job (null: the paper's; the milestones scale with them)",
    )
    train_subset: int | None = Field(
        None, ge=1, le=MAX_TRAIN_IMAGES, description="training images per sub-job (null: all)"
    )
    test_subset: int | None = Field(
        None, ge=1, le=MAX_TEST_IMAGES, description="test images per sub-job (null: all)"
    )
    smoke: bool = Field(
        False, description="the digits version with tiny networks and attacks (minutes on a CPU)"
    )
    adaptive: bool = Field(True, description="add an EOT-PGD column under the adaptive protocol")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="deep-merged into every training config (not the keys the suite sets itself)",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="random seed of every sub-job")

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        return integral_floats_to_int(cls, data)

    @field_validator("overrides")
    @classmethod
    def _not_suite_controlled(cls, v: dict[str, Any]) -> dict[str, Any]:
        for path in SUITE_CONTROLLED:
            node: Any = v
            for part in path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                raise ValueError(f"'{path}' is set by the suite and cannot be overridden")
        return v

    @model_validator(mode="after")
    def _expands(self) -> SuiteRequest:
        if self.smoke and self.dataset not in (None, "digits"):
            raise ValueError(f"dataset: a smoke suite runs on digits (got '{self.dataset}')")
        try:
            expand_suite(self)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"overrides: {loc}: {first['msg']}") from None
        return self

    @property
    def models(self) -> tuple[str, ...]:
        return ("resnet18", "wrn34_10") if self.model == "all" else (self.model,)

    @property
    def roles(self) -> tuple[str, ...]:
        """The paper's datasets for this suite (row labels)."""
        return PAPER_DATASETS.get(self.suite, ("cifar10",))

    def dataset_for(self, role: str) -> str:
        """The data set a paper dataset role runs on."""
        if self.smoke:
            return "digits"
        return self.dataset or role


class SubJob(BaseModel):
    """One job of a suite. ``train``: ``config`` (a whole training job with its evaluation).
    ``attack``: ``evaluation`` of the model that the sub-job ``train_key`` trains."""

    key: str
    kind: Literal["train", "attack"]
    label: dict[str, Any]
    config: TrainConfig | None = None
    train_key: str | None = None
    evaluation: EvalConfig | None = None


# --------------------------------------------------------------------------- expansion


def _scaled_milestones(epochs: int) -> list[int]:
    # The paper's 100/150 of 200 epochs, at the same fractions of a shorter run.
    return sorted({max(1, round(epochs * m / 200)) for m in (100, 150)})


def _base(req: SuiteRequest, model: str, dataset: str) -> dict[str, Any]:
    if req.smoke:
        cfg = copy.deepcopy(SMOKE_TRAIN)
        cfg["model"] = {"name": model, "width": SMOKE_WIDTH[model]}
    else:
        cfg = {"model": {"name": model}, "data": {"dataset": dataset}}
    cfg["seed"] = req.seed
    cfg = _deep_merge(cfg, copy.deepcopy(req.overrides))
    if req.epochs is not None:
        cfg.setdefault("optim", {})["epochs"] = req.epochs
        if "milestones" not in req.overrides.get("optim", {}):
            cfg["optim"]["milestones"] = _scaled_milestones(req.epochs)
    for knob in ("train_subset", "test_subset"):
        if getattr(req, knob) is not None:
            cfg.setdefault("data", {})[knob] = getattr(req, knob)
    return cfg


def _attack(req: SuiteRequest, column: str, **extra: Any) -> dict[str, Any]:
    return {**ATTACKS[column], **(SMOKE_ATTACKS.get(column, {}) if req.smoke else {}), **extra}


def attack_column(req: SuiteRequest, column: str) -> tuple[str, str]:
    """(result column, protocol) of a paper column in the sub-jobs' results."""
    spec = AttackSpec.model_validate(_attack(req, column))
    return spec.column, spec.protocol or "paper"


def _evaluation(base: dict[str, Any], attacks: list[dict[str, Any]], **values: Any) -> dict[str, Any]:
    return {**base.get("evaluation", {}), "attacks": attacks, **values}


_REFERENCE = ("baseline", "unconstrained", "fixed_std", "ctrw")


class _Planner:
    """Collects a suite's sub-jobs, one per key (the same model asked for twice is one job)."""

    def __init__(self, req: SuiteRequest) -> None:
        self.req = req
        self.jobs: dict[str, SubJob] = {}

    def _columns(self, names: tuple[str, ...]) -> list[dict[str, Any]]:
        names = tuple(n for n in names if n != "eotpgd" or self.req.adaptive)
        return [_attack(self.req, n) for n in names]

    def train(
        self,
        model: str,
        dataset: str,
        *,
        variant: str = "ctrw",
        position: int = 0,
        insertion: str = "in_channels",
        fixed_sigma_at: str | None = None,
        fixed_sum: Fraction | None = None,
    ) -> str:
        """The key of a training sub-job (added if new)."""
        base = _base(self.req, model, dataset)
        if variant in _REFERENCE and position == 0 and insertion == "in_channels":
            tag, columns = variant, TABLE1_COLUMNS
        else:
            columns = ("natural", "pgd20", "eotpgd")
            if fixed_sum is not None:
                tag = f"fixed_sum@{_fraction_label(fixed_sum)}xHW"
            elif fixed_sigma_at is not None:
                tag = f"fixed_sigma@{fixed_sigma_at}"
            elif insertion != "in_channels":
                tag = f"ctrw@{insertion}"
            else:
                tag = f"ctrw@position{position}"
        key = f"{model}/{dataset}/{tag}"
        if key in self.jobs:
            return key
        cfg = copy.deepcopy(base)
        cfg["name"] = key
        cfg["variant"] = variant
        cfg.setdefault("random_weight", {}).update(position=position, insertion=insertion)
        if fixed_sigma_at is not None:
            cfg["fixed_sigma_at"] = fixed_sigma_at
        label: dict[str, Any] = {"model": model, "dataset": dataset, "variant": variant}
        if fixed_sum is not None:
            area = _image_area(TrainConfig.model_validate(base))
            total = 1.0 if fixed_sum == 0 else float(fixed_sum * area)
            cfg["fixed_sigma_at"] = "lower"
            cfg["bounds"] = {
                **cfg.get("bounds", {}),
                "lower": {"kind": "fixed", "value": total},
                "upper": None,
            }
            label.update(k=_fraction_label(fixed_sum), sigma_sum=total)
        if position:
            label["position"] = position
        if insertion != "in_channels":
            label["insertion"] = insertion
        if fixed_sigma_at is not None:
            label["fixed_sigma_at"] = fixed_sigma_at
        cfg["evaluation"] = _evaluation(base, self._columns(columns), protocol="paper")
        self.jobs[key] = SubJob(key=key, kind="train", label=label, config=TrainConfig.model_validate(cfg))
        return key

    def attack(self, train_key: str, tag: str, attacks: list[dict[str, Any]], **values: Any) -> str:
        key = f"{train_key}+{tag}"
        if key not in self.jobs:
            train = self.jobs[train_key]
            assert train.config is not None
            base = {
                "evaluation": train.config.evaluation.model_dump(exclude={"attacks", "protocol", "repeats"})
            }  # type: ignore[union-attr]
            evaluation = EvalConfig.model_validate(_evaluation(base, attacks, **values))
            self.jobs[key] = SubJob(
                key=key, kind="attack", label={**train.label, "evaluation": tag}, train_key=train_key,
                evaluation=evaluation,
            )  # fmt: skip
        return key


def _fraction_label(k: Fraction) -> str:
    return str(k.numerator) if k.denominator == 1 else f"{k.numerator}/{k.denominator}"


def _image_area(cfg: TrainConfig) -> int:
    """H x W of the data's images (the paper's 'image size', 32 x 32 on CIFAR)."""
    side = 32 if cfg.data.dataset in ("cifar10", "cifar100") else cfg.data.image_size
    return side * side


def _fig3b_grid(req: SuiteRequest) -> tuple[Fraction, ...]:
    return FIG3B_SMOKE_GRID if req.smoke else FIG3B_GRID


def _fig3c_steps(req: SuiteRequest) -> tuple[int, ...]:
    return FIG3C_SMOKE_STEPS if req.smoke else FIG3C_STEPS


def _positions(model: str) -> range:
    return range(6) if model == "resnet18" else range(5)


def _plan(req: SuiteRequest) -> _Planner:
    p = _Planner(req)
    d = req.dataset_for
    s = req.suite
    for model in req.models:
        if s in ("table1", "table2"):
            for variant in _REFERENCE:
                p.train(model, d(req.roles[0]), variant=variant)
        elif s == "table4":
            for insertion in INSERTION_LABELS:
                p.train(model, d("cifar10"), insertion=insertion)
        elif s == "fig3d":
            for position in _positions(model):
                p.train(model, d("cifar10"), position=position)
        elif s == "table5":
            ref = p.train(model, d("cifar10"))
            repeats = TABLE5_SMOKE_REPEATS if req.smoke else TABLE5_REPEATS
            attacks = [_attack(req, "natural"), _attack(req, "pgd20")]
            p.attack(ref, f"repeats{repeats}", attacks, protocol="paper", repeats=repeats)
        elif s in ("table6", "fig3a"):
            for role in req.roles:
                for variant in ("ctrw", "unconstrained"):
                    p.train(model, d(role), variant=variant)
        elif s == "table7":
            p.train(model, d("cifar10"), variant="fixed_std")
            for at in ("upper", "mid"):
                p.train(model, d("cifar10"), variant="fixed_sigma", fixed_sigma_at=at)
            p.train(model, d("cifar10"))
        elif s == "fig3b":
            p.train(model, d("cifar10"))
            for k in _fig3b_grid(req):
                p.train(model, d("cifar10"), variant="fixed_sigma", fixed_sum=k)
        elif s == "fig3c":
            ref = p.train(model, d("cifar10"))
            attacks = [_attack(req, "natural")] + [_attack(req, "pgd20", steps=n) for n in _fig3c_steps(req)]
            p.attack(ref, "pgd_steps", attacks, protocol="both")
    return p


def expand_suite(req: SuiteRequest) -> list[SubJob]:
    """The suite's sub-jobs, training jobs before the attack jobs that evaluate them.

    Keys name what a sub-job computes (``resnet18/cifar10/ctrw``, ``.../ctrw@position3``,
    ``.../ctrw+repeats5``), so two suites asking for the same model use the same key and,
    with the same scale and overrides, the same config (hash).
    """
    jobs = list(_plan(req).jobs.values())
    return [j for j in jobs if j.kind == "train"] + [j for j in jobs if j.kind == "attack"]


# --------------------------------------------------------------------------- assembled tables


# A suite's tables are ``ctrw.render`` tables (the one renderer for jobs and suites): accuracies
# in percent, each row with its sub-jobs' diagnostics.
SuiteCell = report.Cell
SuiteColumn = report.Column
SuiteRow = report.Row
SuiteTable = report.Table
render_suite_table = report.render_table


class SuiteAssembly(BaseModel):
    suite: str
    scale: dict[str, Any]
    tables: dict[str, SuiteTable]
    figures: dict[str, dict[str, Any]]
    missing: list[str] = Field(default_factory=list, description="sub-jobs without a succeeded result")


class _Results:
    """Lookups into the sub-jobs' stored results."""

    def __init__(self, req: SuiteRequest, plan: _Planner, results: Mapping[str, Mapping[str, Any]]) -> None:
        self.req = req
        self.plan = plan
        self.results = results

    def ok(self, key: str) -> bool:
        return (self.results.get(key) or {}).get("status") == "succeeded"

    def row(self, key: str, attack: str, protocol: str) -> Mapping[str, Any] | None:
        if not self.ok(key):
            return None
        for r in self.results[key].get("rows") or []:
            if r["attack"] == attack and r["protocol"] == protocol:
                return r
        return None

    def accuracy(self, key: str, column: str, *, paper: float | None = None, **spec: Any) -> SuiteCell:
        attack, protocol = (
            attack_column(self.req, column) if not spec else _spec_column(self.req, column, spec)
        )
        r = self.row(key, attack, protocol)
        if r is None:
            return SuiteCell(paper=paper)
        scoring = r.get("scoring") or {}
        return SuiteCell(
            ours=report.percent(r["accuracy"]),
            ci_low=report.percent(r.get("ci_low")),
            ci_high=report.percent(r.get("ci_high")),
            std=report.percent(r.get("std")),
            n=r.get("n"),
            worst_case=report.percent(scoring.get("worst_case")),
            majority=report.percent(scoring.get("majority")),
            paper=paper,
            flags=report.cell_flags(self.diagnostics(key), attack, protocol),
        )

    def diagnostics(self, key: str) -> list[Mapping[str, Any]]:
        """The sub-job's diagnostics (``ctrw.evaluation.diagnostics`` entries), [] if it did not succeed."""
        return list((self.results[key].get("diagnostics") or []) if self.ok(key) else [])

    def accuracy_row(
        self,
        key: str,
        columns: list[SuiteColumn],
        labels: dict[str, str],
        paper: dict[str, float] | None = None,
    ) -> SuiteRow:
        """One sub-job's row: its accuracy in every column, beside the paper's value where given."""
        paper = paper or {}
        cells = {c.key: self.accuracy(key, c.key, paper=paper.get(c.key)) for c in columns}
        return SuiteRow(labels=labels, sub_jobs=[key], cells=cells)

    def layer(self, key: str) -> Mapping[str, Any] | None:
        if not self.ok(key):
            return None
        layers = (self.results[key].get("sigma") or {}).get("layers") or []
        return layers[0] if layers else None

    def last_epoch(self, key: str) -> Mapping[str, Any]:
        epochs = (self.results.get(key) or {}).get("epochs") or []
        return epochs[-1] if epochs else {}


def _spec_column(req: SuiteRequest, column: str, extra: dict[str, Any]) -> tuple[str, str]:
    protocol = extra.pop("protocol", None)
    spec = AttackSpec.model_validate(_attack(req, column, **extra))
    return spec.column, protocol or spec.protocol or "paper"


def _accuracy_columns(names: tuple[str, ...], req: SuiteRequest) -> list[SuiteColumn]:
    return [
        SuiteColumn(
            key=n,
            label=COLUMN_LABELS[n],
            paper=n != "eotpgd",
            protocol="adaptive" if n == "eotpgd" else "paper",
        )
        for n in names
        if n != "eotpgd" or req.adaptive
    ]


def _scale(req: SuiteRequest, plan: _Planner) -> dict[str, Any]:
    first = next((j.config for j in plan.jobs.values() if j.config is not None), None)
    scale: dict[str, Any] = {"smoke": req.smoke, "models": list(req.models), "adaptive": req.adaptive}
    if first is not None:
        scale.update(
            datasets=sorted({j.config.data.dataset for j in plan.jobs.values() if j.config}),
            widths={j.config.model.name: j.config.model.width for j in plan.jobs.values() if j.config},
            epochs=first.optim.epochs,
            train_subset=first.data.train_subset,
            test_subset=first.data.test_subset,
            evaluation_examples=first.evaluation.n_examples if first.evaluation else None,
        )
    return scale


def _scale_note(req: SuiteRequest, scale: Mapping[str, Any]) -> list[str]:
    if (
        not req.smoke
        and req.dataset is None
        and req.epochs is None
        and not req.train_subset
        and not req.test_subset
    ):
        return []
    return [
        f"Ours ran at a smaller scale than the paper ({'smoke, ' if req.smoke else ''}data "
        f"{', '.join(scale.get('datasets', []))}, {scale.get('epochs')} epochs, train subset "
        f"{scale.get('train_subset')}, test subset {scale.get('test_subset')}): compare the shape, "
        "not the numbers."
    ]


def assemble_suite(req: SuiteRequest, results: Mapping[str, Mapping[str, Any]]) -> SuiteAssembly:
    """The paper's table(s) and figure data from the sub-jobs' results.

    Args:
        req: the suite request.
        results: per sub-job key: ``status`` (job status), ``rows`` (result rows as stored:
            attack, protocol, accuracy, ci_low, ci_high, n, std, repeats, scoring), ``sigma``
            (``{"layers": [...]}``, the sigma statistics), ``epochs`` (the training curve) and
            ``diagnostics`` (the evaluation's ``ctrw.evaluation.diagnostics`` entries). Sub-jobs that did
            not succeed leave their cells empty.

    Returns:
        A ``SuiteAssembly``: ``tables`` with exactly the paper's rows and columns (ours beside the
        paper's values, plus the adaptive column where asked; every row with the diagnostics of
        its sub-jobs, every cell with the fired ones that name it) and ``figures`` (plot data).
    """
    plan = _plan(req)
    res = _Results(req, plan, results)
    scale = _scale(req, plan)
    builder = {
        "table1": _table12,
        "table2": _table12,
        "table4": _table4,
        "table5": _table5,
        "table6": _table6,
        "table7": _table7,
        "fig3a": _fig3a,
        "fig3b": _fig3b,
        "fig3c": _fig3c,
        "fig3d": _fig3d,
    }[req.suite]
    tables, figures = builder(req, res)
    for table in tables.values():
        table.notes = [*pv.NOTES.get(req.suite, []), *_scale_note(req, scale), *table.notes]
        for row in table.rows:
            row.complete = all(res.ok(k) for k in row.sub_jobs)
            row.diagnostics = [
                d for k in row.sub_jobs for d in report.table_diagnostics(k, res.diagnostics(k))
            ]
    for (table_name, row_key, column), note in pv.DERIVED.items():
        if table_name in tables and row_key[0] in req.models:
            tables[table_name].notes.append(f"{'/'.join(row_key)} {column}: {note}")
    missing = [k for k in plan.jobs if not res.ok(k)]
    return SuiteAssembly(suite=req.suite, scale=scale, tables=tables, figures=figures, missing=missing)


Built = tuple[dict[str, SuiteTable], dict[str, dict[str, Any]]]


def _key(req: SuiteRequest, model: str, role: str, tag: str) -> str:
    return f"{model}/{req.dataset_for(role)}/{tag}"


def _table12(req: SuiteRequest, res: _Results) -> Built:
    role = req.roles[0]
    paper_table = pv.TABLE1 if req.suite == "table1" else pv.TABLE2
    columns = _accuracy_columns(TABLE1_COLUMNS, req)
    rows = []
    for model in req.models:
        for variant in _REFERENCE:
            key = _key(req, model, role, variant)
            labels = {"model": MODEL_LABELS[model], "method": VARIANT_LABELS[variant]}
            rows.append(res.accuracy_row(key, columns, labels, paper_table.get((model, variant))))
    title = f"Table {req.suite[-1]}: robust accuracy (%) on {DATASET_LABELS[role]}"
    table = SuiteTable(name=req.suite, title=title, row_keys=["model", "method"], columns=columns, rows=rows)
    return {req.suite: table}, {}


def _table4(req: SuiteRequest, res: _Results) -> Built:
    columns = _accuracy_columns(("natural", "pgd20", "eotpgd"), req)
    rows = []
    for model in req.models:
        for insertion, label in INSERTION_LABELS.items():
            tag = "ctrw" if insertion == "in_channels" else f"ctrw@{insertion}"
            key = _key(req, model, "cifar10", tag)
            labels = {"model": MODEL_LABELS[model], "position in one layer": label}
            rows.append(res.accuracy_row(key, columns, labels, pv.TABLE4.get((model, insertion))))
    table = SuiteTable(
        name="table4",
        title="Table 4: position study (%), random weight around the first convolution",
        row_keys=["model", "position in one layer"],
        columns=columns,
        rows=rows,
    )
    return {"table4": table}, {}


def _table5(req: SuiteRequest, res: _Results) -> Built:
    repeats = TABLE5_SMOKE_REPEATS if req.smoke else TABLE5_REPEATS
    columns = [SuiteColumn(key=c, label=COLUMN_LABELS[c], kind="mean_std") for c in ("natural", "pgd20")]
    rows = []
    for model in req.models:
        key = f"{_key(req, model, 'cifar10', 'ctrw')}+repeats{repeats}"
        cells = {}
        for c in columns:
            paper = pv.TABLE5.get((model, "ctrw"), {}).get(c.key, {})
            cell = res.accuracy(key, c.key, paper=paper.get("mean"))
            cell.paper_std = paper.get("std")
            cells[c.key] = cell
        rows.append(SuiteRow(labels={"model": MODEL_LABELS[model]}, sub_jobs=[key], cells=cells))
    table = SuiteTable(
        name="table5",
        title=f"Table 5: randomness of results on CIFAR10, mean +- std (%) over {repeats} evaluations",
        row_keys=["model"],
        columns=columns,
        rows=rows,
    )
    return {"table5": table}, {}


def _table6(req: SuiteRequest, res: _Results) -> Built:
    columns = [
        SuiteColumn(key="positive", label="Number of PS", kind="count"),
        SuiteColumn(key="ratio", label="Ratio of PS", kind="ratio"),
        SuiteColumn(key="min_cos", label="min cos(Wr1, Wr2)", kind="cosine"),
        SuiteColumn(key="acc", label="Acc", kind="accuracy", protocol="paper"),
    ]
    rows = []
    for model in req.models:
        for role in req.roles:
            for constrained in (True, False):
                key = _key(req, model, role, "ctrw" if constrained else "unconstrained")
                paper = pv.TABLE6.get((model, role, constrained), {})
                stat = (res.layer(key) or {}).get("table6") or {}
                cells = {
                    name: SuiteCell(ours=stat.get(name), n=stat.get("n_pairs"), paper=paper.get(name))
                    for name in ("positive", "ratio", "min_cos")
                }
                cells["acc"] = res.accuracy(key, "pgd20", paper=paper.get("acc"))
                rows.append(
                    SuiteRow(
                        labels={
                            "model": MODEL_LABELS[model],
                            "dataset": DATASET_LABELS[role],
                            "constrain": "with (ours)" if constrained else "without",
                        },
                        sub_jobs=[key],
                        cells=cells,
                    )
                )
    table = SuiteTable(
        name="table6",
        title="Table 6: positive samples cos(Wr1, Wr2) <= eps_r with and without the constraint",
        row_keys=["model", "dataset", "constrain"],
        columns=columns,
        rows=rows,
    )
    return {"table6": table}, {}


def _table7(req: SuiteRequest, res: _Results) -> Built:
    columns = _accuracy_columns(("pgd20", "eotpgd"), req)
    tags = {"lower": "fixed_std", "upper": "fixed_sigma@upper", "mid": "fixed_sigma@mid", "ctrw": "ctrw"}
    rows = []
    sums = []
    for model in req.models:
        for at, tag in tags.items():
            key = _key(req, model, "cifar10", tag)
            labels = {"model": MODEL_LABELS[model], "value of sigma": FIXED_LABELS[at]}
            rows.append(res.accuracy_row(key, columns, labels, pv.TABLE7.get((model, at))))
            layer = res.layer(key) or {}
            if at != "ctrw" and layer.get("sigma_sum") is not None and layer.get("numel"):
                per = layer["sigma_sum"] / layer["numel"]
                sums.append(f"{MODEL_LABELS[model]} {at}: {layer['sigma_sum']:.4g} ({per:.3f} per element)")
    table = SuiteTable(
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


def _fig3a(req: SuiteRequest, res: _Results) -> Built:
    columns = [
        SuiteColumn(key=k, label=label, kind="number", paper=False)
        for k, label in (
            ("sigma_sum", "sum(sigma)"),
            ("sigma_mean", "mean"),
            ("sigma_min", "min"),
            ("sigma_max", "max"),
            ("bound_lower", "A"),
            ("bound_upper", "B"),
        )
    ]
    rows, panels = [], []
    number = 0
    for constrained in (False, True):
        for role in req.roles:
            for model in req.models:
                number += 1
                key = _key(req, model, role, "ctrw" if constrained else "unconstrained")
                layer = res.layer(key) or {}
                labels = {
                    "number": str(number),
                    "model": MODEL_LABELS[model],
                    "dataset": DATASET_LABELS[role],
                    "constrain": "with (CTRW)" if constrained else "without",
                }
                rows.append(
                    SuiteRow(
                        labels=labels,
                        sub_jobs=[key],
                        cells={c.key: SuiteCell(ours=layer.get(c.key)) for c in columns},
                    )
                )
                panels.append(
                    {**labels, "key": key, "hist": layer.get("hist_sigma"), "numel": layer.get("numel")}
                )
    table = SuiteTable(
        name="fig3a",
        title="Figure 3a: final sigma of the unconstrained (1-) and constrained (CTRW) models",
        row_keys=["number", "model", "dataset", "constrain"],
        columns=columns,
        rows=rows,
    )
    figure = {"kind": "sigma_histograms", "panels": panels, "paper": pv.FIG3["fig3a"]}
    return {"fig3a": table}, {"fig3a": figure}


def _fig3b(req: SuiteRequest, res: _Results) -> Built:
    columns = _accuracy_columns(("natural", "pgd20", "eotpgd"), req)
    paper = pv.FIG3["fig3b"]
    rows, figures = [], {}
    paper_by_k = {0: paper["points"][0], 1: paper["points"][1]}
    for model in req.models:
        ref = _key(req, model, "cifar10", "ctrw")
        ref_layer = res.layer(ref) or {}
        last = res.last_epoch(ref)
        bounds = {
            "lower": ref_layer.get("bound_lower", last.get("bound_lower")),
            "upper": ref_layer.get("bound_upper", last.get("bound_upper")),
        }
        points = []
        ref_config = res.plan.jobs[ref].config
        area = _image_area(ref_config) if ref_config is not None else None
        for k in _fig3b_grid(req):
            key = _key(req, model, "cifar10", f"fixed_sum@{_fraction_label(k)}xHW")
            p = paper_by_k.get(k) if model == "resnet18" else None
            label = f"{_fraction_label(k)} x H x W" + (" (= 1)" if k == 0 else "")
            row = res.accuracy_row(key, columns, {"model": MODEL_LABELS[model], "sum(sigma)": label}, p)
            cells = row.cells
            layer = res.layer(key) or {}
            rows.append(row)
            points.append(
                {"k": float(k), "sigma_sum": layer.get("sigma_sum"), **{c: cells[c].ours for c in cells}}
            )
        ref_row = res.accuracy_row(
            ref, columns, {"model": MODEL_LABELS[model], "sum(sigma)": "CTRW (trained)"}
        )
        ref_cells = ref_row.cells
        rows.append(ref_row)
        figures[f"fig3b_{model}" if len(req.models) > 1 else "fig3b"] = {
            "kind": "sigma_sweep",
            "model": MODEL_LABELS[model],
            "image_area": area,
            "points": points,
            "bounds": bounds,
            "ctrw": {"sigma_sum": ref_layer.get("sigma_sum"), **{c: ref_cells[c].ours for c in ref_cells}},
            "paper": paper if model == "resnet18" else None,
        }
    table = SuiteTable(
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


def _fig3c(req: SuiteRequest, res: _Results) -> Built:
    columns = [
        SuiteColumn(key="paper", label="paper protocol", protocol="paper"),
        SuiteColumn(key="adaptive", label="adaptive protocol", paper=False, protocol="adaptive"),
    ]
    band = pv.FIG3["fig3c"]
    rows, figures = [], {}
    for model in req.models:
        key = f"{_key(req, model, 'cifar10', 'ctrw')}+pgd_steps"
        series: dict[str, list[float | None]] = {"paper": [], "adaptive": []}
        steps = (0, *_fig3c_steps(req))
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
            rows.append(
                SuiteRow(
                    labels={
                        "model": MODEL_LABELS[model],
                        "PGD steps": str(n) + (" (natural)" if n == 0 else ""),
                    },
                    sub_jobs=[key],
                    cells=cells,
                )
            )
        name = f"fig3c_{model}" if len(req.models) > 1 else "fig3c"
        figures[name] = {
            "kind": "pgd_steps",
            "model": MODEL_LABELS[model],
            "steps": list(steps),
            "series": series,
            "paper": band if model == "resnet18" else None,
        }
    table = SuiteTable(
        name="fig3c",
        title="Figure 3c: robust accuracy (%) under PGD of increasing strength, both protocols",
        row_keys=["model", "PGD steps"],
        columns=columns,
        rows=rows,
    )
    return {"fig3c": table}, figures


def _fig3d(req: SuiteRequest, res: _Results) -> Built:
    columns = _accuracy_columns(("natural", "pgd20", "eotpgd"), req)
    rows, figures = [], {}
    for model in req.models:
        series: dict[str, list[float | None]] = {c.key: [] for c in columns}
        positions = list(_positions(model))
        for position in positions:
            key = _key(req, model, "cifar10", "ctrw" if position == 0 else f"ctrw@position{position}")
            row = res.accuracy_row(key, columns, {"model": MODEL_LABELS[model], "position": str(position)})
            for c in columns:
                series[c.key].append(row.cells[c.key].ours)
            rows.append(row)
        name = f"fig3d_{model}" if len(req.models) > 1 else "fig3d"
        figures[name] = {
            "kind": "positions",
            "model": MODEL_LABELS[model],
            "positions": positions,
            "series": series,
            "labels": {c.key: c.label for c in columns},
            "paper": pv.FIG3["fig3d"],
        }
    for c in columns:
        c.paper = False  # the paper's Figure 3d has no numbers in its text
    table = SuiteTable(
        name="fig3d",
        title="Figure 3d: accuracy (%) by position of the random weight (0 = input, last = before the FC)",
        row_keys=["model", "position"],
        columns=columns,
        rows=rows,
    )
    return {"fig3d": table}, figures
