"""What a job will cost, estimated from its config alone: F (one forward pass of the model on one
image, in FLOPs) times the images it sees times the passes per image.

Pure Python (no torch): the API estimates every submission with it and refuses what exceeds the
budget (``CTRW_MAX_JOB_PFLOP``, ``CTRW_MAX_SUITE_PFLOP``) before anything is stored.

F comes from the layer counts below: every convolution and linear layer of the architectures in
``ctrw.nn.models``, counted as 2 x multiply-accumulates (BatchNorm, ReLU, additions and the random
weight's element-wise product are left out: under 1% of a ResNet). Passes per image follow
``docs/performance-anchors``: an input-gradient step is ~2F (forward + backward to the input), a
training update ~3F (forward, backward to the input and to the weights).

The estimate is an upper bound of the work in the sense that every image runs every attack step
(attacks that stop early on fooled images cost less) and every epoch runs (early stopping costs
less). It exists to refuse requests that would occupy workers for weeks, not to bill anyone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ctrw.catalog import DATASETS
from ctrw.config import AttackSpec, EvalConfig, TrainConfig

if TYPE_CHECKING:
    from ctrw.paper import SuiteRequest

__all__ = [
    "DATASET_SIZES",
    "JobCost",
    "PFLOP",
    "Part",
    "attack_passes",
    "attack_job_cost",
    "format_pflop",
    "forward_flops",
    "suite_cost",
    "total_pflop",
    "train_job_cost",
]

PFLOP = 1e15
# (train, test) images of each data set (ctrw.catalog); synthetic sizes come from the config.
DATASET_SIZES: dict[str, tuple[int, int]] = {
    d.name: (d.train, d.test) for d in DATASETS.values() if d.train is not None and d.test is not None
}
# AutoAttack's targeted attacks (APGD-T, FAB-T) run the top 9 other classes (ctrw.attacks.builders).
_AA_TARGETS = 9


# --------------------------------------------------------------------------- layer counts per model


class _Counter:
    """Counts the multiply-accumulates of convolutions and linear layers along a network."""

    def __init__(self, channels: int, side: int) -> None:
        self.c, self.h, self.w = channels, side, side
        self.macs = 0

    @staticmethod
    def _out(size: int, k: int, stride: int, pad: int) -> int:
        return (size + 2 * pad - k) // stride + 1

    def conv(self, cout: int, k: int, stride: int = 1, pad: int | None = None, *, apply: bool = True) -> int:
        """A k x k convolution from the current shape; returns the MACs (moves the shape if apply)."""
        pad = k // 2 if pad is None else pad
        h, w = self._out(self.h, k, stride, pad), self._out(self.w, k, stride, pad)
        macs = self.c * cout * k * k * h * w
        self.macs += macs
        if apply:
            self.c, self.h, self.w = cout, h, w
        return macs

    def pool(self, k: int, stride: int, pad: int) -> None:
        self.h, self.w = self._out(self.h, k, stride, pad), self._out(self.w, k, stride, pad)

    def linear(self, cout: int) -> None:
        self.macs += self.c * cout


def _resnet18(n: _Counter, width: float, classes: int) -> None:
    w = max(1, round(64 * width))
    n.conv(w, 3)
    for i, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
        for b in range(2):
            stride = 2 if i > 0 and b == 0 else 1
            if stride != 1 or n.c != cout:
                n.conv(cout, 1, stride, 0, apply=False)  # shortcut, from the block's input
            n.conv(cout, 3, stride)
            n.conv(cout, 3)
    n.linear(classes)


def _wrn34_10(n: _Counter, width: float, classes: int) -> None:
    ch = [max(1, round(c * width)) for c in (16, 160, 320, 640)]
    n.conv(ch[0], 3)
    for g, stride in ((1, 1), (2, 2), (3, 2)):
        for b in range(5):  # (34 - 4) / 6 blocks per group
            s = stride if b == 0 else 1
            if n.c != ch[g] or s != 1:
                n.conv(ch[g], 1, s, 0, apply=False)
            n.conv(ch[g], 3, s)
            n.conv(ch[g], 3)
    n.linear(classes)


def _resnet50(n: _Counter, width: float, classes: int) -> None:
    n.conv(64, 7, 2, 3)
    n.pool(3, 2, 1)
    for i, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        for b in range(blocks):
            stride = 2 if i > 0 and b == 0 else 1
            if b == 0:  # torchvision's downsample: 1x1, stride, to planes x 4
                n.conv(planes * 4, 1, stride, 0, apply=False)
            n.conv(planes, 1, 1, 0)
            n.conv(planes, 3, stride)
            n.conv(planes * 4, 1, 1, 0)
    n.linear(classes)


def _small_cnn(n: _Counter, width: float, classes: int) -> None:
    w = max(2, round(32 * width))
    n.conv(w, 3)
    n.conv(2 * w, 3, 2)
    n.conv(4 * w, 3, 2)
    n.linear(classes)


_LAYERS = {"resnet18": _resnet18, "wrn34_10": _wrn34_10, "resnet50": _resnet50, "small_cnn": _small_cnn}


def _input(cfg: TrainConfig) -> tuple[int, int, int]:
    """(channels, side, classes) of the images the model takes."""
    d = cfg.data
    info = DATASETS[d.dataset]
    if info.side is not None:  # CIFAR, ImageNet: RGB at their own size
        return 3, info.side, info.num_classes or d.num_classes
    return d.channels, d.image_size, info.num_classes or d.num_classes


def forward_flops(cfg: TrainConfig) -> float:
    """F: FLOPs of one forward pass of the config's model on one image (2 x MACs of its
    convolutions and linear layers)."""
    channels, side, classes = _input(cfg)
    counter = _Counter(channels, side)
    _LAYERS[cfg.model.name](counter, cfg.model.width, classes)
    return 2.0 * counter.macs


# --------------------------------------------------------------------------- passes per image


def attack_passes(spec: AttackSpec, num_classes: int) -> float:
    """Forward-pass equivalents (units of F) one attack spends on one image, before scoring."""
    p = spec.resolved()
    name = spec.name
    if name == "clean":
        return 0.0
    if name == "fgsm":
        return 2.0
    if name in ("pgd", "mifgsm", "transfer_mean", "cw"):
        return 2.0 * p["steps"]
    if name == "eotpgd":
        return 2.0 * p["steps"] * p["eot_draws"]
    if name == "deepfool":  # per step one forward and K input-gradient backward passes
        return float(p["steps"] * (num_classes + 1))
    targets = min(_AA_TARGETS, num_classes - 1)
    if name == "autoattack":  # APGD-CE, APGD-T and FAB-T over the targets, Square's queries
        return 2.0 * p["steps"] * (1 + 2 * targets) + p["queries"]
    if name == "autoattack_rand":  # APGD-CE and APGD-DLR, each step averaged over EOT draws
        return 2.0 * 2 * p["steps"] * p["eot_draws"]
    raise ValueError(f"no cost model for attack '{name}'")


def _train_passes(cfg: TrainConfig) -> float:
    a = cfg.attack
    draws = a.eot_draws if a.randomness == "eot" else 1
    return 2.0 * a.steps * draws + 3.0


# --------------------------------------------------------------------------- job costs


def format_pflop(pflop: float) -> str:
    """ "12,345 PFLOP", "3.75 PFLOP", "0.000601 PFLOP"."""
    return f"{pflop:,.0f} PFLOP" if pflop >= 100 else f"{pflop:.3g} PFLOP"


@dataclass(frozen=True)
class Part:
    """One term of an estimate: what it costs and the fields that drive it."""

    name: str
    flops: float
    drivers: dict[str, object]

    def describe(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.drivers.items())
        return f"{self.name} {format_pflop(self.flops / PFLOP)} ({fields})"


@dataclass(frozen=True)
class JobCost:
    """An estimate: F, the parts (training, validation, evaluation) and their total."""

    forward_flops: float
    parts: tuple[Part, ...] = field(default_factory=tuple)

    @property
    def flops(self) -> float:
        return sum(p.flops for p in self.parts)

    @property
    def pflop(self) -> float:
        return self.flops / PFLOP

    def explain(self) -> str:
        """The largest parts first, each with the fields that drive it."""
        parts = sorted((p for p in self.parts if p.flops > 0), key=lambda p: -p.flops)
        return "; ".join(p.describe() for p in parts) or "nothing to compute"


def _model_drivers(cfg: TrainConfig, flops: float) -> dict[str, object]:
    drivers: dict[str, object] = {"F": f"{flops / 1e9:.4g} GFLOP", "model.name": cfg.model.name}
    if cfg.model.width != 1.0:
        drivers["model.width"] = cfg.model.width
    if cfg.data.dataset in ("digits", "synthetic"):
        drivers["data.image_size"] = cfg.data.image_size
    return drivers


def _split_sizes(cfg: TrainConfig) -> tuple[int, int, int]:
    """(training, validation, test) images the job's data config yields (see ctrw.data)."""
    d = cfg.data
    train, test = (
        (d.synthetic_train, d.synthetic_test) if d.dataset == "synthetic" else DATASET_SIZES[d.dataset]
    )
    if d.dataset == "imagenet":  # an ImageFolder: no subsets, no validation split
        return train, (test if d.select_on_test else 0), test
    train = min(train, d.train_subset or train)
    test = min(test, d.test_subset or test)
    if d.select_on_test:
        return train, test, test
    if d.val_fraction > 0:
        val = max(1, round(train * d.val_fraction))
        return train - val, val, test
    return train, 0, test


