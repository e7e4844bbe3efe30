"""What CTRW knows about, one table per axis: models, attacks, defenses (variants), data sets.

Every fact about a name lives here once (a model's random-weight positions, an attack's norm,
kind and defaults, a data set's size); configs, builders, the cost estimate and the diagnostics
look it up. Pure Python (no torch, no pydantic): the API process imports it.

Adding an attack: a row in ``ATTACKS`` here, a builder in ``ctrw.attacks.builders``, a cost formula
in ``ctrw.cost``. Adding a model: a row in ``MODELS``, its stages in ``ctrw.nn.models`` and its
layer count in ``ctrw.cost``. The paper's experiments (suites) are registered in ``ctrw.paper``;
``SUITE_NAMES`` here is a lazy re-export of that registry. tests/ctrw/test_catalog.py checks that
every row has its builder, its cost formula and (models) its positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ctrw.paper import SUITE_NAMES

__all__ = [
    "ATTACKS",
    "ATTACK_NAMES",
    "AttackInfo",
    "DATASETS",
    "DATASET_NAMES",
    "DEFENSES",
    "DatasetInfo",
    "DefenseInfo",
    "EPS_8",
    "MODELS",
    "MODEL_NAMES",
    "ModelInfo",
    "NORMS",
    "STEP_2",
    "SUBSET_ATTACKS",
    "SUITE_NAMES",
    "TERMINAL_STATUSES",
    "VARIANTS",
    "attack",
    "model",
]

Norm = Literal["linf", "l2", "unbounded-l2"]
# Threat models from the most to the least restricted; tables and diagnostics order by it.
NORMS: tuple[Norm, ...] = ("linf", "l2", "unbounded-l2")

# The paper's budget (Section 4.1), in pixel units of images in [0, 1].
EPS_8 = 8 / 255
STEP_2 = 2 / 255


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelInfo:
    """A network of ``ctrw.nn.models``.

    Attributes:
        name: the config's ``model.name``.
        positions: what sits in front of each random-weight position (index = position).
        datasets: the data sets it is meant for (the paper's, or tests).
        input_side: the image side of the paper's setting (digits/synthetic resize to any size).
        rgb_only: torchvision's architecture: 3 input channels and width 1.0 only.
        description: one line.
        label: display name in tables and figures (the paper's; the model's name where none is set).
    """

    name: str
    positions: tuple[str, ...]
    datasets: tuple[str, ...]
    input_side: int
    rgb_only: bool = False
    description: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def max_position(self) -> int:
        return len(self.positions) - 1


# Positions follow the published code (see ctrw.config.RandomWeightConfig).
_RESNET_POSITIONS = (
    "the normalized input image (conv1's in-channels)",
    "after conv1+bn+relu",
    "after layer1",
    "after layer2",
    "after layer3",
    "after layer4",
)
MODELS: Mapping[str, ModelInfo] = MappingProxyType({
    m.name: m
    for m in (
        ModelInfo("resnet18", _RESNET_POSITIONS, ("cifar10", "cifar100"), 32,
                  description="CIFAR ResNet18 (the paper's Tables 1, 2)", label="ResNet18"),
        ModelInfo("wrn34_10", (
            "the normalized input image (conv1's in-channels)",
            "after conv1",
            "after block1",
            "after block2",
            "after the final bn+relu",
        ), ("cifar10", "cifar100"), 32, description="WideResNet-34-10 (the paper's Tables 1, 2)", label="WRN34"),
        ModelInfo("resnet50", _RESNET_POSITIONS, ("imagenet",), 224, rgb_only=True,
                  description="torchvision's ResNet50 (the paper's ImageNet run)", label="ResNet50"),
        ModelInfo("small_cnn", (
            "the normalized input image",
            "after conv1",
            "after conv2",
            "after conv3",
        ), ("digits", "synthetic"), 8, description="three conv layers: digits, tests and CPU demos"),
    )
})  # fmt: skip
MODEL_NAMES = tuple(MODELS)


def model(name: str) -> ModelInfo:
    """The catalog row of model ``name``; ValueError naming the known ones otherwise."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; choose one of {sorted(MODELS)}")
    return MODELS[name]


# --------------------------------------------------------------------------- attacks


