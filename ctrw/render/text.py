"""The one writer of result tables: Markdown, CSV and LaTeX of a ``ctrw.render.table.Table``,
ours beside the paper's value, the fired diagnostics as marks and notes. Pure Python."""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from ctrw.render.table import Cell, Column, Row, Table, TableDiagnostic

__all__ = ["FORMATS", "latex_escape", "render_table", "render_tables"]

FORMATS = ("markdown", "csv", "latex")
CI_LEGEND = "95% confidence interval"


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
