"""AutoAttack 'rand' with batched EOT draws gives torchattacks' sequential APGD result on the same draws."""

import pytest
import torch
import torchattacks

from ctrw.attacks.apgd import BatchedEOTAPGD
from ctrw.attacks.build import build_attack
from ctrw.config import AttackSpec, RandomWeightConfig
from ctrw.evaluation.evaluate import evaluation_mode
from ctrw.nn.random_weight import sampling, seed_random_layers
from tests.support.models import NUM_CLASSES, prototype_data, trained_small_cnn

# Sequential and batched sums of the same per-draw gradients differ in float rounding only; APGD's
# Linf step takes their sign, so the images agree to rounding unless a gradient entry is ~0.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def random_model() -> torch.nn.Module:
    return trained_small_cnn(RandomWeightConfig(sigma_init=0.3))


def _both(model: torch.nn.Module, make: dict, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """(batched, torchattacks) adversarial images, each from the same layer seed (the same draws)."""
    outs = []
    with evaluation_mode(model), sampling(model, "per_forward"):
        for attack in make.values():
            seed_random_layers(model, 11)
            outs.append(attack(x, y))
    return outs


@pytest.mark.parametrize(
    ("norm", "eps", "loss"), [("Linf", 8 / 255, "ce"), ("Linf", 8 / 255, "dlr"), ("L2", 0.5, "ce")]
)
def test_batched_eot_apgd_matches_torchattacks_on_the_same_draws(
    random_model: torch.nn.Module, norm: str, eps: float, loss: str
) -> None:
    x, y = prototype_data(24, seed=8)
    kw = {"norm": norm, "eps": eps, "steps": 6, "n_restarts": 1, "seed": 3, "loss": loss, "eot_iter": 4}
    ours, ref = _both(
        random_model,
        {"ours": BatchedEOTAPGD(random_model, **kw), "ref": torchattacks.APGD(random_model, **kw)},
        x,
        y,
    )
    assert not torch.equal(ours, x)  # the attack moved something
    assert (ours - ref).abs().max() <= TOLERANCE


def test_autoattack_rand_is_batched_and_matches_the_reference(random_model: torch.nn.Module) -> None:
    x, y = prototype_data(16, seed=9)
    spec = AttackSpec(name="autoattack_rand", steps=5, eot_draws=4)
    rows: list[int] = []
    handle = random_model.register_forward_pre_hook(lambda m, inp: rows.append(inp[0].shape[0]))
    outs = []
    try:
        with evaluation_mode(random_model), sampling(random_model, "per_forward"):
            for reference in (False, True):
                seed_random_layers(random_model, 5)
                outs.append(
                    build_attack(spec, random_model, num_classes=NUM_CLASSES, reference=reference)(x, y)
                )
                rows.append(-1)
    finally:
        handle.remove()
    ours_rows = rows[: rows.index(-1)]
    assert max(ours_rows) >= 4 * 2  # the 4 draws went through stacked forwards (of the survivors)
    assert (outs[0] - outs[1]).abs().max() <= TOLERANCE


def test_chunked_draws_give_the_same_attack(random_model: torch.nn.Module) -> None:
    """Memory bound: 5 draws in chunks of 2, 2, 1 copies are the draws of one 5-copy forward."""
    x, y = prototype_data(16, seed=10)
    kw = {"norm": "Linf", "eps": 8 / 255, "steps": 4, "seed": 1, "loss": "ce", "eot_iter": 5}
    one, chunked = _both(
        random_model,
        {
            "one": BatchedEOTAPGD(random_model, max_rows=1024, **kw),
            "chunked": BatchedEOTAPGD(random_model, max_rows=32, **kw),
        },
        x,
        y,
    )
    assert (one - chunked).abs().max() <= TOLERANCE