@dataclass(frozen=True)
class AttackInfo:
    """An attack of ``ctrw.attacks.build``.

    Attributes:
        name: the ``AttackSpec.name``.
        label: display name.
        norm: its threat model's norm (None for ``clean``); an attack whose ``defaults`` have a
            ``norm`` key takes it from its parameters (AutoAttack: Linf or L2).
        kind: "sign" (steps use the gradient's sign only: exact under any loss scale, may run in
            bf16) or "magnitude" (gradient magnitudes, margins or losses: always fp32); None for
            ``clean``.
        subset: forwards shrinking subsets of a batch (DeepFool drops the images it has fooled,
            AutoAttack runs its later attacks on the survivors): cannot use a fixed per-example
            draw.
        paper: a column of the paper's Table 1 (else an adaptive attack we add).
        defaults: its parameters' defaults (Section 4.1 and the published torchattacks settings).
    """

    name: str
    label: str
    norm: Norm | None
    kind: Literal["sign", "magnitude"] | None
    subset: bool = False
    paper: bool = True
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def norm_from_params(self) -> bool:
        return "norm" in self.defaults


def _attack(
    name: str, label: str, norm: Norm | None, kind: Any, defaults: dict[str, Any], **kw: Any
) -> AttackInfo:
    return AttackInfo(name, label, norm, kind, defaults=MappingProxyType(defaults), **kw)


# MIFGSM decay: published code 1.0 (the paper's text says 0.1). AutoAttack steps: the reference
# uses 100 APGD iterations, torchattacks hard-codes 10 in its 'standard' wrapper
# (see ctrw.attacks.build and ctrw.config.PUBLISHED_AUTOATTACK).
_PGD = {"eps": EPS_8, "step_size": STEP_2, "steps": 20, "random_start": True}
ATTACKS: Mapping[str, AttackInfo] = MappingProxyType({
    a.name: a
    for a in (
        _attack("clean", "Natural", None, None, {}),
        _attack("pgd", "PGD", "linf", "sign", _PGD),
        _attack("fgsm", "FGSM", "linf", "sign", {"eps": EPS_8}),
        _attack("mifgsm", "MIFGSM", "linf", "sign", {"eps": EPS_8, "step_size": STEP_2, "steps": 5, "decay": 1.0}),
        _attack("deepfool", "DeepFool", "unbounded-l2", "magnitude", {"steps": 50, "overshoot": 0.02}, subset=True),
        _attack("cw", "CW-L2", "unbounded-l2", "magnitude", {"c": 1e-4, "kappa": 0.0, "steps": 1000, "lr": 0.01}),
        _attack("autoattack", "AutoAttack", "linf", "magnitude",
                {"eps": EPS_8, "norm": "Linf", "steps": 100, "queries": 5000}, subset=True),
        _attack("eotpgd", "EOT-PGD", "linf", "sign", {**_PGD, "steps": 100, "eot_draws": 20}, paper=False),
        _attack("autoattack_rand", "AutoAttack (rand)", "linf", "magnitude",
                {"eps": EPS_8, "norm": "Linf", "steps": 100, "eot_draws": 20}, subset=True, paper=False),
        _attack("transfer_mean", "transfer from the mean weight", "linf", "sign", _PGD, paper=False),
    )
})  # fmt: skip
ATTACK_NAMES = tuple(ATTACKS)
SUBSET_ATTACKS = tuple(n for n, a in ATTACKS.items() if a.subset)


