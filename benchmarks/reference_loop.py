"""The reference adversarial-training loop, written the way published code and common repos do it.

This is the baseline of ``benchmarks/bench.py`` (ours / reference) and of the fast-path
equivalence test. It computes the same thing as ``ctrw.training.loop.TrainRun.train_step`` (Algorithm
1: draw A, PGD-k against draw A, draw B, update, constrain sigma) in the usual style, and every
item below is a cost the fast path removes:

- fp32 everywhere, PyTorch's default backend settings (``cudnn.benchmark`` off, contiguous
  NCHW tensors).
- Data: a torchvision-style data set of uint8 HWC images that builds a PIL image per example and
  applies CPU transforms (``RandomCrop(padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``),
  batched by a ``DataLoader`` with worker processes and copied to the device every batch.
- Attack: PGD with a uniform random start and ``loss.backward()`` in train mode while the
  parameters require grad, so every step also computes (and throws away) weight gradients:
  ~3F per step instead of ~2F (F = one forward pass).
- Host syncs every batch: the constraint on sigma decides with a Python ``if`` on a tensor, and
  loss and accuracy are read with ``.item()``.

It is deliberately a conservative reference: no restarts, no extra forward for logging and no
PGD test at the end of every epoch, which the widely copied loops add on top (see
``../shared/docs/performance-anchors.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from ctrw.nn.bounds import LayerBounds
from ctrw.nn.random_weight import random_layers, resample

__all__ = [
    "ImageArrayDataset",
    "make_constraint",
    "make_loader",
    "pgd_backward",
    "reference_step",
    "train_batches",
]


class ImageArrayDataset(Dataset):
    """A data set like torchvision's CIFAR10: uint8 (N, H, W, C) array, a PIL image per item.

    Args:
        images: (N, H, W, C) uint8 array.
        labels: (N,) integer labels.
        augment: pad-4 random crop and horizontal flip (the CIFAR recipe) before ``ToTensor``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, augment: bool = True) -> None:
        self.images = images
        self.labels = [int(v) for v in labels]
        side = images.shape[1]
        steps: list[Callable] = []
        if augment:
            steps += [transforms.RandomCrop(side, padding=4), transforms.RandomHorizontalFlip()]
        self.transform = transforms.Compose([*steps, transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        pil = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
        return self.transform(pil), self.labels[i]


def make_loader(dataset: Dataset, batch_size: int, *, workers: int, pin_memory: bool) -> DataLoader:
    """Shuffled training loader as the common repos build it (no drop_last)."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=pin_memory
    )


def pgd_backward(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-inf PGD with a uniform random start; gradients through ``loss.backward()``.

    The update is torchattacks' PGD update (step on the adversarial image, project the
    perturbation, clamp to [0, 1]); the model stays in whatever mode the caller left it in
    (train mode in the published loop) and its parameters keep requiring grad, so weight
    gradients accumulate in ``.grad`` and the caller zeroes them before the update.
    """
    noise = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    x_adv = (x + noise).clamp(0, 1).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        with torch.no_grad():
            x_adv = x_adv + alpha * x_adv.grad.sign()
            delta = (x_adv - x).clamp(-eps, eps)
            x_adv = (x + delta).clamp(0, 1)
    return x_adv.detach()


def make_constraint(model: nn.Module, bounds: list[LayerBounds], rule: str) -> Callable[[], None]:
    """The sigma constraint written with host-side decisions, as the published code does.

    ``rule`` is ``"sum"`` (paper, Eq. 5: sum(sigma) in [lower, upper], sigma >= 0) or
    ``"floor"`` (published code: floor f = lower / N; if min(sigma) < f, every element below f
    is raised by f - min(sigma)).
    """
    layers = random_layers(model)

    @torch.no_grad()
    def constrain() -> None:
        for layer, b in zip(layers, bounds, strict=True):
            sigma = layer.sigma.data
            n = sigma.numel()
            if rule == "floor":
                floor = b.lower / n  # type: ignore[operator]
                low = sigma.min().item()  # host sync
                if low < floor:
                    sigma[sigma < floor] += floor - low
                continue
            sigma.clamp_(min=0)
            total = sigma.sum().item()  # host sync
            if b.upper is not None and total > b.upper:
                sigma.mul_(b.upper / total)
                total = sigma.sum().item()
            if b.lower is not None and total < b.lower:
                sigma.add_((b.lower - total) / n)

    return constrain


def reference_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    constrain: Callable[[], None],
    generator: torch.Generator | None = None,
) -> tuple[float, int]:
    """One batch of Algorithm 1 the reference way; returns (loss, correct) read on the host.

    The published loop applies the constraint at the start of a batch; applying it after the
    step, as here, is the same sequence of operations from the second batch on and lets one
    step be compared with ``TrainRun.train_step`` (which constrains after its step).
    """
    model.train()
    resample(model)  # draw A
    x_adv = pgd_backward(model, x, y, eps=eps, alpha=alpha, steps=steps, generator=generator)
    resample(model)  # draw B
    logits = model(x_adv)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    constrain()
    return loss.item(), (logits.argmax(1) == y).sum().item()


def train_batches(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    n: int,
    *,
    device: torch.device,
    eps: float,
    alpha: float,
    steps: int,
    constrain: Callable[[], None],
) -> dict[str, float]:
    """Train on the next ``n`` batches of a DataLoader iterator; metrics summed on the host."""
    loss_sum, correct, seen = 0.0, 0, 0
    for _ in range(n):
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, ok = reference_step(
            model, optimizer, x, y, eps=eps, alpha=alpha, steps=steps, constrain=constrain
        )
        loss_sum += loss * y.shape[0]
        correct += ok
        seen += y.shape[0]
    return {"loss": loss_sum / max(seen, 1), "adv_acc": correct / max(seen, 1), "images": seen}
