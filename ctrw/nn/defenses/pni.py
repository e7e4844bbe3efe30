"""``pni``: parametric noise injection on the weights, with a trainable noise scale per layer.

He, Rakin, Fan, "Parametric noise injection: trainable randomness to improve deep neural network
robustness against adversarial attack", CVPR 2019. Every convolution and linear layer computes
with w + alpha * std(w) * eta, eta ~ N(0, I) of the weight's shape, where std(w) is the standard
deviation of that layer's weights (treated as a constant, as in the published code) and alpha is
one trainable scalar per layer ("layerwise" PNI-W), initialised to 0.25. alpha is trained jointly
with the weights by PGD adversarial training and is exempt from weight decay (which would drive
it to zero): the variant's recipe sets ``optim.weight_decay_on_random`` false, and the optimizer
puts every random module's ``noise_parameters`` in that group. The noise is on in training and
inference. PNI is the closest relative of CTRW and is reported to lose much of its robustness
under EOT attacks.

Randomness control (``ctrw.nn.randomness``): a draw is eta of every layer, one per batch.
'fixed' keeps eta of the last ``resample()``; 'per_forward' draws anew on every forward, and once
per stacked copy under ``eot_groups`` (the copies are computed one by one with their own weights);
'mean' is the surrogate alpha * 0: the noise-free weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.config import DefenseConfig
from ctrw.nn.models import CTRWNet
from ctrw.nn.randomness import RandomModule

__all__ = ["NoisyWeight", "build"]


class NoisyWeight(RandomModule):
    """A conv or linear layer whose weight gets alpha * std(w) * eta added on every forward.

    Args:
        layer: the wrapped ``nn.Conv2d`` or ``nn.Linear`` (its weight and bias are used as they are).
        alpha_init: initial noise scale alpha.
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear, alpha_init: float) -> None:
        super().__init__()
        self.layer = layer
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))  # () one scale per layer
        self.eta: torch.Tensor | None = None  # the fixed draw, the weight's shape

    def noise_parameters(self) -> tuple[nn.Parameter, ...]:
        return (self.alpha,)

    def draw(self) -> torch.Tensor:
        w = self.layer.weight
        return torch.randn(w.shape, generator=self._gen(), device=w.device, dtype=w.dtype)

    def resample(self, batch: int | None = None) -> None:
        self.eta = self.draw()

    def _forward_with(self, x: torch.Tensor, eta: torch.Tensor | None) -> torch.Tensor:
        w = self.layer.weight
        if eta is not None:
            w = w + self.alpha * w.detach().std() * eta
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        conv = self.layer
        return F.conv2d(x, w, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return self._forward_with(x, None)
        if self.mode == "per_forward":
            k = self.groups if self.groups > 1 and x.shape[0] % self.groups == 0 else 1
            if k == 1:
                return self._forward_with(x, self.draw())
            return torch.cat([self._forward_with(xc, self.draw()) for xc in x.chunk(k)])  # one draw per copy
        if self.eta is None:
            self.eta = self.draw()
        return self._forward_with(x, self.eta)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


def build(model: CTRWNet, cfg: DefenseConfig) -> None:
    """Wrap every Conv2d and Linear of ``model`` in a NoisyWeight (in place)."""
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for name, layer in targets:
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, NoisyWeight(layer, cfg.pni.alpha_init))
