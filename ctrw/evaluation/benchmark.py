"""``evaluate_model``: any classifier (an ``nn.Module`` on images in [0, 1]) under both protocols,
the way RobustBench's ``benchmark`` does it for deterministic models, but for randomized ones.

One call: the attacks (by default natural, PGD-20, EOT-PGD and AutoAttack 'rand' at one L-inf
budget), both protocols, K-draw scoring with 95% CIs, and the gradient-masking diagnostics.
Randomness outside ctrw's layers (``ctrw.nn.randomness.RandomModule``) is detected and reported,
with what the protocols can and cannot do for it (docs/evaluation.md, "Your own model").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ctrw import render
from ctrw.catalog import EPS_8
from ctrw.config import AttackSpec, EvalConfig
from ctrw.data import as_float_images
from ctrw.evaluation.evaluate import evaluate as _evaluate
from ctrw.evaluation.evaluate import evaluation_mode
from ctrw.evaluation.model_checks import RANDOMNESS_RTOL, randomness_check
from ctrw.nn.randomness import random_modules, sampling

__all__ = ["DEFAULT_ATTACKS", "ModelReport", "evaluate_model"]

# RobustBench's benchmark runs standard AutoAttack; for a randomized model the adaptive
# attacks (EOT-PGD, AutoAttack 'rand') are the ones that count, beside the paper's PGD-20.
DEFAULT_ATTACKS: tuple[str, ...] = ("clean", "pgd", "eotpgd", "autoattack_rand")
# Examples of the randomness check (two forwards and K draws of the same inputs).
RANDOMNESS_EXAMPLES = 32

OUTSIDE_NOTES = (
    "The model is random, but its randomness is not in ctrw's random layers (RandomModule): the "
    "evaluation cannot fix, share or switch off its draws.",
    "Paper protocol: draw A (attack) and draw B (judge) become two independent per-forward draws, "
    "so it measures a per-forward attacker rather than the paper's fixed draw.",
    "Adaptive protocol: EOT-PGD and AutoAttack 'rand' work unchanged (they average gradients over "
    "fresh forwards), and so does K-draw scoring; the deterministic surrogate (transfer_mean) and "
    "grouped per-example draws are not available.",
    "Reproducibility: only through the global torch seed, which evaluate_model sets from 'seed'.",
)


@dataclass
class ModelReport:
    """What ``evaluate_model`` found.

    Attributes:
        rows: one per (attack, protocol): accuracy, 95% CI, n, K-draw scoring (``ctrw.evaluate``'s rows).
        diagnostics: the gradient-masking diagnostics (fired ones say what to check).
        meta: the evaluation's settings (device, seeds, CI method...).
        randomized: repeated forwards of the same input disagree.
        random_layers: ctrw random layers in the model (their draws the protocols control).
        randomness_outside: randomized, but not (only) through ctrw's layers.
        robust_accuracy: per protocol, the lowest accuracy over its attacks (what that protocol
            reports), in [0, 1].
        notes: what the protocols could and could not do for this model.
    """

    rows: list[dict[str, Any]]
    diagnostics: list[dict[str, Any]]
    meta: dict[str, Any]
    randomized: bool
    random_layers: int
    randomness_outside: bool
    robust_accuracy: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def table(self, fmt: Literal["markdown", "csv", "latex"] = "markdown") -> str:
        """The rows as a table (percent, with CIs and the fired diagnostics' flags)."""
        table = render.job_table(self.rows, labels={}, diagnostics=self.diagnostics)
        table.notes = [*table.notes, *self.notes]
        return render.render_table(table, fmt)


def _attacks(attacks: Sequence[str | Mapping[str, Any]], eps: float) -> list[AttackSpec]:
    specs = []
    for a in attacks:
        spec = AttackSpec.model_validate({"name": a} if isinstance(a, str) else dict(a))
        if spec.eps is None and spec.name != "clean" and "eps" in _defaults(spec.name):
            spec = spec.model_copy(update={"eps": eps})
        specs.append(spec)
    return specs


@torch.no_grad()
def _random_outside(model: nn.Module, x: torch.Tensor) -> bool:
    """Do two forwards still disagree with ctrw's layers on their deterministic surrogate?"""
    with sampling(model, "mean"), torch.autocast(x.device.type, enabled=False):
        a, b = model(x), model(x)
    return float((a - b).abs().max()) > RANDOMNESS_RTOL * (1.0 + float(a.abs().max()))


def _defaults(name: str) -> Mapping[str, Any]:
    from ctrw.catalog import attack

    return attack(name).defaults


def evaluate_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = EPS_8,
    attacks: Sequence[str | Mapping[str, Any]] = DEFAULT_ATTACKS,
    protocol: Literal["paper", "adaptive", "both"] = "both",
    num_classes: int | None = None,
    n_examples: int | None = None,
    batch_size: int | Literal["auto"] = "auto",
    score_draws: int = 10,
    seed: int = 0,
    diagnostics: bool = True,
    device: torch.device | str = "cpu",
) -> ModelReport:
    """Evaluate any classifier under the paper and the adaptive protocol.

    Args:
        model: an ``nn.Module`` mapping images in [0, 1] (normalization inside) to logits. Its
            randomness may live anywhere: in ctrw's random layers (the protocols control their
            draws) or elsewhere (detected and reported; see ``ModelReport.notes``).
        x: test images (N, C, H, W), float in [0, 1] or uint8.
        y: labels (N,).
        eps: the L-inf budget of every bounded attack that does not set its own.
        attacks: attack names of ``ctrw.catalog.ATTACKS`` or ``AttackSpec`` dicts (default:
            natural, PGD-20, EOT-PGD, AutoAttack 'rand').
        protocol: 'both' (default), 'paper' or 'adaptive'; adaptive-only attacks run adaptive.
        num_classes: classes (None: the width of the model's output).
        n_examples: the first n examples (None: all).
        batch_size: examples per batch ('auto': by device).
        score_draws: K, the fresh draws judging each adversarial example.
        seed: the evaluation's seed (also the global torch seed, for randomness outside ctrw's layers).
        diagnostics: run the gradient-masking diagnostics.
        device: where to run.

    Returns:
        A ``ModelReport`` (rows, diagnostics, randomness findings, robust accuracy per protocol).
    """
    device = torch.device(device)
    cfg = EvalConfig(attacks=_attacks(attacks, eps), protocol=protocol, n_examples=n_examples,
                     batch_size=batch_size, score_draws=score_draws, seed=seed, diagnostics=diagnostics)  # fmt: skip
    model.to(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the caller's global RNG stays as it was
        torch.manual_seed(seed)
        probe = as_float_images(x[: min(RANDOMNESS_EXAMPLES, int(x.shape[0]))], device)
        with evaluation_mode(model):
            if num_classes is None:
                with torch.no_grad():
                    num_classes = int(model(probe[:1]).shape[-1])
            check = randomness_check(model, probe, draws=max(score_draws, 2), max_rows=len(probe))
            outside = _random_outside(model, probe)
        out = _evaluate(model, x, y, cfg, num_classes=num_classes, device=device)
    layers = len(random_modules(model))
    randomized = bool(check["fired"]) or outside
    robust: dict[str, float] = {}
    for r in out["rows"]:
        if r["attack"] != "clean":
            robust[r["protocol"]] = min(robust.get(r["protocol"], 1.0), r["accuracy"])
    notes = list(OUTSIDE_NOTES) if outside else []
    if not randomized:
        notes.append("The model is deterministic: both protocols coincide and K-draw scoring is exact.")
    return ModelReport(rows=out["rows"], diagnostics=out["diagnostics"], meta=out["meta"],
                       randomized=randomized, random_layers=layers, randomness_outside=outside,
                       robust_accuracy=robust, notes=notes)  # fmt: skip
