"""The worker's job progress during an evaluation: one percent and a numeric ETA across every
attack and protocol (ctrw.evaluation.progress), not restarted per attack."""

from typing import Any

import torch

from ctrw.config import AttackSpec, EvalConfig, RandomWeightConfig
from ctrw.evaluation.evaluate import evaluate
from ctrw.hooks import Progress
from tests.support.models import NUM_CLASSES, prototype_data, trained_small_cnn
from worker.hooks import JobHooks


class Recording(JobHooks):
    """The worker's hooks without a database: progress is never written (infinite interval)."""

    def __init__(self) -> None:
        super().__init__(
            sessions=None,  # type: ignore[arg-type]
            job_id="progress-test",
            attempt=1,
            progress_interval_s=float("inf"),
            heartbeat_interval_s=60.0,
        )
        self.seen: list[dict[str, Any]] = []

    def on_progress(self, progress: Progress) -> None:
        super().on_progress(progress)
        assert self.progress is not None
        self.seen.append(dict(self.progress))

    def on_result(self, row: dict[str, Any]) -> None:
        pass


def test_evaluation_progress_has_a_numeric_eta_and_a_monotone_percent() -> None:
    model = trained_small_cnn(RandomWeightConfig(sigma_init=0.3))
    x, y = prototype_data(48, seed=3)
    cfg = EvalConfig(
        attacks=[AttackSpec(name="clean"), AttackSpec(name="pgd", steps=3), AttackSpec(name="fgsm")],
        protocol="both",
        batch_size=16,
        score_draws=2,
        diagnostics=False,
    )
    hooks = Recording()
    evaluate(model, (x * 255).round().to(torch.uint8), y, cfg, num_classes=NUM_CLASSES, hooks=hooks)
    assert len(hooks.seen) == 6 * 3  # 3 attacks x 2 protocols x 3 batches
    assert all(p["phase"] == "evaluate" for p in hooks.seen)
    assert all(isinstance(p["eta_seconds"], float) for p in hooks.seen)
    percents = [p["percent"] for p in hooks.seen]
    assert percents == sorted(percents) and percents[-1] > 99
    assert {p["detail"] for p in hooks.seen} >= {"pgd3 (paper)", "fgsm (adaptive)"}
