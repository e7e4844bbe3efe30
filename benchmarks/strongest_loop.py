"""The strongest plain adversarial-training loop a performance-minded user would write, eager.

The second baseline of ``benchmarks/bench.py`` (headline: ours / strongest). It computes what
``TrainState.train_step`` computes (Algorithm 1: draw A, PGD-k against draw A, draw B, update,
constrain σ) with the tools such a user reaches for, and none of our own fast-path code:

- The attack is torchattacks' ``PGD`` (``torch.autograd.grad`` with respect to the images only:
  ~2F per step, the same lean attack step as ours), BatchNorm in train mode as the published loop
  attacks (``set_model_training_mode(model_training=True)``).
- bf16 autocast around the attack and around the update's forward (one context per call, so
  autocast's cache casts each weight once per attack: the parameters require grad), the model
  and the images in ``channels_last``, ``cudnn.benchmark`` on. These are CUDA switches: on a CPU
  this loop runs fp32, contiguous, without cuDNN (``strongest_switches`` says which apply).
- Data resident on the device with our batched augmentation (``ctrw.data.iterate_batches``), as
  ours has: the loops differ in the step only. No ``.item()`` per batch: metrics stay on the
  device. The σ constraint is the library's (``constrain_sigma``), which decides on the device.

What remains between this loop and ours is what ours adds on top: torch.compile (on by default
for CUDA jobs), the frozen-weight casts and PGD loop of ``ctrw.training.step``, fused
optimizer-state layout and the absence of torchattacks' per-call input checks (host syncs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from ctrw.nn.random_weight import resample

__all__ = ["StrongestLoop", "strongest_switches"]


def strongest_switches(device: torch.device) -> dict[str, bool]:
    """Which of the loop's switches apply on ``device`` (all of them on CUDA, none on a CPU)."""
    cuda = device.type == "cuda"
    return {"bf16_autocast": cuda, "channels_last": cuda, "cudnn_benchmark": cuda}


class StrongestLoop:
    """torchattacks PGD + bf16 autocast + channels_last + cudnn.benchmark, eager, on one model.

    Args:
        model: the network (moved to channels_last here on CUDA); trained in place.
        optimizer: its optimizer.
        constrain: called after every update (the σ constraint; no host sync).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        eps: float,
        alpha: float,
        steps: int,
        constrain: Callable[[], None],
    ) -> None:
        self.model, self.optimizer, self.device, self.constrain = model, optimizer, device, constrain
        self.switches = strongest_switches(device)
        if self.switches["channels_last"]:
            for t in (*model.parameters(), *model.buffers()):
                if t.dim() == 4:  # not Module.to(memory_format=...): 5-D random-weight tensors
                    t.data = t.data.contiguous(memory_format=torch.channels_last)
        self.attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        self.attack.set_model_training_mode(model_training=True)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.switches["bf16_autocast"])

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of Algorithm 1; returns (loss, adversarial correct) as device tensors."""
        if self.switches["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        self.model.train()
        resample(self.model)  # draw A
        with self._autocast():
            x_adv = self.attack(x, y)
        resample(self.model)  # draw B
        with self._autocast():
            logits = self.model(x_adv)
        loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.constrain()
        return loss.detach(), (logits.argmax(1) == y).sum()

    def run(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], n: int) -> None:
        """Train on the next ``n`` batches; metrics accumulated on the device (read by no one)."""
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.switches["cudnn_benchmark"]
        try:
            correct = torch.zeros((), device=self.device, dtype=torch.long)
            for _ in range(n):
                x, y = next(batches)
                _, ok = self.step(x, y)
                correct += ok
        finally:
            torch.backends.cudnn.benchmark = benchmark
