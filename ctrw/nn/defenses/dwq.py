"""``dwq``: Double-Win Quant, random precision training and inference.

Fu, Yu, Li, Chandra, Lin, "Double-Win Quant: aggressively winning robustness of quantized deep
neural networks via random precision training and inference", ICML 2021 (DWQ [43] in the paper's
Table 3; public code: RICE-EIC / GATECH-EIC Double-Win-Quant). Adversarial attacks transfer poorly
between the precisions of one network, so the network computes at a bit-width drawn at random
from a candidate set: in every training iteration (RPT) and on every inference (RPI). Weights and
the activations entering the quantized layers are quantized to that bit-width; with switchable
BatchNorm every normalization keeps its own statistics and affine parameters per precision.

What we took from the published code (CIFAR/README.md, CIFAR/train.py, CIFAR/model/quantize.py,
CIFAR/model/preact_resnet.py):

- candidate set: every bit-width from 4 to 16, drawn uniformly (``--num_bits_schedule 4 16`` for
  training, ``--num_bits_list 4 5 ... 16`` for evaluation): ``dwq.bits``;
- one precision for the whole network per draw, and switchable BatchNorm (``--switchable_bn``):
  every ``BatchNorm2d`` becomes one BatchNorm per candidate precision (``dwq.switchable_bn``);
- uniform asymmetric min-max quantization with a straight-through estimator: weights per output
  channel, activations entering the layer per tensor (unsigned, zero point = the minimum);
- the first convolution, the residual shortcut convolutions and the classifier stay in full
  precision (``full_prec=True`` / a plain ``nn.Linear`` in their ResNets).

Our choices: activation ranges are the min and max of each example (theirs: the batch's, kept as
running averages for inference), so an example's output never depends on the rest of its batch
and stacked EOT copies stay independent; no state beyond the weights. Biases stay in full
precision (the quantized layers of our networks have none). The published RPT draws one
precision per iteration for both the attack and the update; the variant's training step draws
the attack's precision and the update's independently (draw A, draw B), as for every defense.

Randomness control (``ctrw.nn.randomness``): the draw lives in one ``PrecisionDraw`` (a child of
the network, ``model.dwq``) that every quantized layer and switchable BatchNorm reads. 'fixed'
keeps the bit-width of the last ``resample()``; 'per_forward' draws anew on every forward of the
network (a forward pre-hook), and once per stacked copy under ``eot_groups`` (the layers compute
the copies one by one); 'mean' is the surrogate: the highest precision of the set (16 bits by
default) with its BatchNorm, not full precision, since with switchable BatchNorm the network has
no full-precision statistics. A stage called outside ``model(x)`` in 'per_forward' mode reuses
the network's last draw.
"""

from __future__ import annotations

import abc
import copy

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.config import DefenseConfig
from ctrw.nn.models import CTRWNet
from ctrw.nn.randomness import RandomModule

__all__ = ["PrecisionDraw", "QuantizedLayer", "SwitchableBatchNorm", "build", "fake_quantize"]


class _MinMaxQuantize(torch.autograd.Function):
    """Forward: the quantized tensor, exactly on its grid; backward: the identity (straight through)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, bits: int) -> torch.Tensor:
        dims = tuple(range(1, x.dim()))
        lo = x.amin(dim=dims, keepdim=True)
        hi = x.amax(dim=dims, keepdim=True)
        scale = ((hi - lo) / (2**bits - 1)).clamp_min(1e-8)
        return torch.round((x - lo) / scale) * scale + lo

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def fake_quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Uniform min-max quantization of every slice x[i] to ``bits`` bits, straight-through gradient.

    Each slice along dim 0 (an output channel of a weight, an example of an activation) gets its
    own range [min, max] split into 2^bits - 1 steps; the gradient passes as if unquantized.
    """
    return _MinMaxQuantize.apply(x, bits)


