"""The tiny CTRW jobs of the tests, as request bodies (plain dicts: no app, no torch)."""

from __future__ import annotations

import copy
from typing import Any

# The tiny CTRW job of the service tests: a few seconds on 2 CPU cores.
TINY_TRAIN: dict[str, Any] = {
    "model": {"name": "small_cnn", "width": 0.25},
    "data": {"dataset": "digits", "image_size": 8, "channels": 1, "augment": False,
             "train_subset": 256, "test_subset": 64},
    "optim": {"epochs": 3, "batch_size": 64, "milestones": [2]},
    "attack": {"steps": 2},
    "val_pgd_steps": 2,
    "val_examples": 64,
    "bounds": {"lower": {"kind": "fraction", "value": 0.3}, "upper": {"kind": "fraction", "value": 1.5}},
    "evaluation": {"attacks": [{"name": "clean"}, {"name": "pgd", "steps": 3}], "n_examples": 64, "score_draws": 2},
    "amp": False,
}  # fmt: skip


# The fault tests' job: TINY_TRAIN in two epochs without diagnostics (each test runs several).
QUICK_TRAIN: dict[str, Any] = {
    **copy.deepcopy(TINY_TRAIN),
    "optim": {"epochs": 2, "batch_size": 64, "milestones": [1]},
    "evaluation": {**TINY_TRAIN["evaluation"], "diagnostics": False},
}


def slow_train(epochs: int) -> dict[str, Any]:
    """A job that trains long enough to be killed or stopped mid-way (~0.3 s an epoch on 2 idle cores)."""
    return {
        **copy.deepcopy(TINY_TRAIN),
        "model": {"name": "small_cnn", "width": 1.0},
        "data": {**TINY_TRAIN["data"], "train_subset": 1024},
        "optim": {"epochs": epochs, "batch_size": 64, "milestones": [epochs]},
        "attack": {"steps": 5},
        "evaluation": {**TINY_TRAIN["evaluation"], "diagnostics": False},
    }


# The tiny training run of the library's fast-path and compile tests: small_cnn on 64 synthetic
# 16x16 images, one epoch, no validation or evaluation (override sections with train_config).
TINY_SYNTHETIC_TRAIN: dict[str, Any] = {
    "model": {"name": "small_cnn", "width": 0.25},
    "data": {"dataset": "synthetic", "image_size": 16, "channels": 3, "synthetic_train": 64, "val_fraction": 0.0},
    "optim": {"epochs": 1, "batch_size": 16},
    "attack": {"steps": 3},
    "val_pgd_steps": 0,
    "bounds": {"lower": {"kind": "fraction", "value": 0.5}, "upper": {"kind": "fraction", "value": 1.5}},
    "evaluation": None,
    "amp": False,
}  # fmt: skip


# The library's tiny digits training with the lemma bounds (records, jobs): each test sets its
# subset, schedule and validation size with ``merged``.
DIGITS_LEMMA_TRAIN: dict[str, Any] = {
    "model": {"name": "small_cnn", "width": 0.25},
    "data": {"dataset": "digits", "image_size": 8, "channels": 1, "augment": False},
    "attack": {"steps": 2},
    "val_pgd_steps": 2,
    "bounds": {"lower": {"kind": "lemma1", "alpha": -0.02}, "upper": {"kind": "lemma2"}},
    "evaluation": None,
    "amp": False,
}


def merged(base: dict[str, Any], **over: Any) -> dict[str, Any]:
    """A copy of ``base`` with ``over`` applied: dict sections merged one level deep, the rest replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
