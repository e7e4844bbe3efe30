"""The CTRW random weight: W = mu + delta * sigma, multiplied element-wise into a feature map.

Sampling is explicit, because what an evaluation measures depends entirely on which draw the
attacker sees and which draw judges the result:

- ``"fixed"`` (default): ``resample()`` draws delta, which then stays until the next
  ``resample()``. The paper's Algorithms 1 and 2 use this: draw A for the attack, draw B for the
  update or the prediction.
- ``"per_forward"``: a fresh delta on every forward call (the deployed model an adaptive attacker
  faces).
- ``"mean"``: delta = 0, W = mu (the deterministic surrogate for transfer attacks).

The layer is random in ``eval()`` too: torchattacks switches models to eval during attacks,
and a defense that turned off its randomness there would be evaluated as a different model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

__all__ = [
    "RandomConv2d",
    "RandomWeight",
    "SamplingMode",
    "eot_groups",
    "random_layers",
    "resample",
    "sampling",
    "seed_random_layers",
]

SamplingMode = Literal["fixed", "per_forward", "mean"]


class RandomWeight(nn.Module):
    """Element-wise random multiplier with trainable mean and standard deviation.

    Args:
        shape: shape of mu and sigma WITHOUT the batch dim, e.g. (3, 32, 32).
        mu_init: initial value of every element of mu (published: 1).
        sigma_init: initial value of every element of sigma (published: 1).
        per_example: draw an independent delta per example instead of one per mini-batch.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        *,
        mu_init: float = 1.0,
        sigma_init: float = 1.0,
        per_example: bool = False,
    ) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.mu = nn.Parameter(torch.full((1, *self.shape), float(mu_init)))  # (1, *shape)
        self.sigma = nn.Parameter(torch.full((1, *self.shape), float(sigma_init)))  # (1, *shape)
        self.per_example = per_example
        self.mode: SamplingMode = "fixed"
        # The current draw is not part of the weights (published code: a plain attribute).
        self.delta: torch.Tensor | None = None
        self._generator: torch.Generator | None = None
        self._seed: int | None = None
        # Batched EOT: the batch holds `groups` stacked copies of the inputs, each copy gets
        # its own draw (set through the `eot_groups` context manager).
        self.groups = 1

    # ----------------------------------------------------------------- randomness control
    def manual_seed(self, seed: int) -> None:
        """Make the draws reproducible (the generator lives on the parameters' device)."""
        self._seed = int(seed)
        self._generator = None

    def _gen(self) -> torch.Generator | None:
        if self._seed is None:
            return None  # torch's global RNG
        dev = self.mu.device
        if self._generator is None or self._generator.device != dev:
            self._generator = torch.Generator(device=dev)
            self._generator.manual_seed(self._seed)
        return self._generator

    def generator_state(self) -> torch.Tensor | None:
        g = self._gen()
        return None if g is None else g.get_state()

    def set_generator_state(self, state: torch.Tensor) -> None:
        g = self._gen()
        if g is None:
            raise RuntimeError("set_generator_state needs manual_seed() first")
        g.set_state(state)

    def draw(self, batch: int = 1) -> torch.Tensor:
        """A fresh standard-normal delta of shape (batch or 1, *shape); does not store it."""
        n = batch if self.per_example else 1
        return torch.randn(
            (n, *self.shape), generator=self._gen(), device=self.mu.device, dtype=self.mu.dtype
        )

    def resample(self, batch: int | None = None) -> None:
        """Draw a new delta that stays fixed until the next call.

        With per-example draws the batch size is taken from the next forward if not given.
        """
        if self.per_example and batch is None:
            self.delta = None  # drawn lazily at the next forward, sized to its batch
        else:
            self.delta = self.draw(batch or 1)

    # ----------------------------------------------------------------- forward
    def weight(self, batch: int = 1) -> torch.Tensor:
        """The random weight W for the current mode (broadcastable to (batch, *shape))."""
        if self.mode == "mean":
            return self.mu
        if self.mode == "per_forward":
            delta = self.draw(batch)
        else:
            if self.delta is None or (self.per_example and self.delta.shape[0] != batch):
                if self.delta is not None:
                    raise RuntimeError(
                        f"per-example draw was made for batch {self.delta.shape[0]}, forward got {batch}; "
                        "call resample() for the new batch or use mode 'per_forward'"
                    )
                self.delta = self.draw(batch)
            delta = self.delta
        return self.mu + delta * self.sigma  # (1 or B, *shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, *shape)
        if self.groups > 1 and self.mode == "per_forward" and not self.per_example:
            k = self.groups
            xg = x.reshape(k, x.shape[0] // k, *self.shape)  # (k, B/k, *shape)
            w = (
                self.mu
                + torch.randn(
                    (k, 1, *self.shape), generator=self._gen(), device=x.device, dtype=self.mu.dtype
                )
                * self.sigma
            )  # (k, 1, *shape): one draw per copy
            return (xg * w.to(x.dtype)).reshape(x.shape)
        return x * self.weight(x.shape[0]).to(x.dtype)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, per_example={self.per_example}, mode={self.mode}"


class RandomConv2d(nn.Module):
    """A conv with random weights placed as in Table 4 of the paper.

    insertion: ``in_channels`` multiplies the conv's input, ``out_channels`` its output, ``both``
    does both (two independent random weights), ``filters`` multiplies the conv's kernel.
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        insertion: str,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        **rw_kwargs: float | bool,
    ) -> None:
        super().__init__()
        self.conv = conv
        self.insertion = insertion
        self.rw_in = RandomWeight(in_shape, **rw_kwargs) if insertion in ("in_channels", "both") else None
        self.rw_out = RandomWeight(out_shape, **rw_kwargs) if insertion in ("out_channels", "both") else None
        self.rw_filter: RandomWeight | None = None
        if insertion == "filters":
            if rw_kwargs.get("per_example"):
                raise ValueError("per-example draws are not supported for insertion 'filters'")
            # mu/sigma shaped (1, out, in, k, k): one multiplier per kernel element.
            self.rw_filter = RandomWeight(tuple(conv.weight.shape), **rw_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rw_in is not None:
            x = self.rw_in(x)
        if self.rw_filter is not None:
            w = self.conv.weight * self.rw_filter.weight()[0].to(x.dtype)  # (out, in, k, k)
            out = nn.functional.conv2d(
                x,
                w,
                self.conv.bias,
                self.conv.stride,
                self.conv.padding,
                self.conv.dilation,
                self.conv.groups,
            )
        else:
            out = self.conv(x)
        if self.rw_out is not None:
            out = self.rw_out(out)
        return out


# --------------------------------------------------------------------- model-wide helpers


def random_layers(model: nn.Module) -> list[RandomWeight]:
    """Every RandomWeight in the model, in module order."""
    return [m for m in model.modules() if isinstance(m, RandomWeight)]


def resample(model: nn.Module, batch: int | None = None) -> None:
    """Fresh fixed draw for every random layer (Algorithm 1/2's "re-sample delta")."""
    for m in random_layers(model):
        m.resample(batch)


@contextmanager
def sampling(model: nn.Module, mode: SamplingMode) -> Iterator[None]:
    """Temporarily switch every random layer to ``mode`` (restored on exit)."""
    layers = random_layers(model)
    before = [m.mode for m in layers]
    try:
        for m in layers:
            m.mode = mode
        yield
    finally:
        for m, b in zip(layers, before, strict=True):
            m.mode = b


@contextmanager
def eot_groups(model: nn.Module, k: int) -> Iterator[None]:
    """Inputs stacked as k copies get k independent draws per forward (batched EOT).

    Only meaningful in 'per_forward' mode; per-example layers are independent anyway.
    """
    layers = random_layers(model)
    try:
        for m in layers:
            m.groups = k
        yield
    finally:
        for m in layers:
            m.groups = 1


def seed_random_layers(model: nn.Module, seed: int) -> None:
    """Give each random layer its own reproducible generator (seed, seed+1, ...)."""
    for i, m in enumerate(random_layers(model)):
        m.manual_seed(seed + i)
