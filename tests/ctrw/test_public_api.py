"""The curated API of ``ctrw``: every exported name resolves, and importing it stays light."""

import json
import subprocess
import sys

import pytest

import ctrw


def test_every_exported_name_resolves() -> None:
    for name in ctrw.__all__:
        assert getattr(ctrw, name) is not None, name
    assert set(ctrw.__all__) <= set(dir(ctrw))


def test_exports_are_the_real_entry_points() -> None:
    from ctrw import catalog
    from ctrw.config import TrainConfig
    from ctrw.evaluation.evaluate import evaluate
    from ctrw.nn.models import create_model
    from ctrw.training import train

    assert ctrw.train is train and ctrw.evaluate is evaluate and ctrw.create_model is create_model
    assert ctrw.TrainConfig is TrainConfig and ctrw.catalog is catalog
    assert ctrw.MODELS is catalog.MODELS


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        ctrw.no_such_name  # noqa: B018


def test_import_ctrw_and_its_pure_parts_never_loads_torch() -> None:
    code = (
        "import json, sys, ctrw, ctrw.config, ctrw.catalog, ctrw.cost\n"
        "ctrw.TrainConfig(); ctrw.MODELS; ctrw.PRESETS\n"
        "print(json.dumps([m for m in ('torch', 'torchvision', 'torchattacks') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
