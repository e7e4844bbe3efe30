"""Robustness evaluation of a (randomized) model: two protocols, stochastic scoring, diagnostics.

(Over 400 lines: the protocols, the batching and the orchestration read top to bottom here.)

Protocols (``EvalConfig.protocol``; "both" gives one row per protocol for every attack):

- ``paper`` (Algorithm 2, as published): the random layers are in 'fixed' mode. Per batch:
  draw A; ``x_adv = attack(x, y)`` against draw A; draw B; predict ``x_adv`` with draw B. The
  row's ``accuracy`` is that single-draw accuracy, which reproduces the paper's numbers.
- ``adaptive``: the attacker faces the deployed model, the random layers in 'per_forward' mode
  (a fresh draw on every forward) during the attack. The row's ``accuracy`` is the mean
  accuracy over K = ``score_draws`` fresh draws.

In both protocols every adversarial example is also judged under K fresh draws (``scoring``:
mean with a 95% CI, worst case over the draws, majority vote; see ``ctrw.evaluation.scoring``). Every
interval covers all randomness of the evaluation: batches are the clusters of a cluster-robust
variance (a batch shares draw A, the attacker's draws and the judging draws, since the published
layer draws one delta per mini-batch, and every stream below is seeded per batch), with Student's
t at G - 1 degrees of freedom for G batches. A single-batch evaluation cannot measure what its
batch shares; its interval says so (``scoring.ci.covers_attack_randomness`` false).

Reproducibility: every (attack column, repeat) gets a seed ``derive_seed(cfg.seed, column,
repeat)`` (recorded in ``scoring.seeds``); within it, batch b reseeds the random layers with
``derive_seed(repeat_seed, b, stage)`` for stage "attack" (draw A / the attacker's draws),
"judge" (draw B) and "score" (the K draws), and the attack's own RNG (random starts) is seeded
from the repeat seed. The streams do not depend on the protocol, so both protocols see the same
random starts and the same scoring draws (a paired comparison), and a deterministic model gives
identical rows under both. The random layers keep the generators seeded last.

During the evaluation the model is in eval mode and its parameters do not require grad (no
attack computes weight gradients); both are restored afterwards.

Per-example random layers (``RandomWeightConfig.per_example``) work with the adaptive protocol.
Under the paper protocol a fixed per-example draw belongs to one batch size (the first forward
after the draw), so attacks that forward shrinking subsets (DeepFool, AutoAttack, AutoAttack
'rand') cannot run there: configs are refused at validation (``per_example_conflicts``), and a
direct call raises a RuntimeError; the others run.

At scale: test images may stay uint8 on the host and are converted per batch on the device (float
memory bounded by the batch size); ``batch_size: auto`` resolves by device; sign-based attacks
may run in bf16 (``autocast_dtype``); cuDNN autotuning is off while an attack forwards shrinking
subsets; progress and ETA are weighted by each attack's cost (``ctrw.evaluation.progress``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torchattacks
from torch import nn

from ctrw.attacks.build import AttackFn, build_attack, derive_seed
from ctrw.catalog import ATTACKS
from ctrw.config import AttackSpec, EvalConfig
from ctrw.data import StreamedImages, as_float_images
from ctrw.evaluation.diagnostics import DEFAULT_SWEEP_STEPS, Probe, run_diagnostics
from ctrw.evaluation.progress import EvalProgress, batch_units, planned_units
from ctrw.evaluation.scoring import RepeatScores, score_batch, summarize
from ctrw.hooks import Cancelled, Hooks, Progress
from ctrw.nn.random_weight import resample, sampling, seed_random_layers
from ctrw.records import ResultRow

__all__ = ["DIAGNOSTIC_EXAMPLES", "SEED_RULE", "evaluate", "evaluation_mode", "protocols_of"]

logger = logging.getLogger(__name__)

# Stochastic scoring (no gradients) stacks up to this many batches' worth of copies in one
# forward; batched EOT (with gradients) up to EOT_ROWS_FACTOR.
SCORE_ROWS_FACTOR = 4
EOT_ROWS_FACTOR = 2
# Extra diagnostic runs (steps sweep, randomness, zero gradients) use the first examples only.
DIAGNOSTIC_EXAMPLES = 512
# ... split into at least this many batches: a row's CI has (batches - 1) degrees of freedom, and the
# diagnostics judge differences by the CIs (2 batches of 256 would make them 6.5 times as wide).
DIAGNOSTIC_MIN_BATCHES = 8
SEED_RULE = (
    "repeat seed = derive_seed(cfg.seed, column, repeat); batch b: random layers reseeded with "
    "derive_seed(repeat seed, b, 'attack' | 'judge' | 'score'), attack RNG with derive_seed(repeat seed, "
    "call index); derive_seed = first 8 bytes (little endian) of sha256(repr(parts)) >> 11"
)


def protocols_of(cfg: EvalConfig, spec: AttackSpec | None = None) -> tuple[str, ...]:
    """The protocols an evaluation config asks for (for one attack, if given), in table order."""
    if spec is None:
        wanted = {p for a in cfg.attacks for p in protocols_of(cfg, a)}
        return tuple(p for p in ("paper", "adaptive") if p in wanted)
    protocol = spec.protocol or cfg.protocol
    return ("paper", "adaptive") if protocol == "both" else (protocol,)


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """eval() and parameters that do not require grad for the duration; both are restored.

    Attacks then compute input gradients only (torchattacks' ``backward()`` calls included).
    """
    was_training = model.training
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        model.train(was_training)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _cudnn_autotune(enabled: bool) -> Iterator[None]:
    """cuDNN autotuning for the duration, restored after. Attacks that forward shrinking subsets
    (DeepFool, AutoAttack) would tune anew for every new batch shape, so they run without."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled and before
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


class _Evaluator:
    """Runs one attack under one protocol over a data set and builds its row."""

    def __init__(
        self,
        model: nn.Module,
        cfg: EvalConfig,
        *,
        num_classes: int,
        device: torch.device,
        hooks: Hooks,
        autocast_dtype: torch.dtype | None,
        batch_size: int,
        progress: EvalProgress,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.num_classes = num_classes
        self.device = device
        self.hooks = hooks
        self.autocast_dtype = autocast_dtype
        self.batch_size = batch_size
        self.progress = progress
        self.max_rows = SCORE_ROWS_FACTOR * batch_size

    def row(
        self,
        spec: AttackSpec,
        protocol: str,
        x: torch.Tensor | StreamedImages,
        y: torch.Tensor,
        *,
        detail: str,
        repeats: int | None = None,
        batch_size: int | None = None,
    ) -> dict[str, Any]:
        """Evaluate ``spec`` under ``protocol`` on (x, y); returns the row.

        Raises:
            Cancelled: ``hooks.should_cancel()`` said yes between two batches.
        """
        repeats = repeats or self.cfg.repeats
        bs = batch_size or self.batch_size
        n_batches = math.ceil(x.shape[0] / bs)
        start = time.perf_counter()
        with _cudnn_autotune(not ATTACKS[spec.name].subset):
            passes, seeds = self._passes(spec, protocol, x, y, detail, repeats, bs, n_batches)
        _sync(self.device)
        seconds = time.perf_counter() - start
        summary = summarize(passes, draws=self.cfg.score_draws, protocol=protocol, seeds=seeds)
        summary["scoring"]["seed_rule"] = SEED_RULE
        row = ResultRow(
            attack=spec.column,
            name=spec.name,
            protocol=protocol,
            **summary,
            seconds=seconds,
            params=spec.resolved(),
        ).model_dump()
        logger.info(
            "%s (%s): accuracy %.4f [%.4f, %.4f], n=%d, %.1fs",
            spec.column,
            protocol,
            row["accuracy"],
            row["ci_low"],
            row["ci_high"],
            row["n"],
            seconds,
        )
        return row

    def _passes(
        self,
        spec: AttackSpec,
        protocol: str,
        x: torch.Tensor | StreamedImages,
        y: torch.Tensor,
        detail: str,
        repeats: int,
        bs: int,
        n_batches: int,
    ) -> tuple[list[RepeatScores], list[int]]:
        """Every repeat over every batch; the scores of each repeat and its seed."""
        passes: list[RepeatScores] = []
        seeds: list[int] = []
        for r in range(repeats):
            rseed = derive_seed(self.cfg.seed, spec.column, r)
            seeds.append(rseed)
            attack = build_attack(
                spec,
                self.model,
                num_classes=self.num_classes,
                seed=rseed,
                autocast_dtype=self.autocast_dtype,
                eot_max_rows=EOT_ROWS_FACTOR * self.batch_size,
            )
            parts = []
            for b in range(n_batches):
                if self.hooks.should_cancel():
                    raise Cancelled(f"evaluation cancelled during {detail}")
                xb = as_float_images(x[b * bs : (b + 1) * bs], self.device)  # (B, C, H, W)
                yb = y[b * bs : (b + 1) * bs].to(self.device, non_blocking=True)  # (B,)
                parts.append(self._batch(attack, protocol, xb, yb, rseed, b))
                fraction, eta = self.progress.advance(
                    batch_units(spec, yb.shape[0], num_classes=self.num_classes, draws=self.cfg.score_draws)
                )
                self.hooks.on_progress(
                    Progress(
                        phase="evaluate",
                        epoch=0,
                        epochs=0,
                        batch=r * n_batches + b + 1,
                        batches=repeats * n_batches,
                        detail=detail,
                        fraction=fraction,
                        eta_seconds=eta,
                    )
                )
            passes.append(RepeatScores.concat(parts))
        return passes, seeds

    def _batch(
        self, attack: AttackFn, protocol: str, x: torch.Tensor, y: torch.Tensor, rseed: int, b: int
    ) -> RepeatScores:
        """Attack one batch under the protocol and judge it (draw B and K scoring draws)."""
        model = self.model
        seed_random_layers(model, derive_seed(rseed, b, "attack"))
        single = None
        if protocol == "paper":
            with sampling(model, "fixed"):
                resample(model)  # draw A: the attacker's
                x_adv = attack(x, y)
                seed_random_layers(model, derive_seed(rseed, b, "judge"))
                resample(model)  # draw B: the judge's
                with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
                    single = model(x_adv).argmax(1) == y  # (B,)
        else:
            with sampling(model, "per_forward"):
                x_adv = attack(x, y)
        seed_random_layers(model, derive_seed(rseed, b, "score"))
        return score_batch(
            model, x_adv, y, draws=self.cfg.score_draws, max_rows=self.max_rows, single_correct=single
        )


def evaluate(
    model: nn.Module,
    x: torch.Tensor | StreamedImages,
    y: torch.Tensor,
    cfg: EvalConfig,
    *,
    num_classes: int,
    device: torch.device | str = "cpu",
    hooks: Hooks | None = None,
    done_columns: Collection[tuple[str, str]] = frozenset(),
    model_info: dict[str, Any] | None = None,
    previous_rows: Sequence[dict[str, Any]] = (),
    sweep_steps: Sequence[int] = DEFAULT_SWEEP_STEPS,
    diagnostic_examples: int = DIAGNOSTIC_EXAMPLES,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Attack ``model`` with every attack of ``cfg`` under the requested protocol(s).

    Args:
        model: the classifier (a ``CTRWNet`` or any module on images in [0, 1]); moved to
            ``device``. A model without random layers works too (every draw is the same).
        x: test images, (N, C, H, W): uint8 (0..255, the data sets' storage), float in
            [0, 1], or ``StreamedImages`` (decoded per batch); the first ``cfg.n_examples``
            are used. They may stay on the host: each batch
            is moved to ``device`` and converted to float there, so the float images held at
            any time are one batch's (plus the diagnostic subset), whatever N is. uint8 and its
            float equivalent (x / 255) give identical rows.
        y: labels, (N,).
        cfg: attacks, protocol, batch size ('auto': by device and image size), repeats, K
            scoring draws, seed, diagnostics switch.
        num_classes: number of classes.
        device: where the work runs (batches are moved there).
        hooks: progress per batch (``Progress.fraction`` and ``eta_seconds`` cover the whole
            evaluation, weighted by each attack's cost: ``ctrw.evaluation.progress``),
            ``on_result`` per finished row, cancellation between batches.
        done_columns: (column, protocol) pairs already finished (a redelivered job resumes):
            they are skipped.
        model_info: description of the model (``model``, ``dataset``, ``variant``, ...), stored
            in ``meta`` and used by the peer-baseline diagnostic.
        previous_rows: rows of ``done_columns`` from the interrupted run, so the diagnostics
            see the whole table (they are not re-reported through ``on_result``).
        sweep_steps: PGD step counts of the diagnostic steps sweep.
        diagnostic_examples: examples used by the extra diagnostic runs.
        autocast_dtype: autocast dtype for sign-based attacks (fp32 when None); magnitude-based
            attacks and all predictions always run in fp32.

    Returns:
        ``{"rows": [...], "diagnostics": [...], "meta": {...}}``. A row holds attack (column),
        name, protocol, accuracy, n, ci_low, ci_high, seconds, params, repeats, std and
        scoring (draws, mean, ci_low, ci_high, worst_case, majority, seeds, ...).

    Raises:
        Cancelled: when ``hooks.should_cancel()`` returns True; rows finished before were
            already delivered through ``hooks.on_result``.
    """
    device = torch.device(device)
    hooks = hooks or Hooks()
    if cfg.n_examples is not None:
        x, y = x[: cfg.n_examples], y[: cfg.n_examples]
    protocols = protocols_of(cfg)
    done = {tuple(c) for c in done_columns}
    model.to(device)
    n = int(x.shape[0])
    batch_size = cfg.resolved_batch_size(device.type, int(x.shape[-1]))
    planned = [(s, p) for s in cfg.attacks for p in protocols_of(cfg, s)]
    plan = planned_units(
        cfg,
        n=n,
        num_classes=num_classes,
        todo=[s for s, p in planned if (s.column, p) not in done],
        table=[(s.name, s.resolved(), p) for s, p in planned]
        + [(r["name"], r.get("params"), r["protocol"]) for r in previous_rows],
        diagnostic_examples=diagnostic_examples,
        sweep_steps=sweep_steps,
    )
    runner = _Evaluator(
        model,
        cfg,
        num_classes=num_classes,
        device=device,
        hooks=hooks,
        autocast_dtype=autocast_dtype,
        batch_size=batch_size,
        progress=EvalProgress(plan),
    )
    rows: list[dict[str, Any]] = []
    with evaluation_mode(model):
        for spec in cfg.attacks:
            for protocol in protocols_of(cfg, spec):
                if (spec.column, protocol) in done:
                    logger.info("skipping %s (%s): already done", spec.column, protocol)
                    continue
                row = runner.row(spec, protocol, x, y, detail=f"{spec.column} ({protocol})")
                rows.append(row)
                hooks.on_result(row)
        probe = None
        if cfg.diagnostics:
            m = min(diagnostic_examples, n)
            probe = Probe(
                model=model,
                x=as_float_images(x[:m], device),
                y=y[:m].to(device),
                run_row=lambda spec, protocol, detail: runner.row(
                    spec,
                    protocol,
                    x[:m],
                    y[:m],
                    detail=detail,
                    repeats=1,
                    batch_size=min(batch_size, math.ceil(m / DIAGNOSTIC_MIN_BATCHES)),
                ),
                draws=cfg.score_draws,
                max_rows=runner.max_rows,
            )
        diagnostics = run_diagnostics(
            [*previous_rows, *rows],
            protocols=protocols,
            probe=probe,
            model_info=model_info,
            sweep_steps=sweep_steps,
        )
    for d in diagnostics:
        if d["fired"]:
            logger.warning("diagnostic %s: %s", d["name"], d["verdict"])
    meta = {
        "protocols": list(protocols),
        "n": n,
        "batch_size": batch_size,
        "autocast": str(autocast_dtype).removeprefix("torch.") if autocast_dtype else "fp32",
        "seed": cfg.seed,
        "score_draws": cfg.score_draws,
        "repeats": cfg.repeats,
        "seed_rule": SEED_RULE,
        "ci": "95%, batches as clusters: cluster-robust variance of the batch totals, Student's t with "
        "(batches - 1) df, Wilson form near 0 and 1; covers the examples, the attack's draws and random "
        "starts and the judging draws. One batch: examples as clusters of draws, which does not cover "
        "what the batch shares (see each row's scoring.ci)",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "torchattacks": torchattacks.__version__,
        "model_info": model_info or {},
        "diagnostic_examples": min(diagnostic_examples, n) if cfg.diagnostics else 0,
        "sweep_steps": sorted(set(sweep_steps)) if cfg.diagnostics else [],
    }
    return {"rows": rows, "diagnostics": diagnostics, "meta": meta}
