"""The paper's experiments as suites, and its quoted values.

A suite request (``SuiteRequest``) names one table or figure of the paper; ``expand_suite`` turns
it into sub-jobs: ordinary training jobs whose config carries its own evaluation, and, where a
suite only needs another evaluation of a model another sub-job trains (Table 5's repeats, Figure
3c's PGD steps), attack jobs on that training job. ``assemble_suite`` turns the sub-jobs' stored
results back into the paper's table, with the paper's own numbers beside ours, and the data of
its figures (drawn on the worker by ``ctrw.figures``).

- ``request``: the request and its scale knobs;
- ``keys``: the sub-job key (what a sub-job computes, with its string form);
- ``planner``: ``expand_suite`` and the planner the experiments add their sub-jobs to;
- ``experiments/``: one module per table or figure (its sub-jobs and its table builder); the
  catalog there is the one list of suites;
- ``assembly``: ``assemble_suite``; ``values``: the paper's numbers.

Pure: pydantic, the standard library, ``ctrw.config`` and ``ctrw.render`` only, so the API process
expands suites and renders their tables without torch.
"""

from ctrw import render
from ctrw.paper.assembly import SuiteAssembly, assemble_suite
from ctrw.paper.common import attack_column
from ctrw.paper.experiments import EXPERIMENTS, SUITE_NAMES
from ctrw.paper.keys import SubJobKey
from ctrw.paper.planner import SubJob, expand_suite
from ctrw.paper.request import SuiteRequest

__all__ = [
    "EXPERIMENTS",
    "SUITE_NAMES",
    "SubJob",
    "SubJobKey",
    "SuiteAssembly",
    "SuiteCell",
    "SuiteColumn",
    "SuiteRequest",
    "SuiteRow",
    "SuiteTable",
    "assemble_suite",
    "attack_column",
    "expand_suite",
    "render_suite_table",
]

# A suite's tables are ``ctrw.render`` tables, rendered by its one writer.
SuiteCell = render.Cell
SuiteColumn = render.Column
SuiteRow = render.Row
SuiteTable = render.Table
render_suite_table = render.render_table
