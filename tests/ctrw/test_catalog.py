"""The catalog: one row per name, consistent with the configs that accept the names, pure."""

import subprocess
import sys

import pytest

from ctrw import catalog
from ctrw.config import AttackSpec, ModelConfig, TrainConfig, threat_model


def test_catalog_is_pure() -> None:
    code = "import sys, ctrw.catalog; assert 'torch' not in sys.modules and 'pydantic' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", catalog.ATTACK_NAMES)
def test_every_attack_has_a_spec_and_a_threat_model(name: str) -> None:
    info = catalog.attack(name)
    spec = AttackSpec(name=name)
    assert spec.resolved() == dict(info.defaults)
    tm = threat_model(name)
    assert (tm.norm if tm else None) == info.norm
    assert (info.kind is None) == (info.norm is None) == (name == "clean")


@pytest.mark.parametrize("name", catalog.MODEL_NAMES)
def test_every_model_takes_its_positions_and_no_more(name: str) -> None:
    info = catalog.model(name)
    ds = "imagenet" if name == "resnet50" else "cifar10"
    for p in range(info.max_position + 1):
        TrainConfig(model=ModelConfig(name=name), data={"dataset": ds}, random_weight={"position": p})
    with pytest.raises(ValueError):
        TrainConfig(
            model=ModelConfig(name=name),
            data={"dataset": ds},
            random_weight={"position": info.max_position + 1},
        )


def test_subset_attacks_and_kinds() -> None:
    assert catalog.SUBSET_ATTACKS == ("deepfool", "autoattack", "autoattack_rand")
    sign = {n for n, a in catalog.ATTACKS.items() if a.kind == "sign"}
    assert sign == {"pgd", "fgsm", "mifgsm", "eotpgd", "transfer_mean"}


def test_names_match_the_configs() -> None:
    assert set(catalog.VARIANTS) == {
        "baseline", "unconstrained", "fixed_std", "fixed_sigma", "ctrw",
        "pgd_at_es", "additive_noise", "resize_pad", "rna", "pni", "dwq",  # issue 13: the other defenses
    }  # fmt: skip
    for v in catalog.VARIANTS:
        assert catalog.DEFENSES[v].description
    assert catalog.DATASET_NAMES == ("cifar10", "cifar100", "imagenet", "digits", "synthetic")


def test_unknown_names_are_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown attack"):
        catalog.attack("nope")
    with pytest.raises(ValueError, match="unknown model"):
        catalog.model("nope")


def test_suite_names_come_from_the_paper_registry() -> None:
    assert "table1" in catalog.SUITE_NAMES


def test_every_catalog_name_has_a_builder_and_a_cost() -> None:
    from ctrw.attacks.build import ATTACK_BUILDERS
    from ctrw.cost import attack_passes
    from ctrw.nn.models import MODEL_BUILDERS

    assert tuple(ATTACK_BUILDERS) == catalog.ATTACK_NAMES
    assert tuple(MODEL_BUILDERS) == catalog.MODEL_NAMES
    for name in catalog.ATTACK_NAMES:
        assert attack_passes(AttackSpec(name=name), 10) >= 0


@pytest.mark.parametrize("name", catalog.MODEL_NAMES)
def test_the_network_has_the_catalogs_positions(name: str) -> None:
    from ctrw.config import RandomWeightConfig
    from ctrw.nn.models import create_model

    info = catalog.model(name)
    kw = {"num_classes": 10, "input_shape": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    width = 1.0 if info.rgb_only else 0.125
    net = create_model(name, width=width, random_weight=RandomWeightConfig(position=info.max_position), **kw)
    assert net.position == info.max_position == len(net.stages) - 1
