"""Sub-job keys (``ctrw.paper.keys``) and the catalog of experiments: one definition each."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import get_args

import pytest

import ctrw.paper.experiments as experiments
from ctrw.paper import EXPERIMENTS, SUITE_NAMES, SubJobKey, SuiteRequest, expand_suite


@pytest.mark.parametrize("suite", SUITE_NAMES)
def test_every_sub_job_key_reads_back(suite: str) -> None:
    for job in expand_suite(SuiteRequest(suite=suite, model="all")):
        key = SubJobKey.parse(job.key)
        assert str(key) == job.key
        if job.kind == "attack":
            assert key.evaluation is not None and str(key.train) == job.train_key
        else:
            assert key.evaluation is None and (key.model, key.dataset) == (
                job.label["model"],
                job.label["dataset"],
            )
            assert job.config is not None and job.config.variant == key.variant


def test_key_forms() -> None:
    fixed = SubJobKey("resnet18", "cifar10", variant="fixed_sigma", fixed_sum=Fraction(2, 3))
    assert str(fixed) == "resnet18/cifar10/fixed_sum@2/3xHW" and SubJobKey.parse(str(fixed)) == fixed
    assert str(SubJobKey("wrn34_10", "digits", position=3).evaluated("repeats5")) == (
        "wrn34_10/digits/ctrw@position3+repeats5"
    )
    assert str(SubJobKey("resnet18", "cifar10", variant="fixed_sigma", fixed_sigma_at="mid")) == (
        "resnet18/cifar10/fixed_sigma@mid"
    )
    # A setting the string form could not name apart is refused, and so is a malformed string.
    with pytest.raises(ValueError, match="no sub-job key"):
        SubJobKey("resnet18", "cifar10", variant="unconstrained", position=2)
    with pytest.raises(ValueError, match="no sub-job key"):
        SubJobKey("resnet18", "cifar10", variant="pni", position=2)
    assert SubJobKey.parse("resnet18/cifar10/pni+zoo") == SubJobKey("resnet18", "cifar10", variant="pni", evaluation="zoo")
    for text in ("resnet18/cifar10/pgd@x", "resnet18/cifar10/ctrw@position0"):
        with pytest.raises(ValueError, match="not a sub-job key"):
            SubJobKey.parse(text)


def test_the_suite_list_is_the_catalog() -> None:
    modules = sorted(p.stem for p in Path(experiments.__file__).parent.glob("[!_]*.py"))
    assert sorted(SUITE_NAMES) == sorted(EXPERIMENTS) == modules
    assert SUITE_NAMES == ("table1", "table2", "table3", "table4", "table5", "table6", "table7",
                           "imagenet", "zoo", "fig3a", "fig3b", "fig3c", "fig3d")  # fmt: skip
    assert get_args(SuiteRequest.model_fields["suite"].annotation) == SUITE_NAMES