def attack(name: str) -> AttackInfo:
    """The catalog row of attack ``name``; ValueError naming the known ones otherwise."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack '{name}'; choose one of {sorted(ATTACKS)}")
    return ATTACKS[name]


# --------------------------------------------------------------------------- defenses


@dataclass(frozen=True)
class DefenseInfo:
    """A training variant (``TrainConfig.variant``): the paper's method or a comparison defense.

    Adding a defense: a row here, a builder in ``ctrw.nn.defenses`` (its module holds the
    randomness, a ``RandomModule``), its settings in ``ctrw.config.DefenseConfig``.

    Attributes:
        name: the config's ``variant``.
        description: one line.
        random_weight: the network carries a CTRW random weight (``TrainConfig.random_weight``).
        randomized: the defended model is random at inference.
        surrogate: what the deterministic surrogate ('mean' sampling mode) of the defense is.
        source: the paper the recipe follows.
        defaults: the recipe's config values (dotted paths), used where a config does not set them.
        label: display name in tables (the paper's row name; the variant's name where none is set).
    """

    name: str
    description: str
    random_weight: bool = True
    randomized: bool = True
    surrogate: str = "the mean weight W = mu (delta = 0)"
    source: str = "this paper (CTRW)"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)


def _defense(
    name: str, description: str, *, defaults: dict[str, Any] | None = None, **kw: Any
) -> DefenseInfo:
    return DefenseInfo(
        name, description, random_weight=False, defaults=MappingProxyType(defaults or {}), **kw
    )


DEFENSES: Mapping[str, DefenseInfo] = MappingProxyType({
    d.name: d
    for d in (
        DefenseInfo("baseline", "adversarial training without a random weight (PGD-AT)", random_weight=False,
                    randomized=False, surrogate="the model itself", source="Madry et al. 2018"),
        DefenseInfo("unconstrained", "a trainable random weight, no constraint on sum(sigma)", label="without constrain"),
        DefenseInfo("fixed_std", "sigma uniform at the lower bound and frozen (not trained)", label="fixed std"),
        DefenseInfo("fixed_sigma", "sigma uniform and frozen at the lower bound, the upper bound or midway (Table 7)"),
        DefenseInfo("ctrw", "the paper's method: trainable sigma kept in [A, B] after every step", label="CTRW (ours)"),
        _defense("pgd_at_es", "PGD-AT with early stopping on robust validation accuracy ('Overfit' in Table 3)",
                 randomized=False, surrogate="the model itself", source="Rice, Wong, Kolter, ICML 2020",
                 defaults={"optim.early_stop_patience": 10}),
        _defense("additive_noise", "Gaussian noise N(0, s^2) on the input, in training and inference",
                 surrogate="no noise", source="Li, Chen, Wang, Carin, NeurIPS 2019"),
        _defense("resize_pad", "random resize and zero padding of the input at inference ('EnsTrans' in Table 3)",
                 surrogate="no resize, centered padding", source="Xie, Wang, Zhang, Ren, Yuille, ICLR 2018"),
        _defense("rna", "random normalization aggregation: every normalization layer draws from a pool per forward",
                 surrogate="the BatchNorm path (the pools' first entry)", source="Dong, Chen, Wang, Xu, NeurIPS 2022"),
        _defense("pni", "parametric noise injection: Gaussian weight noise with a trainable scale per layer",
                 surrogate="the noise-free weights (alpha = 0)", source="He, Rakin, Fan, CVPR 2019",
                 defaults={"optim.weight_decay_on_random": False}),
        _defense("dwq", "random precision training and inference: weights and activations quantized to a bit-width "
                 "drawn per forward, one BatchNorm per bit-width ('DWQ' in Table 3)",
                 surrogate="the highest bit-width of the set, with its BatchNorm",
                 source="Fu, Yu, Li, Chandra, Lin, ICML 2021"),
    )
})  # fmt: skip
VARIANTS = tuple(DEFENSES)


# --------------------------------------------------------------------------- data sets


@dataclass(frozen=True)
class DatasetInfo:
    """A data set of ``ctrw.data``.

    Attributes:
        name: the config's ``data.dataset``.
        train: training images (None: set by the config, synthetic).
        test: test images (None: set by the config).
        num_classes: classes (None: set by the config).
        side: image side the models see (None: the config's ``data.image_size``).
        description: one line.
    """

    name: str
    train: int | None
    test: int | None
    num_classes: int | None
    side: int | None
    description: str = ""


DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({
    d.name: d
    for d in (
        DatasetInfo("cifar10", 50_000, 10_000, 10, 32, "CIFAR-10 (Table 1)"),
        DatasetInfo("cifar100", 50_000, 10_000, 100, 32, "CIFAR-100 (Table 2)"),
        DatasetInfo("imagenet", 1_281_167, 50_000, 1000, 224, "ImageNet ILSVRC-2012 as an ImageFolder"),
        DatasetInfo("digits", 1_437, 360, 10, None, "scikit-learn's 8x8 digits: offline, seconds on a CPU"),
        DatasetInfo("synthetic", None, None, None, None, "random images in memory, for tests"),
    )
})  # fmt: skip
DATASET_NAMES = tuple(DATASETS)


# --------------------------------------------------------------------------- jobs

# A job in one of these statuses never changes again (the API's JobStatus must agree).
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


def __getattr__(name: str) -> Any:
    # The suite list is the paper package's registry; imported on first use only.
    if name == "SUITE_NAMES":
        from ctrw.paper import SUITE_NAMES

        return SUITE_NAMES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
