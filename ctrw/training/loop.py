"""Black-box adversarial training (Algorithm 1) with exact resume.

Per batch: draw A -> PGD-k against draw A -> draw B -> update on the adversarial batch with
draw B -> constrain sigma. Metrics are accumulated on the device and read once per epoch;
nothing in the batch loop synchronises with the host.

``config.compile`` (off by default, on every device) runs the training step's forwards through
``torch.compile(model, dynamic=False)``: one wrapper around the whole network, random weight
included, kept beside ``model`` (which the checkpoints, validation and evaluation use, so state-dict
keys never change and evaluation stays eager). The batch shape is fixed (drop_last), attack and
update keep their BatchNorm modes, and the attack runs with the parameters frozen, so a run
compiles a few graphs in its first batch (attack, update, clean-accuracy forward) and never again:
there is no train()/eval() toggle inside the compiled step other than the configured
``attack.bn_mode``, which is one more cached graph, not a recompile.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.attacks.pgd import pgd_linf
from ctrw.checkpoint import (
    CheckpointError,
    copy_checkpoint,
    environment_info,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from ctrw.config import TrainConfig, config_hash
from ctrw.data import DataSplits, TensorSplit, iterate_batches, load_data, num_batches
from ctrw.hooks import Cancelled, Hooks, Progress
from ctrw.nn.bounds import LayerBounds, fixed_sigma_sum, resolve_bounds
from ctrw.nn.constraint import apply_floor_rule, apply_sum_rule
from ctrw.nn.models import CTRWNet, create_model
from ctrw.nn.random_weight import random_layers, resample, sampling, seed_random_layers

__all__ = [
    "TrainRun",
    "build_model",
    "load_trained_model",
    "lr_at",
    "pick_device",
    "prepare_for_device",
    "settle_checkpoints",
    "train",
    "uses_channels_last",
]

log = logging.getLogger(__name__)

LAST, BEST = "last.safetensors", "best.safetensors"


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def uses_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """channels_last applies on CUDA only (tensor-core convolutions are NHWC natively)."""
    return config.channels_last and device.type == "cuda"


def prepare_for_device(model: CTRWNet, config: TrainConfig, device: torch.device) -> CTRWNet:
    """The device settings of every job (training and evaluation): cuDNN autotuning on CUDA (jobs
    run fixed batch shapes, so tuned kernels are reused) and channels_last where it applies.
    The layout changes strides only; checkpoints are written contiguous."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if uses_channels_last(config, device):
        # Every 4-D parameter and buffer; not Module.to(memory_format=...), which also tries
        # the 5-D mu/sigma of the 'filters' random weight and fails (channels_last is 4-D).
        for t in itertools.chain(model.parameters(), model.buffers()):
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


