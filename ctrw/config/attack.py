"""One attack with its parameters, and its threat model (norm and budget)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from ctrw.catalog import ATTACK_NAMES, ATTACKS, Norm
from ctrw.config.common import NO_NUL, StrictModel

__all__ = ["AttackSpec", "ThreatModel", "paper_attacks", "threat_model"]


class AttackSpec(StrictModel):
    """One attack with its parameters. Unset ones take the defaults of ``ctrw.catalog.ATTACKS``.

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
        None, max_length=64, pattern=NO_NUL, description="column name; default derived from name/steps"
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
        defaults = ATTACKS[self.name].defaults
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


@dataclass(frozen=True)
class ThreatModel:
    """An attack's budget: its norm and eps. Robust accuracies compare only within one.

    Attributes:
        norm: "linf", "l2" or "unbounded-l2" (CW, DeepFool: no eps).
        eps: the radius in pixel units (None when unbounded), rounded so that equal budgets
            from different sources (8/255 from YAML or JSON) compare equal.
    """

    norm: Norm
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
    if name not in ATTACKS:
        raise ValueError(f"unknown attack '{name}'")
    info = ATTACKS[name]
    p = {**info.defaults, **(params or {})}
    if info.norm is None:
        return None
    if info.norm == "unbounded-l2":
        return ThreatModel("unbounded-l2")
    # AutoAttack takes its norm from its parameters; the others have one norm.
    norm = info.norm if not info.norm_from_params or p.get("norm", "Linf") == "Linf" else "l2"
    return ThreatModel(norm, round(float(p["eps"]), 10))


def paper_attacks() -> list[AttackSpec]:
    """Table 1's columns: Natural, PGD-20, FGSM, AutoAttack, CW-L2, MIFGSM, DeepFool."""
    return [AttackSpec(name=n) for n in ("clean", "pgd", "fgsm", "autoattack", "cw", "mifgsm", "deepfool")]
