"""The CTRW random weight: W = mu + delta * sigma, multiplied element-wise into a feature map.

One implementation of ``ctrw.nn.randomness.RandomModule``; the sampling modes are the generic
ones (see there): ``"fixed"`` keeps delta until ``resample()`` (the paper's draws A and B),
``"per_forward"`` draws a fresh delta on every forward, ``"mean"`` is delta = 0, W = mu (the
deterministic surrogate for transfer attacks and the lemma bounds).

The layer is random in ``eval()`` too: torchattacks switches models to eval during attacks,
and a defense that turned off its randomness there would be evaluated as a different model.
``random_layers`` lists the CTRW layers only (they carry mu and sigma, which the constraint,
the bounds and the sigma statistics use); the model-wide controls cover every random module.
"""

from __future__ import annotations

import torch
from torch import nn

from ctrw.nn.randomness import (
    RandomModule,
    SamplingMode,
    eot_groups,
    resample,
    sampling,
    seed_random_layers,
)

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


class RandomWeight(RandomModule):
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
        super().__init__()  # mode 'fixed', groups 1, unseeded (RandomModule)
        self.shape = tuple(int(s) for s in shape)
        self.mu = nn.Parameter(torch.full((1, *self.shape), float(mu_init)))  # (1, *shape)
        self.sigma = nn.Parameter(torch.full((1, *self.shape), float(sigma_init)))  # (1, *shape)
        self.per_example = per_example
        # The current draw is not part of the weights (published code: a plain attribute).
        self.delta: torch.Tensor | None = None

    # ----------------------------------------------------------------- randomness control
    def noise_parameters(self) -> tuple[nn.Parameter, ...]:
        return (self.mu, self.sigma)

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
            # mu/sigma shaped (1, out, in, k, k): one multiplier per kernel element. Its draw is
            # one kernel for the whole batch, so stacked EOT copies cannot get one draw each.
            self.rw_filter = RandomWeight(tuple(conv.weight.shape), **rw_kwargs)
            self.rw_filter.grouped_draws = False

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


# --------------------------------------------------------------------- CTRW layers


def random_layers(model: nn.Module) -> list[RandomWeight]:
    """Every CTRW RandomWeight in the model, in module order (other random modules: ``random_modules``)."""
    return [m for m in model.modules() if isinstance(m, RandomWeight)]
