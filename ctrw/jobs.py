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
from ctrw.data import StreamedImages, TensorSplit, as_float_images, load_data
from ctrw.hooks import Hooks
from ctrw.training import distributed, load_trained_model, pick_device, prepare_for_device, train

__all__ = ["load_test_images", "load_test_tensors", "run_evaluation", "run_sigma_stats", "run_training"]


def run_training(config: TrainConfig, *, run_dir: Path, hooks: Hooks | None = None) -> dict[str, Any]:
    """Train or resume; see ``ctrw.training.train`` (on ``config.distributed.nproc_per_node``
    processes: ``ctrw.training.distributed``)."""
    return distributed.run(config, run_dir=Path(run_dir), hooks=hooks, train=train)


def load_test_images(
    config: TrainConfig, n: int | None, *, stream: bool = False
) -> tuple[torch.Tensor | StreamedImages, torch.Tensor, int]:
    """The first ``n`` test examples as uint8 images (0..255, on the host), their labels and the
    class count. The evaluation converts one batch at a time to float on its device.

    An ImageFolder (ImageNet) is decoded and resized in DataLoader workers; with ``stream`` its
    images come as ``StreamedImages``, decoded batch by batch when the evaluation uses them, so
    memory does not grow with ``n`` (50,000 ImageNet images would be 7.5 GB as uint8, 30 GB as
    float32).
    """
    data = load_data(config.data, seed=config.seed)
    test = data.test
    if isinstance(test, TensorSplit):
        test = test.head(n)
        return test.x, test.y, data.num_classes
    limit = len(test) if n is None else min(n, len(test))
    images = StreamedImages(test, stop=limit, workers=config.data.imagenet_workers)
    y = torch.as_tensor(test.targets[:limit], dtype=torch.long)  # ImageFolder's labels, no decoding
    return (images if stream else images.to("cpu")), y, data.num_classes


def load_test_tensors(config: TrainConfig, n: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The first ``n`` test examples as float images in [0, 1], their labels and the class count
    (for the few examples sigma statistics look at; the evaluation streams ``load_test_images``)."""
    x, y, num_classes = load_test_images(config, n)
    return as_float_images(x, torch.device("cpu")), y, num_classes


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
    # uint8 on the host; each batch goes to the device and becomes float there (see evaluate).
    x, y, num_classes = load_test_images(cfg, evaluation.n_examples, stream=True)
    if device.type == "cuda" and isinstance(x, torch.Tensor):
        x, y = x.pin_memory(), y.pin_memory()  # asynchronous batch copies
    info = {"model": cfg.model.name, "variant": cfg.variant, "name": cfg.name, "dataset": cfg.data.dataset}
    return evaluate(
        model,
        x,
        y,
        evaluation,
        num_classes=num_classes,
        device=device,
        hooks=hooks,
        done_columns=frozenset((r["attack"], r["protocol"]) for r in previous_rows),
        previous_rows=list(previous_rows),
        model_info=info,
        # The run's precision switch (TrainConfig.amp, on by default): bf16 for the sign-based
        # attacks on CUDA; magnitude-based attacks and every prediction stay fp32 (ctrw.attacks.build).
        autocast_dtype=torch.bfloat16 if cfg.amp and device.type == "cuda" else None,
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
