"""What the paper's experiments share: labels, the attack behind each paper column (at the
paper's scale and in the smoke version), and the accuracy columns of a table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctrw import catalog, render
from ctrw.config import AttackSpec, TrainConfig
from ctrw.paper import values as pv

if TYPE_CHECKING:
    from ctrw.paper.request import SuiteRequest

__all__ = [
    "ATTACKS",
    "COLUMN_LABELS",
    "DATASET_LABELS",
    "MODEL_LABELS",
    "TABLE1_COLUMNS",
    "VARIANT_LABELS",
    "accuracy_columns",
    "attack",
    "attack_column",
    "image_area",
]

# Display names are the catalog's (one definition per model, variant and attack).
MODEL_LABELS = {name: m.label for name, m in catalog.MODELS.items()}
DATASET_LABELS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}
VARIANT_LABELS = {name: d.label for name, d in catalog.DEFENSES.items()}
# Table 1's columns, in the paper's order, then the adaptive column.
TABLE1_COLUMNS = (*pv.ACCURACY_COLUMNS, "eotpgd")
# Every other model: natural, PGD-20 and the adaptive column.
DEFAULT_COLUMNS = ("natural", "pgd20", "eotpgd")
# The paper's column headers where they are not the attack's name (steps, abbreviations, protocol).
_HEADERS = {
    "pgd20": "PGD-20",
    "autoattack": "AA",
    "eotpgd": "EOT-PGD (adaptive)",
    "autoattack_rand": "AA rand (adaptive)",
}
ATTACKS: dict[str, dict[str, Any]] = {
    "natural": {"name": "clean"},
    "pgd20": {"name": "pgd"},
    "fgsm": {"name": "fgsm"},
    "autoattack": {"name": "autoattack"},
    "cw": {"name": "cw"},
    "mifgsm": {"name": "mifgsm"},
    "deepfool": {"name": "deepfool"},
    "eotpgd": {"name": "eotpgd", "protocol": "adaptive"},
    "autoattack_rand": {"name": "autoattack_rand", "protocol": "adaptive"},
}
COLUMN_LABELS = {col: _HEADERS.get(col) or catalog.ATTACKS[a["name"]].label for col, a in ATTACKS.items()}
# The smoke version's tiny attacks (see ``ctrw.paper.planner.SMOKE_TRAIN``).
SMOKE_ATTACKS: dict[str, dict[str, Any]] = {
    "pgd20": {"steps": 2},
    "autoattack": {"steps": 2, "queries": 10},
    "cw": {"steps": 5},
    "mifgsm": {"steps": 2},
    "deepfool": {"steps": 3},
    "eotpgd": {"steps": 2, "eot_draws": 2},
    "autoattack_rand": {"steps": 2, "eot_draws": 2},
}


def attack(req: SuiteRequest, column: str, **extra: Any) -> dict[str, Any]:
    """The attack spec (as a dict) of a paper column at the request's scale."""
    return {**ATTACKS[column], **(SMOKE_ATTACKS.get(column, {}) if req.smoke else {}), **extra}


def attack_column(req: SuiteRequest, column: str, **extra: Any) -> tuple[str, str]:
    """(result column, protocol) of a paper column in the sub-jobs' results. ``extra``: the
    attack's own settings (``steps``) and, as ``protocol``, the protocol to read."""
    protocol = extra.pop("protocol", None)
    spec = AttackSpec.model_validate(attack(req, column, **extra))
    return spec.column, protocol or spec.protocol or "paper"


def accuracy_columns(names: tuple[str, ...], req: SuiteRequest) -> list[render.Column]:
    """Accuracy columns of a table; the adaptive one only where the request asks for it."""
    return [
        render.Column(
            key=n,
            label=COLUMN_LABELS[n],
            paper=n != "eotpgd",
            protocol="adaptive" if n == "eotpgd" else "paper",
        )
        for n in names
        if n != "eotpgd" or req.adaptive
    ]


def image_area(cfg: TrainConfig) -> int:
    """H x W of the data's images (the paper's 'image size', 32 x 32 on CIFAR)."""
    side = 32 if cfg.data.dataset in ("cifar10", "cifar100") else cfg.data.image_size
    return side * side