def build_model(
    config: TrainConfig,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> CTRWNet:
    """The network of a training config (``baseline`` has no random weight)."""
    rw = None if config.variant == "baseline" else config.random_weight
    return create_model(
        config.model.name,
        num_classes=num_classes,
        input_shape=input_shape,
        mean=mean,
        std=std,
        width=config.model.width,
        random_weight=rw,
    )


def lr_at(config: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch`` (schedules step once per epoch, as published)."""
    o = config.optim
    if o.schedule == "multistep":
        return o.lr * o.gamma ** sum(epoch >= m for m in o.milestones)
    if o.schedule == "cosine":
        return o.lr * 0.5 * (1 + math.cos(math.pi * epoch / o.epochs))
    return o.lr


@dataclass
class TrainRun:
    """Everything that changes during training; (de)serialised for exact resume."""

    config: TrainConfig
    data: DataSplits
    model: CTRWNet
    optimizer: torch.optim.Optimizer
    device: torch.device
    data_gen: torch.Generator
    attack_gen: torch.Generator
    bounds: list[LayerBounds]
    epoch: int = 0  # epochs finished
    best_metric: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    # Bounds that could not be computed since the last epoch record (see recompute_bounds).
    bound_events: list[str] = field(default_factory=list)
    # What the training step calls: ``model`` itself (None) or its torch.compile wrapper (same
    # parameters and buffers; see the module docstring).
    compiled: nn.Module | None = None
    running_stats_kept: _RunningStatsKept = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.running_stats_kept = _RunningStatsKept(self.model)

    # -------------------------------------------------------------- setup
    @classmethod
    def create(cls, config: TrainConfig) -> TrainRun:
        device = pick_device(config.device)
        torch.manual_seed(config.seed)
        data = load_data(config.data, seed=config.seed)
        model = build_model(
            config, num_classes=data.num_classes, input_shape=data.input_shape, mean=data.mean, std=data.std
        ).to(device)
        model = prepare_for_device(model, config, device)
        if device.type == "cuda":
            for split in ("train", "val", "test"):
                s = getattr(data, split)
                if isinstance(s, TensorSplit):  # CIFAR-sized data lives on the GPU as uint8
                    setattr(data, split, s.to(device))
        seed_random_layers(model, config.seed + 1000)
        rand_params = [p for m in random_layers(model) for p in (m.mu, m.sigma)]
        rand_ids = {id(p) for p in rand_params}
        other = [p for p in model.parameters() if id(p) not in rand_ids]
        o = config.optim
        groups = [{"params": other, "weight_decay": o.weight_decay}]
        if rand_params:
            groups.append(
                {"params": rand_params, "weight_decay": o.weight_decay if o.weight_decay_on_random else 0.0}
            )
        optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
        data_gen = torch.Generator().manual_seed(config.seed + 1)
        attack_gen = torch.Generator(device=device).manual_seed(config.seed + 2)
        compiled = None
        if config.compile:
            # Every CTRWNet shares one forward code object, and dynamo allows it 8 compiled
            # variants per process; this run needs ~3. Without a reset the third compiled run
            # in a process (a worker's next job, the benchmark's next model) would pass that
            # limit and silently run eager. A process trains one run at a time, so nothing
            # else is compiled at this point.
            torch._dynamo.reset()
            compiled = torch.compile(model, dynamic=False)
        run = cls(config, data, model, optimizer, device, data_gen, attack_gen, bounds=[], compiled=compiled)
        run.bounds = run.compute_bounds()
        run.check_initial_bounds()
        run.init_fixed_sigma()
        run.apply_constraint()
        return run

    def bound_examples(self) -> torch.Tensor | None:
        split = self.data.val or self.data.train
        if not isinstance(split, TensorSplit):
            xs = [split[i][0] for i in range(min(len(split), 64))]
            return torch.stack(xs).to(self.device)
        return split.head(256).float_images().to(self.device)

    def compute_bounds(self) -> list[LayerBounds]:
        layers = random_layers(self.model)
        if not layers:
            return []
        x = self.bound_examples() if self.config.bounds.upper is not None else None
        return [resolve_bounds(self.config.bounds, self.model, layer, x) for layer in layers]

    def check_initial_bounds(self) -> None:
        """A configured bound that cannot be computed at the start is an error for the variants
        that use it (ctrw, fixed_std, fixed_sigma) and a recorded event for the others."""
        cfg = self.config
        at = {"ctrw": "both", "fixed_std": "lower", "fixed_sigma": cfg.fixed_sigma_at}.get(cfg.variant)
        if cfg.variant == "ctrw" and cfg.bounds.rule == "floor":
            at = "lower"
        used = {"both": ("lower", "upper"), "mid": ("lower", "upper"), None: ()}.get(at, (at,))
        for i, b in enumerate(self.bounds):
            for side, why in b.notes.items():
                if side in used:
                    raise ValueError(f"bounds.{side}: {why} at the start of training (random layer {i})")
                self.bound_events.append(f"start: bounds.{side} of random layer {i}: {why}")

    def recompute_bounds(self) -> None:
        """Recompute the lemma bounds (epoch end). A bound that cannot be computed any more keeps
        its previous value, and the event is recorded for the next epoch record."""
        fresh = self.compute_bounds()
        for i, (old, new) in enumerate(zip(self.bounds, fresh, strict=True)):
            for side, why in new.notes.items():
                kept = getattr(old, side)
                setattr(new, side, kept)
                keep = f"kept {kept} from before" if kept is not None else "no bound since the start either"
                event = f"epoch {self.epoch + 1}: bounds.{side} of random layer {i}: {why}; {keep}"
                self.bound_events.append(event)
                log.warning("%s", event)
        self.bounds = fresh

    def init_fixed_sigma(self) -> None:
        """fixed_std / fixed_sigma: sigma uniform at the chosen bound and frozen."""
        v = self.config.variant
        if v not in ("fixed_std", "fixed_sigma"):
            return
        at = "lower" if v == "fixed_std" else self.config.fixed_sigma_at
        for layer, b in zip(random_layers(self.model), self.bounds, strict=True):
            try:
                total = fixed_sigma_sum(at, b)
            except ValueError as e:
                raise ValueError(f"variant {v}: {e}") from None
            with torch.no_grad():
                layer.sigma.fill_(float(total) / layer.sigma.numel())
            layer.sigma.requires_grad_(False)

    def apply_constraint(self) -> None:
        v = self.config.variant
        if v not in ("ctrw",):
            return  # unconstrained / fixed variants / baseline
        rule = self.config.bounds.rule
        for layer, b in zip(random_layers(self.model), self.bounds, strict=True):
            if rule == "floor":
                apply_floor_rule(layer.sigma.data, b.lower)  # type: ignore[arg-type]
            else:
                apply_sum_rule(layer.sigma.data, b.lower, b.upper)

    # -------------------------------------------------------------- checkpoints
    def state_tensors(self) -> dict[str, torch.Tensor]:
        t: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        for i, st in self.optimizer.state_dict()["state"].items():
            for name, v in st.items():
                if isinstance(v, torch.Tensor):
                    t[f"optim.{i}.{name}"] = v
        t["rng.torch_cpu"] = torch.get_rng_state()
        t["rng.data"] = self.data_gen.get_state()
        t["rng.attack"] = self.attack_gen.get_state()
        if torch.cuda.is_available() and self.device.type == "cuda":
            t["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        for i, layer in enumerate(random_layers(self.model)):
            st = layer.generator_state()
            if st is not None:
                t[f"rng.layer.{i}"] = st
        return t

    def meta(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "config_hash": config_hash(self.config),
            "epoch": self.epoch,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "bounds": [b.as_dict() for b in self.bounds],
            "sigma_requires_grad": [layer.sigma.requires_grad for layer in random_layers(self.model)],
            "data": {
                "name": self.data.name,
                "num_classes": self.data.num_classes,
                "input_shape": list(self.data.input_shape),
                "mean": list(self.data.mean),
                "std": list(self.data.std),
                "notes": self.data.notes,
            },
            "environment": environment_info(self.device),
        }

    def save(self, run_dir: Path, *, best: bool) -> None:
        """The epoch-end checkpoint: ``last``, then, in a best epoch, the same file as ``best``.

        ``last`` is the run's record (resume reads it; its metadata names the best epoch), so it
        is published first; a kill before ``best`` follows is repaired by ``settle_checkpoints``.
        """
        save_checkpoint(run_dir / LAST, self.state_tensors(), self.meta())
        if best:
            copy_checkpoint(run_dir / LAST, run_dir / BEST)

    def restore(self, path: Path) -> None:
        tensors, meta = load_checkpoint(path, device="cpu")
        if meta.get("config_hash") != config_hash(self.config):
            raise CheckpointError(f"{path} was written for a different config; use a fresh run directory")
        epochs = [r.get("epoch") for r in meta.get("history", [])]
        if epochs != list(range(1, int(meta.get("epoch", -1)) + 1)):
            raise CheckpointError(f"{path}: epoch {meta.get('epoch')} does not match its history {epochs}")
        model_sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.model.load_state_dict(model_sd)
        except RuntimeError as e:
            raise CheckpointError(f"{path} does not fit the model: {e}") from e
        osd = self.optimizer.state_dict()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        osd["state"] = state
        self.optimizer.load_state_dict(osd)
        # Momentum buffers come back contiguous; give them their parameter's layout (channels_last
        # on CUDA) so the optimizer's fused update keeps its fast path after a resume.
        for p, st in self.optimizer.state.items():
            for name, v in st.items():
                if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    st[name] = torch.empty_like(p).copy_(v)
        torch.set_rng_state(tensors["rng.torch_cpu"])
        self.data_gen.set_state(tensors["rng.data"])
        self.attack_gen.set_state(tensors["rng.attack"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        for i, layer in enumerate(random_layers(self.model)):
            if f"rng.layer.{i}" in tensors:
                layer.set_generator_state(tensors[f"rng.layer.{i}"])
        for layer, rg in zip(random_layers(self.model), meta.get("sigma_requires_grad", []), strict=False):
            layer.sigma.requires_grad_(rg)
        self.epoch = int(meta["epoch"])
        self.best_metric = float(meta["best_metric"])
        self.best_epoch = int(meta["best_epoch"])
        self.history = list(meta["history"])
        self.bounds = [LayerBounds(b["lower"], b["upper"]) for b in meta["bounds"]]

    # -------------------------------------------------------------- one epoch
    @property
    def step_model(self) -> nn.Module:
        """The module the training step calls (compiled when ``config.compile``)."""
        return self.model if self.compiled is None else self.compiled

    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if (self.config.amp and self.device.type == "cuda") else None

    def attack(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """PGD against the model as the training config sees it (Algorithm 1, lines 4-7)."""
        a = self.config.attack
        if a.steps == 0 or a.eps == 0:
            return x
        mode = "fixed" if a.randomness == "blackbox" else "per_forward"
        if a.bn_mode == "eval":
            self.model.eval()
        with sampling(self.model, mode), _frozen_parameters(self.model):
            x_adv = pgd_linf(
                self.step_model,
                x,
                y,
                eps=a.eps,
                step_size=a.step_size,
                steps=a.steps,
                random_start=a.random_start,
                generator=self.attack_gen,
                eot_draws=a.eot_draws if a.randomness == "eot" else 1,
                autocast_dtype=self.autocast_dtype(),
            )
        self.model.train()
        return x_adv

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch of Algorithm 1: draw A, PGD against A, draw B, update, constrain sigma.

        Args:
            x: (B, C, H, W) augmented images in [0, 1] on the device; y: (B,) labels.

        Returns:
            The update's mean loss and the numbers of adversarial and of clean examples classified
            correctly, as 0-dim device tensors (reading them is a host sync; the caller
            accumulates them on the device).
        """
        model = self.step_model
        amp = self.autocast_dtype() is not None
        resample(self.model)  # draw A: the attack's model h_W[1]
        x_adv = self.attack(x, y)
        resample(self.model)  # draw B: the model that is updated, h_W[2]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x_adv)  # (B, K)
        loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.apply_constraint()
        # Train clean accuracy: one more forward (~1F of ~24F). It is a measurement, so the
        # BatchNorm running statistics it would update in train mode are put back.
        with torch.no_grad(), self.running_stats_kept():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                clean_ok = (model(x).argmax(1) == y).sum()
            adv_ok = (logits.argmax(1) == y).sum()
        return loss.detach(), adv_ok, clean_ok

    def train_epoch(self, hooks: Hooks) -> dict[str, float]:
        cfg, model, dev = self.config, self.model, self.device
        lr = lr_at(cfg, self.epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        model.train()
        n_b = num_batches(self.data.train, cfg.optim.batch_size, drop_last=True)
        loss_sum = torch.zeros((), device=dev)
        adv_correct = torch.zeros((), device=dev, dtype=torch.long)
        clean_correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = 0
        batches = iterate_batches(
            self.data.train,
            cfg.optim.batch_size,
            device=dev,
            shuffle=True,
            generator=self.data_gen,
            drop_last=True,
            augment=self.data.augment,
            num_workers=cfg.data.imagenet_workers,
        )
        for i, (x, y) in enumerate(batches, start=1):
            if uses_channels_last(cfg, dev):
                x = x.contiguous(memory_format=torch.channels_last)
            loss, adv_ok, clean_ok = self.train_step(x, y)
            loss_sum += loss * y.shape[0]
            adv_correct += adv_ok
            clean_correct += clean_ok
            seen += y.shape[0]
            hooks.on_progress(Progress("train", self.epoch + 1, cfg.optim.epochs, i, n_b))
            if hooks.should_cancel():
                raise Cancelled(f"cancelled during epoch {self.epoch + 1}")
        seen = max(seen, 1)
        return {
            "lr": lr,
            "train_loss": float(loss_sum) / seen,
            "train_adv_acc": float(adv_correct) / seen,
            "train_clean_acc": float(clean_correct) / seen,
        }

    @torch.no_grad()
    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.autocast_dtype() is not None
        ):
            return self.model(x).argmax(1)

    def validate(self, hooks: Hooks) -> dict[str, float | None]:
        """Clean and PGD accuracy on the validation split, paper protocol (draw A / draw B)."""
        cfg = self.config
        split = self.data.val
        if split is None:
            return {"val_clean_acc": None, "val_pgd_acc": None}
        if isinstance(split, TensorSplit):
            split = split.head(cfg.val_examples)
        self.model.eval()
        bs = cfg.optim.batch_size
        clean = torch.zeros((), device=self.device, dtype=torch.long)
        robust = torch.zeros((), device=self.device, dtype=torch.long)
        n = 0
        n_b = num_batches(split, bs, drop_last=False)
        for i, (x, y) in enumerate(iterate_batches(split, bs, device=self.device, shuffle=False), start=1):
            if n >= (cfg.val_examples or float("inf")):
                break
            resample(self.model)
            clean += (self._predict(x) == y).sum()
            if cfg.val_pgd_steps > 0:
                resample(self.model)  # draw A attacks
                x_adv = pgd_linf(
                    self.model,
                    x,
                    y,
                    eps=cfg.attack.eps,
                    step_size=cfg.attack.step_size,
                    steps=cfg.val_pgd_steps,
                    random_start=True,
                    generator=self.attack_gen,
                    autocast_dtype=self.autocast_dtype(),
                )
                resample(self.model)  # draw B judges
                robust += (self._predict(x_adv) == y).sum()
            n += y.shape[0]
            hooks.on_progress(Progress("validate", self.epoch + 1, cfg.optim.epochs, i, n_b))
        self.model.train()
        n = max(n, 1)
        return {
            "val_clean_acc": float(clean) / n,
            "val_pgd_acc": float(robust) / n if cfg.val_pgd_steps > 0 else None,
        }

    def sigma_summary(self) -> dict[str, float | None]:
        layers = random_layers(self.model)
        if not layers:
            return {k: None for k in ("sigma_sum", "sigma_min", "sigma_mean", "sigma_max", "mu_mean")}
        s = torch.cat([m.sigma.detach().flatten() for m in layers]).double()
        mu = torch.cat([m.mu.detach().flatten() for m in layers]).double()
        return {
            "sigma_sum": float(s.sum()),
            "sigma_min": float(s.min()),
            "sigma_mean": float(s.mean()),
            "sigma_max": float(s.max()),
            "mu_mean": float(mu.mean()),
        }


@contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters that require grad stop requiring it inside the block (attack steps).

    Attack steps need the input gradient only. Eager autograd already skips weight gradients
    there, but a compiled region's backward computes gradients for every input that requires
    grad, so freezing keeps a compiled attack step at ~2F instead of ~3F.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class _RunningStatsKept:
    """Puts BatchNorm running statistics (and batch counters) back after a measurement forward.

    The buffers are saved into copies allocated once and restored with one fused copy per dtype
    (float statistics, int64 counters): four kernel launches per batch instead of two per buffer
    (~120 for ResNet18), which would show once compilation has removed most other launches.
    The model's buffers stay the same tensors for the whole run (``load_state_dict`` copies into
    them), so the saved list stays valid.
    """

    def __init__(self, model: nn.Module) -> None:
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for b in m.buffers(recurse=False):
                    by_dtype.setdefault(b.dtype, []).append(b)
        self.groups = [(bufs, [torch.empty_like(b) for b in bufs]) for bufs in by_dtype.values()]

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with torch.no_grad():
            for bufs, saved in self.groups:
                torch._foreach_copy_(saved, bufs)
        try:
            yield
        finally:
            with torch.no_grad():
                for bufs, saved in self.groups:
                    torch._foreach_copy_(bufs, saved)


def _needs_recompute(config: TrainConfig) -> bool:
    b = config.bounds
    lemma = any(getattr(x, "kind", None) in ("lemma1", "lemma2") for x in (b.lower, b.upper))
    return b.recompute_every_epoch and lemma and config.variant != "baseline"


def train(config: TrainConfig, *, run_dir: Path, hooks: Hooks | None = None) -> dict[str, Any]:
    """Train (or resume) a model; checkpoints go to ``run_dir``.

    Resumes from ``run_dir/last.safetensors`` when it exists and was written for the same config.
    Every finished epoch calls ``hooks.on_epoch(record)``; on resume the stored history is
    re-emitted first, so a caller that lost some records catches up (the calls are idempotent
    by epoch number).

    Returns:
        {"best_checkpoint", "last_checkpoint", "epochs_done", "best_epoch", "stopped_early"}.
    """
    hooks = hooks or Hooks()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = TrainRun.create(config)
    if (run_dir / LAST).is_file():
        run.restore(run_dir / LAST)
        settle_checkpoints(run_dir)
        log.info("resumed %s at epoch %d", run_dir, run.epoch)
        for rec in run.history:
            hooks.on_epoch(rec)
    stopped_early = False
    has_val = run.data.val is not None
    while run.epoch < config.optim.epochs:
        t0 = time.perf_counter()
        metrics: dict[str, Any] = run.train_epoch(hooks)
        metrics.update(run.validate(hooks))
        if _needs_recompute(config):
            run.recompute_bounds()
        run.epoch += 1
        metric = (
            metrics["val_pgd_acc"] if metrics.get("val_pgd_acc") is not None else metrics.get("val_clean_acc")
        )
        # Without a validation split every epoch is "best" (i.e. the last one is used).
        is_best = (not has_val) or metric is None or metric > run.best_metric
        if is_best:
            run.best_metric = metric if metric is not None else run.best_metric
            run.best_epoch = run.epoch
        record = {
            "epoch": run.epoch,
            **metrics,
            **run.sigma_summary(),
            "bound_lower": run.bounds[0].lower if run.bounds else None,
            "bound_upper": run.bounds[0].upper if run.bounds else None,
            "bounds": [b.as_dict() for b in run.bounds],
            # Bounds that could not be computed (lemmas): never a silently missing bound.
            "bound_events": run.bound_events,
            "seconds": time.perf_counter() - t0,
            "is_best": is_best,
        }
        run.bound_events = []
        run.history.append(record)
        run.save(run_dir, best=is_best)
        hooks.on_epoch(record)
        log.info("epoch %d: %s", run.epoch, {k: v for k, v in record.items() if k != "bounds"})
        patience = config.optim.early_stop_patience
        if patience and has_val and run.epoch - run.best_epoch >= patience:
            stopped_early = True
            break
    return {
        "best_checkpoint": str(run_dir / BEST),
        "last_checkpoint": str(run_dir / LAST),
        "epochs_done": run.epoch,
        "best_epoch": run.best_epoch,
        "stopped_early": stopped_early,
    }


def settle_checkpoints(run_dir: Path) -> dict[str, Path]:
    """Make a run directory's ``best`` agree with its ``last`` after a kill; the checkpoints to use.

    ``TrainRun.save`` publishes ``last`` and then, in a best epoch, the same file as ``best``. A
    kill between the two leaves ``last`` at a best epoch (its ``best_epoch`` is its ``epoch``)
    beside an older or missing ``best``: ``best`` is republished from ``last``. Any other
    disagreement cannot come from a kill and is an error, never a silent stale ``best``.
    Leftover temporary files of a killed write are removed.

    Returns:
        {"last": path, "best": path}, or {} when the directory holds no ``last``.

    Raises:
        CheckpointError: a ``best`` that no kill can explain, or an unreadable ``last``.
    """
    run_dir = Path(run_dir)
    last, best = run_dir / LAST, run_dir / BEST
    for name in (LAST, BEST):
        (run_dir / f"{name}.tmp").unlink(missing_ok=True)
    if not last.is_file():
        return {}
    meta = read_meta(last)
    want = int(meta["best_epoch"])
    try:
        got = read_meta(best) if best.is_file() else None
    except CheckpointError:
        got = None  # an unreadable best counts as missing
    same = (
        got is not None
        and got.get("epoch") == want
        and _json(got.get("history")) == _json(meta["history"][:want])
    )
    if not same:
        if want != meta["epoch"]:
            raise CheckpointError(
                f"{best} does not hold epoch {want}, the best epoch that {last} (epoch {meta['epoch']}) records"
            )
        log.warning("%s: best was behind last (killed at epoch %d); republished", run_dir, want)
        copy_checkpoint(last, best)
    return {"last": last, "best": best}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # compares NaN metrics as equal, unlike ==


def load_trained_model(
    path: Path, config: TrainConfig | None = None, device: torch.device | str = "cpu"
) -> tuple[CTRWNet, TrainConfig, dict[str, Any]]:
    """Rebuild a model from a checkpoint (weights only; data is not loaded)."""
    tensors, meta = load_checkpoint(Path(path), device="cpu")
    cfg = config or TrainConfig.model_validate(meta["config"])
    d = meta["data"]
    model = build_model(
        cfg,
        num_classes=d["num_classes"],
        input_shape=tuple(d["input_shape"]),
        mean=tuple(d["mean"]),
        std=tuple(d["std"]),
    )
    sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the model of its config: {e}") from e
    seed_random_layers(model, cfg.seed + 2000)
    return model.to(device), cfg, meta
