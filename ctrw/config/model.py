"""The network and where its random weight sits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ctrw.catalog import MODEL_NAMES, MODELS
from ctrw.config.common import StrictModel

__all__ = ["ModelConfig", "RandomWeightConfig"]

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
