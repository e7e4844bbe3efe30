"""How a caller (CLI, worker) follows a long job and asks it to stop.

The library calls these between batches; none of them may force a device sync on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Cancelled", "Hooks", "Progress"]


class Cancelled(Exception):
    """Raised inside a job when `Hooks.should_cancel()` said yes; finished work is kept."""


@dataclass(frozen=True)
class Progress:
    phase: str  # "train" | "validate" | "evaluate" | "sigma"
    epoch: int  # 1-based epoch (0 outside training)
    epochs: int
    batch: int  # 1-based batch within the phase
    batches: int
    detail: str = ""  # e.g. the attack being run
    # Set where the phase knows better than batch / batches (evaluation: cost-weighted over every
    # attack, protocol and repeat; ctrw.evaluation.progress): fraction of the phase done, in [0, 1].
    fraction: float | None = None
    eta_seconds: float | None = None  # seconds left in the phase, from the work done so far


class Hooks:
    """Default hooks do nothing; subclass and override what you need."""

    def on_progress(self, progress: Progress) -> None:
        """Called after every batch (cheap: no metrics, no syncs)."""

    def on_epoch(self, record: dict[str, Any]) -> None:
        """Called once per finished epoch with the epoch's metrics (already on the host)."""

    def on_result(self, row: dict[str, Any]) -> None:
        """Called once per finished evaluation row (attack x protocol)."""

    def should_cancel(self) -> bool:
        return False