class PrecisionDraw(RandomModule):
    """The network's bit-width draw, shared by all its quantized layers and switchable BatchNorms.

    Args:
        bits: the candidate bit-widths, ascending; the last one is the surrogate's.
    """

    def __init__(self, bits: list[int]) -> None:
        super().__init__()
        self.bits = tuple(sorted(set(bits)))
        if len(self.bits) < 2:
            raise ValueError("dwq needs at least two candidate precisions")
        self.fixed: int | None = None  # the fixed draw
        self._forward: list[int] | None = None  # this forward's draws ('per_forward')

    def _draw_device(self) -> torch.device:
        return torch.device("cpu")  # a bit-width used on the host: no device round trip

    def draw(self) -> int:
        """A fresh bit-width from the set."""
        return self.bits[int(torch.randint(len(self.bits), (1,), generator=self._gen()))]

    def resample(self, batch: int | None = None) -> None:
        self.fixed = self.draw()

    def new_forward(self) -> None:
        """A new forward of the network begins: 'per_forward' draws again."""
        self._forward = None

    def precisions(self, batch: int) -> list[int]:
        """The bit-width of every stacked copy of a batch of ``batch`` rows (one entry: no copies)."""
        if self.mode == "mean":
            return [self.bits[-1]]
        if self.mode == "per_forward":
            if self._forward is None:
                k = self.groups if self.groups > 1 and batch % self.groups == 0 else 1
                self._forward = [self.draw() for _ in range(k)]
            return self._forward
        if self.fixed is None:
            self.fixed = self.draw()
        return [self.fixed]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x  # the draw is read by the layers; the network never calls this module

    def extra_repr(self) -> str:
        return f"mode={self.mode}, bits={list(self.bits)}, fixed={self.fixed}"


class _ReadsDraw(nn.Module, abc.ABC):
    """A module that computes at the network's drawn precision (the draw is shared, not a child)."""

    def __init__(self, draw: PrecisionDraw) -> None:
        super().__init__()
        object.__setattr__(self, "_draw", draw)  # not registered: model.dwq owns it

    @abc.abstractmethod
    def _at(self, bits: int, x: torch.Tensor) -> torch.Tensor:
        """The module's output for ``x`` at ``bits`` bits (each subclass says how)."""

    # Eager under torch.compile: the bit-width is a host integer, and a graph specialised on it
    # would recompile for every new draw.
    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = self._draw.precisions(x.shape[0])
        if len(bits) == 1:
            return self._at(bits[0], x)
        return torch.cat([self._at(b, xc) for b, xc in zip(bits, x.chunk(len(bits)), strict=True)])


class QuantizedLayer(_ReadsDraw):
    """A conv or linear layer computing with its weights and its input quantized to the drawn precision."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, draw: PrecisionDraw) -> None:
        super().__init__(draw)
        self.layer = layer

    def _at(self, bits: int, x: torch.Tensor) -> torch.Tensor:
        w, xq = fake_quantize(self.layer.weight, bits), fake_quantize(x, bits)
        if isinstance(self.layer, nn.Linear):
            return F.linear(xq, w, self.layer.bias)
        c = self.layer
        return F.conv2d(xq, w, c.bias, c.stride, c.padding, c.dilation, c.groups)


class SwitchableBatchNorm(_ReadsDraw):
    """One BatchNorm per candidate precision (copies of the original), used at that precision."""

    def __init__(self, bn: nn.BatchNorm2d, draw: PrecisionDraw) -> None:
        super().__init__(draw)
        self.bns = nn.ModuleList(copy.deepcopy(bn) for _ in draw.bits)
        self.index = {b: i for i, b in enumerate(draw.bits)}

    def _at(self, bits: int, x: torch.Tensor) -> torch.Tensor:
        return self.bns[self.index[bits]](x)


@torch.compiler.disable
def _new_forward(model: nn.Module, args: tuple[object, ...]) -> None:
    model.dwq.new_forward()


def _full_precision(name: str, first_conv: str, classifier: str) -> bool:
    """The published code keeps the first conv, the shortcuts and the classifier unquantized."""
    return name in (first_conv, classifier) or "shortcut" in name or "downsample" in name


def build(model: CTRWNet, cfg: DefenseConfig) -> None:
    """Quantize the conv and linear layers of ``model`` at a random precision (in place).

    Adds ``model.dwq`` (the draw) and a forward pre-hook that starts each forward's draw.
    """
    c = cfg.dwq
    draw = PrecisionDraw(c.bits)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    first, last = (convs[0] if convs else ""), (linears[-1] if linears else "")
    targets = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and not _full_precision(name, first, last)
    ]
    if not targets:
        raise ValueError("dwq needs a network with convolutions beyond the first")
    for name, layer in targets:
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, QuantizedLayer(layer, draw))
    if c.switchable_bn:
        bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
        for name, bn in bns:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, SwitchableBatchNorm(bn, draw))
    model.dwq = draw
    model.register_forward_pre_hook(_new_forward)
