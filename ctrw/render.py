"""Result tables as data, and the one renderer (Markdown, CSV, LaTeX) for every table.

A job's robust-accuracy table (``job_table``: one row, one column per attack x protocol) and a
suite's paper tables (``ctrw.paper.suites.assemble_suite``) are the same ``Table``, rendered by the same
``render_table``, so the CLI, the service's per-job results and the suites print alike.

Units: the library and the per-job JSON store accuracies as fractions in [0, 1]; every ``Table``
holds them in percent (``percent``, the one conversion), and every rendering shows percent: CSV
says so in its headers (``_pct``), Markdown and LaTeX in the legend under the table. Confidence
intervals print as ``[lo, hi]`` (they are not symmetric).

Each row carries the diagnostics (``ctrw.evaluation.diagnostics``) of the job(s) behind it; a cell carries the
fired ones whose verdict names its attack column. Markdown and LaTeX mark those cells and list the
fired verdicts as notes under the table.

Pure Python and pydantic (no torch): the API process imports it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

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
    "percent",
    "render_table",
    "render_tables",
    "table_diagnostics",
]

FORMATS = ("markdown", "csv", "latex")
CI_LEGEND = "95% confidence interval"


def column_name(attack: str, protocol: str) -> str:
    """A result column: ``pgd20 (paper)``. The diagnostics name rows the same way."""
    return f"{attack} ({protocol})"


def percent(x: float | None) -> float | None:
    """A fraction in [0, 1] as percent, rounded to 1e-4 points (far below any CI)."""
    return None if x is None else round(100.0 * float(x), 4)


# --------------------------------------------------------------------------- the data


class TableDiagnostic(BaseModel):
    """A diagnostic of the job behind a row (a ``ctrw.evaluation.diagnostics`` entry without its details)."""

    source: str = Field(..., description="the job behind the row: a suite's sub-job key, or the job id")
    name: str
    fired: bool
    applicable: bool = True
    verdict: str


class Cell(BaseModel):
    """Ours (accuracies in percent, with a 95% CI and n) beside the paper's value."""

    ours: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    std: float | None = None
    n: int | None = None
    worst_case: float | None = Field(None, description="correct under all K scoring draws (%)")
    majority: float | None = Field(None, description="majority vote over the K scoring draws correct (%)")
    paper: float | None = None
    paper_std: float | None = None
    note: str | None = None
    flags: list[str] = Field(
        default_factory=list, description="fired diagnostics of the row's job whose verdict names this cell"
    )


class Column(BaseModel):
    key: str
    label: str
    kind: Literal["accuracy", "mean_std", "count", "ratio", "cosine", "number"] = "accuracy"
    paper: bool = Field(True, description="the paper's table has this column (its value beside ours)")
    protocol: str | None = None


class Row(BaseModel):
    labels: dict[str, str]
    sub_jobs: list[str] = Field(default_factory=list, description="sub-job keys behind the row")
    complete: bool = True
    cells: dict[str, Cell] = Field(default_factory=dict)
    diagnostics: list[TableDiagnostic] = Field(
        default_factory=list, description="every diagnostic of the jobs behind the row, with its verdict"
    )


class Table(BaseModel):
    name: str
    title: str
    unit: Literal["percent"] = Field(
        "percent", description="accuracy cells (ours, ci_low, ci_high, std, worst_case, majority, paper)"
    )
    row_keys: list[str]
    columns: list[Column]
    rows: list[Row]
    notes: list[str] = Field(default_factory=list)


def table_diagnostics(source: str, entries: Iterable[Mapping[str, Any]] | None) -> list[TableDiagnostic]:
    """``ctrw.evaluation.diagnostics`` entries of one job as a row's diagnostics."""
    return [
        TableDiagnostic(
            source=source,
            name=d["name"],
            fired=bool(d.get("fired")),
            applicable=(d.get("details") or {}).get("applicable", True) is not False,
            verdict=d.get("verdict", ""),
        )
        for d in entries or []
    ]


def cell_flags(entries: Iterable[Mapping[str, Any]] | None, attack: str, protocol: str) -> list[str]:
    """Names of the fired diagnostics whose verdict or details name the result ``attack (protocol)``.

    The diagnostics name rows as ``column_name`` does; the match is on whole names, so
    ``pgd2 (paper)`` does not match ``eotpgd2 (paper)``.
    """
    pattern = re.compile(r"(?<![\w.@-])" + re.escape(column_name(attack, protocol)))

    def names_cell(judged: Mapping[str, Any]) -> bool:
        return bool(pattern.search(judged.get("verdict", "")) or pattern.search(json.dumps(judged)))

    def implicates(d: Mapping[str, Any]) -> bool:
        groups = (d.get("details") or {}).get("groups")
        if groups:  # per-threat-model entries: only the groups that fired implicate their rows
            return any(g.get("fired") and names_cell(g) for g in groups)
        return names_cell({"verdict": d.get("verdict", ""), "details": d.get("details") or {}})

    return [d["name"] for d in entries or [] if d.get("fired") and implicates(d)]


