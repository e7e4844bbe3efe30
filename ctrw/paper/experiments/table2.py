"""Table 2: Table 1 on CIFAR-100."""

from __future__ import annotations

import dataclasses
import functools

from ctrw.paper import values as pv
from ctrw.paper.experiments import table1

EXPERIMENT = dataclasses.replace(
    table1.EXPERIMENT,
    name="table2",
    build=functools.partial(table1.build, paper=pv.TABLE2),
    datasets=("cifar100",),
)
