"""The constraint on sum(sigma): the paper's bounds, the lemmas' and fixed ones."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ctrw.config.common import StrictModel

__all__ = [
    "PAPER_BOUNDS",
    "PAPER_BOUNDS_NUMEL",
    "BoundsConfig",
    "FixedBound",
    "FractionBound",
    "Lemma1Bound",
    "Lemma2Bound",
    "LowerBound",
    "PaperBound",
    "UpperBound",
    "paper_bound_sum",
]


# The paper's numbers for CIFAR at position 0, whose layer has 3 x 32 x 32 = 3072 sigma elements:
# A "estimated as 1x10^3" (Section 4.1; "the lower bound is set to 1000", Section 4.2) and
# "B ~ 2400" (Section 4.2); Figure 3b marks both. Other layer sizes get the same values per element.
PAPER_BOUNDS = {"lower": 1000.0, "upper": 2400.0}
PAPER_BOUNDS_NUMEL = 3 * 32 * 32


def paper_bound_sum(side: Literal["lower", "upper"], numel: int) -> float:
    """The paper's bound on sum(sigma) for a layer of ``numel`` sigma elements.

    Args:
        side: "lower" (A = 1000 at 3072 elements) or "upper" (B = 2400 at 3072 elements).
        numel: number of sigma elements at the insertion point.

    Returns:
        PAPER_BOUNDS[side] / 3072 * numel (exactly 1000 or 2400 for a 3 x 32 x 32 layer).
    """
    return PAPER_BOUNDS[side] * numel / PAPER_BOUNDS_NUMEL


class PaperBound(StrictModel):
    """The paper's fixed bounds (the default): A = 1000, B = 2400 over 3 x 32 x 32 = 3072 sigma
    elements, i.e. 0.326 (A) and 0.781 (B) per element times the number of sigma elements at the
    insertion point for other shapes. Fixed numbers: nothing is recomputed during training."""

    kind: Literal["paper"] = Field(
        "paper",
        description="the paper's fixed A = 1000 and B = 2400 (over 3x32x32 sigma elements, scaled per element)",
    )


class Lemma1Bound(StrictModel):
    """Lemma 1: A = (eps_r' - sum(mu)) / (alpha * sum|W1|), eps_r' = eps_r * ||W1||_p ||W2||_p.

    alpha < 0 (the lemma's condition). |alpha| = 1e-3 gives A ~ 820-850 at the start (mu = 1,
    sigma = 1) whatever the layer size. The value depends on mu and on a random draw W1, W2, so
    recomputed every epoch it moves as mu trains, and it does not exist when sum(mu) <= eps_r' (the lemma's assumption sum(mu) >> 0 fails): that is an error at
    the start of a run that uses it, and a recorded event (``bound_events``, the previous value
    kept) during training. eps_r is not given in the paper; 0.01 is our default.
    """

    kind: Literal["lemma1"] = Field(
        "lemma1", description="Lemma 1's lower bound A, computed from the network"
    )
    alpha: float = Field(-1e-3, lt=0.0, description="Lemma 1's alpha (negative)")
    eps_r: float = Field(0.01, ge=0.0, lt=1.0, description="Lemma 1's eps_r (not given in the paper)")
    p: float = Field(2.0, gt=0.0, description="the norm p in eps_r' = eps_r * ||W1||_p ||W2||_p")


class Lemma2Bound(StrictModel):
    """Lemma 2: sum(sigma') <= eps_y / (|x^{n-1} . W^n| * beta), mapped back to sigma.

    sigma' (the spread the random weight causes in the logits) is proportional to sigma; the
    proportionality is measured by Monte Carlo (see ctrw.nn.bounds). eps_y is not given in the
    paper; beta = 1e-2 is. On an untrained network the logits are tiny and B is huge (3e8 for an
    untrained CIFAR ResNet18 on random images): no upper bound in effect. Recomputed every epoch.
    """

    kind: Literal["lemma2"] = Field(
        "lemma2", description="Lemma 2's upper bound B, computed from the network"
    )
    beta: float = Field(1e-2, gt=0.0, description="Lemma 2's beta (the paper: 1e-2)")
    eps_y: float = Field(1.0, gt=0.0, description="Lemma 2's eps_y (not given in the paper)")
    n_draws: int = Field(
        8, ge=2, le=256, description="Monte Carlo draws that measure the logits' spread per unit of sigma"
    )
    n_examples: int = Field(256, ge=1, le=10_000, description="examples of that measurement")


class FixedBound(StrictModel):
    """A fixed value for sum(sigma) (published code: lower 2048; the paper's A and B: kind 'paper')."""

    kind: Literal["fixed"] = Field("fixed", description="a fixed bound on sum(sigma)")
    value: float = Field(..., ge=0.0, description="the bound on sum(sigma) (published code: lower 2048)")


class FractionBound(StrictModel):
    """A fixed value for sum(sigma) given per element: value * N (2048/3072 = 0.667 published)."""

    kind: Literal["fraction"] = Field("fraction", description="a fixed bound per sigma element")
    value: float = Field(
        ..., ge=0.0, description="the bound per sigma element: the bound on sum(sigma) is value x N elements"
    )


LowerBound = Annotated[PaperBound | Lemma1Bound | FixedBound | FractionBound, Field(discriminator="kind")]
UpperBound = Annotated[PaperBound | Lemma2Bound | FixedBound | FractionBound, Field(discriminator="kind")]


class BoundsConfig(StrictModel):
    """sigma constraint applied after every optimizer step.

    rule 'sum' (paper, Eq. 5): keep sum(sigma) in [A, B] by adding the average bias below A and by
    a proportional shrink above B; sigma >= 0.
    rule 'floor' (published code): element-wise floor f = lower / N; if min(sigma) < f every
    element below f is raised by f - min(sigma). No upper bound.

    Default: the paper's A = 1000 and B = 2400 (kind 'paper', scaled per element). The lemmas
    (kinds 'lemma1', 'lemma2') compute the bounds from the network instead.
    """

    rule: Literal["sum", "floor"] = Field(
        "sum",
        description="'sum' (paper, Eq. 5): keep sum(sigma) in [A, B]; 'floor' (published code): element-wise floor lower / N, no upper bound",
    )
    lower: LowerBound | None = Field(
        default_factory=PaperBound, description="lower bound A on sum(sigma) (null: none)"
    )
    upper: UpperBound | None = Field(
        default_factory=PaperBound, description="upper bound B on sum(sigma) (null: none)"
    )
    recompute_every_epoch: bool = Field(
        True, description="recompute the lemma bounds at every epoch end (they depend on mu and the network)"
    )

    @model_validator(mode="after")
    def _floor_has_no_upper(self) -> BoundsConfig:
        if self.rule == "floor" and self.lower is None:
            raise ValueError("rule 'floor' needs a lower bound")
        return self
