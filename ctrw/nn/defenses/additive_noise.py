"""``additive_noise``: Gaussian noise on the input, in training and at inference.

Li, Chen, Wang, Carin, "Certified adversarial robustness with additive noise", NeurIPS 2019
("Additive Noise" [15] in the paper's Table 3). The network classifies x + e, e ~ N(0, s^2 I),
with x in [0, 1] (pixel units, before the data set normalization); it is trained on noisy inputs
(here: the variant's adversarial training, whose forwards all see the noise; Li et al. add
stability training, which we do not). ``defense.additive_noise.std`` is s.

Randomness control (``ctrw.nn.randomness``): a draw is one noise image per example.
'fixed' keeps the noise of the last ``resample()`` (drawn at the next forward, sized to its
batch; a forward of fewer rows, e.g. the survivors AutoAttack keeps attacking, uses the first
rows, one of more rows extends the draw); 'per_forward' draws new noise on every forward
(stacked EOT copies get independent noise automatically); 'mean' (the surrogate) adds no noise.
"""

from __future__ import annotations

import torch

from ctrw.config import DefenseConfig
from ctrw.nn.models import CTRWNet
from ctrw.nn.randomness import RandomModule

__all__ = ["InputNoise", "build"]


class InputNoise(RandomModule):
    """x + std * N(0, I), one independent noise image per example.

    Args:
        std: noise standard deviation (pixel units of images in [0, 1]).
    """

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = float(std)
        # Follows the model's device, so the seeded generator lives where the draws are made.
        self.register_buffer("anchor", torch.zeros(0), persistent=False)
        self.noise: torch.Tensor | None = None  # the fixed draw, (rows, C, H, W), standard normal

    def resample(self, batch: int | None = None) -> None:
        # Drawn lazily: the shape of an example is known at the next forward.
        self.noise = None

    def _fixed_noise(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0] // max(self.groups, 1)  # stacked copies share the fixed draw
        have = 0 if self.noise is None else self.noise.shape[0]
        if self.noise is not None and self.noise.shape[1:] != x.shape[1:]:
            raise RuntimeError(
                f"fixed noise was drawn for inputs {tuple(self.noise.shape[1:])}, got {tuple(x.shape[1:])}"
            )
        if have < rows:
            more = torch.randn((rows - have, *x.shape[1:]), generator=self._gen(), device=x.device)
            self.noise = more if self.noise is None else torch.cat([self.noise, more])
        assert self.noise is not None
        noise = self.noise[:rows]  # (rows, C, H, W)
        return noise.repeat(x.shape[0] // rows, 1, 1, 1) if x.shape[0] != rows else noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1]
        if self.mode == "mean":
            return x
        if self.mode == "per_forward":
            noise = torch.randn(x.shape, generator=self._gen(), device=x.device)
        else:
            noise = self._fixed_noise(x)
        return x + self.std * noise.to(x.dtype)

    def extra_repr(self) -> str:
        return f"std={self.std}, mode={self.mode}"


def build(model: CTRWNet, cfg: DefenseConfig) -> None:
    """Put the input noise in front of the network (before the data set normalization)."""
    model.input_defense = InputNoise(cfg.additive_noise.std)
