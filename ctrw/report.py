"""Robust-accuracy tables as data and as CSV / Markdown / LaTeX (pure Python, no torch).

The API renders stored results with this module, so the CLI and the service print the same
table. Accuracies are stored as fractions and shown in percent, like the paper.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["build_table", "column_name", "render_table"]


def column_name(attack: str, protocol: str) -> str:
    return f"{attack} ({protocol})"


def build_table(rows: Iterable[Mapping[str, Any]], *, label: Mapping[str, Any]) -> dict[str, Any]:
    """One table row (a model/variant) whose cells are the attack x protocol results."""
    cells: dict[str, dict[str, Any]] = {}
    for r in rows:
        cells[column_name(r["attack"], r["protocol"])] = {
            "accuracy": r["accuracy"],
            "n": r["n"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
            "std": r.get("std"),
            "worst_case": (r.get("scoring") or {}).get("worst_case"),
        }
    return {"columns": list(cells), "rows": [{**dict(label), "cells": cells}]}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _cell(c: Mapping[str, Any] | None) -> str:
    if c is None:
        return "-"
    return f"{_pct(c['accuracy'])} [{_pct(c['ci_low'])}, {_pct(c['ci_high'])}]"


def render_table(table: Mapping[str, Any], fmt: str = "markdown") -> str:
    """Render ``build_table`` output. fmt: markdown | csv | latex."""
    cols = list(table["columns"])
    label_keys = [k for k in table["rows"][0] if k != "cells"] if table["rows"] else ["model", "variant"]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        head = [*label_keys]
        for c in cols:
            head += [f"{c} acc", f"{c} n", f"{c} ci_low", f"{c} ci_high"]
        w.writerow(head)
        for row in table["rows"]:
            line = [row[k] for k in label_keys]
            for c in cols:
                cell = row["cells"].get(c)
                line += (
                    [cell["accuracy"], cell["n"], cell["ci_low"], cell["ci_high"]]
                    if cell
                    else ["", "", "", ""]
                )
            w.writerow(line)
        return buf.getvalue()
    if fmt == "latex":
        spec = "l" * len(label_keys) + "c" * len(cols)
        out = [
            f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule",
            " & ".join([*label_keys, *cols]) + " \\\\",
            "\\midrule",
        ]
        for row in table["rows"]:
            vals = [str(row[k]) for k in label_keys]
            for c in cols:
                cell = row["cells"].get(c)
                vals.append(
                    "-"
                    if cell is None
                    else f"{_pct(cell['accuracy'])}$_{{\\pm {50 * (cell['ci_high'] - cell['ci_low']):.2f}}}$"
                )
            out.append(" & ".join(vals) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(out) + "\n"
    if fmt != "markdown":
        raise ValueError(f"unknown format '{fmt}' (markdown | csv | latex)")
    header = "| " + " | ".join([*label_keys, *cols]) + " |"
    sep = "|" + "---|" * (len(label_keys) + len(cols))
    lines = [header, sep]
    for row in table["rows"]:
        vals = [str(row[k]) for k in label_keys] + [_cell(row["cells"].get(c)) for c in cols]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"
