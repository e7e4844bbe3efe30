"""A complete training job: optimiser, the training attack, and the whole TrainConfig."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ctrw.catalog import DEFENSES, MODELS, VARIANTS
from ctrw.config.bounds import BoundsConfig
from ctrw.config.common import EPS_8, MAX_EPOCHS, MAX_SEED, MAX_TEST_IMAGES, NO_NUL, STEP_2, StrictModel
from ctrw.config.data import DataConfig
from ctrw.config.evaluation import EvalConfig, per_example_conflicts
from ctrw.config.model import DefenseConfig, ModelConfig, RandomWeightConfig
from ctrw.config.resources import WithPlacement

__all__ = ["OptimConfig", "TrainAttackConfig", "TrainConfig"]


class OptimConfig(StrictModel):
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


class TrainAttackConfig(StrictModel):
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


class TrainConfig(WithPlacement):
    """A complete training job: everything needed to reproduce it is in here (plus the code)."""

    name: str = Field("ctrw", max_length=128, pattern=NO_NUL, description="a label for the job")
    variant: Literal[VARIANTS] = Field(  # type: ignore[valid-type]
        "ctrw",
        description="ctrw (the paper's method), a comparison variant (Tables 1 and 7) or another randomized "
        "defense (pgd_at_es, additive_noise, resize_pad, rna, pni, dwq; settings in 'defense')",
    )
    fixed_sigma_at: Literal["lower", "upper", "mid"] = Field(
        "lower",
        description="fixed_sigma only (Table 7): sum(sigma) fixed at the lower bound, the upper bound or midway",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="the network")
    random_weight: RandomWeightConfig = Field(
        default_factory=RandomWeightConfig, description="where and how the random weight enters the network"
    )
    defense: DefenseConfig = Field(
        default_factory=DefenseConfig, description="settings of the other randomized defenses (per variant)"
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
    # training step) is on for CUDA jobs by default ('auto') and runs on any device when true.
    amp: bool = Field(True, description="bf16 autocast (CUDA only)")
    channels_last: bool = Field(True, description="channels_last memory format (CUDA only)")
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile the training step: 'auto' = on for CUDA jobs (fixed batch shapes), off on the CPU; true/false force it (true compiles on the CPU too)",
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default",
        description="torch.compile mode when compiling: 'reduce-overhead' adds CUDA graphs (not measured on a GPU yet)",
    )
    train_clean_acc_every: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="the train-clean-accuracy forward on every Nth batch only (null: every batch on the CPU, every 10th on CUDA); train_clean_acc is then the accuracy on those batches",
    )
    val_batch_size: int | None = Field(
        None,
        ge=1,
        le=8192,
        description="validation batch size (null: 4x the training batch, at most 1024, on CUDA; the training batch on the CPU)",
    )
    device: str | None = Field(
        None,
        pattern=r"^(cpu|cuda(:[0-9]+)?)$",
        description="'cuda', 'cpu', 'cuda:1'; None = cuda if available",
    )

    @model_validator(mode="before")
    @classmethod
    def _variant_defaults(cls, data: Any) -> Any:
        """A defense's recipe (``DEFENSES[variant].defaults``) fills what the config leaves out."""
        info = DEFENSES.get(data.get("variant")) if isinstance(data, dict) else None
        if info is None or not info.defaults:
            return data
        data = dict(data)
        for path, value in info.defaults.items():
            *parents, leaf = path.split(".")
            node = data
            for key in parents:
                child = node.get(key)
                if child is None:
                    child = {}
                elif not isinstance(child, dict):
                    break  # a model instance: the caller chose every value
                node[key] = child = dict(child)
                node = child
            else:
                node.setdefault(leaf, value)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.variant == "fixed_sigma" and self.fixed_sigma_at != "lower" and self.bounds.upper is None:
            raise ValueError("variant fixed_sigma at 'upper'/'mid' needs bounds.upper")
        if self.variant in ("fixed_std", "fixed_sigma") and self.bounds.lower is None:
            raise ValueError(f"variant {self.variant} fixes sigma from bounds.lower, which is missing")
        if self.variant == "ctrw" and self.bounds.lower is None and self.bounds.upper is None:
            raise ValueError("variant ctrw needs at least one bound (use 'unconstrained' for none)")
        pos_max = MODELS[self.model.name].max_position
        if self.random_weight.position > pos_max:
            raise ValueError(
                f"random_weight.position {self.random_weight.position} does not exist for "
                f"{self.model.name} (0..{pos_max})"
            )
        if self.data.dataset == "imagenet" and self.model.name != "resnet50":
            raise ValueError("imagenet runs use model resnet50")
        if (
            MODELS[self.model.name].rgb_only
            and self.data.dataset in ("digits", "synthetic")
            and self.data.channels != 3
        ):
            raise ValueError(f"{self.model.name} is torchvision's architecture: data.channels must be 3")
        conflicts = per_example_conflicts(self.evaluation) if self.evaluation is not None else []
        if self.random_weight.per_example and conflicts:
            i, reason = conflicts[0]
            raise ValueError(f"evaluation.attacks.{i}: {reason}")
        return self
