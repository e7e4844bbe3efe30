"""``rna``: random normalization aggregation.

Dong, Chen, Wang, Xu, "Random normalization aggregation for adversarial defense", NeurIPS 2022
(RNA [14] in the paper's Table 3; public code: UniSerj/Random-Norm-Aggregation). Every
normalization layer holds a pool of normalizations; each forward samples one from every pool,
independently per layer (the published "mixed" setting), i.e. a random path through the network.
The published CIFAR recipe (``--random_type bn --gn_type gnr --num_group_schedule 0 0 --mixed``)
pools BatchNorm with a GroupNorm of one channel per group; training is PGD-10 adversarial
training with one random path for the attack and a fresh one for the update, which is what the
variant's training step does with any random module (draw A, draw B).

Here every ``BatchNorm2d`` of the network becomes a ``RandomNorm`` whose pool is the original
BatchNorm (if ``rna.batch_norm``) and one GroupNorm per entry of ``rna.group_sizes`` (channels
per group; the number of groups is rounded to a divisor of the channels). Every normalization
has its own affine parameters and, for BatchNorm, running statistics (updated only when drawn).

Randomness control (``ctrw.nn.randomness``): a draw is the pool index of every layer, one per
batch. 'fixed' keeps the index of the last ``resample()``; 'per_forward' draws anew on every
forward, and once per stacked copy under ``eot_groups`` (normalizations in eval mode act per
example, so copies do not mix); 'mean' is the surrogate: a fixed path, the pool's first entry
(BatchNorm with the published pool) in every layer. RNA has no "mean" model; the BatchNorm path
is the path of a standard network, and transfer from it is one of several possible surrogates.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ctrw.config import DefenseConfig
from ctrw.nn.models import CTRWNet
from ctrw.nn.randomness import RandomModule

__all__ = ["RandomNorm", "build"]


class RandomNorm(RandomModule):
    """One normalization drawn from ``pool`` per forward (see the module docstring).

    Args:
        pool: the normalizations, each mapping (B, C, H, W) to (B, C, H, W); entry 0 is the
            surrogate's.
    """

    def __init__(self, pool: list[nn.Module]) -> None:
        super().__init__()
        if len(pool) < 2:
            raise ValueError("a random normalization needs at least two normalizations")
        self.pool = nn.ModuleList(pool)
        self.index: int | None = None  # the fixed draw

    def _draw_device(self) -> torch.device:
        return torch.device("cpu")  # an index used on the host: no device round trip

    def draw(self) -> int:
        """A fresh pool index."""
        return int(torch.randint(len(self.pool), (1,), generator=self._gen()))

    def resample(self, batch: int | None = None) -> None:
        self.index = self.draw()

    # Eager under torch.compile: the draw is a host integer, and a compiled graph specialised on
    # it would recompile for every new draw (and give up after dynamo's cache limit).
    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if self.mode == "mean":
            return self.pool[0](x)
        if self.mode == "per_forward":
            k = self.groups if self.groups > 1 and x.shape[0] % self.groups == 0 else 1
            if k == 1:
                return self.pool[self.draw()](x)
            return torch.cat([self.pool[self.draw()](xc) for xc in x.chunk(k)])  # one path per copy
        if self.index is None:
            self.index = self.draw()
        return self.pool[self.index](x)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, index={self.index}"


def _group_norm(channels: int, per_group: int, like: nn.BatchNorm2d) -> nn.GroupNorm:
    groups = math.gcd(channels, max(1, channels // per_group))
    return nn.GroupNorm(groups, channels, eps=like.eps, affine=True)


def build(model: CTRWNet, cfg: DefenseConfig) -> None:
    """Replace every BatchNorm2d of ``model`` by a RandomNorm pool (in place)."""
    c = cfg.rna
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if not targets:
        raise ValueError("rna needs a network with BatchNorm2d layers")
    for name, bn in targets:
        pool: list[nn.Module] = [bn] if c.batch_norm else []
        pool += [_group_norm(bn.num_features, s, bn) for s in c.group_sizes]
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, RandomNorm(pool))
