"""Attack factory: every attack runs and is valid; our lean/batched versions match torchattacks."""

import pytest
import torch
import torchattacks

from ctrw import catalog
from ctrw.attacks.build import ATTACK_BUILDERS, MAGNITUDE_ATTACKS, build_attack
from ctrw.attacks.builders import register_attack
from ctrw.config import ATTACK_NAMES, AttackSpec, RandomWeightConfig
from ctrw.evaluation.evaluate import evaluation_mode
from ctrw.nn.random_weight import RandomWeight, random_layers, resample, sampling, seed_random_layers
from tests.support.models import NUM_CLASSES, prototype_data, small_cnn, trained_small_cnn

EPS = 8 / 255

# Cheap settings for every attack (the paper's step counts are far too slow for unit tests).
CHEAP = {
    "clean": {},
    "pgd": {"steps": 3},
    "fgsm": {},
    "mifgsm": {"steps": 3},
    "deepfool": {"steps": 5},
    "cw": {"steps": 10, "c": 1.0},
    "autoattack": {"steps": 3, "queries": 20},
    "eotpgd": {"steps": 3, "eot_draws": 3},
    "autoattack_rand": {"steps": 3, "eot_draws": 2},
    "transfer_mean": {"steps": 3},
}
LINF = ("pgd", "fgsm", "mifgsm", "autoattack", "eotpgd", "autoattack_rand", "transfer_mean")


@pytest.fixture(scope="module")
def random_model() -> torch.nn.Module:
    return trained_small_cnn(RandomWeightConfig(sigma_init=0.3))


@pytest.fixture(scope="module")
def plain_model() -> torch.nn.Module:
    return trained_small_cnn(None)


def test_registry_covers_every_configurable_attack() -> None:
    assert set(ATTACK_BUILDERS) == set(ATTACK_NAMES) == set(CHEAP)


