"""Networks with a CTRW random weight at a chosen position (other defenses: ``ctrw.nn.defenses``).

Every model is a sequence of stages (stem, residual groups, head). Position p puts the random
weight in front of stage p, which reproduces the published positions (see RandomWeightConfig).
Inputs are images in [0, 1]; normalization is the first operation inside the model so that
attack budgets are in pixel units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.config import RandomWeightConfig
from ctrw.nn.random_weight import RandomConv2d, RandomWeight

__all__ = ["CTRWNet", "Head", "MODEL_BUILDERS", "create_model"]


class Head(nn.Module):
    """Global average pool + linear classifier (the last layer of Lemma 2)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class CTRWNet(nn.Module):
    """normalize -> stages, with an optional random weight in front of stage ``position``."""

    def __init__(
        self,
        stages: Sequence[nn.Module],
        *,
        mean: Sequence[float],
        std: Sequence[float],
        input_shape: tuple[int, int, int],
        random_weight: RandomWeightConfig | None = None,
    ) -> None:
        super().__init__()
        c = input_shape[0]
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).reshape(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).reshape(1, c, 1, 1))
        self.stages = nn.ModuleList(stages)
        self.input_shape = tuple(input_shape)
        self.position: int | None = None
        self.random: RandomWeight | None = None
        # A defense acting on the input image in [0, 1] (``ctrw.nn.defenses``), before normalization.
        self.input_defense: nn.Module | None = None
        if random_weight is not None:
            self._insert(random_weight)

    @property
    def head(self) -> Head:
        head = self.stages[-1]
        assert isinstance(head, Head)
        return head

    def _stage_input_shapes(self) -> list[tuple[int, ...]]:
        """Feature-map shape (without batch) in front of every stage, from one dummy forward."""
        shapes: list[tuple[int, ...]] = []
        x = torch.zeros((1, *self.input_shape))
        was_training = self.training
        self.eval()
        with torch.no_grad():
            x = (x - self.mean) / self.std
            for stage in self.stages:
                shapes.append(tuple(x.shape[1:]))
                x = stage(x)
        self.train(was_training)
        return shapes

    def _insert(self, cfg: RandomWeightConfig) -> None:
        if cfg.position >= len(self.stages):
            raise ValueError(f"position {cfg.position} out of range 0..{len(self.stages) - 1}")
        kw = {"mu_init": cfg.mu_init, "sigma_init": cfg.sigma_init, "per_example": cfg.per_example}
        self.position = cfg.position
        if cfg.insertion == "in_channels":
            shape = self._stage_input_shapes()[cfg.position]
            self.random = RandomWeight(shape, **kw)
            return
        # out_channels / both / filters wrap the first conv of the stem (Table 4).
        stem = self.stages[0]
        conv = getattr(stem, "conv", None)
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"insertion '{cfg.insertion}' needs a stem with a 'conv' attribute")
        seen: dict[str, tuple[int, ...]] = {}
        handle = conv.register_forward_hook(
            lambda m, i, o: seen.update(inp=tuple(i[0].shape[1:]), out=tuple(o.shape[1:]))
        )
        self._stage_input_shapes()
        handle.remove()
        stem.conv = RandomConv2d(conv, cfg.insertion, seen["inp"], seen["out"], **kw)
        self.position = None  # the randomness lives inside the stem now

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features x^{n-1} (input of the last linear layer), shape (B, C)."""
        if self.input_defense is not None:
            x = self.input_defense(x)
        x = self.normalize(x)
        for i, stage in enumerate(self.stages[:-1]):
            if i == self.position and self.random is not None:
                x = self.random(x)
            x = stage(x)
        if self.position == len(self.stages) - 1 and self.random is not None:
            x = self.random(x)
        return self.head.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> logits (B, K)
        return self.head.fc(self.forward_features(x))


# --------------------------------------------------------------------- CIFAR ResNet18


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ConvBnRelu(nn.Module):
    """Stem: conv -> bn -> relu (``conv`` is the attribute RandomConv2d wraps)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _resnet18_stages(in_ch: int, num_classes: int, width: float) -> list[nn.Module]:
    w = max(1, round(64 * width))
    widths = [w, 2 * w, 4 * w, 8 * w]
    stages: list[nn.Module] = [ConvBnRelu(in_ch, w)]
    cin = w
    for i, cout in enumerate(widths):
        stride = 1 if i == 0 else 2
        stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
        cin = cout
    stages.append(Head(cin, num_classes))
    return stages  # positions 0..5


# --------------------------------------------------------------------- WideResNet-34-10


class WideBlock(nn.Module):
    """Pre-activation wide basic block (Zagoruyko & Komodakis), as used by TRADES/MART code."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WrnStem(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _wrn_stages(
    in_ch: int, num_classes: int, width: float, depth: int = 34, widen: int = 10
) -> list[nn.Module]:
    n = (depth - 4) // 6
    ch = [max(1, round(c * width)) for c in (16, 16 * widen, 32 * widen, 64 * widen)]

    def group(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            *[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        )

    return [
        WrnStem(in_ch, ch[0]),  # position 0: in front of conv1
        group(ch[0], ch[1], 1),  # 1: after conv1
        group(ch[1], ch[2], 2),  # 2: after block1
        nn.Sequential(group(ch[2], ch[3], 2), nn.BatchNorm2d(ch[3]), nn.ReLU()),  # 3: after block2
        Head(ch[3], num_classes),  # 4: after the final bn+relu
    ]


# --------------------------------------------------------------------- ImageNet ResNet50


class TorchvisionStem(nn.Module):
    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, maxpool: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.maxpool = conv, bn, maxpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(F.relu(self.bn(self.conv(x))))


def _resnet50_stages(in_ch: int, num_classes: int, width: float) -> list[nn.Module]:
    from torchvision.models import resnet50

    if in_ch != 3 or width != 1.0:
        raise ValueError("resnet50 is torchvision's architecture: 3 input channels and width 1.0")
    net = resnet50(weights=None, num_classes=num_classes)
    head = Head(net.fc.in_features, num_classes)
    head.fc = net.fc
    return [
        TorchvisionStem(net.conv1, net.bn1, net.maxpool),
        net.layer1,
        net.layer2,
        net.layer3,
        net.layer4,
        head,
    ]


# --------------------------------------------------------------------- small CNN (tests, demos)


def _small_cnn_stages(in_ch: int, num_classes: int, width: float) -> list[nn.Module]:
    w = max(2, round(32 * width))
    return [
        ConvBnRelu(in_ch, w),
        ConvBnRelu(w, 2 * w, stride=2),
        ConvBnRelu(2 * w, 4 * w, stride=2),
        Head(4 * w, num_classes),
    ]


MODEL_BUILDERS: dict[str, Callable[[int, int, float], list[nn.Module]]] = {
    "resnet18": _resnet18_stages,
    "wrn34_10": _wrn_stages,
    "resnet50": _resnet50_stages,
    "small_cnn": _small_cnn_stages,
}


def create_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: Sequence[float],
    std: Sequence[float],
    width: float = 1.0,
    random_weight: RandomWeightConfig | None = None,
) -> CTRWNet:
    """Build a model by name. ``random_weight=None`` gives the baseline network.

    Raises:
        ValueError: unknown model name or impossible random-weight placement.
    """
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model '{name}'; choose one of {sorted(MODEL_BUILDERS)}")
    stages = MODEL_BUILDERS[name](input_shape[0], num_classes, width)
    return CTRWNet(stages, mean=mean, std=std, input_shape=input_shape, random_weight=random_weight)
