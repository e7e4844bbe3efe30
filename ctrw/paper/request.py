"""A suite request: one experiment of the paper, at the paper's scale or smaller."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ctrw.config import MAX_EPOCHS, MAX_SEED, MAX_TEST_IMAGES, MAX_TRAIN_IMAGES, integral_floats_to_int
from ctrw.paper.experiments import EXPERIMENTS, SUITE_NAMES
from ctrw.paper.keys import SubJobKey
from ctrw.paper.planner import expand_suite

__all__ = ["SUITE_CONTROLLED", "SuiteRequest"]

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

    suite: Literal[SUITE_NAMES] = Field(..., description="the experiment of the paper")  # type: ignore[valid-type]
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
        fixed = EXPERIMENTS[self.suite].models
        if fixed is not None:
            return fixed
        return ("resnet18", "wrn34_10") if self.model == "all" else (self.model,)

    @property
    def roles(self) -> tuple[str, ...]:
        """The paper's datasets for this suite (row labels)."""
        return EXPERIMENTS[self.suite].datasets

    def dataset_for(self, role: str) -> str:
        """The data set a paper dataset role runs on."""
        if self.smoke:
            return EXPERIMENTS[self.suite].smoke_dataset
        return self.dataset or role

    def sub_job_key(self, model: str, role: str = "cifar10", **setting: Any) -> SubJobKey:
        """The key of ``model`` in ``setting`` (``SubJobKey`` fields) on the data of ``role``."""
        return SubJobKey(model=model, dataset=self.dataset_for(role), **setting)
