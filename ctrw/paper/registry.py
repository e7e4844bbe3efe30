"""What a paper experiment is: its sub-jobs and its table/figure builder.

Each module of ``ctrw.paper.experiments`` defines one ``EXPERIMENT``; the catalog there collects
them, and every list of suites (``SUITE_NAMES``, the request's ``suite`` choices) derives from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctrw import render

if TYPE_CHECKING:
    from ctrw.paper.assembly import Results
    from ctrw.paper.planner import Planner
    from ctrw.paper.request import SuiteRequest

__all__ = ["Built", "Experiment"]

# An experiment's tables (by name) and figure data (by name; ``ctrw.figures`` draws them).
Built = tuple[dict[str, render.Table], dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class Experiment:
    """One table or figure of the paper.

    Args:
        name: the suite's name (``table1``, ``fig3b``), also its table's.
        plan: adds the sub-jobs of one model (``Planner.train`` / ``Planner.attack``).
        build: the tables and figure data from the sub-jobs' results.
        datasets: the data sets the paper's table covers (the rows' labels; a request may run
            them on another data set).
        models: the networks the paper's table has (None: the request's ``model`` chooses).
        base: the training config every sub-job starts from (None: the CIFAR default, or the
            digits smoke version); ``(request, model) -> dict``.
        smoke_dataset: the data set of the smoke version.
        smoke_recipe: deep-merged over the digits smoke version's training config
            (``ctrw.paper.planner.SMOKE_TRAIN``) for this experiment's sub-jobs.
    """

    name: str
    plan: Callable[[Planner, str], None]
    build: Callable[[SuiteRequest, Results], Built]
    datasets: tuple[str, ...] = ("cifar10",)
    models: tuple[str, ...] | None = None
    base: Callable[[SuiteRequest, str], dict[str, Any]] | None = None
    smoke_dataset: str = "digits"
    smoke_recipe: dict[str, Any] | None = None
