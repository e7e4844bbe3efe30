"""Shared test material: a learnable toy data set, a small CNN trained on it in a fraction of a
second (with or without a random weight), and tiny training configs."""

from typing import Any

import torch
import torch.nn.functional as F

from ctrw.config import RandomWeightConfig, TrainConfig
from ctrw.data import iterate_batches
from ctrw.nn.models import create_model
from ctrw.nn.random_weight import resample, seed_random_layers

NUM_CLASSES = 10


def prototype_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class prototypes plus noise, 8x8 single-channel images in [0, 1]."""
    protos = 0.5 + 0.12 * torch.randn((NUM_CLASSES, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % NUM_CLASSES
    return (protos[y] + 0.12 * torch.randn((n, 1, 8, 8), generator=g)).clamp(0, 1), y


def small_cnn(random_weight: RandomWeightConfig | None = None) -> torch.nn.Module:
    """An untrained width-0.25 small_cnn for 8x8 single-channel images."""
    return create_model(
        "small_cnn",
        num_classes=NUM_CLASSES,
        input_shape=(1, 8, 8),
        mean=[0.5],
        std=[0.25],
        width=0.25,
        random_weight=random_weight,
    )


def trained_small_cnn(random_weight: RandomWeightConfig | None) -> torch.nn.Module:
    """small_cnn trained 60 Adam steps on prototype_data, in eval mode."""
    torch.manual_seed(0)
    model = small_cnn(random_weight)
    seed_random_layers(model, 0)
    x, y = prototype_data(1024, seed=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for i in range(60):
        idx = torch.arange(i * 128, (i + 1) * 128) % 1024
        resample(model)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


def train_config(base: dict[str, Any], over: dict[str, Any]) -> TrainConfig:
    """``base`` with ``over`` applied: dict sections are merged one level deep, the rest replaced."""
    merged = dict(base)
    for k, v in over.items():
        merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return TrainConfig.model_validate(merged)


def seeded_batch(run: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The first augmented, shuffled training batch of a ``TrainState`` (seed 7): the same for every run."""
    gen = torch.Generator().manual_seed(7)
    bs = run.config.optim.batch_size
    return next(
        iterate_batches(run.data.train, bs, device=run.device, shuffle=True, generator=gen, augment=True)
    )


def digits_small_cnn(steps: int = 150) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """small_cnn with a random weight trained ``steps`` Adam steps on the real digits (many pixels
    saturated at 0 or 1), in eval mode with one draw of its random weight; the 360 test images
    (float in [0, 1]) and labels."""
    from ctrw.config import DataConfig
    from ctrw.data import load_data

    data = load_data(DataConfig(dataset="digits", image_size=8, channels=1))
    xt, yt = data.train.float_images(), data.train.y
    torch.manual_seed(0)
    model = small_cnn(RandomWeightConfig(sigma_init=0.1))
    seed_random_layers(model, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for i in range(steps):
        idx = torch.arange(i * 128, (i + 1) * 128) % len(yt)
        resample(model)
        loss = F.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    resample(model)
    return model.eval(), data.test.float_images(), data.test.y
