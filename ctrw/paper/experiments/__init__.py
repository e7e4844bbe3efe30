"""The catalog of the paper's experiments: one module per table or figure, each defining its
``EXPERIMENT`` (``ctrw.paper.registry.Experiment``). Adding a suite is adding a module here (and
its paper values in ``ctrw.paper.values``); nothing else lists the suites."""

from __future__ import annotations

import importlib
import pkgutil
import re

from ctrw.paper.registry import Experiment

__all__ = ["EXPERIMENTS", "SUITE_NAMES"]


def _paper_order(exp: Experiment) -> tuple[int, list[int | str]]:
    # Tables, then the other suites (imagenet, zoo), then figures, each in the paper's numbering
    # (table2 before table10).
    parts = re.findall(r"\d+|\D+", exp.name)
    rank = 0 if exp.name.startswith("table") else 2 if exp.name.startswith("fig") else 1
    return rank, [int(p) if p.isdigit() else p for p in parts]


def _collect() -> dict[str, Experiment]:
    found = [
        importlib.import_module(f"{__name__}.{m.name}").EXPERIMENT
        for m in pkgutil.iter_modules(__path__)
        if not m.name.startswith("_")
    ]
    return {exp.name: exp for exp in sorted(found, key=_paper_order)}


EXPERIMENTS: dict[str, Experiment] = _collect()
SUITE_NAMES: tuple[str, ...] = tuple(EXPERIMENTS)
