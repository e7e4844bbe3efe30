"""σ per variant (ctrw.nn.sigma_policy): which bounds each variant relies on, and what happens to
a bound that cannot be computed at the start (an error where it is used, an event elsewhere)."""

import pytest
import torch

from ctrw.config import TrainConfig
from ctrw.nn.bounds import LayerBounds
from ctrw.nn.models import create_model
from ctrw.nn.random_weight import random_layers
from ctrw.nn.sigma_policy import bounds_used, check_initial_bounds, constrain_sigma, freeze_fixed_sigma

BOUNDS = {"lower": {"kind": "fraction", "value": 0.5}, "upper": {"kind": "fraction", "value": 1.5}}


def config(variant: str, **over) -> TrainConfig:
    return TrainConfig.model_validate({"variant": variant, "bounds": BOUNDS, **over})


@pytest.mark.parametrize(
    "variant,over,used",
    [
        ("baseline", {}, ()),
        ("unconstrained", {}, ()),
        ("fixed_std", {}, ("lower",)),
        ("fixed_sigma", {"fixed_sigma_at": "upper"}, ("upper",)),
        ("fixed_sigma", {"fixed_sigma_at": "mid"}, ("lower", "upper")),
        ("ctrw", {}, ("lower", "upper")),
        ("ctrw", {"bounds": {**BOUNDS, "rule": "floor", "upper": None}}, ("lower",)),
    ],
)
def test_each_variant_uses_its_bounds(variant, over, used):
    assert bounds_used(config(variant, **over)) == used


def test_a_missing_bound_is_an_error_where_used_and_an_event_elsewhere():
    missing_upper = [LayerBounds(1.0, None, notes={"upper": "lemma 2 undefined"})]
    with pytest.raises(ValueError, match="bounds.upper: lemma 2 undefined at the start"):
        check_initial_bounds(config("ctrw"), missing_upper)
    (event,) = check_initial_bounds(config("fixed_std"), missing_upper)
    assert event == "start: bounds.upper of random layer 0: lemma 2 undefined"


def _small_model():
    cfg = config("ctrw")
    model = create_model(
        "small_cnn",
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=(0.5,),
        std=(0.5,),
        width=0.25,
        random_weight=cfg.random_weight,
    )
    return model, random_layers(model)[0].sigma


def test_fixed_variants_freeze_sigma_and_only_ctrw_is_constrained():
    model, sigma = _small_model()
    n = sigma.numel()
    bounds = [LayerBounds(0.5 * n, 1.5 * n)]
    freeze_fixed_sigma(config("fixed_sigma", fixed_sigma_at="mid"), model, bounds)
    assert torch.allclose(sigma, torch.ones_like(sigma)) and not sigma.requires_grad
    with torch.no_grad():
        sigma.fill_(10.0)
    for variant in ("baseline", "unconstrained", "fixed_std", "fixed_sigma"):
        constrain_sigma(config(variant), model, bounds)
        assert float(sigma.sum()) == pytest.approx(10.0 * n)
    constrain_sigma(config("ctrw"), model, bounds)
    assert float(sigma.sum()) <= 1.5 * n + 1e-3
