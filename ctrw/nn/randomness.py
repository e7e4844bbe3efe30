"""One control for every source of randomness in a network: ``RandomModule`` and the model-wide helpers.

A randomized defense is evaluated honestly only if the evaluation decides which draw the attacker
sees and which draw judges the result. Every module with randomness (CTRW's random weight, input
noise, random resize-and-pad, random normalization paths, weight-noise injection) is a
``RandomModule`` and obeys the same three sampling modes:

- ``"fixed"`` (default): ``resample()`` makes a draw that stays until the next ``resample()``
  (the paper's Algorithms 1 and 2: draw A for the attack, draw B for the update / prediction).
- ``"per_forward"``: a fresh draw on every forward call (the deployed model an adaptive
  attacker faces).
- ``"mean"``: the deterministic surrogate of the defense (CTRW: W = mu; input noise: no noise;
  each defense documents its own). Transfer attacks and the lemma bounds use it.

Every module draws from its own seedable generator (``manual_seed``; torch's global RNG until
seeded), so evaluations reseed all of them per batch and stage (``seed_random_layers``). Under
``eot_groups(model, k)`` a batch holds k stacked copies of the inputs and, in 'per_forward'
mode, each copy gets an independent draw (batched EOT and K-draw scoring); a module that cannot
do that sets ``grouped_draws = False`` and callers then use one forward per draw.

A module is random in ``eval()`` too: torchattacks switches models to eval during attacks, and a
defense that turned off its randomness there would be evaluated as a different model. A defense
that is random at inference only says so itself (``ctrw.nn.defenses.resize_pad``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

__all__ = [
    "RandomModule",
    "SamplingMode",
    "eot_groups",
    "grouped_draws_supported",
    "random_modules",
    "resample",
    "sampling",
    "seed_random_layers",
]

SamplingMode = Literal["fixed", "per_forward", "mean"]


class RandomModule(nn.Module):
    """Base class of every module with randomness (see the module docstring for the contract).

    Subclasses implement ``resample`` and a ``forward`` that honours ``self.mode`` and
    ``self.groups``, and draw with ``self._gen(device)`` so that seeding reaches them.

    Attributes:
        mode: the sampling mode ('fixed', 'per_forward', 'mean').
        groups: number of stacked input copies that get one draw each ('per_forward' only).
        grouped_draws: whether ``groups`` is honoured (False: one draw per forward only).
    """

    grouped_draws: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.mode: SamplingMode = "fixed"
        self.groups = 1
        self._generator: torch.Generator | None = None
        self._seed: int | None = None

    # ----------------------------------------------------------------- the draw's generator
    def manual_seed(self, seed: int) -> None:
        """Make the draws reproducible (the generator is created on the device of the draws)."""
        self._seed = int(seed)
        self._generator = None

    def _draw_device(self) -> torch.device:
        """Where draws live when no input says so: the first parameter's or buffer's device."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return torch.device("cpu")

    def _gen(self, device: torch.device | None = None) -> torch.Generator | None:
        """The seeded generator on ``device`` (None: torch's global RNG, before ``manual_seed``)."""
        if self._seed is None:
            return None
        dev = self._draw_device() if device is None else torch.device(device)
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

    # ----------------------------------------------------------------- what subclasses provide
    def resample(self, batch: int | None = None) -> None:
        """Make a new fixed draw (used in 'fixed' mode until the next call)."""
        raise NotImplementedError

    def noise_parameters(self) -> tuple[nn.Parameter, ...]:
        """Trainable parameters of the randomness itself (an optimizer group of their own)."""
        return ()


# --------------------------------------------------------------------- model-wide helpers


def random_modules(model: nn.Module) -> list[RandomModule]:
    """Every RandomModule in the model, in module order."""
    return [m for m in model.modules() if isinstance(m, RandomModule)]


def resample(model: nn.Module, batch: int | None = None) -> None:
    """Fresh fixed draw for every random module (Algorithm 1/2's "re-sample delta")."""
    for m in random_modules(model):
        m.resample(batch)


@contextmanager
def sampling(model: nn.Module, mode: SamplingMode) -> Iterator[None]:
    """Temporarily switch every random module to ``mode`` (restored on exit)."""
    layers = random_modules(model)
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

    Only meaningful in 'per_forward' mode (see ``grouped_draws_supported``).
    """
    layers = random_modules(model)
    try:
        for m in layers:
            m.groups = k
        yield
    finally:
        for m in layers:
            m.groups = 1


def grouped_draws_supported(model: nn.Module) -> bool:
    """Whether k stacked copies of a batch get k independent draws in one forward (``eot_groups``)."""
    return all(m.grouped_draws for m in random_modules(model))


def seed_random_layers(model: nn.Module, seed: int) -> None:
    """Give each random module its own reproducible generator (seed, seed+1, ...)."""
    for i, m in enumerate(random_modules(model)):
        m.manual_seed(seed + i)
