"""An evaluation: the attacks, the protocol, the repeats; and the attack job that runs one."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from ctrw.catalog import SUBSET_ATTACKS
from ctrw.config.attack import AttackSpec
from ctrw.config.common import MAX_SEED, MAX_TEST_IMAGES, StrictModel
from ctrw.config.resources import WithResources

__all__ = ["AttackJobConfig", "EvalConfig", "per_example_conflicts"]

# batch_size 'auto': CIFAR-sized images at 1024 per batch on CUDA (10 batches of the 10,000 test
# images: the CIs' t has 9 df); ImageNet-sized ones at 256 (activations of 224 px images); 256 on
# a CPU (the former default).
AUTO_BATCH_CUDA = 1024
AUTO_BATCH_CUDA_LARGE = 256
AUTO_LARGE_SIDE = 64
AUTO_BATCH_CPU = 256


class EvalConfig(StrictModel):
    attacks: list[AttackSpec] = Field(
        default_factory=lambda: [AttackSpec(name="clean"), AttackSpec(name="pgd")],
        min_length=1,
        max_length=64,
        description="the attacks, one column each (unset parameters: the paper's)",
    )
    protocol: Literal["paper", "adaptive", "both"] = Field(
        "paper",
        description="'paper': draw A for the attack, draw B for the prediction (Algorithm 2); 'adaptive': the attacker faces a fresh draw on every forward; 'both': a column of each",
    )
    n_examples: int | None = Field(
        None, ge=1, le=MAX_TEST_IMAGES, description="first n test examples (None = all)"
    )
    batch_size: Annotated[int, Field(ge=1, le=8192)] | Literal["auto"] = Field(
        "auto",
        description="examples per batch (the confidence intervals treat batches as clusters); 'auto': "
        f"{AUTO_BATCH_CUDA} on CUDA ({AUTO_BATCH_CUDA_LARGE} for images over {AUTO_LARGE_SIDE} px), "
        f"{AUTO_BATCH_CPU} elsewhere",
    )
    repeats: int = Field(1, ge=1, le=100, description="repeat the whole evaluation (Table 5 mean/std)")
    score_draws: int = Field(
        10, ge=1, le=1000, description="judge each adversarial example under this many fresh draws"
    )
    checkpoint: Literal["best", "last"] = Field(
        "best", description="the checkpoint evaluated: best (on validation) or last epoch"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="random seed of the evaluation")
    diagnostics: bool = Field(True, description="run the gradient-masking diagnostics beside the attacks")

    def resolved_batch_size(self, device_type: str, image_side: int) -> int:
        """The batch size on a device: an explicit one as given, 'auto' by device and image size.

        On CUDA a large batch fills the GPU (attacks take input gradients only, so memory is
        activations); on a CPU larger batches gain nothing and only coarsen progress.
        """
        if self.batch_size != "auto":
            return self.batch_size
        if device_type == "cuda":
            return AUTO_BATCH_CUDA if image_side <= AUTO_LARGE_SIDE else AUTO_BATCH_CUDA_LARGE
        return AUTO_BATCH_CPU

    @field_validator("attacks")
    @classmethod
    def _unique_columns(cls, v: list[AttackSpec]) -> list[AttackSpec]:
        cols = [a.column for a in v]
        dup = {c for c in cols if cols.count(c) > 1}
        if dup:
            raise ValueError(f"duplicate attack columns {sorted(dup)}: give them distinct labels")
        return v


def per_example_conflicts(evaluation: EvalConfig) -> list[tuple[int, str]]:
    """The attacks of ``evaluation`` that cannot run on per-example random layers, as
    (index in ``attacks``, reason). Under the paper protocol a fixed per-example draw fits the
    batch size it was drawn for, and these attacks forward shrinking subsets of the batch."""
    return [
        (
            i,
            f"{a.name} cannot run under the paper protocol on per-example random layers (a fixed "
            "per-example draw fits one batch size, and the attack forwards shrinking subsets); set "
            "this attack's protocol to 'adaptive'",
        )
        for i, a in enumerate(evaluation.attacks)
        if a.name in SUBSET_ATTACKS and (a.protocol or evaluation.protocol) != "adaptive"
    ]


class AttackJobConfig(WithResources):
    """Evaluate a finished training job's model."""

    evaluation: EvalConfig = Field(
        default_factory=EvalConfig, description="the evaluation to run on the training job's checkpoint"
    )
