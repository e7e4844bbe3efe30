"""Validated configuration for every CTRW job: training, attacks, evaluation.

This module imports pydantic only (no torch), so the API process can validate job bodies
without loading PyTorch. Every number that the paper or the published code fixes has its
default here, with a comment saying which source it comes from.

Units: images are in [0, 1]; every epsilon/step is in pixel units (normalization lives
inside the model).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ATTACK_NAMES",
    "MODEL_NAMES",
    "DATASET_NAMES",
    "AttackSpec",
    "BoundsConfig",
    "DataConfig",
    "EvalConfig",
    "FixedBound",
    "FractionBound",
    "Lemma1Bound",
    "Lemma2Bound",
    "PAPER_BOUNDS",
    "PaperBound",
    "ModelConfig",
    "OptimConfig",
    "RandomWeightConfig",
    "TrainAttackConfig",
    "TrainConfig",
    "AttackJobConfig",
    "ThreatModel",
    "config_hash",
    "load_config_file",
    "paper_attacks",
    "paper_bound_sum",
    "threat_model",
    "per_example_conflicts",
    "imagenet_preset",
    "published_attacks",
    "published_preset",
]

MODEL_NAMES = ("resnet18", "wrn34_10", "resnet50", "small_cnn")
DATASET_NAMES = ("cifar10", "cifar100", "imagenet", "digits", "synthetic")
# Paper-protocol attacks (Table 1) plus the adaptive ones (EOT, AutoAttack 'rand', transfer).
ATTACK_NAMES = (
    "clean",
    "pgd",
    "fgsm",
    "mifgsm",
    "deepfool",
    "cw",
    "autoattack",
    "eotpgd",
    "autoattack_rand",
    "transfer_mean",
)
# Attacks that forward shrinking subsets of a batch (DeepFool drops the images it has fooled,
# AutoAttack runs its later attacks on the survivors).
SUBSET_ATTACKS = ("deepfool", "autoattack", "autoattack_rand")
VARIANTS = ("baseline", "unconstrained", "fixed_std", "fixed_sigma", "ctrw")

MAX_EPOCHS = 1000
# Size caps (images). The cost estimate (ctrw.cost) bounds what a job computes; these bound what a
# request may ask a worker to hold: ImageNet's training set is 1.28M images, its validation 50k.
MAX_TRAIN_IMAGES = 2_000_000
MAX_TEST_IMAGES = 100_000
# Synthetic data lives in memory as uint8: N x C x S x S bytes for both splits together.
MAX_SYNTHETIC_BYTES = 4 * 1024**3
# Seeds seed torch, numpy-style generators and derived streams: 32 bits, like numpy's.
MAX_SEED = 2**32 - 1
EPS_8 = 8 / 255
STEP_2 = 2 / 255


# No NUL character: PostgreSQL text and JSONB cannot store one.
_NO_NUL = r"^[^\x00]*$"


def _tag_required(schema: dict[str, Any]) -> None:
    # The bounds' union tells its members apart by `kind`: a body must name it (the default is for
    # Python callers), so the schema says it is required.
    if "kind" in schema.get("properties", {}) and "kind" not in schema.setdefault("required", []):
        schema["required"].append("kind")


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a config must not silently use a default.

    Types are strict (``false`` is not a number, ``"3"`` not an integer, ``1`` not a boolean) and
    numbers finite (NaN and Infinity are refused, PostgreSQL's JSONB cannot store them), so what
    the JSON schema documents is exactly what is accepted. Config files are read leniently
    (``load_config_file``): YAML writes 1e-3 as a string.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=False, strict=True, allow_inf_nan=False, json_schema_extra=_tag_required
    )

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        return integral_floats_to_int(cls, data)


def _takes_int(annotation: Any) -> bool:
    """Whether a field's type is an integer (optionally None, a list of them, an int Literal)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is int:
        return True
    if origin is Annotated:
        return _takes_int(args[0])
    if origin is Literal:
        return all(isinstance(a, int) and not isinstance(a, bool) for a in args)
    if origin in (Union, UnionType, list):
        return any(_takes_int(a) for a in args if a is not type(None))
    return False


