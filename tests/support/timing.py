"""One scale for every wait of the tests: a wait's budget is its quiet-machine time times
CTRW_TEST_TIME_SCALE (raise it on a slow or loaded machine; waits end as soon as their condition
holds), and the per-test timeout backstop (pytest-timeout, tests/conftest.py) derives from it too."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

TIME_SCALE = float(os.environ.get("CTRW_TEST_TIME_SCALE", "2"))
# Quiet-machine budget of one whole test (setup, call and teardown, module fixtures included):
# the backstop that turns a hang into a failure; a test's own waits are much shorter.
TEST_BUDGET_S = 120.0
SLOW_TEST_BUDGET_S = 600.0


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it is truthy; ``timeout`` is the quiet-machine budget (x TIME_SCALE)."""
    timeout *= TIME_SCALE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
