"""The random-weight layer: distribution, sampling modes, eval(), seeding."""

import pytest
import torch

from ctrw.config import RandomWeightConfig
from ctrw.nn.models import create_model
from ctrw.nn.random_weight import (
    RandomWeight,
    eot_groups,
    random_layers,
    resample,
    sampling,
    seed_random_layers,
)


def _layer(mu=0.5, sigma=2.0, shape=(3, 4), **kw) -> RandomWeight:
    layer = RandomWeight(shape, mu_init=mu, sigma_init=sigma, **kw)
    layer.manual_seed(0)
    return layer


def test_weight_has_configured_mean_and_std():
    layer = _layer(mu=0.5, sigma=2.0)
    layer.mode = "per_forward"
    w = torch.stack([layer.weight() for _ in range(20_000)]).detach()  # (n, 1, 3, 4)
    assert w.mean().item() == pytest.approx(0.5, abs=0.03)
    assert w.std().item() == pytest.approx(2.0, rel=0.02)


def test_fixed_draw_stays_until_resample_and_attack_draw_differs_from_prediction_draw():
    layer = _layer()
    x = torch.ones(2, 3, 4)
    layer.resample()  # draw A
    a1, a2 = layer(x), layer(x)
    assert torch.equal(a1, a2)
    layer.resample()  # draw B
    assert not torch.allclose(layer(x), a1)


def test_per_forward_differs_on_every_call_and_mean_mode_is_deterministic():
    layer = _layer()
    x = torch.ones(2, 3, 4)
    layer.mode = "per_forward"
    outs = [layer(x) for _ in range(5)]
    assert all(not torch.allclose(outs[i], outs[j]) for i in range(5) for j in range(i + 1, 5))
    layer.mode = "mean"
    assert torch.equal(layer(x), x * layer.mu)
    assert torch.equal(layer(x), layer(x))


def test_eval_mode_keeps_randomness():
    model = create_model(
        "small_cnn",
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=[0.5],
        std=[0.25],
        width=0.25,
        random_weight=RandomWeightConfig(),
    )
    model.eval()
    x = torch.rand(4, 1, 8, 8)
    with sampling(model, "per_forward"):
        assert not torch.allclose(model(x), model(x))


def test_seeded_generator_reproduces_draws():
    a, b = _layer(), _layer()
    assert torch.equal(a.draw(), b.draw())
    state = a.generator_state()
    d1 = a.draw()
    a.set_generator_state(state)
    assert torch.equal(a.draw(), d1)


def test_shared_draw_is_one_per_batch_and_per_example_draws_differ():
    shared = _layer(mu=0.0, sigma=1.0)
    shared.resample()
    out = shared(torch.ones(3, 3, 4))
    assert torch.equal(out[0], out[1])
    per_ex = _layer(mu=0.0, sigma=1.0, per_example=True)
    per_ex.resample()
    out = per_ex(torch.ones(3, 3, 4))
    assert not torch.allclose(out[0], out[1])
    assert torch.equal(per_ex(torch.ones(3, 3, 4)), out)  # fixed until the next resample
    with pytest.raises(RuntimeError, match="per-example draw"):
        per_ex(torch.ones(5, 3, 4))


def test_eot_groups_give_one_draw_per_stacked_copy():
    layer = _layer(mu=0.0, sigma=1.0)
    layer.mode = "per_forward"
    x = torch.ones(2, 3, 4).repeat(3, 1, 1)  # 3 copies of a batch of 2
    with eot_groups(layer, 3):
        out = layer(x).reshape(3, 2, 3, 4)
    assert torch.equal(out[0, 0], out[0, 1])  # shared within a copy
    assert not torch.allclose(out[0], out[1])  # independent across copies


@pytest.mark.parametrize(
    "insertion,n_layers", [("in_channels", 1), ("out_channels", 1), ("both", 2), ("filters", 1)]
)
def test_insertion_modes_are_random(insertion, n_layers):
    model = create_model(
        "resnet18",
        num_classes=10,
        input_shape=(3, 16, 16),
        mean=[0.5] * 3,
        std=[0.25] * 3,
        width=0.0625,
        random_weight=RandomWeightConfig(insertion=insertion),
    )
    assert len(random_layers(model)) == n_layers
    seed_random_layers(model, 0)
    model.eval()
    x = torch.rand(2, 3, 16, 16)
    resample(model)
    y1 = model(x)
    assert torch.equal(y1, model(x)) and torch.isfinite(y1).all()
    resample(model)
    assert not torch.allclose(y1, model(x))


@pytest.mark.parametrize(
    "name,positions,shape",
    [
        ("resnet18", range(6), (3, 16, 16)),
        ("wrn34_10", range(5), (3, 16, 16)),
        ("small_cnn", range(4), (1, 8, 8)),
    ],
)
def test_every_position_builds_and_runs(name, positions, shape):
    width = {"resnet18": 0.0625, "wrn34_10": 0.05, "small_cnn": 0.25}[name]
    for p in positions:
        model = create_model(
            name,
            num_classes=7,
            input_shape=shape,
            mean=[0.5] * shape[0],
            std=[0.25] * shape[0],
            width=width,
            random_weight=RandomWeightConfig(position=p),
        )
        out = model(torch.rand(2, *shape))
        assert out.shape == (2, 7) and torch.isfinite(out).all()
        assert model.random is not None and model.random.mu.shape[0] == 1


def test_published_position_zero_shape_is_the_image():
    model = create_model(
        "resnet18",
        num_classes=10,
        input_shape=(3, 32, 32),
        mean=[0.5] * 3,
        std=[0.25] * 3,
        width=0.0625,
        random_weight=RandomWeightConfig(),
    )
    layer = random_layers(model)[0]
    assert layer.mu.shape == (1, 3, 32, 32) and float(layer.sigma.detach().sum()) == 3072.0  # mu = sigma = 1
