"""The service's default cost budgets (``Settings.max_job_pflop``, ``max_suite_pflop``) against
the library's estimates (``ctrw.cost``): they refuse absurd requests, never the paper. (The
estimates themselves: tests/ctrw/test_cost.py.)"""

from __future__ import annotations

from app.core.settings import Settings
from ctrw.config import TrainConfig, imagenet_preset, published_preset
from ctrw.cost import suite_cost, total_pflop, train_job_cost
from ctrw.paper import SUITE_NAMES, SuiteRequest


def test_every_paper_suite_fits_the_default_budgets() -> None:
    """The budget refuses absurd requests, not the paper: every suite for both networks, and the
    published and ImageNet recipes, are under the defaults."""
    settings = Settings()
    largest = 0.0
    for name in SUITE_NAMES:
        costs = suite_cost(SuiteRequest(suite=name, model="all"))
        largest = max(largest, *(c.pflop for c in costs.values()))
        assert total_pflop(costs.values()) <= settings.max_suite_pflop, name
    assert largest <= settings.max_job_pflop
    assert largest > settings.max_job_pflop / 4  # the budget is not so loose that it refuses nothing
    for cfg in (published_preset(), imagenet_preset(), TrainConfig()):
        assert train_job_cost(cfg).pflop <= settings.max_job_pflop


def test_absurd_requests_are_far_over_the_budget() -> None:
    settings = Settings()
    absurd = TrainConfig.model_validate({
        "model": {"name": "wrn34_10", "width": 4.0}, "optim": {"epochs": 1000},
        "data": {"dataset": "synthetic", "image_size": 128, "synthetic_train": 50_000},
    })  # fmt: skip
    assert train_job_cost(absurd).pflop > 100 * settings.max_job_pflop
    fan_out = SuiteRequest(suite="fig3b", model="all", epochs=1000)
    assert total_pflop(suite_cost(fan_out).values()) > settings.max_suite_pflop
