"""CTRW: Constrained Trainable Random Weight (NeurIPS 2023) as a pure PyTorch library.

The public API, in the order a user meets it::

    import ctrw

    cfg = ctrw.TrainConfig(model={"name": "small_cnn"}, data={"dataset": "digits"})
    result = ctrw.train(cfg, run_dir="runs/demo")         # Algorithm 1, resumable
    model = ctrw.create_model("resnet18", num_classes=10, input_shape=(3, 32, 32),
                              mean=(0.5,) * 3, std=(0.5,) * 3)
    rows = ctrw.evaluate(model, x, y, ctrw.EvalConfig(), num_classes=10)["rows"]
    report = ctrw.evaluate_model(any_module, x, y)          # both protocols, any nn.Module
    ctrw.MODELS["wrn34_10"].max_position                   # the catalog: models, attacks, ...

Importing ``ctrw`` loads nothing: every name below is imported on first use (a module-level
``__getattr__``), so the API process, which imports ``ctrw.config`` (pydantic only), never loads
torch. The configs and the catalog are pure; ``train``, ``evaluate``, ``create_model`` and
``build_attack`` load torch when first touched. Subpackages by layer: ``ctrw.nn`` ->
``ctrw.attacks`` -> ``ctrw.training`` / ``ctrw.evaluation`` -> ``ctrw.paper``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctrw import catalog
    from ctrw.attacks.build import build_attack
    from ctrw.catalog import ATTACKS, DATASETS, DEFENSES, MODELS
    from ctrw.config import (
        PRESETS,
        AttackSpec,
        EvalConfig,
        TrainConfig,
        imagenet_preset,
        load_config_file,
        published_preset,
    )
    from ctrw.evaluation.benchmark import evaluate_model
    from ctrw.evaluation.evaluate import evaluate
    from ctrw.nn.models import create_model
    from ctrw.training import train

__version__ = "0.1.0"

# name -> the module that defines it (None: the name is that module itself).
_LAZY: dict[str, tuple[str, str | None]] = {
    # configs (pydantic only)
    "TrainConfig": ("ctrw.config", "TrainConfig"),
    "EvalConfig": ("ctrw.config", "EvalConfig"),
    "AttackSpec": ("ctrw.config", "AttackSpec"),
    "PRESETS": ("ctrw.config", "PRESETS"),
    "published_preset": ("ctrw.config", "published_preset"),
    "imagenet_preset": ("ctrw.config", "imagenet_preset"),
    "load_config_file": ("ctrw.config", "load_config_file"),
    # the catalog (pure Python)
    "catalog": ("ctrw.catalog", None),
    "MODELS": ("ctrw.catalog", "MODELS"),
    "ATTACKS": ("ctrw.catalog", "ATTACKS"),
    "DEFENSES": ("ctrw.catalog", "DEFENSES"),
    "DATASETS": ("ctrw.catalog", "DATASETS"),
    # torch
    "train": ("ctrw.training", "train"),
    "evaluate": ("ctrw.evaluation.evaluate", "evaluate"),
    "evaluate_model": ("ctrw.evaluation.benchmark", "evaluate_model"),
    "create_model": ("ctrw.nn.models", "create_model"),
    "build_attack": ("ctrw.attacks.build", "build_attack"),
}

__all__ = [
    "ATTACKS",
    "DATASETS",
    "DEFENSES",
    "MODELS",
    "PRESETS",
    "AttackSpec",
    "EvalConfig",
    "TrainConfig",
    "__version__",
    "build_attack",
    "catalog",
    "create_model",
    "evaluate",
    "evaluate_model",
    "imagenet_preset",
    "load_config_file",
    "published_preset",
    "train",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ctrw' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = import_module(module) if attr is None else getattr(import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