@pytest.mark.parametrize("mode", ["fixed", "per_forward"])
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_returns_valid_images(name: str, mode: str, random_model: torch.nn.Module) -> None:
    x, y = prototype_data(20, seed=3)
    spec = AttackSpec(name=name, **CHEAP[name])
    with evaluation_mode(random_model), sampling(random_model, mode):
        resample(random_model)
        adv = build_attack(spec, random_model, num_classes=NUM_CLASSES, seed=1)(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert torch.isfinite(adv).all()
    assert adv.min() >= 0 and adv.max() <= 1
    if name in LINF:
        assert (adv - x).abs().max() <= EPS + 1e-6
    if name == "clean":
        assert torch.equal(adv, x)
    elif name in ("pgd", "eotpgd", "deepfool", "cw", "mifgsm"):
        assert not torch.equal(adv, x)  # the attack moved the images


def test_lean_pgd_equals_torchattacks_pgd(plain_model: torch.nn.Module) -> None:
    x, y = prototype_data(32, seed=4)
    spec = AttackSpec(name="pgd", steps=5, random_start=False)
    with evaluation_mode(plain_model):
        ours = build_attack(spec, plain_model, num_classes=NUM_CLASSES)(x, y)
        ref = torchattacks.PGD(plain_model, eps=EPS, alpha=2 / 255, steps=5, random_start=False)(x, y)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_batched_eot_pgd_matches_torchattacks_eotpgd(random_model: torch.nn.Module) -> None:
    """Same draws in the same order: our k stacked copies get the k draws torchattacks makes one by one."""
    x, y = prototype_data(32, seed=5)
    spec = AttackSpec(name="eotpgd", steps=4, eot_draws=4, random_start=False)
    outs = []
    with evaluation_mode(random_model), sampling(random_model, "per_forward"):
        for reference in (False, True):
            seed_random_layers(random_model, 7)
            outs.append(build_attack(spec, random_model, num_classes=NUM_CLASSES, reference=reference)(x, y))
    ours, ref = outs
    # The random layer has 64 elements: torch.randn fills (k, 64) exactly like k calls of (64,).
    assert (ours - ref).abs().max() <= 1e-6


def test_chunked_eot_gives_the_same_attack(random_model: torch.nn.Module) -> None:
    """Memory bound: 5 draws as chunks of 2, 2, 1 copies give the draws of one 5-copy forward."""
    x, y = prototype_data(16, seed=13)
    spec = AttackSpec(name="eotpgd", steps=3, eot_draws=5)
    batches: list[int] = []
    handle = random_model.register_forward_pre_hook(lambda m, inp: batches.append(inp[0].shape[0]))
    outs = []
    try:
        with evaluation_mode(random_model), sampling(random_model, "per_forward"):
            for rows in (2 * 16, 1024):
                seed_random_layers(random_model, 3)
                outs.append(
                    build_attack(spec, random_model, num_classes=NUM_CLASSES, eot_max_rows=rows)(x, y)
                )
    finally:
        handle.remove()
    assert batches == [32, 32, 16] * 3 + [80] * 3
    assert (outs[0] - outs[1]).abs().max() <= 1e-6


def test_eot_pgd_is_pgd_on_a_deterministic_model(plain_model: torch.nn.Module) -> None:
    x, y = prototype_data(32, seed=6)
    with evaluation_mode(plain_model):
        pgd = build_attack(AttackSpec(name="pgd", steps=5), plain_model, num_classes=NUM_CLASSES, seed=3)(
            x, y
        )
        eot = build_attack(
            AttackSpec(name="eotpgd", steps=5, eot_draws=4), plain_model, num_classes=NUM_CLASSES, seed=3
        )(x, y)
    # Same random start (same seed); the summed gradient of 4 identical copies has the same sign.
    assert (pgd != eot).float().mean() < 0.01


def test_attacks_are_reproducible_and_leave_the_global_rng_alone(random_model: torch.nn.Module) -> None:
    x, y = prototype_data(16, seed=7)
    spec = AttackSpec(name="pgd", steps=3)
    state = torch.get_rng_state()
    with evaluation_mode(random_model):
        resample(random_model)
        a = build_attack(spec, random_model, num_classes=NUM_CLASSES, seed=5)(x, y)
        b = build_attack(spec, random_model, num_classes=NUM_CLASSES, seed=5)(x, y)
        c = build_attack(spec, random_model, num_classes=NUM_CLASSES, seed=6)(x, y)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def test_transfer_attack_uses_the_mean_weight_and_restores_the_mode(random_model: torch.nn.Module) -> None:
    layer = random_layers(random_model)[0]
    seen: list[str] = []
    handle = layer.register_forward_pre_hook(lambda m, inp: seen.append(m.mode))
    x, y = prototype_data(8, seed=8)
    try:
        with evaluation_mode(random_model), sampling(random_model, "per_forward"):
            build_attack(AttackSpec(name="transfer_mean", steps=2), random_model, num_classes=NUM_CLASSES)(
                x, y
            )
            assert layer.mode == "per_forward"
    finally:
        handle.remove()
    assert seen and set(seen) == {"mean"}


class _DtypeProbe(torch.nn.Module):
    """Records the dtype of the logits of every forward."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.dtypes: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        self.dtypes.append(out.dtype)
        return out


@pytest.mark.parametrize("name", ["deepfool", "cw", "autoattack"])
def test_magnitude_attacks_run_in_fp32_even_under_autocast(name: str, plain_model: torch.nn.Module) -> None:
    assert name in MAGNITUDE_ATTACKS
    probe = _DtypeProbe(plain_model).eval()
    x, y = prototype_data(10, seed=9)
    with evaluation_mode(probe), torch.autocast("cpu", dtype=torch.bfloat16):
        build_attack(
            AttackSpec(name=name, **CHEAP[name]),
            probe,
            num_classes=NUM_CLASSES,
            autocast_dtype=torch.bfloat16,
        )(x, y)
    assert probe.dtypes and set(probe.dtypes) == {torch.float32}


def test_sign_attacks_may_use_autocast(plain_model: torch.nn.Module) -> None:
    probe = _DtypeProbe(plain_model).eval()
    x, y = prototype_data(10, seed=10)
    with evaluation_mode(probe):
        for name in ("pgd", "fgsm"):
            build_attack(
                AttackSpec(name=name, **CHEAP[name]),
                probe,
                num_classes=NUM_CLASSES,
                autocast_dtype=torch.bfloat16,
            )(x, y)
    assert set(probe.dtypes) == {torch.bfloat16}


def test_autoattack_uses_the_reference_steps_and_targets(plain_model: torch.nn.Module) -> None:
    aa = build_attack(AttackSpec(name="autoattack"), plain_model, num_classes=100).fn
    apgd, apgdt, fab, square = aa.attacks
    assert (apgd.steps, apgdt.steps, fab.steps) == (100, 100, 100)
    assert apgdt.n_target_classes == fab.n_target_classes == 9
    assert square.n_queries == 5000
    assert apgd.loss == "ce" and fab.multi_targeted
    rand = build_attack(AttackSpec(name="autoattack_rand"), plain_model, num_classes=10).fn
    assert [(a.loss, a.steps, a.eot_iter) for a in rand.attacks] == [("ce", 100, 20), ("dlr", 100, 20)]
    small = build_attack(AttackSpec(name="autoattack", steps=7), plain_model, num_classes=5).fn
    assert small.attacks[0].steps == 7 and small.attacks[1].n_target_classes == 4


def test_autoattack_needs_enough_classes(plain_model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="at least 4 classes"):
        build_attack(AttackSpec(name="autoattack"), plain_model, num_classes=3)


def test_random_layer_is_what_the_sampling_mode_says_during_an_attack(random_model: torch.nn.Module) -> None:
    """In 'fixed' mode the attacker sees one draw for the whole attack."""
    layer = random_layers(random_model)[0]
    assert isinstance(layer, RandomWeight)
    deltas: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda m, inp: deltas.append(m.delta.clone()))
    x, y = prototype_data(8, seed=11)
    try:
        with evaluation_mode(random_model), sampling(random_model, "fixed"):
            resample(random_model)
            build_attack(AttackSpec(name="pgd", steps=3), random_model, num_classes=NUM_CLASSES)(x, y)
    finally:
        handle.remove()
    assert len(deltas) == 3
    assert all(torch.equal(d, deltas[0]) for d in deltas)


def test_eot_falls_back_to_sequential_draws_for_filter_insertion() -> None:
    model = small_cnn(RandomWeightConfig(insertion="filters")).eval()
    attack = build_attack(AttackSpec(name="eotpgd", **CHEAP["eotpgd"]), model, num_classes=NUM_CLASSES)
    assert isinstance(attack.fn, torchattacks.EOTPGD)
    x, y = prototype_data(8, seed=12)
    with evaluation_mode(model), sampling(model, "per_forward"):
        adv = attack(x, y)
    assert torch.isfinite(adv).all() and (adv - x).abs().max() <= EPS + 1e-6


# The docstring's "Distance Measure" line of each catalog norm (AutoAttack's comes from its params).
_MEASURE = {None: "none", "linf": "Linf", "unbounded-l2": "L2 (unbounded)"}


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_builder_documents_its_paper_and_the_catalogs_norm(name: str) -> None:
    info = catalog.attack(name)
    doc = ATTACK_BUILDERS[name].__doc__ or ""
    measure = "Linf or L2 (the ``norm`` argument)" if info.norm_from_params else _MEASURE[info.norm]
    assert f"Distance Measure : {measure}\n" in doc
    assert "Shape:" in doc
    if name != "clean":
        assert "[https://arxiv.org/abs/" in doc and "Arguments:" in doc
        for arg in info.defaults:
            assert f"{arg} (" in doc, f"{name}: argument {arg} undocumented"


def test_unknown_attacks_are_refused_at_registration() -> None:
    with pytest.raises(ValueError, match="unknown attack"):
        register_attack("nope")
