"""Randomized defenses beside CTRW, one module per defense, each a registered variant.

Every variant of ``ctrw.catalog.DEFENSES`` has a builder here that turns the plain network of
``ctrw.nn.models.create_model`` into the defended one, in place; its randomness lives in
``ctrw.nn.randomness.RandomModule`` subclasses, so the evaluation protocols, K-draw scoring,
transfer from the surrogate and the diagnostics apply unchanged. The CTRW variants are built by
``create_model`` itself (``TrainConfig.random_weight``); their builder here does nothing more.

Choosing one: ``{"variant": "pni", "defense": {"pni": {"alpha_init": 0.25}}}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from ctrw.config import DefenseConfig
from ctrw.nn.defenses import additive_noise, dwq, pgd_at_es, pni, resize_pad, rna
from ctrw.nn.models import CTRWNet

__all__ = ["DEFENSE_BUILDERS", "DefenseBuilder", "apply_defense"]

DefenseBuilder = Callable[[CTRWNet, DefenseConfig], None]


def _plain(model: CTRWNet, cfg: DefenseConfig) -> None:
    """baseline and the CTRW variants: nothing beyond ``create_model``."""


DEFENSE_BUILDERS: Mapping[str, DefenseBuilder] = MappingProxyType({
    "baseline": _plain,
    "unconstrained": _plain,
    "fixed_std": _plain,
    "fixed_sigma": _plain,
    "ctrw": _plain,
    "pgd_at_es": pgd_at_es.build,
    "additive_noise": additive_noise.build,
    "resize_pad": resize_pad.build,
    "rna": rna.build,
    "pni": pni.build,
    "dwq": dwq.build,
})  # fmt: skip


def apply_defense(variant: str, model: CTRWNet, cfg: DefenseConfig | None = None) -> CTRWNet:
    """Turn ``model`` into the network of ``variant`` (in place) and return it.

    Raises:
        ValueError: unknown variant.
    """
    if variant not in DEFENSE_BUILDERS:
        raise ValueError(f"unknown variant '{variant}'; choose one of {sorted(DEFENSE_BUILDERS)}")
    DEFENSE_BUILDERS[variant](model, cfg or DefenseConfig())
    return model
