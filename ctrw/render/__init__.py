"""Result tables as data, and the one renderer (Markdown, CSV, LaTeX) for every table.

A job's robust-accuracy table (``job_table``: one row, one column per attack x protocol) and a
suite's paper tables (``ctrw.paper.assemble_suite``) are the same ``Table``, rendered by the same
``render_table``, so the CLI, the service's per-job results and the suites print alike.

Units: the library and the per-job JSON store accuracies as fractions in [0, 1]; every ``Table``
holds them in percent (``to_percent``, the one conversion; a result row becomes a cell in one
place, ``result_cell``), and every rendering shows percent: CSV says so in its headers (the
``_pct`` suffix), Markdown and LaTeX in the legend under the table. Confidence
intervals print as ``[lo, hi]`` (they are not symmetric).

Each row carries the diagnostics (``ctrw.evaluation.diagnostics``) of the job(s) behind it; a cell carries the
fired ones whose verdict names its attack column. Markdown and LaTeX mark those cells and list the
fired verdicts as notes under the table.

Pure Python and pydantic (no torch): the API process imports it.
"""

from ctrw.render.table import (
    Cell,
    Column,
    Row,
    Table,
    TableDiagnostic,
    cell_flags,
    column_name,
    job_table,
    result_cell,
    table_diagnostics,
    to_percent,
)
from ctrw.render.text import FORMATS, latex_escape, render_table, render_tables

__all__ = [
    "FORMATS",
    "Cell",
    "Column",
    "Row",
    "Table",
    "TableDiagnostic",
    "cell_flags",
    "column_name",
    "job_table",
    "latex_escape",
    "render_table",
    "render_tables",
    "result_cell",
    "table_diagnostics",
    "to_percent",
]