def _size_drivers(cfg: TrainConfig) -> dict[str, object]:
    d = cfg.data
    out: dict[str, object] = {"data.dataset": d.dataset}
    if d.dataset == "synthetic":
        out["data.synthetic_train"] = d.synthetic_train
    if d.train_subset is not None:
        out["data.train_subset"] = d.train_subset
    return out


def _evaluation_part(
    cfg: TrainConfig, evaluation: EvalConfig, test_images: int, flops: float, name: str = "evaluation"
) -> Part:
    classes = _input(cfg)[2]
    n = min(test_images, evaluation.n_examples or test_images)
    passes = 0.0
    for spec in evaluation.attacks:
        protocols = 2 if (spec.protocol or evaluation.protocol) == "both" else 1
        # the attack, the judging draw and the K scoring draws, under each protocol
        passes += protocols * (attack_passes(spec, classes) + 1 + evaluation.score_draws)
    total = flops * n * evaluation.repeats * passes
    drivers: dict[str, object] = {
        "images": n,
        "passes per image": round(passes, 1),
        "evaluation.repeats": evaluation.repeats,
    }
    heaviest = max(evaluation.attacks, key=lambda s: attack_passes(s, classes))
    if attack_passes(heaviest, classes) > 0:
        params = {k: v for k, v in heaviest.resolved().items() if k in ("steps", "eot_draws", "queries")}
        drivers["heaviest attack"] = f"{heaviest.name} {params}"
    if evaluation.n_examples is not None:
        drivers["evaluation.n_examples"] = evaluation.n_examples
    if cfg.data.test_subset is not None:
        drivers["data.test_subset"] = cfg.data.test_subset
    if cfg.data.dataset == "synthetic":
        drivers["data.synthetic_test"] = cfg.data.synthetic_test
    return Part(name, total, drivers)


