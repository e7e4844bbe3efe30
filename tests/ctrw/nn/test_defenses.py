"""The randomized defenses' randomness control, through the generic RandomModule interface only.

Every defense: draws differ per forward, a fixed draw repeats until resampled, seeded draws are
reproducible, the surrogate ('mean') is deterministic, and stacked EOT copies get one draw each
(the same draw in 'fixed' mode). Parametrized over the catalog, so a new defense is tested here.
"""

import pytest
import torch

from ctrw.catalog import DEFENSES
from ctrw.config import DefenseConfig, TrainConfig
from ctrw.nn.defenses import DEFENSE_BUILDERS, apply_defense
from ctrw.nn.defenses.resize_pad import sizes
from ctrw.nn.models import create_model
from ctrw.nn.randomness import (
    eot_groups,
    grouped_draws_supported,
    random_modules,
    resample,
    sampling,
    seed_random_layers,
)

RANDOMIZED = ("additive_noise", "resize_pad", "rna", "pni", "dwq")
SIDE = 32  # resize_pad has 13 draws at 32 pixels (4 at 8): repeated forwards rarely coincide


def defended(variant: str, cfg: DefenseConfig | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(
        "small_cnn", num_classes=10, input_shape=(1, SIDE, SIDE), mean=[0.5], std=[0.25], width=0.25
    )
    return apply_defense(variant, model, cfg).eval()


def images(n: int = 6) -> torch.Tensor:
    return torch.rand((n, 1, SIDE, SIDE), generator=torch.Generator().manual_seed(3))


def distinct(outputs: list[torch.Tensor]) -> int:
    return len({tuple(o.flatten().tolist()) for o in outputs})


def test_every_variant_has_a_builder_and_a_valid_recipe():
    assert set(DEFENSE_BUILDERS) == set(DEFENSES)
    for name, info in DEFENSES.items():
        cfg = TrainConfig.model_validate({"variant": name})
        for path, value in info.defaults.items():
            node = cfg
            for key in path.split("."):
                node = getattr(node, key)
            assert node == value, (name, path)


def test_a_recipe_default_yields_to_the_config():
    assert TrainConfig.model_validate({"variant": "pni"}).optim.weight_decay_on_random is False
    cfg = TrainConfig.model_validate(
        {"variant": "pni", "optim": {"weight_decay_on_random": True, "epochs": 3}}
    )
    assert cfg.optim.weight_decay_on_random is True and cfg.optim.epochs == 3
    assert TrainConfig.model_validate({"variant": "pgd_at_es"}).optim.early_stop_patience == 10


@pytest.mark.parametrize("variant", RANDOMIZED)
def test_draws_differ_per_forward(variant):
    model, x = defended(variant), images()
    assert random_modules(model)
    with torch.no_grad(), sampling(model, "per_forward"):
        outs = [model(x) for _ in range(6)]
    assert distinct(outs) > 1
    assert all(torch.isfinite(o).all() and o.shape == (6, 10) for o in outs)


@pytest.mark.parametrize("variant", RANDOMIZED)
def test_a_fixed_draw_repeats_until_resampled(variant):
    model, x = defended(variant), images()
    seed_random_layers(model, 5)
    with torch.no_grad(), sampling(model, "fixed"):
        resample(model)
        a, b = model(x), model(x)
        assert torch.equal(a, b)
        fresh = []
        for _ in range(6):
            resample(model)
            fresh.append(model(x))
    assert distinct([a, *fresh]) > 1


@pytest.mark.parametrize("variant", RANDOMIZED)
def test_seeded_draws_are_reproducible(variant):
    model, x = defended(variant), images()

    def run(seed: int) -> list[torch.Tensor]:
        seed_random_layers(model, seed)
        with torch.no_grad():
            with sampling(model, "fixed"):
                resample(model)
                fixed = model(x)
            with sampling(model, "per_forward"):
                return [fixed, model(x), model(x)]

    first, again, other = run(11), run(11), run(12)
    assert all(torch.equal(p, q) for p, q in zip(first, again, strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(first, other, strict=True))


@pytest.mark.parametrize("variant", RANDOMIZED)
def test_the_surrogate_is_deterministic(variant):
    model, x = defended(variant), images()
    with torch.no_grad(), sampling(model, "mean"):
        a = model(x)
        resample(model)
        b = model(x)
        with eot_groups(model, 2):
            c = model(x.repeat(2, 1, 1, 1))
    assert torch.equal(a, b)
    torch.testing.assert_close(c, torch.cat([a, a]))


@pytest.mark.parametrize("variant", RANDOMIZED)
def test_stacked_copies_get_one_draw_each(variant):
    model, x = defended(variant), images(4)
    assert grouped_draws_supported(model)
    seed_random_layers(model, 1)
    with torch.no_grad():
        with sampling(model, "per_forward"), eot_groups(model, 8):
            copies = model(x.repeat(8, 1, 1, 1)).view(8, 4, 10)
        with sampling(model, "fixed"), eot_groups(model, 3):
            resample(model)
            same = model(x.repeat(3, 1, 1, 1)).view(3, 4, 10)
    assert distinct(list(copies)) > 1
    assert torch.equal(same[0], same[1]) and torch.equal(same[1], same[2])


def test_pgd_at_es_is_deterministic():
    model, x = defended("pgd_at_es"), images()
    assert not random_modules(model)
    with torch.no_grad(), sampling(model, "per_forward"):
        assert torch.equal(model(x), model(x))


def test_additive_noise_fixed_draw_serves_smaller_batches_from_its_first_rows():
    model, x = defended("additive_noise", DefenseConfig(additive_noise={"std": 0.3})), images()
    seed_random_layers(model, 2)
    with torch.no_grad(), sampling(model, "fixed"):
        resample(model)
        full = model(x)
        torch.testing.assert_close(model(x[:2]), full[:2])


def test_resize_pad_keeps_the_paper_ratios():
    assert sizes(299, 310 / 299, 331 / 299) == (310, 331)
    assert sizes(32, 310 / 299, 331 / 299) == (33, 35)
    assert sizes(8, 310 / 299, 331 / 299) == (8, 9)
    layer = random_modules(defended("resize_pad"))[0]
    with sampling(layer, "mean"):
        out = layer(images(1))  # centred, not resized: the data set mean (0.5) around it
    assert out.shape[-1] == 35 and torch.equal(out[..., 1:33, 1:33], images(1))
    assert (out[..., 0, :] == 0.5).all()
    layer.train()
    assert torch.equal(layer(images(1)), images(1))  # the paper's recipe: plain network in training


def test_rna_pools_every_batch_norm_and_pni_wraps_every_weight():
    rna = defended("rna")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and "pool" not in n for n, m in rna.named_modules())
    assert all(len(m.pool) == 2 for m in random_modules(rna))
    pni = defended("pni")
    layers = random_modules(pni)
    assert len(layers) == 4  # three convs and the classifier
    assert all(float(m.alpha.detach()) == 0.25 and m.noise_parameters() == (m.alpha,) for m in layers)
