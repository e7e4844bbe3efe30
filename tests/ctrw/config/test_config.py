"""Config validation and the CLI's messages."""

import json

import pytest
from pydantic import ValidationError

from ctrw.cli import main
from ctrw.config import (
    AttackSpec,
    ConfigError,
    EvalConfig,
    TrainConfig,
    load_config_file,
    per_example_conflicts,
    published_preset,
)


def _err(body) -> str:
    with pytest.raises(ValidationError) as e:
        TrainConfig.model_validate(body)
    return str(e.value)


def test_bad_fields_are_named():
    assert "model.name" in _err({"model": {"name": "vgg99"}})
    assert "attack.eps" in _err({"attack": {"eps": -0.1}})
    assert "optim.epochs" in _err({"optim": {"epochs": 100000}})
    assert "lr_typo" in _err({"optim": {"lr_typo": 1}})
    assert "position" in _err({"model": {"name": "wrn34_10"}, "random_weight": {"position": 5}})
    assert "needs position 0" in _err({"random_weight": {"position": 2, "insertion": "filters"}})


def test_attack_params_must_belong_to_the_attack():
    with pytest.raises(ValidationError, match="takes no parameter"):
        AttackSpec(name="fgsm", steps=3)
    assert AttackSpec(name="mifgsm").resolved() == {
        "eps": 8 / 255,
        "step_size": 2 / 255,
        "steps": 5,
        "decay": 1.0,
    }
    assert AttackSpec(name="pgd").column == "pgd20"


def test_published_preset():
    cfg = published_preset()
    assert cfg.bounds.rule == "floor" and cfg.bounds.lower.value == 2048 and cfg.bounds.upper is None
    assert cfg.data.select_on_test and cfg.optim.weight_decay_on_random


def test_config_file_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: nope\n")
    with pytest.raises(ConfigError, match="model.name"):
        load_config_file(p)
    p.write_text("preset: published\noptim:\n  epochs: 3\n")
    assert load_config_file(p).bounds.rule == "floor"
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "missing.yaml")


def test_cli_reports_bad_config_and_missing_data_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"attack": {"eps": -1}}))
    assert main(["train", str(bad)]) == 2
    assert "attack.eps" in capsys.readouterr().err
    missing = tmp_path / "cifar.json"
    missing.write_text(json.dumps({"data": {"dataset": "cifar10", "root": str(tmp_path / "nodata")}}))
    assert main(["train", str(missing), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "nodata" in err and "cifar-10-batches-py" in err


def test_imagenet_preset_is_the_papers_recipe():
    from ctrw.config import imagenet_preset

    cfg = imagenet_preset()
    assert (cfg.model.name, cfg.optim.batch_size, cfg.optim.lr, cfg.optim.schedule, cfg.optim.epochs) == (
        "resnet50",
        1024,
        0.02,
        "cosine",
        90,
    )
    assert (cfg.attack.steps, cfg.attack.eps, cfg.attack.step_size) == (2, 4 / 255, 1 / 255)


def test_per_example_conflicts_follow_each_attacks_protocol():
    ev = EvalConfig.model_validate(
        {
            "protocol": "both",
            "attacks": [
                {"name": "deepfool"},
                {"name": "autoattack", "protocol": "adaptive"},
                {"name": "autoattack_rand", "protocol": "paper"},
                {"name": "cw"},
            ],
        }
    )
    assert [i for i, _ in per_example_conflicts(ev)] == [0, 2]
    adaptive = ev.model_copy(update={"protocol": "adaptive"})
    assert [i for i, _ in per_example_conflicts(adaptive)] == [2]  # its own protocol: paper
    with pytest.raises(ValidationError, match="evaluation.attacks.0: deepfool cannot run"):
        TrainConfig.model_validate({"random_weight": {"per_example": True}, "evaluation": ev.model_dump()})
    TrainConfig.model_validate({"random_weight": {"per_example": False}, "evaluation": ev.model_dump()})
