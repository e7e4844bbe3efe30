"""Everything that changes during training, and its exact round trip through a checkpoint.

A checkpoint holds the model, the optimizer state and every random generator (torch CPU and
CUDA, data order, attack starts, each random layer's draws) as tensors, and the epoch, the best
epoch, the history and the bounds as metadata, so a resumed run continues bit for bit.
``save`` (or ``checkpoint_writer``, for a write on another thread) publishes ``last`` and then, in
a best epoch, the same file as ``best`` (a hard link); ``settle_checkpoints`` repairs a kill
between the two.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ctrw.checkpoint import (
    CheckpointError,
    environment_info,
    link_checkpoint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from ctrw.config import TrainConfig, config_hash
from ctrw.data import DataSplits, load_data
from ctrw.hooks import Hooks
from ctrw.nn import sigma_policy
from ctrw.nn.bounds import LayerBounds
from ctrw.nn.models import CTRWNet
from ctrw.nn.random_weight import random_layers, seed_random_layers
from ctrw.nn.randomness import random_modules
from ctrw.training import setup, step, validate
from ctrw.training.step import LowPrecisionWeights, RunningStatsKept

__all__ = ["BEST", "LAST", "TrainState", "settle_checkpoints"]

log = logging.getLogger(__name__)

LAST, BEST = "last.safetensors", "best.safetensors"


@dataclass
class TrainState:
    """Everything that changes during training; (de)serialised for exact resume.

    The Algorithm 1 operations are also methods (``attack``, ``train_step``, ``train_epoch``,
    ``validate``) so that benchmarks and tests can drive one step at a time; their code is in
    ``step.py``, ``loop.py`` and ``validate.py``.
    """

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
    # parameters and buffers; see ``ctrw.training.step``).
    compiled: nn.Module | None = None
    # One rank of several (ctrw.training.distributed.DistContext); None in one process.
    dist: Any = None
    running_stats_kept: RunningStatsKept = field(init=False, repr=False)
    low_precision_weights: LowPrecisionWeights = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.running_stats_kept = RunningStatsKept(self.model)
        self.low_precision_weights = LowPrecisionWeights(self.model)

    @classmethod
    def create(cls, config: TrainConfig) -> TrainState:
        """A fresh run: seeded model, optimizer, data and generators; σ set up by its variant."""
        device = setup.pick_device(config.device)
        torch.manual_seed(config.seed)
        data = setup.place_data(load_data(config.data, seed=config.seed), device)
        model = setup.build_model(
            config, num_classes=data.num_classes, input_shape=data.input_shape, mean=data.mean, std=data.std
        ).to(device)
        model = setup.prepare_for_device(model, config, device)
        seed_random_layers(model, config.seed + 1000)
        optimizer = setup.make_optimizer(config, model)
        data_gen = torch.Generator().manual_seed(config.seed + 1)
        attack_gen = torch.Generator(device=device).manual_seed(config.seed + 2)
        compiled = setup.compile_for_training(config, model, device)
        state = cls(
            config, data, model, optimizer, device, data_gen, attack_gen, bounds=[], compiled=compiled
        )
        state.bounds = setup.compute_bounds(config, model, data, device)
        state.bound_events = sigma_policy.check_initial_bounds(config, state.bounds)
        sigma_policy.freeze_fixed_sigma(config, model, state.bounds)
        sigma_policy.constrain_sigma(config, model, state.bounds)
        return state

    # -------------------------------------------------------------- what the step uses
    @property
    def step_model(self) -> nn.Module:
        """The module the training step calls (compiled when ``config.compile``)."""
        return self.model if self.compiled is None else self.compiled

    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 autocast on CUDA when ``config.amp``: the run's single precision switch."""
        return torch.bfloat16 if (self.config.amp and self.device.type == "cuda") else None

    def recompute_bounds(self) -> None:
        """Recompute the lemma bounds (epoch end). A bound that cannot be computed any more keeps
        its previous value, and the event is recorded for the next epoch record."""
        fresh = setup.compute_bounds(self.config, self.model, self.data, self.device)
        for i, (old, new) in enumerate(zip(self.bounds, fresh, strict=True)):
            for side, why in new.notes.items():
                kept = getattr(old, side)
                setattr(new, side, kept)
                keep = f"kept {kept} from before" if kept is not None else "no bound since the start either"
                event = f"epoch {self.epoch + 1}: bounds.{side} of random layer {i}: {why}; {keep}"
                self.bound_events.append(event)
                log.warning("%s", event)
        self.bounds = fresh

    # -------------------------------------------------------------- Algorithm 1, as methods
    def attack(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return step.attack(self, x, y)

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, *, measure_clean: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return step.train_step(self, x, y, measure_clean=measure_clean)

    def train_epoch(self, hooks: Hooks) -> dict[str, float]:
        from ctrw.training.loop import train_epoch  # loop.py builds on this module

        return train_epoch(self, hooks)

    def validate(self, hooks: Hooks) -> dict[str, float | None]:
        return validate.validate(self, hooks)

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
        for i, layer in enumerate(random_modules(self.model)):
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
        self.checkpoint_writer(run_dir, best=best)()

    def checkpoint_writer(self, run_dir: Path, *, best: bool) -> Callable[[], None]:
        """``save`` in two halves: this call copies the state as it is now (tensors to the CPU,
        metadata as JSON values); the returned function writes it, on any thread, while training
        goes on (``ctrw.training.writer``)."""
        tensors = {k: v.detach().to("cpu", copy=True) for k, v in self.state_tensors().items()}
        meta = json.loads(json.dumps(self.meta()))  # a copy: history and bounds change later

        def write() -> None:
            save_checkpoint(run_dir / LAST, tensors, meta)
            if best:
                link_checkpoint(run_dir / LAST, run_dir / BEST)

        return write

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
        for i, layer in enumerate(random_modules(self.model)):
            if f"rng.layer.{i}" in tensors:
                layer.set_generator_state(tensors[f"rng.layer.{i}"])
        for layer, rg in zip(random_layers(self.model), meta.get("sigma_requires_grad", []), strict=False):
            layer.sigma.requires_grad_(rg)
        self.epoch = int(meta["epoch"])
        self.best_metric = float(meta["best_metric"])
        self.best_epoch = int(meta["best_epoch"])
        self.history = list(meta["history"])
        self.bounds = [LayerBounds(b["lower"], b["upper"]) for b in meta["bounds"]]


def settle_checkpoints(run_dir: Path) -> dict[str, Path]:
    """Make a run directory's ``best`` agree with its ``last`` after a kill; the checkpoints to use.

    ``TrainState.save`` publishes ``last`` and then, in a best epoch, the same file as ``best``. A
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
        link_checkpoint(last, best)
    return {"last": last, "best": best}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # compares NaN metrics as equal, unlike ==
