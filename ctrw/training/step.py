"""One batch of Algorithm 1: draw A -> PGD-k against draw A -> draw B -> update with draw B -> constrain σ.

The step returns its metrics as device tensors; nothing here synchronises with the host.

Compilation (``setup.compiles``: on for CUDA jobs by default, ``config.compile``) runs the step's
forwards through ``torch.compile(model, dynamic=False)``: one wrapper around the whole network,
random weight included, kept beside ``model`` (``TrainState.compiled``; checkpoints, validation
and evaluation use ``model``, so state-dict keys never change and evaluation stays eager). The
batch shape is fixed (drop_last), attack and update keep their BatchNorm modes, and the attack
runs with the parameters frozen, so a run compiles a few graphs in its first batches (attack,
update, clean-accuracy forward) and never again: there is no train()/eval() toggle inside the
compiled step other than the configured ``attack.bn_mode``, which is one more cached graph, not
a recompile.

Precision: under bf16 autocast the whole PGD loop runs inside one autocast context with the
frozen weights of the plain convolutions and linear layers cast to bf16 once per batch
(``LowPrecisionWeights``); autocast would otherwise re-cast every weight on every forward
(its cache only keeps casts of tensors that require grad, and the attack's do not).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.attacks.pgd import pgd_linf
from ctrw.nn.random_weight import RandomConv2d, resample, sampling
from ctrw.nn.sigma_policy import constrain_sigma

if TYPE_CHECKING:
    from ctrw.training.state import TrainState

__all__ = ["LowPrecisionWeights", "RunningStatsKept", "attack", "autocast_once", "train_step"]


def attack(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PGD against the model as the training config sees it (Algorithm 1, lines 4-7)."""
    a = state.config.attack
    if a.steps == 0 or a.eps == 0:
        return x
    mode = "fixed" if a.randomness == "blackbox" else "per_forward"
    if a.bn_mode == "eval":
        state.model.eval()
    with sampling(state.model, mode), _frozen_parameters(state.model), autocast_once(state):
        x_adv = pgd_linf(
            state.step_model,
            x,
            y,
            eps=a.eps,
            step_size=a.step_size,
            steps=a.steps,
            random_start=a.random_start,
            generator=state.attack_gen,
            eot_draws=a.eot_draws if a.randomness == "eot" else 1,
            autocast_dtype=state.autocast_dtype(),
        )
    state.model.train()
    return x_adv


def train_step(
    state: TrainState, x: torch.Tensor, y: torch.Tensor, *, measure_clean: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch of Algorithm 1: draw A, PGD against A, draw B, update, constrain σ.

    Args:
        x: (B, C, H, W) augmented images in [0, 1] on the device; y: (B,) labels.
        measure_clean: run the train-clean-accuracy forward (a measurement; ``train_epoch``
            runs it every ``setup.clean_acc_every`` batches).

    Returns:
        The update's mean loss and the numbers of adversarial and of clean examples classified
        correctly (0 when not ``measure_clean``), as 0-dim device tensors (reading them is a host
        sync; the caller accumulates them on the device).
    """
    model = state.step_model
    amp = state.autocast_dtype() is not None
    resample(state.model)  # draw A: the attack's model h_W[1]
    x_adv = state.attack(x, y)
    resample(state.model)  # draw B: the model that is updated, h_W[2]
    with torch.autocast(state.device.type, dtype=torch.bfloat16, enabled=amp):
        # Several ranks: the update's forward through DistributedDataParallel (gradients averaged).
        logits = (model if state.dist is None else state.dist.ddp)(x_adv)  # (B, K)
    loss = F.cross_entropy(logits.float(), y)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    constrain_sigma(state.config, state.model, state.bounds)
    with torch.no_grad():
        adv_ok = (logits.argmax(1) == y).sum()
        if not measure_clean:
            return loss.detach(), adv_ok, torch.zeros_like(adv_ok)
        # Train clean accuracy: one more forward (~1F of ~24F). It is a measurement, so the
        # BatchNorm running statistics it would update in train mode are put back.
        with state.running_stats_kept():
            with torch.autocast(state.device.type, dtype=torch.bfloat16, enabled=amp):
                clean_ok = (model(x).argmax(1) == y).sum()
    return loss.detach(), adv_ok, clean_ok


@contextmanager
def autocast_once(state: TrainState) -> Iterator[None]:
    """One bf16 autocast context for a whole attack, weights cast once (nothing without autocast).

    ``pgd_linf`` opens its own autocast context per forward; nested inside this one they share
    this context's cast cache, and the weights of the plain convolutions and linear layers are
    already bf16 (``LowPrecisionWeights``), so a forward issues no weight casts.
    """
    dtype = state.autocast_dtype()
    if dtype is None:
        yield
        return
    with torch.autocast(state.device.type, dtype=dtype), state.low_precision_weights(dtype):
        yield


class LowPrecisionWeights:
    """Inside ``with lpw(dtype):`` the weights and biases of the plain ``Conv2d`` / ``Linear``
    layers are ``dtype`` copies, refreshed from the fp32 weights on entry; the fp32 tensors are
    put back after (the same tensors, so the optimizer state and the memory layout are untouched).

    Only for frozen parameters (an attack): gradients never reach them. These are exactly the
    tensors autocast would round to ``dtype`` itself on every forward, so results are bit for bit
    those of per-forward casting. The copies are allocated once per run and refreshed with one
    fused copy: one kernel launch per batch instead of one cast per weight per forward, and the
    same addresses every batch (CUDA graphs treat parameters as static inputs). Convolutions
    inside a ``RandomConv2d`` are left alone: the 'filters' insertion multiplies the fp32 kernel
    by the random weight before the cast.
    """

    def __init__(self, model: nn.Module) -> None:
        skip = {id(m.conv) for m in model.modules() if isinstance(m, RandomConv2d)}
        self.params = [
            p
            for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in skip
            for p in m.parameters(recurse=False)
            if p.dtype == torch.float32
        ]
        self.copies: dict[torch.dtype, list[torch.Tensor]] = {}

    @contextmanager
    def __call__(self, dtype: torch.dtype) -> Iterator[None]:
        if dtype not in self.copies:  # empty_like keeps each weight's layout (channels_last)
            self.copies[dtype] = [torch.empty_like(p, dtype=dtype) for p in self.params]
        low = self.copies[dtype]
        kept = [p.data for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(low, kept)
        for p, data in zip(self.params, low, strict=True):
            p.data = data
        try:
            yield
        finally:
            for p, data in zip(self.params, kept, strict=True):
                p.data = data


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


class RunningStatsKept:
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
