"""Evaluation timing for ``bench.py``: seconds per attack through ``ctrw.evaluation.evaluate``
(paper protocol) projected to the 10,000-image test set, and batched DeepFool against torchattacks'
per-image one.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from bench_common import TEST_SET, sync

from ctrw.config import AttackSpec, EvalConfig, TrainConfig
from ctrw.training import TrainState as TrainRun
from ctrw.training import load_trained_model, prepare_for_device


def _eval_data(cfg: TrainConfig, n: int, *, real: bool) -> tuple[torch.Tensor, torch.Tensor, int, str]:
    """The first ``n`` test images: the checkpoint's own test set when ``real`` and it is on disk
    (attack costs depend on how many images the model gets right), synthetic ones otherwise."""
    from ctrw.data import DataNotFoundError, load_data
    from ctrw.jobs import load_test_tensors

    if real:
        try:
            x, y, num_classes = load_test_tensors(cfg, n)
            return x, y, num_classes, f"{cfg.data.dataset} test set"
        except DataNotFoundError as e:
            print(f"note: {e}; timing on synthetic images instead (attack costs are then lower bounds)")
    data = load_data(cfg.data.model_copy(update={"dataset": "synthetic", "synthetic_test": max(n, 8)}))
    return data.test.float_images()[:n], data.test.y[:n], data.num_classes, "synthetic images"


def bench_evaluation(args: argparse.Namespace, run: TrainRun | None) -> tuple[list[dict[str, Any]], str]:
    """Seconds per attack on ``--eval-examples`` test images, projected to 10,000; and which
    images they were."""
    from ctrw.attacks.build import build_attack
    from ctrw.evaluation.evaluate import evaluate

    dev, n = args.device, args.eval_examples
    if args.checkpoint is not None:
        model, cfg, _ = load_trained_model(args.checkpoint, device=dev)
        model = prepare_for_device(model, cfg, dev)  # as the evaluation job does
    else:
        assert run is not None
        model, cfg = run.model, run.config
    x, y, num_classes, data_label = _eval_data(cfg, n, real=args.checkpoint is not None)
    x, y = x.to(dev), y.to(dev)
    amp = torch.bfloat16 if (args.eval_bf16 and dev.type == "cuda") else None

    def timed(spec: AttackSpec, xs: torch.Tensor, ys: torch.Tensor) -> tuple[float, dict[str, Any]]:
        ecfg = EvalConfig(attacks=[spec], protocol="paper", batch_size=args.eval_batch, diagnostics=False)
        sync(dev)
        t0 = time.perf_counter()
        out = evaluate(model, xs, ys, ecfg, num_classes=num_classes, device=dev, autocast_dtype=amp)
        sync(dev)
        return time.perf_counter() - t0, out["rows"][0]

    timed(
        AttackSpec(name="pgd", steps=2), x[: min(n, args.eval_batch)], y[: min(n, args.eval_batch)]
    )  # warm-up
    rows = []
    for name in [a for a in args.attacks.split(",") if a]:
        seconds, r = timed(AttackSpec(name=name), x, y)
        rows.append(
            {
                "attack": r["attack"],
                "n": n,
                "seconds": seconds,
                "images_per_s": n / seconds,
                "projected_test_set_s": seconds * TEST_SET / n,
                "accuracy": r["accuracy"],
            }
        )
    # DeepFool alone: our batched version against torchattacks' per-image one, same examples.
    m = min(n, 64)
    model.eval()
    grads = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        for reference in (False, True):
            attack = build_attack(
                AttackSpec(name="deepfool"), model, num_classes=num_classes, reference=reference
            )
            attack(x[:2], y[:2])  # warm-up
            sync(dev)
            t0 = time.perf_counter()
            attack(x[:m], y[:m])
            sync(dev)
            seconds = time.perf_counter() - t0
            label = "deepfool attack only, " + ("torchattacks per-image" if reference else "ours batched")
            rows.append(
                {
                    "attack": label,
                    "n": m,
                    "seconds": seconds,
                    "images_per_s": m / seconds,
                    "projected_test_set_s": seconds * TEST_SET / m,
                    "accuracy": None,
                }
            )
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        model.train()
    return rows, data_label
