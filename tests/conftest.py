"""What every test needs: one torch thread, and the per-test timeout backstop (pytest-timeout)
derived from the one wait scale, CTRW_TEST_TIME_SCALE (tests/support/timing.py). Service fixtures
live in tests/service/conftest.py, so library tests never import the service (app, SQLAlchemy, Redis)."""

from __future__ import annotations

import os

import pytest

from tests.support.timing import SLOW_TEST_BUDGET_S, TEST_BUDGET_S, TIME_SCALE

# One thread per torch process (this one and every child: API, workers, CLI runs): the tests
# share a few cores, and threads spinning against each other make timings erratic. Set before
# any test module imports torch, which reads it once.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The same, through the project's own setting (ctrw.threads), which the CLI and the workers apply.
os.environ.setdefault("CTRW_TORCH_THREADS", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A hang becomes a failure after the test's budget (a test's own marker wins).
    for item in items:
        if item.get_closest_marker("timeout") is None:
            budget = SLOW_TEST_BUDGET_S if item.get_closest_marker("slow") else TEST_BUDGET_S
            item.add_marker(pytest.mark.timeout(budget * TIME_SCALE))
