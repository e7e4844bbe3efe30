"""The network, where its random weight sits, and the settings of the other randomized defenses."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ctrw.catalog import MODEL_NAMES, MODELS
from ctrw.config.common import StrictModel

__all__ = [
    "AdditiveNoiseConfig",
    "DWQConfig",
    "DefenseConfig",
    "ModelConfig",
    "PNIConfig",
    "RNAConfig",
    "RandomWeightConfig",
    "ResizePadConfig",
]

_POSITIONS = ", ".join(f"{m.name} 0..{m.max_position}" for m in MODELS.values())


class RandomWeightConfig(StrictModel):
    """Where and how the random weight W = mu + delta * sigma enters the network.

    Positions follow the published code; ``ctrw.catalog.MODELS`` lists what sits in front of each
    position of each model (0 = the normalized input image, i.e. the in-channels of conv1).
    """

    position: int = Field(
        0,
        ge=0,
        le=max(m.max_position for m in MODELS.values()),
        description="where the random weight sits: 0 = the input image (conv1's in-channels), higher = "
        f"after later blocks ({_POSITIONS})",
    )
    # Table 4: in_channels (paper's best), out_channels, both, filters. Only in_channels exists
    # at positions other than 0, where there is no single conv to wrap.
    insertion: Literal["in_channels", "out_channels", "both", "filters"] = Field(
        "in_channels",
        description="Table 4: which part of the first conv carries the random weight (in_channels: the paper's best); the others need position 0",
    )
    mu_init: float = Field(1.0, description="initial mean mu of the random weight")
    sigma_init: float = Field(
        1.0,
        ge=0.0,
        description="initial standard deviation sigma of the random weight (the constraint then moves sum(sigma) into [A, B])",
    )
    per_example: bool = Field(
        False,
        description="true: a fresh draw per example; false (published code): one draw shared by the mini-batch",
    )

    @model_validator(mode="after")
    def _insertion_needs_position_zero(self) -> RandomWeightConfig:
        if self.insertion != "in_channels" and self.position != 0:
            raise ValueError(
                f"insertion '{self.insertion}' wraps the first conv and needs position 0 "
                f"(got position {self.position}); use insertion 'in_channels' elsewhere"
            )
        return self


class ModelConfig(StrictModel):
    name: Literal[MODEL_NAMES] = Field(  # type: ignore[valid-type]
        "resnet18", description="the network (resnet50: ImageNet; small_cnn: digits and tests)"
    )
    width: float = Field(
        1.0,
        gt=0.0,
        le=4.0,
        description="channel multiplier for tests and CPU demos (1.0 = the paper's architecture)",
    )

    @model_validator(mode="after")
    def _torchvision_width(self) -> ModelConfig:
        if MODELS[self.name].rgb_only and self.width != 1.0:
            raise ValueError(f"{self.name} is torchvision's architecture: width must be 1.0")
        return self


# --------------------------------------------------------------------------- other defenses
# Each section is read only by its variant (``TrainConfig.variant``); defaults are the papers'
# recipes (sources in the defense modules, ``ctrw.nn.defenses``).


class AdditiveNoiseConfig(StrictModel):
    """``additive_noise`` (Li et al. 2019): x + N(0, std^2) on the input, in training and inference."""

    std: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="noise standard deviation in pixel units of images in [0, 1] (Li et al. train with 0.12 to 1.0)",
    )


class ResizePadConfig(StrictModel):
    """``resize_pad`` (Xie et al. 2018): random resize, then random zero padding, at inference.

    The paper resizes 299 x 299 inputs to Rnd x Rnd, Rnd uniform in [310, 331), and pads to
    331 x 331. We keep the ratios: side s resizes to Rnd in [round(s * min_ratio),
    round(s * max_ratio)) and pads to round(s * max_ratio) (32 -> Rnd in {33, 34}, padded to 35;
    8 -> Rnd 8, padded to 9, where only the padding is random).
    """

    min_ratio: float = Field(
        310 / 299, ge=1.0, le=4.0, description="smallest resize, relative to the input side (paper: 310/299)"
    )
    max_ratio: float = Field(
        331 / 299, gt=1.0, le=4.0, description="padded side, relative to the input side (paper: 331/299)"
    )
    in_training: bool = Field(
        False,
        description="also randomize during training (paper: false, the transform is added at inference only)",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ResizePadConfig:
        if self.min_ratio >= self.max_ratio:
            raise ValueError("resize_pad.min_ratio must be below max_ratio")
        return self


class RNAConfig(StrictModel):
    """``rna`` (Dong et al. 2022): every BatchNorm becomes a pool of normalizations, one drawn per forward."""

    batch_norm: bool = Field(True, description="BatchNorm is in every pool (published: true)")
    group_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [1],
        max_length=8,
        description="GroupNorms in every pool, by channels per group (published: [1], i.e. one group per channel)",
    )

    @model_validator(mode="after")
    def _non_empty(self) -> RNAConfig:
        if len(self.group_sizes) + int(self.batch_norm) < 2:
            raise ValueError("rna needs at least two normalizations per pool (batch_norm and/or group_sizes)")
        return self


class PNIConfig(StrictModel):
    """``pni`` (He et al. 2019): w + alpha * std(w) * N(0, 1) on every conv and linear weight."""

    alpha_init: float = Field(
        0.25, ge=0.0, le=10.0, description="initial noise scale alpha of every layer (paper: 0.25)"
    )


class DWQConfig(StrictModel):
    """``dwq`` (Fu et al. 2021): weights and activations quantized to a bit-width drawn per forward."""

    bits: list[Annotated[int, Field(ge=2, le=16)]] = Field(
        default_factory=lambda: list(range(4, 17)),
        min_length=2,
        max_length=15,
        description="candidate bit-widths, drawn uniformly (published CIFAR code: 4 to 16); the highest is the surrogate's",
    )
    switchable_bn: bool = Field(
        True, description="one BatchNorm per candidate bit-width (published: true, '--switchable_bn')"
    )

    @model_validator(mode="after")
    def _distinct(self) -> DWQConfig:
        if len(set(self.bits)) != len(self.bits):
            raise ValueError("dwq.bits must not repeat a bit-width")
        return self


class DefenseConfig(StrictModel):
    """Settings of the randomized defenses other than CTRW (only the chosen variant's section is used)."""

    additive_noise: AdditiveNoiseConfig = Field(
        default_factory=AdditiveNoiseConfig, description="variant additive_noise"
    )
    resize_pad: ResizePadConfig = Field(default_factory=ResizePadConfig, description="variant resize_pad")
    rna: RNAConfig = Field(default_factory=RNAConfig, description="variant rna")
    pni: PNIConfig = Field(default_factory=PNIConfig, description="variant pni")
    dwq: DWQConfig = Field(default_factory=DWQConfig, description="variant dwq")
