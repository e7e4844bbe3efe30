"""Validated configuration for every CTRW job: training, attacks, evaluation.

This package imports pydantic only (no torch), so the API process can validate job bodies
without loading PyTorch. Every number that the paper or the published code fixes has its
default here or in ``ctrw.catalog``, with a comment saying which source it comes from.

Units: images are in [0, 1]; every epsilon/step is in pixel units (normalization lives
inside the model).

Modules: ``common`` (the strict base, size caps), ``model``, ``data``, ``bounds``, ``train``,
``attack`` (AttackSpec, threat models), ``evaluation``, ``presets``, ``resources`` (where a job runs), ``files`` (config files,
errors, hashes). Import from ``ctrw.config``; the names below are its public surface.
"""

from ctrw.catalog import ATTACK_NAMES, DATASET_NAMES, MODEL_NAMES, SUBSET_ATTACKS, VARIANTS
from ctrw.config.attack import AttackSpec, ThreatModel, paper_attacks, threat_model
from ctrw.config.bounds import (
    PAPER_BOUNDS,
    PAPER_BOUNDS_NUMEL,
    BoundsConfig,
    FixedBound,
    FractionBound,
    Lemma1Bound,
    Lemma2Bound,
    LowerBound,
    PaperBound,
    UpperBound,
    paper_bound_sum,
)
from ctrw.config.common import (
    EPS_8,
    MAX_EPOCHS,
    MAX_SEED,
    MAX_SYNTHETIC_BYTES,
    MAX_TEST_IMAGES,
    MAX_TRAIN_IMAGES,
    STEP_2,
    StrictModel,
    integral_floats_to_int,
)
from ctrw.config.data import DataConfig
from ctrw.config.evaluation import AttackJobConfig, EvalConfig, per_example_conflicts
from ctrw.config.files import ConfigError, config_hash, format_validation_error, load_config_file
from ctrw.config.model import DefenseConfig, ModelConfig, RandomWeightConfig
from ctrw.config.presets import (
    PRESETS,
    PUBLISHED_AUTOATTACK,
    deep_merge,
    imagenet_preset,
    published_attacks,
    published_preset,
)
from ctrw.config.resources import DistributedConfig, ResourcesConfig
from ctrw.config.train import OptimConfig, TrainAttackConfig, TrainConfig

__all__ = [
    "ATTACK_NAMES",
    "DATASET_NAMES",
    "EPS_8",
    "MAX_EPOCHS",
    "MAX_SEED",
    "MAX_SYNTHETIC_BYTES",
    "MAX_TEST_IMAGES",
    "MAX_TRAIN_IMAGES",
    "MODEL_NAMES",
    "PAPER_BOUNDS",
    "PAPER_BOUNDS_NUMEL",
    "PRESETS",
    "PUBLISHED_AUTOATTACK",
    "STEP_2",
    "SUBSET_ATTACKS",
    "VARIANTS",
    "AttackJobConfig",
    "AttackSpec",
    "BoundsConfig",
    "ConfigError",
    "DataConfig",
    "DefenseConfig",
    "DistributedConfig",
    "EvalConfig",
    "FixedBound",
    "FractionBound",
    "Lemma1Bound",
    "Lemma2Bound",
    "LowerBound",
    "ModelConfig",
    "OptimConfig",
    "PaperBound",
    "RandomWeightConfig",
    "ResourcesConfig",
    "StrictModel",
    "ThreatModel",
    "TrainAttackConfig",
    "TrainConfig",
    "UpperBound",
    "config_hash",
    "deep_merge",
    "format_validation_error",
    "imagenet_preset",
    "integral_floats_to_int",
    "load_config_file",
    "paper_attacks",
    "paper_bound_sum",
    "per_example_conflicts",
    "published_attacks",
    "published_preset",
    "threat_model",
]