def job_table(
    rows: Iterable[Mapping[str, Any]],
    *,
    labels: Mapping[str, Any],
    diagnostics: Iterable[Mapping[str, Any]] | None = None,
    source: str = "job",
    title: str = "Robust accuracy (%) by attack (protocol)",
) -> Table:
    """One job's table: one row (``labels``), one column per result row, in the given order.

    Args:
        rows: result rows as the evaluation reports them (attack, protocol, accuracy, ci_low,
            ci_high, n, std as fractions; ``scoring`` with worst_case and majority).
        labels: the row's labels (model, variant, ...), in display order.
        diagnostics: the job's ``ctrw.evaluation.diagnostics`` entries.
        source: what to call the job in the notes (its id in the service).
        title: the table's title.
    """
    entries = list(diagnostics or [])
    columns: list[Column] = []
    cells: dict[str, Cell] = {}
    for r in rows:
        key = column_name(r["attack"], r["protocol"])
        scoring = r.get("scoring") or {}
        columns.append(Column(key=key, label=key, paper=False, protocol=r["protocol"]))
        cells[key] = Cell(
            ours=percent(r["accuracy"]),
            ci_low=percent(r.get("ci_low")),
            ci_high=percent(r.get("ci_high")),
            std=percent(r.get("std")),
            n=r.get("n"),
            worst_case=percent(r.get("worst_case", scoring.get("worst_case"))),
            majority=percent(r.get("majority", scoring.get("majority"))),
            flags=cell_flags(entries, r["attack"], r["protocol"]),
        )
    row = Row(
        labels={k: str(v) for k, v in labels.items()},
        sub_jobs=[source],
        cells=cells,
        diagnostics=table_diagnostics(source, entries),
    )
    return Table(
        name="results", title=title, row_keys=list(labels), columns=columns, rows=[row] if cells else []
    )


# --------------------------------------------------------------------------- rendering