def _as_int(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def integral_floats_to_int(model: type[BaseModel], data: Any) -> Any:
    """``data`` with integral floats (2.0, 1e30) in the model's integer fields made ints: JSON
    Schema counts 2.0 as an integer, so the strict types must take it (and bounds then apply)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name, info in model.model_fields.items():
        v = out.get(name)
        if isinstance(v, float | list) and _takes_int(info.annotation):
            out[name] = [_as_int(x) for x in v] if isinstance(v, list) else _as_int(v)
    return out


# --------------------------------------------------------------------------- model


class RandomWeightConfig(_Strict):
    """Where and how the random weight W = mu + delta * sigma enters the network.

    Positions follow the published code: ResNet18 0..5 (0 = the normalized input image, i.e. the
    in-channels of conv1; 1 = after conv1+bn+relu; 2..4 = after layer1..3; 5 = after layer4),
    WRN-34-10 0..4 (0 = input, 1 = after conv1, 2 = after block1, 3 = after block2, 4 = after the
    final bn+relu), ResNet50 0..5 like ResNet18, small_cnn 0..3.
    """

    position: int = Field(
        0,
        ge=0,
        le=5,
        description="where the random weight sits: 0 = the input image (conv1's in-channels), higher = after later blocks (resnet18/resnet50 0..5, wrn34_10 0..4, small_cnn 0..3)",
    )
    # Table 4: in_channels (paper's best), out_channels, both, filters. Only in_channels exists
    # at positions other than 0, where there is no single conv to wrap.
    insertion: Literal["in_channels", "out_channels", "both", "filters"] = Field(
        "in_channels",
        description="Table 4: which part of the first conv carries the random weight (in_channels: the paper's best); the others need position 0",
    )
    mu_init: float = Field(1.0, description="initial mean mu of the random weight")
    sigma_init: float = Field(
        1.0,
        ge=0.0,
        description="initial standard deviation sigma of the random weight (the constraint then moves sum(sigma) into [A, B])",
    )
    per_example: bool = Field(
        False,
        description="true: a fresh draw per example; false (published code): one draw shared by the mini-batch",
    )

    @model_validator(mode="after")
    def _insertion_needs_position_zero(self) -> RandomWeightConfig:
        if self.insertion != "in_channels" and self.position != 0:
            raise ValueError(
                f"insertion '{self.insertion}' wraps the first conv and needs position 0 "
                f"(got position {self.position}); use insertion 'in_channels' elsewhere"
            )
        return self


class ModelConfig(_Strict):
    name: Literal[MODEL_NAMES] = Field(  # type: ignore[valid-type]
        "resnet18", description="the network (resnet50: ImageNet; small_cnn: digits and tests)"
    )
    width: float = Field(
        1.0,
        gt=0.0,
        le=4.0,
        description="channel multiplier for tests and CPU demos (1.0 = the paper's architecture)",
    )

    @model_validator(mode="after")
    def _resnet50_is_torchvisions(self) -> ModelConfig:
        if self.name == "resnet50" and self.width != 1.0:
            raise ValueError("resnet50 is torchvision's architecture: width must be 1.0")
        return self


# --------------------------------------------------------------------------- data


class DataConfig(_Strict):
    dataset: Literal[DATASET_NAMES] = Field(  # type: ignore[valid-type]
        "cifar10", description="the data set (digits: 8x8, offline; synthetic: random images for tests)"
    )
    root: str = Field(
        "data", max_length=4096, pattern=_NO_NUL, description="the data directory on the worker"
    )
    # Downloading is an operator setting (CTRW_ALLOW_DOWNLOAD on workers and the CLI), not a job
    # field: a job must not make a worker fetch from the internet. Kept, always false, so stored
    # configs and their hashes stay valid.
    download: Literal[False] = Field(
        False, description="always false: downloads are the operator's setting CTRW_ALLOW_DOWNLOAD"
    )
    image_size: int = Field(
        32, ge=8, le=512, description="digits and synthetic only: side length the images are resized to"
    )
    channels: Literal[1, 3] = Field(3, description="digits and synthetic only: 1 (grey) or 3 (RGB)")
    train_subset: int | None = Field(
        None,
        ge=1,
        le=MAX_TRAIN_IMAGES,
        description="use only this many training images (null: the whole split)",
    )
    test_subset: int | None = Field(
        None, ge=1, le=MAX_TEST_IMAGES, description="use only this many test images (null: the whole split)"
    )
    val_fraction: float = Field(
        0.1,
        ge=0.0,
        lt=0.9,
        description="fraction of the training set held out for validation and model selection",
    )
    select_on_test: bool = Field(
        False,
        description="select the best epoch on the TEST set as the published code did (biased; explicit opt-in)",
    )
    augment: bool = Field(
        True,
        description="pad-4 random crop and horizontal flip (CIFAR recipe; off for digits, flips change digits)",
    )
    num_classes: int = Field(10, ge=2, le=1000, description="synthetic only: number of classes")
    synthetic_train: int = Field(
        256, ge=8, le=MAX_TRAIN_IMAGES, description="synthetic only: training images"
    )
    synthetic_test: int = Field(128, ge=8, le=MAX_TEST_IMAGES, description="synthetic only: test images")
    imagenet_workers: int = Field(8, ge=0, le=64, description="imagenet only: data-loader worker processes")

    @field_validator("download", mode="before")
    @classmethod
    def _download_is_operator_setting(cls, v: Any) -> Any:
        if v is not False:
            raise ValueError(
                "downloading is not a job field: the operator allows it on workers and the CLI with "
                "CTRW_ALLOW_DOWNLOAD=1, or puts the data in CTRW_DATA_DIR"
            )
        return v

    @field_validator("channels", mode="before")
    @classmethod
    def _channels_not_bool(cls, v: Any) -> Any:
        # Literal[1, 3] would take true for 1.
        if isinstance(v, bool):
            raise ValueError("Input should be 1 or 3")
        return v

    @model_validator(mode="after")
    def _synthetic_fits_in_memory(self) -> DataConfig:
        if self.dataset == "synthetic":
            size = (self.synthetic_train + self.synthetic_test) * self.channels * self.image_size**2
            if size > MAX_SYNTHETIC_BYTES:
                raise ValueError(
                    f"synthetic_train + synthetic_test at {self.channels} x {self.image_size}^2 would hold "
                    f"{size / 1024**3:.1f} GiB in memory (at most {MAX_SYNTHETIC_BYTES // 1024**3} GiB)"
                )
        return self


# --------------------------------------------------------------------------- bounds


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


class PaperBound(_Strict):
    """The paper's fixed bounds (the default): A = 1000, B = 2400 over 3 x 32 x 32 = 3072 sigma
    elements, i.e. 0.326 (A) and 0.781 (B) per element times the number of sigma elements at the
    insertion point for other shapes. Fixed numbers: nothing is recomputed during training."""

    kind: Literal["paper"] = Field(
        "paper",
        description="the paper's fixed A = 1000 and B = 2400 (over 3x32x32 sigma elements, scaled per element)",
    )


class Lemma1Bound(_Strict):
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


class Lemma2Bound(_Strict):
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


class FixedBound(_Strict):
    """A fixed value for sum(sigma) (published code: lower 2048; the paper's A and B: kind 'paper')."""

    kind: Literal["fixed"] = Field("fixed", description="a fixed bound on sum(sigma)")
    value: float = Field(..., ge=0.0, description="the bound on sum(sigma) (published code: lower 2048)")


class FractionBound(_Strict):
    """A fixed value for sum(sigma) given per element: value * N (2048/3072 = 0.667 published)."""

    kind: Literal["fraction"] = Field("fraction", description="a fixed bound per sigma element")
    value: float = Field(
        ..., ge=0.0, description="the bound per sigma element: the bound on sum(sigma) is value x N elements"
    )


LowerBound = Annotated[PaperBound | Lemma1Bound | FixedBound | FractionBound, Field(discriminator="kind")]
UpperBound = Annotated[PaperBound | Lemma2Bound | FixedBound | FractionBound, Field(discriminator="kind")]


class BoundsConfig(_Strict):
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


# --------------------------------------------------------------------------- optimisation


class OptimConfig(_Strict):
    epochs: int = Field(200, ge=1, le=MAX_EPOCHS, description="training epochs")
    batch_size: int = Field(128, ge=1, le=8192, description="training mini-batch size")
    lr: float = Field(0.1, gt=0.0, le=10.0, description="SGD learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0, description="SGD weight decay")
    weight_decay_on_random: bool = Field(
        True,
        description="weight decay also on mu and sigma (published code: true; PNI exempts its noise scale)",
    )
    schedule: Literal["multistep", "cosine", "constant"] = Field(
        "multistep", description="learning-rate schedule"
    )
    milestones: list[Annotated[int, Field(ge=1, le=MAX_EPOCHS)]] = Field(
        default_factory=lambda: [100, 150],
        max_length=64,
        description="multistep: epochs at which the learning rate is multiplied by gamma",
    )
    gamma: float = Field(
        0.1, gt=0.0, le=1.0, description="multistep: the learning-rate factor at each milestone"
    )
    early_stop_patience: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="stop after this many epochs without a better validation robust accuracy (Rice et al.; null: never)",
    )

    @field_validator("milestones")
    @classmethod
    def _sorted_positive(cls, v: list[int]) -> list[int]:
        if any(m < 1 for m in v) or v != sorted(v):
            raise ValueError("milestones must be positive and increasing")
        return v


class TrainAttackConfig(_Strict):
    """The attack inside adversarial training (Algorithm 1: PGD-k against draw A)."""

    eps: float = Field(
        EPS_8,
        ge=0.0,
        le=1.0,
        description="L-inf radius of the training attack, pixels in [0, 1] (default 8/255)",
    )
    step_size: float = Field(STEP_2, gt=0.0, le=1.0, description="PGD step (default 2/255)")
    steps: int = Field(10, ge=0, le=1000, description="PGD steps (0: standard, non-adversarial training)")
    random_start: bool = Field(True, description="start PGD at a random point of the eps-ball")
    bn_mode: Literal["train", "eval"] = Field(
        "train", description="BatchNorm mode during the attack (published code: train)"
    )
    randomness: Literal["blackbox", "adaptive", "eot"] = Field(
        "blackbox",
        description="'blackbox' (paper): one draw A for the attack, a fresh draw B for the update; 'adaptive': a fresh draw on every attack forward; 'eot': the gradient averaged over eot_draws draws",
    )
    eot_draws: int = Field(2, ge=1, le=64, description="randomness 'eot': draws averaged per gradient")


# --------------------------------------------------------------------------- attacks / evaluation


class AttackSpec(_Strict):
    """One attack with its parameters. Unset parameters take the paper's values (see paper_attacks).

    Parameters by attack:
      pgd/eotpgd: eps, step_size, steps, random_start (eotpgd: eot_draws)
      fgsm: eps; mifgsm: eps, step_size, steps, decay
      deepfool: steps, overshoot; cw: c, kappa, steps, lr
      autoattack: eps, norm, steps (APGD/APGD-T/FAB-T iterations), queries (Square)
      autoattack_rand: eps, norm, steps, eot_draws
      transfer_mean: steps, eps, step_size (PGD on the mean-weight surrogate, delta = 0)
    """

    name: Literal[ATTACK_NAMES] = Field(..., description="the attack")  # type: ignore[valid-type]
    label: str | None = Field(
        None, max_length=64, pattern=_NO_NUL, description="column name; default derived from name/steps"
    )
    eps: float | None = Field(
        None, ge=0.0, le=1.0, description="radius in pixels in [0, 1] (unset: the paper's 8/255)"
    )
    step_size: float | None = Field(
        None, gt=0.0, le=1.0, description="step per iteration (unset: the paper's 2/255)"
    )
    steps: int | None = Field(
        None, ge=1, le=10_000, description="iterations (unset: the attack's paper default)"
    )
    random_start: bool | None = Field(
        None, description="pgd, eotpgd, transfer_mean: start at a random point of the eps-ball"
    )
    decay: float | None = Field(
        None, ge=0.0, le=10.0, description="mifgsm: momentum decay (published code: 1.0)"
    )
    overshoot: float | None = Field(None, ge=0.0, le=10.0, description="deepfool: overshoot")
    c: float | None = Field(None, gt=0.0, le=1e6, description="cw: the weight c of the classification loss")
    kappa: float | None = Field(None, ge=0.0, le=1e6, description="cw: confidence margin kappa")
    lr: float | None = Field(None, gt=0.0, le=10.0, description="cw: Adam learning rate")
    norm: Literal["Linf", "L2"] | None = Field(None, description="autoattack, autoattack_rand: Linf or L2")
    eot_draws: int | None = Field(
        None, ge=1, le=1000, description="eotpgd, autoattack_rand: draws averaged per gradient"
    )
    queries: int | None = Field(None, ge=1, le=100_000, description="autoattack: Square's query budget")
    protocol: Literal["paper", "adaptive", "both"] | None = Field(
        None,
        description="this attack under another protocol than the evaluation's (null: the evaluation's), e.g. one adaptive EOT-PGD column beside a paper-protocol table",
    )

    def resolved(self) -> dict[str, Any]:
        """The attack's parameters with the paper's defaults filled in."""
        defaults = _ATTACK_DEFAULTS[self.name]
        given = self.model_dump(exclude={"name", "label", "protocol"}, exclude_none=True)
        unknown = set(given) - set(defaults)
        if unknown:
            raise ValueError(f"attack '{self.name}' takes no parameter(s) {sorted(unknown)}")
        return {**defaults, **given}

    @model_validator(mode="after")
    def _params_belong_to_attack(self) -> AttackSpec:
        self.resolved()
        return self

    @property
    def threat_model(self) -> ThreatModel | None:
        """What this attack may do to an image (None for ``clean``); see ``threat_model``."""
        return threat_model(self.name, self.resolved())

    @property
    def column(self) -> str:
        if self.label:
            return self.label
        p = self.resolved()
        if self.name in ("pgd", "eotpgd", "transfer_mean"):
            return f"{self.name}{p['steps']}"
        return self.name


# Paper Section 4.1 and the published torchattacks settings. MIFGSM decay: published code 1.0
# (the paper's text says 0.1). AutoAttack steps: the reference uses 100 APGD iterations,
# torchattacks hard-codes 10 in its 'standard' wrapper (see ctrw.attacks.build).
_ATTACK_DEFAULTS: dict[str, dict[str, Any]] = {
    "clean": {},
    "pgd": {"eps": EPS_8, "step_size": STEP_2, "steps": 20, "random_start": True},
    "fgsm": {"eps": EPS_8},
    "mifgsm": {"eps": EPS_8, "step_size": STEP_2, "steps": 5, "decay": 1.0},
    "deepfool": {"steps": 50, "overshoot": 0.02},
    "cw": {"c": 1e-4, "kappa": 0.0, "steps": 1000, "lr": 0.01},
    "autoattack": {"eps": EPS_8, "norm": "Linf", "steps": 100, "queries": 5000},
    "eotpgd": {"eps": EPS_8, "step_size": STEP_2, "steps": 100, "random_start": True, "eot_draws": 20},
    "autoattack_rand": {"eps": EPS_8, "norm": "Linf", "steps": 100, "eot_draws": 20},
    "transfer_mean": {"eps": EPS_8, "step_size": STEP_2, "steps": 20, "random_start": True},
}


# Attacks bounded in L-inf by their eps; AutoAttack's two versions take their norm from params.
_LINF_ATTACKS = ("pgd", "fgsm", "mifgsm", "eotpgd", "transfer_mean")
# Attacks that may move an image as far as they need in L2 (no eps).
_UNBOUNDED_L2_ATTACKS = ("cw", "deepfool")


@dataclass(frozen=True)
class ThreatModel:
    """An attack's budget: its norm and eps. Robust accuracies compare only within one.

    Attributes:
        norm: "linf", "l2" or "unbounded-l2" (CW, DeepFool: no eps).
        eps: the radius in pixel units (None when unbounded), rounded so that equal budgets
            from different sources (8/255 from YAML or JSON) compare equal.
    """

    norm: Literal["linf", "l2", "unbounded-l2"]
    eps: float | None = None

    @property
    def label(self) -> str:
        """Human form, e.g. "Linf eps=0.2", "Linf eps=8/255", "unbounded L2"."""
        if self.eps is None:
            return "unbounded L2"
        k = self.eps * 255
        if round(self.eps, 4) != self.eps and abs(k - round(k)) < 1e-6:
            eps = f"{round(k)}/255"
        else:
            eps = f"{self.eps:.4g}"
        return f"{'Linf' if self.norm == 'linf' else 'L2'} eps={eps}"


def threat_model(name: str, params: dict[str, Any] | None = None) -> ThreatModel | None:
    """The threat model of attack ``name`` with (resolved or partial) ``params``.

    Missing parameters take the paper's defaults, so stored rows with partial params work.

    Returns:
        None for ``clean`` (no adversary), else the attack's ``ThreatModel``.
    """
    if name not in _ATTACK_DEFAULTS:
        raise ValueError(f"unknown attack '{name}'")
    p = {**_ATTACK_DEFAULTS[name], **(params or {})}
    if name == "clean":
        return None
    if name in _UNBOUNDED_L2_ATTACKS:
        return ThreatModel("unbounded-l2")
    norm = "linf" if name in _LINF_ATTACKS or p.get("norm", "Linf") == "Linf" else "l2"
    return ThreatModel(norm, round(float(p["eps"]), 10))


def paper_attacks() -> list[AttackSpec]:
    """Table 1's columns: Natural, PGD-20, FGSM, AutoAttack, CW-L2, MIFGSM, DeepFool."""
    return [AttackSpec(name=n) for n in ("clean", "pgd", "fgsm", "autoattack", "cw", "mifgsm", "deepfool")]


class EvalConfig(_Strict):
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
    batch_size: int = Field(
        256,
        ge=1,
        le=8192,
        description="examples per batch (the confidence intervals treat batches as clusters)",
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

    @field_validator("attacks")
    @classmethod
    def _unique_columns(cls, v: list[AttackSpec]) -> list[AttackSpec]:
        cols = [a.column for a in v]
        dup = {c for c in cols if cols.count(c) > 1}
        if dup:
            raise ValueError(f"duplicate attack columns {sorted(dup)}: give them distinct labels")
        return v


# --------------------------------------------------------------------------- whole jobs


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


class TrainConfig(_Strict):
    """A complete training job: everything needed to reproduce it is in here (plus the code)."""

    name: str = Field("ctrw", max_length=128, pattern=_NO_NUL, description="a label for the job")
    variant: Literal[VARIANTS] = Field(  # type: ignore[valid-type]
        "ctrw", description="ctrw (the paper's method) or a comparison variant (Tables 1 and 7)"
    )
    fixed_sigma_at: Literal["lower", "upper", "mid"] = Field(
        "lower",
        description="fixed_sigma only (Table 7): sum(sigma) fixed at the lower bound, the upper bound or midway",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="the network")
    random_weight: RandomWeightConfig = Field(
        default_factory=RandomWeightConfig, description="where and how the random weight enters the network"
    )
    bounds: BoundsConfig = Field(default_factory=BoundsConfig, description="the constraint on sum(sigma)")
    data: DataConfig = Field(default_factory=DataConfig, description="the data set and its splits")
    optim: OptimConfig = Field(
        default_factory=OptimConfig, description="optimiser and learning-rate schedule"
    )
    attack: TrainAttackConfig = Field(
        default_factory=TrainAttackConfig,
        description="the attack inside adversarial training (PGD-k against draw A)",
    )
    val_pgd_steps: int = Field(
        20, ge=0, le=1000, description="PGD steps of the per-epoch validation (0: clean accuracy only)"
    )
    val_examples: int | None = Field(
        1000, ge=1, le=MAX_TEST_IMAGES, description="validation examples per epoch (null: all)"
    )
    evaluation: EvalConfig | None = Field(
        default_factory=EvalConfig, description="the evaluation after training (null: none)"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="random seed (initialisation, data order, draws)")
    # Fast path: bf16 autocast and channels_last apply on CUDA only; compile (torch.compile of the
    # training step) runs on any device when set.
    amp: bool = Field(True, description="bf16 autocast (CUDA only)")
    channels_last: bool = Field(True, description="channels_last memory format (CUDA only)")
    compile: bool = Field(False, description="torch.compile the training step (any device)")
    device: str | None = Field(
        None,
        pattern=r"^(cpu|cuda(:[0-9]+)?)$",
        description="'cuda', 'cpu', 'cuda:1'; None = cuda if available",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.variant == "fixed_sigma" and self.fixed_sigma_at != "lower" and self.bounds.upper is None:
            raise ValueError("variant fixed_sigma at 'upper'/'mid' needs bounds.upper")
        if self.variant in ("fixed_std", "fixed_sigma") and self.bounds.lower is None:
            raise ValueError(f"variant {self.variant} fixes sigma from bounds.lower, which is missing")
        if self.variant == "ctrw" and self.bounds.lower is None and self.bounds.upper is None:
            raise ValueError("variant ctrw needs at least one bound (use 'unconstrained' for none)")
        pos_max = {"resnet18": 5, "wrn34_10": 4, "resnet50": 5, "small_cnn": 3}[self.model.name]
        if self.random_weight.position > pos_max:
            raise ValueError(
                f"random_weight.position {self.random_weight.position} does not exist for "
                f"{self.model.name} (0..{pos_max})"
            )
        if self.data.dataset == "imagenet" and self.model.name != "resnet50":
            raise ValueError("imagenet runs use model resnet50")
        if (
            self.model.name == "resnet50"
            and self.data.dataset in ("digits", "synthetic")
            and self.data.channels != 3
        ):
            raise ValueError("resnet50 is torchvision's architecture: data.channels must be 3")
        conflicts = per_example_conflicts(self.evaluation) if self.evaluation is not None else []
        if self.random_weight.per_example and conflicts:
            i, reason = conflicts[0]
            raise ValueError(f"evaluation.attacks.{i}: {reason}")
        return self


class AttackJobConfig(_Strict):
    """Evaluate a finished training job's model."""

    evaluation: EvalConfig = Field(
        default_factory=EvalConfig, description="the evaluation to run on the training job's checkpoint"
    )


def config_hash(config: BaseModel) -> str:
    """Stable sha256 of a config's canonical JSON (defaults included)."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# torchattacks 3.5.1's AutoAttack wrapper, which the published code ran ("standard"): APGD-CE,
# APGD-T and FAB-T at their class default of 10 iterations, Square with 5000 queries, one restart
# each, n_classes 10 (9 target classes). Our default is the reference's 100 iterations.
PUBLISHED_AUTOATTACK = {"steps": 10, "queries": 5000}


def published_attacks(evaluation: EvalConfig | None) -> None:
    """Give the evaluation's AutoAttack the published code's settings where the config leaves
    them unset (in place); the result rows record them in their ``params``."""
    for a in evaluation.attacks if evaluation is not None else []:
        if a.name == "autoattack":
            for k, v in PUBLISHED_AUTOATTACK.items():
                if getattr(a, k) is None:
                    setattr(a, k, v)


def published_preset(**overrides: Any) -> TrainConfig:
    """The published code's behaviour (official-code-facts.md) as a config.

    Differences from the paper defaults: element-wise floor rule with lb = 2048 and no upper
    bound, model selection on the test set, AutoAttack as torchattacks' wrapper runs it (10
    APGD/APGD-T/FAB-T iterations instead of 100; see PUBLISHED_AUTOATTACK), MIFGSM decay 1.0
    (already our default).
    """
    base: dict[str, Any] = {
        "bounds": {"rule": "floor", "lower": {"kind": "fixed", "value": 2048.0}, "upper": None},
        "data": {"select_on_test": True, "val_fraction": 0.0},
        "optim": {"weight_decay_on_random": True},
        "attack": {"bn_mode": "train", "randomness": "blackbox"},
    }
    merged = _deep_merge(base, overrides)
    cfg = TrainConfig.model_validate(merged)
    published_attacks(cfg.evaluation)
    return cfg


def imagenet_preset(**overrides: Any) -> TrainConfig:
    """The paper's ImageNet recipe: ResNet50, batch 1024, lr 0.02 cosine, 90 epochs, PGD-2 eps 4/255 step 1/255."""
    base: dict[str, Any] = {
        "model": {"name": "resnet50"},
        "data": {"dataset": "imagenet", "val_fraction": 0.0, "augment": False},
        "optim": {"epochs": 90, "batch_size": 1024, "lr": 0.02, "schedule": "cosine"},
        "attack": {"eps": 4 / 255, "step_size": 1 / 255, "steps": 2},
        "val_pgd_steps": 10,
        "evaluation": {
            "attacks": [
                {"name": "clean"},
                {"name": "pgd", "eps": 4 / 255, "step_size": 1 / 255, "steps": 10},
                {"name": "pgd", "eps": 4 / 255, "step_size": 1 / 255, "steps": 50},
            ]
        },
    }
    return TrainConfig.model_validate(_deep_merge(base, overrides))


PRESETS = {"published": published_preset, "imagenet": imagenet_preset}


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config_file(path: str | Path, model: type[BaseModel] = TrainConfig) -> BaseModel:
    """Read a YAML or JSON file and validate it. Raises ConfigError with field paths."""
    import yaml
    from pydantic import ValidationError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) if p.suffix in (".yaml", ".yml") else json.loads(p.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML/JSON: {e}") from e
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    preset = raw.pop("preset", None)
    try:
        if preset == "published" and model is EvalConfig:
            evaluation = EvalConfig.model_validate(raw)
            published_attacks(evaluation)
            return evaluation
        if preset in PRESETS and model is not TrainConfig:
            raise ConfigError(f"{p}: preset: '{preset}' applies to training configs")
        if preset in PRESETS:
            return PRESETS[preset](**raw)
        if preset not in (None, "paper"):
            raise ConfigError(f"{p}: preset: unknown preset '{preset}' (paper | {' | '.join(PRESETS)})")
        # Lenient types in files: YAML reads 1e-3 (no dot) as a string.
        return model.model_validate(raw, strict=False)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source=str(p))) from e


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field."""


def format_validation_error(e: Any, source: str = "config") -> str:
    lines = [f"{source}: invalid configuration"]
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)
