"""The three jobs the CLI and the workers run: train, evaluate, sigma statistics.

Each takes validated configs and paths and returns JSON-ready dicts; progress, results and
cancellation go through ``ctrw.hooks.Hooks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ctrw.config import EvalConfig, TrainConfig
from ctrw.data import TensorSplit, load_data
from ctrw.hooks import Hooks
from ctrw.training import load_trained_model, pick_device, prepare_for_device, train

__all__ = ["load_test_tensors", "run_evaluation", "run_sigma_stats", "run_training"]


def run_training(config: TrainConfig, *, run_dir: Path, hooks: Hooks | None = None) -> dict[str, Any]:
    """Train or resume; see ``ctrw.training.train``."""
    return train(config, run_dir=Path(run_dir), hooks=hooks)


def load_test_tensors(config: TrainConfig, n: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The first ``n`` test examples as float images in [0, 1], their labels and the class count."""
    data = load_data(config.data, seed=config.seed)
    test = data.test
    if isinstance(test, TensorSplit):
        test = test.head(n)
        return test.float_images(), test.y, data.num_classes
    # ImageFolder: decode and resize in DataLoader workers, not one image at a time here. The
    # whole split is held as float32: 0.6 MB per 224x224 image, 30 GB for ImageNet's 50,000;
    # evaluation.n_examples bounds it.
    limit = len(test) if n is None else min(n, len(test))
    subset = torch.utils.data.Subset(test, range(limit))
    loader = torch.utils.data.DataLoader(subset, batch_size=256, num_workers=config.data.imagenet_workers)
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys), data.num_classes


def run_evaluation(
    checkpoint: Path,
    evaluation: EvalConfig,
    train_config: TrainConfig,
    *,
    hooks: Hooks | None = None,
    previous_rows: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Attack a trained model; rows are reported through ``hooks.on_result`` as they finish.

    ``previous_rows`` are the rows an interrupted run already finished: their (attack, protocol)
    pairs are skipped and the diagnostics see them beside the new rows.
    """
    from ctrw.evaluation.evaluate import evaluate

    device = pick_device(train_config.device)
    model, cfg, _ = load_trained_model(Path(checkpoint), train_config, device=device)
    model = prepare_for_device(model, cfg, device)
    x, y, num_classes = load_test_tensors(cfg, evaluation.n_examples)
    info = {"model": cfg.model.name, "variant": cfg.variant, "name": cfg.name, "dataset": cfg.data.dataset}
    return evaluate(
        model,
        x.to(device),
        y.to(device),
        evaluation,
        num_classes=num_classes,
        device=device,
        hooks=hooks,
        done_columns=frozenset((r["attack"], r["protocol"]) for r in previous_rows),
        previous_rows=list(previous_rows),
        model_info=info,
    )


def run_sigma_stats(
    checkpoint: Path,
    train_config: TrainConfig | None = None,
    *,
    n_pairs: int = 100_000,
    eps_r: float | None = None,
    grad_examples: int = 128,
) -> dict[str, Any]:
    """sigma histograms, bounds, the Table 6 statistic and Eq. 6 gradient similarity."""
    from ctrw.evaluation.sigma_stats import sigma_report

    device = pick_device(train_config.device if train_config else None)
    model, cfg, meta = load_trained_model(Path(checkpoint), train_config, device=device)
    if eps_r is None:
        eps_r = getattr(cfg.bounds.lower, "eps_r", 0.01)
    # Lemma 1's alpha for its check: the run's own, else the paper's -1e-3.
    alpha = getattr(cfg.bounds.lower, "alpha", -1e-3)
    x, y, _ = load_test_tensors(cfg, grad_examples)
    report = sigma_report(
        model,
        bounds=meta.get("bounds"),
        x=x.to(device),
        y=y.to(device),
        n_pairs=n_pairs,
        eps_r=eps_r,
        seed=cfg.seed,
        alpha=alpha,
    )
    report["epochs"] = [
        {
            k: rec.get(k)
            for k in (
                "epoch",
                "sigma_sum",
                "sigma_min",
                "sigma_mean",
                "sigma_max",
                "bound_lower",
                "bound_upper",
                "bound_events",
            )
        }
        for rec in meta.get("history", [])
    ]
    report["checkpoint_epoch"] = meta.get("epoch")
    return report