def train_job_cost(cfg: TrainConfig) -> JobCost:
    """The estimate of a training job: adversarial training, validation every epoch, and the
    evaluation it carries (if any)."""
    flops = forward_flops(cfg)
    train, val, test = _split_sizes(cfg)
    epochs = cfg.optim.epochs
    model = _model_drivers(cfg, flops)
    passes = _train_passes(cfg)
    parts = [
        Part(
            "training",
            flops * train * epochs * passes,
            {
                **model,
                "images": train,
                **_size_drivers(cfg),
                "optim.epochs": epochs,
                "attack.steps": cfg.attack.steps,
                "passes per image": passes,
            },
        )  # fmt: skip
    ]
    n_val = min(val, cfg.val_examples or val)
    if n_val:
        val_passes = 2.0 + 2.0 * cfg.val_pgd_steps  # clean, PGD's steps, the adversarial forward
        parts.append(
            Part(
                "validation",
                flops * n_val * epochs * val_passes,
                {
                    "images": n_val,
                    "val_examples": cfg.val_examples,
                    "val_pgd_steps": cfg.val_pgd_steps,
                    "optim.epochs": epochs,
                },
            )  # fmt: skip
        )
    if cfg.evaluation is not None:
        parts.append(_evaluation_part(cfg, cfg.evaluation, test, flops))
    return JobCost(flops, tuple(parts))


def attack_job_cost(train_cfg: TrainConfig, evaluation: EvalConfig) -> JobCost:
    """The estimate of an attack job: ``evaluation`` of the model that ``train_cfg`` trains, on
    that config's test set."""
    flops = forward_flops(train_cfg)
    test = _split_sizes(train_cfg)[2]
    return JobCost(flops, (_evaluation_part(train_cfg, evaluation, test, flops),))


def suite_cost(req: SuiteRequest) -> dict[str, JobCost]:
    """The estimate of every sub-job the suite expands into, by sub-job key (the suite's own
    cost is their sum; reused sub-jobs are counted as if new)."""
    from ctrw.paper import expand_suite

    costs: dict[str, JobCost] = {}
    configs: dict[str, TrainConfig] = {}
    for sub in expand_suite(req):
        if sub.kind == "train":
            assert sub.config is not None
            configs[sub.key] = sub.config
            costs[sub.key] = train_job_cost(sub.config)
        else:
            assert sub.train_key is not None and sub.evaluation is not None
            costs[sub.key] = attack_job_cost(configs[sub.train_key], sub.evaluation)
    return costs


def total_pflop(costs: Iterable[JobCost]) -> float:
    """The sum of several estimates, in PFLOP."""
    return sum(c.pflop for c in costs)
