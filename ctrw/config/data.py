"""The data set and its splits."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ctrw.catalog import DATASET_NAMES
from ctrw.config.common import (
    MAX_SYNTHETIC_BYTES,
    MAX_TEST_IMAGES,
    MAX_TRAIN_IMAGES,
    NO_NUL,
    StrictModel,
)

__all__ = ["DataConfig"]


class DataConfig(StrictModel):
    dataset: Literal[DATASET_NAMES] = Field(  # type: ignore[valid-type]
        "cifar10", description="the data set (digits: 8x8, offline; synthetic: random images for tests)"
    )
    root: str = Field("data", max_length=4096, pattern=NO_NUL, description="the data directory on the worker")
    # Downloading is an operator setting (CTRW_ALLOW_DOWNLOAD on workers and the CLI), not a job
    # field: a job must not make a worker fetch from the internet. Kept, always false, so stored
    # configs and their hashes stay valid.
    download: Literal[False] = Field(
        False, description="always false: downloads are the operator's setting CTRW_ALLOW_DOWNLOAD"
    )
    image_size: int = Field(
        32, ge=8, le=512, description="digits and synthetic only: side length the images are resized to"
    )
    channels: Literal[1, 3] = Field(3, description="digits and synthetic only: 1 (grey) or 3 (RGB)")
    train_subset: int | None = Field(
        None,
        ge=1,
        le=MAX_TRAIN_IMAGES,
        description="use only this many training images (null: the whole split)",
    )
    test_subset: int | None = Field(
        None, ge=1, le=MAX_TEST_IMAGES, description="use only this many test images (null: the whole split)"
    )
    val_fraction: float = Field(
        0.1,
        ge=0.0,
        lt=0.9,
        description="fraction of the training set held out for validation and model selection",
    )
    select_on_test: bool = Field(
        False,
        description="select the best epoch on the TEST set as the published code did (biased; explicit opt-in)",
    )
    augment: bool = Field(
        True,
        description="pad-4 random crop and horizontal flip (CIFAR recipe; off for digits, flips change digits)",
    )
    num_classes: int = Field(10, ge=2, le=1000, description="synthetic only: number of classes")
    synthetic_train: int = Field(
        256, ge=8, le=MAX_TRAIN_IMAGES, description="synthetic only: training images"
    )
    synthetic_test: int = Field(128, ge=8, le=MAX_TEST_IMAGES, description="synthetic only: test images")
    imagenet_workers: int = Field(8, ge=0, le=64, description="imagenet only: data-loader worker processes")

    @field_validator("download", mode="before")
    @classmethod
    def _download_is_operator_setting(cls, v: Any) -> Any:
        if v is not False:
            raise ValueError(
                "downloading is not a job field: the operator allows it on workers and the CLI with "
                "CTRW_ALLOW_DOWNLOAD=1, or puts the data in CTRW_DATA_DIR"
            )
        return v

    @field_validator("channels", mode="before")
    @classmethod
    def _channels_not_bool(cls, v: Any) -> Any:
        # Literal[1, 3] would take true for 1.
        if isinstance(v, bool):
            raise ValueError("Input should be 1 or 3")
        return v

    @model_validator(mode="after")
    def _synthetic_fits_in_memory(self) -> DataConfig:
        if self.dataset == "synthetic":
            size = (self.synthetic_train + self.synthetic_test) * self.channels * self.image_size**2
            if size > MAX_SYNTHETIC_BYTES:
                raise ValueError(
                    f"synthetic_train + synthetic_test at {self.channels} x {self.image_size}^2 would hold "
                    f"{size / 1024**3:.1f} GiB in memory (at most {MAX_SYNTHETIC_BYTES // 1024**3} GiB)"
                )
        return self
