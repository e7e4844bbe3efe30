"""A suite's sub-jobs: the planner that each experiment adds its sub-jobs to, and ``expand_suite``.

Sub-job configs depend only on what they compute, so the same model asked for by several suites
has the same key and the same config hash and is trained once: the four Table 1 variants always
carry Table 1's attacks, every other model natural + PGD-20 (+ the adaptive EOT-PGD column).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from ctrw.config import EvalConfig, TrainConfig, deep_merge
from ctrw.paper.common import DEFAULT_COLUMNS, TABLE1_COLUMNS, attack, image_area
from ctrw.paper.experiments import EXPERIMENTS
from ctrw.paper.keys import SubJobKey, fraction_label

if TYPE_CHECKING:
    from ctrw.paper.request import SuiteRequest

__all__ = ["Planner", "SubJob", "expand_suite", "plan_suite"]

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


class SubJob(BaseModel):
    """One job of a suite. ``train``: ``config`` (a whole training job with its evaluation).
    ``attack``: ``evaluation`` of the model that the sub-job ``train_key`` trains."""

    key: str
    kind: Literal["train", "attack"]
    label: dict[str, Any]
    config: TrainConfig | None = None
    train_key: str | None = None
    evaluation: EvalConfig | None = None


def _scaled_milestones(epochs: int) -> list[int]:
    # The paper's 100/150 of 200 epochs, at the same fractions of a shorter run.
    return sorted({max(1, round(epochs * m / 200)) for m in (100, 150)})


def _base(req: SuiteRequest, model: str, dataset: str) -> dict[str, Any]:
    own = EXPERIMENTS[req.suite].base
    if own is not None:
        cfg = own(req, model)
    elif req.smoke:
        cfg = copy.deepcopy(deep_merge(SMOKE_TRAIN, EXPERIMENTS[req.suite].smoke_recipe or {}))
        cfg["model"] = {"name": model, "width": SMOKE_WIDTH[model]}
    else:
        cfg = {"model": {"name": model}, "data": {"dataset": dataset}}
    cfg["seed"] = req.seed
    cfg = deep_merge(cfg, copy.deepcopy(req.overrides))
    if req.epochs is not None:
        cfg.setdefault("optim", {})["epochs"] = req.epochs
        if "milestones" not in req.overrides.get("optim", {}):
            cfg["optim"]["milestones"] = _scaled_milestones(req.epochs)
    for knob in ("train_subset", "test_subset"):
        if getattr(req, knob) is not None:
            cfg.setdefault("data", {})[knob] = getattr(req, knob)
    return cfg


def _evaluation(base: dict[str, Any], attacks: list[dict[str, Any]], **values: Any) -> dict[str, Any]:
    return {**base.get("evaluation", {}), "attacks": attacks, **values}


class Planner:
    """Collects a suite's sub-jobs, one per key (the same model asked for twice is one job)."""

    def __init__(self, req: SuiteRequest) -> None:
        self.req = req
        self.jobs: dict[str, SubJob] = {}

    def key(self, model: str, role: str = "cifar10", **setting: Any) -> SubJobKey:
        """The key of ``model`` in ``setting`` on the data the request runs the paper's ``role`` on."""
        return self.req.sub_job_key(model, role, **setting)

    def _columns(self, names: tuple[str, ...]) -> list[dict[str, Any]]:
        return [attack(self.req, n) for n in names if n != "eotpgd" or self.req.adaptive]

    def train(self, key: SubJobKey, attacks: list[dict[str, Any]] | None = None) -> SubJobKey:
        """Add the training sub-job ``key`` (if new); returns it. ``attacks``: its evaluation
        (default: Table 1's columns for the Table 1 models, natural + PGD-20 + EOT-PGD otherwise)."""
        name = str(key)
        if name in self.jobs:
            return key
        base = _base(self.req, key.model, key.dataset)
        cfg = copy.deepcopy(base)
        cfg["name"] = name
        cfg["variant"] = key.variant
        cfg.setdefault("random_weight", {}).update(position=key.position, insertion=key.insertion)
        if key.fixed_sigma_at is not None:
            cfg["fixed_sigma_at"] = key.fixed_sigma_at
        label: dict[str, Any] = {"model": key.model, "dataset": key.dataset, "variant": key.variant}
        if key.fixed_sum is not None:
            area = image_area(TrainConfig.model_validate(base))
            total = 1.0 if key.fixed_sum == 0 else float(key.fixed_sum * area)
            cfg["fixed_sigma_at"] = "lower"
            cfg["bounds"] = {
                **cfg.get("bounds", {}),
                "lower": {"kind": "fixed", "value": total},
                "upper": None,
            }
            label.update(k=fraction_label(key.fixed_sum), sigma_sum=total)
        if key.position:
            label["position"] = key.position
        if key.insertion != "in_channels":
            label["insertion"] = key.insertion
        if key.fixed_sigma_at is not None:
            label["fixed_sigma_at"] = key.fixed_sigma_at
        columns = TABLE1_COLUMNS if key.is_reference else DEFAULT_COLUMNS
        attacks = attacks if attacks is not None else self._columns(columns)
        cfg["evaluation"] = _evaluation(base, attacks, protocol="paper")
        self.jobs[name] = SubJob(key=name, kind="train", label=label, config=TrainConfig.model_validate(cfg))
        return key

    def attack(self, key: SubJobKey, attacks: list[dict[str, Any]], **values: Any) -> SubJobKey:
        """Add the attack sub-job ``key`` (``attacks`` under ``values`` on its training job's model)."""
        assert key.evaluation is not None
        name, train_name = str(key), str(key.train)
        if name not in self.jobs:
            train = self.jobs[train_name]
            assert train.config is not None and train.config.evaluation is not None
            base = {
                "evaluation": train.config.evaluation.model_dump(exclude={"attacks", "protocol", "repeats"})
            }
            evaluation = EvalConfig.model_validate(_evaluation(base, attacks, **values))
            self.jobs[name] = SubJob(
                key=name, kind="attack", label={**train.label, "evaluation": key.evaluation},
                train_key=train_name, evaluation=evaluation,
            )  # fmt: skip
        return key


def plan_suite(req: SuiteRequest) -> Planner:
    """The suite's sub-jobs, by key, in the order its experiment asks for them."""
    planner = Planner(req)
    for model in req.models:
        EXPERIMENTS[req.suite].plan(planner, model)
    return planner


def expand_suite(req: SuiteRequest) -> list[SubJob]:
    """The suite's sub-jobs, training jobs before the attack jobs that evaluate them.

    Keys name what a sub-job computes (``ctrw.paper.keys.SubJobKey``), so two suites asking for
    the same model use the same key and, with the same scale and overrides, the same config (hash).
    """
    jobs = list(plan_suite(req).jobs.values())
    return [j for j in jobs if j.kind == "train"] + [j for j in jobs if j.kind == "attack"]
