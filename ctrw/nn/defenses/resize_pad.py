"""``resize_pad``: random resizing and random zero padding of the input at inference.

Xie, Wang, Zhang, Ren, Yuille, "Mitigating adversarial effects through randomization", ICLR 2018
("EnsTrans" [44] in the paper's Table 3; public code: cihangxie/NIPS2017_adv_challenge_defense).
The paper resizes a 299 x 299 image to Rnd x Rnd, Rnd uniform in [310, 331), with nearest-neighbour
interpolation, then zero-pads it to 331 x 331 at a random offset (top in [0, 331 - Rnd], left
likewise), and classifies the result with an adversarially trained network; no extra training.

Our scaling to small images (``ResizePadConfig``): the same ratios, rounded. A side of s pixels
resizes to Rnd in [round(s * 310/299), round(s * 331/299)) and is padded to round(s * 331/299):
CIFAR's 32 -> Rnd in {33, 34}, padded to 35 (13 patterns); digits' 8 -> 8, padded to 9 (only the
4 padding offsets are random); ImageNet's 224 -> Rnd in [232, 248), padded to 248. The padding is
the zero of the normalized input (the data set's mean colour), as in the paper, whose padded
zeros are mid-grey in its [-1, 1] input range. The networks end in global average pooling, so
the larger input needs no change of the architecture.

Randomness control (``ctrw.nn.randomness``): a draw is (Rnd, top, left), one per batch as in the
published code. 'fixed' keeps the draw of the last ``resample()``; 'per_forward' draws anew on
every forward, and once per stacked copy under ``eot_groups``; 'mean' (the surrogate) is the
deterministic centre: no resize, centred padding. Training sees the plain network
(``in_training`` false, the paper's recipe): the transform is the identity while the module is
in train mode, so with ``attack.bn_mode`` 'eval' the training attack would see it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctrw.config import DefenseConfig
from ctrw.nn.models import CTRWNet
from ctrw.nn.randomness import RandomModule

__all__ = ["ResizePad", "build", "sizes"]


def sizes(side: int, min_ratio: float, max_ratio: float) -> tuple[int, int]:
    """(smallest Rnd, padded side) for inputs of ``side`` pixels; Rnd ranges over [low, padded)."""
    out = max(round(side * max_ratio), side + 1)
    low = min(max(round(side * min_ratio), side), out - 1)
    return low, out


class ResizePad(RandomModule):
    """Nearest-neighbour resize to a random Rnd, then padding with ``fill`` to a fixed side.

    Args:
        fill: the padding value per channel, shape (1, C, 1, 1) (the data set mean: zero after
            normalization).
        min_ratio, max_ratio: see ``sizes``.
        in_training: randomize in train mode too (default: identity in train mode).
    """

    def __init__(
        self, fill: torch.Tensor, *, min_ratio: float, max_ratio: float, in_training: bool = False
    ) -> None:
        super().__init__()
        self.register_buffer("fill", fill.detach().clone().reshape(1, -1, 1, 1), persistent=False)
        self.min_ratio, self.max_ratio = float(min_ratio), float(max_ratio)
        self.in_training = in_training
        self.fixed: tuple[int, int, int] | None = None  # the fixed (Rnd, top, left)

    def _draw_device(self) -> torch.device:
        return torch.device("cpu")  # integers used on the host: no device round trip

    def draw(self, side: int) -> tuple[int, int, int]:
        """A fresh (Rnd, top, left) for inputs of ``side`` pixels."""
        low, out = sizes(side, self.min_ratio, self.max_ratio)
        g = self._gen()
        rnd = low + int(torch.randint(out - low, (1,), generator=g))
        top, left = (int(v) for v in torch.randint(out - rnd + 1, (2,), generator=g))
        return rnd, top, left

    def resample(self, batch: int | None = None) -> None:
        self.fixed = None  # drawn at the next forward, which knows the input size

    def _transform(self, x: torch.Tensor, rnd: int, top: int, left: int, out: int) -> torch.Tensor:
        if rnd != x.shape[-1]:
            x = F.interpolate(x, size=(rnd, rnd), mode="nearest")  # (B, C, Rnd, Rnd)
        fill = self.fill.to(x.dtype)
        return F.pad(x - fill, (left, out - rnd - left, top, out - rnd - top)) + fill  # (B, C, out, out)

    # Eager under torch.compile: the draw is a host integer, and a compiled graph specialised on
    # it would recompile for every new draw (and give up after dynamo's cache limit).
    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, s, s) in [0, 1]
        if self.training and not self.in_training:
            return x
        side = x.shape[-1]
        if x.shape[-2] != side:
            raise ValueError(f"resize_pad expects square images, got {tuple(x.shape[-2:])}")
        _, out = sizes(side, self.min_ratio, self.max_ratio)
        if self.mode == "mean":
            c = (out - side) // 2
            return self._transform(x, side, c, c, out)
        if self.mode == "per_forward":
            k = self.groups if self.groups > 1 and x.shape[0] % self.groups == 0 else 1
            chunks = [self._transform(xc, *self.draw(side), out) for xc in x.chunk(k)]  # one draw per copy
            return torch.cat(chunks) if k > 1 else chunks[0]
        if self.fixed is None:
            self.fixed = self.draw(side)
        return self._transform(x, *self.fixed, out)

    def extra_repr(self) -> str:
        return f"min_ratio={self.min_ratio:.4f}, max_ratio={self.max_ratio:.4f}, mode={self.mode}"


def build(model: CTRWNet, cfg: DefenseConfig) -> None:
    """Put the random resize-and-pad in front of the network (padding = the data set mean)."""
    c = cfg.resize_pad
    model.input_defense = ResizePad(
        model.mean, min_ratio=c.min_ratio, max_ratio=c.max_ratio, in_training=c.in_training
    )