def _number(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "count":
        return str(int(value))
    if kind in ("ratio", "cosine"):
        return f"{value:.4f}"
    if kind == "number":
        return f"{value:.4g}"
    return f"{value:.2f}"


def _ours(cell: Cell | None, column: Column) -> str:
    if cell is None or cell.ours is None:
        return "-"
    text = _number(cell.ours, column.kind)
    if column.kind == "mean_std":
        return f"{text} ± {_number(cell.std, 'accuracy')}"
    if column.kind == "accuracy" and cell.ci_low is not None and cell.ci_high is not None:
        return f"{text} [{cell.ci_low:.2f}, {cell.ci_high:.2f}]"
    return text


def _paper(cell: Cell | None, column: Column) -> str:
    if cell is None or cell.paper is None:
        return "-"
    text = _number(cell.paper, "accuracy" if column.kind == "mean_std" else column.kind)
    if cell.paper_std is not None or column.kind == "mean_std":
        text += f" ± {_number(cell.paper_std, 'accuracy')}"
    return text


def _letter(i: int) -> str:
    return chr(97 + i) if i < 26 else _letter(i // 26 - 1) + chr(97 + i % 26)


class _Notes:
    """The fired diagnostics, one note per (job, diagnostic) in order of appearance; those that
    name cells get a letter, marked on those cells (the others' notes name their row)."""

    def __init__(self, table: Table) -> None:
        self.fired: dict[tuple[str, str], tuple[str, TableDiagnostic]] = {}
        self.marks: dict[tuple[str, str], str] = {}
        self.quiet: dict[str, dict[str, set[str]]] = {}  # name -> passed / not applicable -> jobs
        for row in table.rows:
            named = {f for c in row.cells.values() for f in c.flags}
            for d in row.diagnostics:
                key = (d.source, d.name)
                if not d.fired:
                    outcome = "passed" if d.applicable else "not applicable"
                    self.quiet.setdefault(d.name, {}).setdefault(outcome, set()).add(d.source)
                    continue
                self.fired.setdefault(key, (" / ".join(row.labels.get(k, "") for k in table.row_keys), d))
                if d.name in named and key not in self.marks:
                    self.marks[key] = _letter(len(self.marks))
        self.sources = {d.source for row in table.rows for d in row.diagnostics}

    def cell(self, row: Row, cell: Cell | None) -> list[str]:
        names = set(cell.flags) if cell is not None else set()
        return [self.marks[(d.source, d.name)] for d in row.diagnostics if d.fired and d.name in names]

    def lines(self, table: Table) -> list[tuple[str | None, str]]:
        """(mark, text) of every note about the diagnostics; no mark for unmarked or summary lines."""
        out: list[tuple[str | None, str]] = []
        for key, (label, d) in self.fired.items():
            job = f"job {d.source}" if len(self.sources) == 1 else f"sub-job {d.source} ({label})"
            out.append((self.marks.get(key), f"{d.name} FIRED, {job}: {d.verdict}"))
        if len(self.sources) == 1:
            # One job: every verdict is short enough to print.
            out += [
                (None, f"{d.name} {'ok' if d.applicable else 'n/a'}: {d.verdict}")
                for row in table.rows[:1]
                for d in row.diagnostics
                if not d.fired
            ]
        elif self.quiet:
            parts = []
            for name, outcomes in self.quiet.items():
                counts = ", ".join(f"{outcome} for {len(jobs)}" for outcome, jobs in sorted(outcomes.items()))
                parts.append(f"{name} ({counts})")
            out.append((None, f"Did not fire ({len(self.sources)} jobs): " + "; ".join(parts) + "."))
        if self.sources:
            marked = f" ({len(self.marks)} marked on the cells they name)" if self.marks else ""
            out.insert(0, (None, f"Diagnostics: {len(self.fired)} fired{marked}."))
        return out


def _legend(table: Table) -> str:
    kinds = {c.kind for c in table.columns}
    parts = []
    if "accuracy" in kinds:
        parts.append(f"accuracy in % [{CI_LEGEND}]")
    if "mean_std" in kinds:
        parts.append("mean ± std in %")
    text = ("Ours: " if any(c.paper for c in table.columns) else "") + "; ".join(parts)
    if any(c.paper for c in table.columns):
        text += "; '[paper]': the paper's value"
    return text[:1].upper() + text[1:] + "."


def render_table(table: Table | Mapping[str, Any], fmt: str = "markdown") -> str:
    """A table as ``markdown``, ``csv`` or ``latex``: ours, and the paper's value beside it where
    the paper has the column (``<label> [paper]``), with the fired diagnostics as notes.

    CSV has one line per row; its headers carry the unit (``natural_pct``, ``natural_ci_low_pct``)
    and ``diagnostics_fired`` lists the fired diagnostics of the row's jobs. LaTeX is a
    ``tabular`` (booktabs rules) followed by its notes; everything in it is escaped.
    """
    t = table if isinstance(table, Table) else Table.model_validate(table)
    if fmt == "csv":
        return _csv(t)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}' ({' | '.join(FORMATS)})")
    notes = _Notes(t)
    latex = fmt == "latex"
    heads: list[str] = []
    for c in t.columns:
        heads.append(c.label)
        if c.paper:
            heads.append(f"{c.label} [paper]")

    def marked(text: str, marks: list[str]) -> str:
        if not marks:
            return latex_escape(text) if latex else _md(text)
        if latex:
            return latex_escape(text) + "\\textsuperscript{" + ",".join(marks) + "}"
        return _md(text) + " ⚠" + ",".join(marks)

    body = []
    for row in t.rows:
        vals = [
            latex_escape(row.labels.get(k, "")) if latex else _md(row.labels.get(k, "")) for k in t.row_keys
        ]
        for c in t.columns:
            cell = row.cells.get(c.key)
            vals.append(marked(_ours(cell, c), notes.cell(row, cell)))
            if c.paper:
                vals.append(marked(_paper(cell, c), []))
        body.append(vals)
    legend = [_legend(t), *t.notes]
    diag = notes.lines(t)
    if latex:
        out = [
            f"% {' '.join(t.title.split())}",
            f"\\begin{{tabular}}{{{'l' * len(t.row_keys)}{'c' * len(heads)}}}",
            "\\toprule",
            " & ".join(latex_escape(h) for h in [*t.row_keys, *heads]) + " \\\\",
            "\\midrule",
        ]
        out += [" & ".join(vals) + " \\\\" for vals in body]
        out += ["\\bottomrule", "\\end{tabular}", "", "{\\footnotesize"]
        out += [f"{latex_escape(n)}\\par" for n in legend]
        out += [
            ("\\textsuperscript{" + mark + "}~" if mark else "") + f"{latex_escape(text)}\\par"
            for mark, text in diag
        ]
        out.append("}")
        return "\n".join(out) + "\n"
    lines = [
        f"**{_md(t.title)}**",
        "",
        "| " + " | ".join([*(_md(k) for k in t.row_keys), *map(_md, heads)]) + " |",
    ]
    lines.append("|" + "---|" * (len(t.row_keys) + len(heads)))
    lines += ["| " + " | ".join(vals) + " |" for vals in body]
    lines.append("")
    lines.append(legend[0])
    lines += [f"- {n}" for n in legend[1:]]
    if diag:
        lines.append("")
        lines += [f"- {'⚠' + mark + ' ' if mark else ''}{text}" for mark, text in diag]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """A Markdown table cell: a '|' would end the cell, a newline the row."""
    return " ".join(str(text).split()).replace("|", "\\|")


_CSV_FIELDS: dict[str, list[tuple[str, str]]] = {
    # (suffix, Cell attribute); accuracies carry their unit in the header.
    "accuracy": [("_pct", "ours"), ("_ci_low_pct", "ci_low"), ("_ci_high_pct", "ci_high"), ("_std_pct", "std"),
                 ("_n", "n"), ("_worst_case_pct", "worst_case"), ("_majority_pct", "majority")],
    "mean_std": [("_pct", "ours"), ("_ci_low_pct", "ci_low"), ("_ci_high_pct", "ci_high"), ("_std_pct", "std"),
                 ("_n", "n")],
    "count": [("", "ours"), ("_n", "n")],
    "ratio": [("", "ours"), ("_n", "n")],
    "cosine": [("", "ours"), ("_n", "n")],
    "number": [("", "ours")],
}  # fmt: skip


def _csv_fields(c: Column) -> list[tuple[str, str]]:
    fields = list(_CSV_FIELDS[c.kind])
    if c.paper:
        unit = "_pct" if c.kind in ("accuracy", "mean_std") else ""
        fields.append((f"_paper{unit}", "paper"))
        if c.kind == "mean_std":
            fields.append(("_paper_std_pct", "paper_std"))
    return fields


def _csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    head = [*t.row_keys]
    for c in t.columns:
        head += [f"{c.key}{suffix}" for suffix, _ in _csv_fields(c)]
    w.writerow([*head, "diagnostics_fired"])
    for row in t.rows:
        line: list[Any] = [row.labels.get(k, "") for k in t.row_keys]
        for c in t.columns:
            cell = row.cells.get(c.key) or Cell()
            line += ["" if getattr(cell, attr) is None else getattr(cell, attr) for _, attr in _csv_fields(c)]
        fired = dict.fromkeys(f"{d.name} ({d.source})" for d in row.diagnostics if d.fired)
        w.writerow([*line, "; ".join(fired)])
    return buf.getvalue()


_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "|": r"\textbar{}", "±": r"\ensuremath{\pm}", "×": r"\ensuremath{\times}",
    "≤": r"\ensuremath{\leq}", "≥": r"\ensuremath{\geq}", "≈": r"\ensuremath{\approx}",
    "→": r"\ensuremath{\rightarrow}", "∞": r"\ensuremath{\infty}", "σ": r"\ensuremath{\sigma}",
    "μ": r"\ensuremath{\mu}", "α": r"\ensuremath{\alpha}", "β": r"\ensuremath{\beta}",
    "ε": r"\ensuremath{\varepsilon}", "δ": r"\ensuremath{\delta}", "−": "-", "–": "--", "—": "---",
    "‘": "`", "’": "'", "“": "``", "”": "''", "…": r"\ldots{}", "⚠": "!", "\n": " ",
    # After \\ a '[' would be read as the row's optional spacing argument.
    "[": "{[}",
}  # fmt: skip


def latex_escape(text: str) -> str:
    """Text safe in a LaTeX document (pdflatex, no extra packages): specials escaped, the symbols
    the tables and verdicts use as math, other non-ASCII letters without their accents (or '?')."""
    out = []
    for ch in str(text):
        if ch in _LATEX:
            out.append(_LATEX[ch])
        elif ch.isascii():
            out.append(ch)
        else:
            plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            out.append("".join(_LATEX.get(p, p) for p in plain) or "?")
    return "".join(out)


def render_tables(tables: Sequence[Table], fmt: str) -> str:
    """Several tables in one document (Markdown, LaTeX); CSV holds one table, the first."""
    if fmt == "csv":
        return render_table(tables[0], "csv") if tables else ""
    return "\n".join(render_table(t, fmt) for t in tables)
