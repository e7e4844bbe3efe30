"""The key of a suite's sub-job: what it computes, as one small value with a string form.

A training sub-job is named by its model, the data it runs on and its setting (variant, random
weight position and insertion, a fixed sigma); an attack sub-job adds the evaluation it runs on
that training job. The string form (``resnet18/cifar10/ctrw``, ``.../ctrw@position3``,
``.../fixed_sum@2/3xHW``, ``.../ctrw+repeats5``) is what the service stores (``suite_member.key``)
and what the rows of a suite's tables name; two suites asking for the same model build the same
key, hence the same config hash, and the model is trained once. (A suite with a recipe of its own,
the ImageNet one or the zoo's smoke version, trains its own models under the same keys: the service
shares sub-jobs by config hash, so they are simply not shared.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction

from ctrw.catalog import DEFENSES

__all__ = ["OTHER_DEFENSES", "REFERENCE_VARIANTS", "SubJobKey", "fraction_label"]

# The four Table 1 models: at the default position they are named by their variant alone.
REFERENCE_VARIANTS = ("baseline", "unconstrained", "fixed_std", "ctrw")
# The comparison defenses (Table 3, the zoo): every catalog variant without a CTRW random weight
# and outside Table 1, named by its variant alone at the default setting.
OTHER_DEFENSES = tuple(n for n, d in DEFENSES.items() if not d.random_weight and n not in REFERENCE_VARIANTS)


def fraction_label(k: Fraction) -> str:
    """``2``, ``2/3``: a Fraction as the keys and row labels print it."""
    return str(k.numerator) if k.denominator == 1 else f"{k.numerator}/{k.denominator}"


@dataclass(frozen=True)
class SubJobKey:
    """A sub-job: a training job (``evaluation`` None) or an evaluation of one (``evaluation``:
    ``repeats5``, ``pgd_steps``).

    ``fixed_sum``: sum(sigma) fixed to ``fixed_sum`` x H x W (Figure 3b; variant ``fixed_sigma``).
    ``fixed_sigma_at``: sigma fixed at a bound (Table 7; variant ``fixed_sigma``).
    """

    model: str
    dataset: str
    variant: str = "ctrw"
    position: int = 0
    insertion: str = "in_channels"
    fixed_sigma_at: str | None = None
    fixed_sum: Fraction | None = None
    evaluation: str | None = None

    def __post_init__(self) -> None:
        # Only settings whose string form names them unambiguously (it is parsed back).
        fixed = self.fixed_sum is not None or self.fixed_sigma_at is not None
        if self.is_defense:
            return
        if not self.is_reference and self.variant != ("fixed_sigma" if fixed else "ctrw"):
            raise ValueError(f"no sub-job key for variant '{self.variant}' with {self}")

    @property
    def is_reference(self) -> bool:
        """One of the Table 1 models (they carry Table 1's attacks wherever they are asked for)."""
        return self.variant in REFERENCE_VARIANTS and self.position == 0 and self.insertion == "in_channels"

    @property
    def is_defense(self) -> bool:
        """A comparison defense (``OTHER_DEFENSES``) at the default setting."""
        return self.variant in OTHER_DEFENSES and self.position == 0 and self.insertion == "in_channels" and (
            self.fixed_sum is None and self.fixed_sigma_at is None
        )

    @property
    def tag(self) -> str:
        """The setting part of the key: ``ctrw``, ``ctrw@filters``, ``fixed_sigma@mid``..."""
        if self.is_reference or self.is_defense:
            return self.variant
        if self.fixed_sum is not None:
            return f"fixed_sum@{fraction_label(self.fixed_sum)}xHW"
        if self.fixed_sigma_at is not None:
            return f"fixed_sigma@{self.fixed_sigma_at}"
        if self.insertion != "in_channels":
            return f"ctrw@{self.insertion}"
        return f"ctrw@position{self.position}"

    @property
    def train(self) -> SubJobKey:
        """The training sub-job (this key without its evaluation)."""
        return dataclasses.replace(self, evaluation=None)

    def evaluated(self, evaluation: str) -> SubJobKey:
        """The attack sub-job ``evaluation`` on this key's training job."""
        return dataclasses.replace(self, evaluation=evaluation)

    def __str__(self) -> str:
        text = f"{self.model}/{self.dataset}/{self.tag}"
        return text if self.evaluation is None else f"{text}+{self.evaluation}"

    @classmethod
    def parse(cls, text: str) -> SubJobKey:
        """The key from its string form (``str(key)``)."""
        head, _, evaluation = text.partition("+")
        model, dataset, tag = head.split("/", 2)  # a fixed_sum tag may hold a '/' (2/3xHW)
        kind, _, arg = tag.partition("@")
        setting: dict[str, object] = {}
        if not arg:
            setting["variant"] = kind
        elif kind == "fixed_sum":
            setting.update(variant="fixed_sigma", fixed_sum=Fraction(arg.removesuffix("xHW")))
        elif kind == "fixed_sigma":
            setting.update(variant="fixed_sigma", fixed_sigma_at=arg)
        elif kind == "ctrw" and arg.startswith("position"):
            setting["position"] = int(arg.removeprefix("position"))
        elif kind == "ctrw":
            setting["insertion"] = arg
        else:
            raise ValueError(f"not a sub-job key: '{text}'")
        key = cls(model=model, dataset=dataset, evaluation=evaluation or None, **setting)  # type: ignore[arg-type]
        if str(key) != text:
            raise ValueError(f"not a sub-job key: '{text}' (reads as '{key}')")
        return key
