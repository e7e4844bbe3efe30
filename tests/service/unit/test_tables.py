"""The service's job tables (``app.services.tables``) go through the one renderer, ``ctrw.render``:
the same cells and notes as the CLI's table, percent with [lo, hi] intervals, LaTeX that compiles.
(The renderer itself: tests/ctrw/test_render.py.)"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import pytest

from app.models import JobKind, JobStatus
from app.schemas import ResultCell, ResultColumn, ResultRow, ResultsTable
from app.services import tables
from ctrw import render as report
from ctrw.paper import SuiteRequest, assemble_suite, render_suite_table
from tests.support.rows import CLEAN, PGD, suite_results


def _results_table(model: str = "small_cnn") -> ResultsTable:
    """A job's JSON table as the API builds it (fractions)."""
    columns = [ResultColumn(key=report.column_name(r["attack"], r["protocol"]), attack=r["attack"], name=r["name"],
                            protocol=r["protocol"], params=r["params"]) for r in (CLEAN, PGD)]  # fmt: skip
    cells = {c.key: ResultCell(**{k: r[k] for k in ("accuracy", "n", "ci_low", "ci_high", "std")})
             for c, r in zip(columns, (CLEAN, PGD), strict=True)}  # fmt: skip
    diagnostics = [
        {"name": "protocol_gap", "fired": True, "details": {"applicable": True},
         "verdict": "The paper protocol overestimates robustness: pgd2 (paper) 50.0% vs 40.0% adaptive (σ ≥ 0)."},
        {"name": "steps_sweep", "fired": True, "details": {"applicable": True},
         "verdict": "PGD accuracy rises with more steps (pgd10_sweep (paper) 40.0% -> pgd100_sweep (paper) 45.0%)."},
        {"name": "zero_gradients", "fired": False, "details": {"applicable": True}, "verdict": "Gradients ok."},
    ]  # fmt: skip
    return ResultsTable(
        job_id="job_1", kind=JobKind.TRAIN, status=JobStatus.SUCCEEDED, config_hash="x", columns=columns,
        rows=[ResultRow(model=model, variant="ctrw", checkpoint="best", cells=cells)], diagnostics=diagnostics,
    )  # fmt: skip


def test_job_tables_use_the_same_renderer_in_percent_with_lo_hi_intervals() -> None:
    results = _results_table()
    assert results.unit == "fraction" and results.rows[0].cells["pgd2 (paper)"].accuracy == 0.5
    md = tables.render_results(results, "markdown")
    assert "| small_cnn | ctrw | best | 75.00 [63.00, 84.00] | 50.00 [40.00, 55.00] ⚠a |" in md
    assert "Accuracy in % [95% confidence interval]." in md
    assert "- ⚠a protocol_gap FIRED, job job_1: The paper protocol overestimates" in md
    # A finding that names no cell of the table is noted without a mark.
    assert "- steps_sweep FIRED, job job_1: PGD accuracy rises" in md and "⚠b" not in md
    assert "- Diagnostics: 2 fired (1 marked on the cells they name)." in md
    assert "- zero_gradients ok: Gradients ok." in md  # one job: every verdict is printed

    latex = tables.render_results(results, "latex")
    assert (
        r"small\_cnn & ctrw & best & 75.00 {[}63.00, 84.00] & 50.00 {[}40.00, 55.00]\textsuperscript{a}"
        in latex
    )
    assert r"\pm" not in latex.split(r"\end{tabular}")[0]  # an interval, never +- half its width

    (row,) = csv.DictReader(io.StringIO(tables.render_results(results, "csv")))
    assert row["pgd2 (paper)_pct"] == "50.0" and row["pgd2 (paper)_ci_low_pct"] == "40.0"
    assert row["pgd2 (paper)_ci_high_pct"] == "55.0" and row["clean (paper)_pct"] == "75.0"
    assert row["diagnostics_fired"] == "protocol_gap (job_1); steps_sweep (job_1)"

    # The CLI's table (library rows with their scoring) renders the same cells and notes.
    cli = report.job_table([CLEAN, PGD], labels={"model": "small_cnn", "variant": "ctrw", "checkpoint": "best"},
                           diagnostics=results.diagnostics, source="job_1",
                           title="Robust accuracy (%) of job job_1")  # fmt: skip
    assert report.render_table(cli, "markdown") == md
    assert cli.rows[0].cells["pgd2 (paper)"].worst_case == 25.0 and cli.unit == "percent"


def test_suite_and_job_csv_share_the_unit() -> None:
    req = SuiteRequest(suite="table1", smoke=True)
    table = assemble_suite(req, suite_results(req, unbounded=0.5)).tables["table1"]
    head = render_suite_table(table, "csv").splitlines()[0].split(",")
    assert head[:5] == ["model", "method", "natural_pct", "natural_ci_low_pct", "natural_ci_high_pct"]
    (row, *_) = csv.DictReader(io.StringIO(render_suite_table(table, "csv")))
    assert row["natural_pct"] == "50.0" and row["natural_paper_pct"] == "81.84"
    job = next(csv.DictReader(io.StringIO(tables.render_results(_results_table(), "csv"))))
    assert float(job["pgd2 (paper)_pct"]) == float(row["pgd20_pct"]) == 50.0


@pytest.mark.skipif(
    shutil.which("pdflatex") is None, reason="pdflatex is not installed (scripts/bootstrap.sh)"
)
def test_latex_compiles(tmp_path: Path) -> None:
    req = SuiteRequest(suite="table1", smoke=True)
    suite = assemble_suite(req, suite_results(req, unbounded=0.984))
    req5 = SuiteRequest(suite="table5", smoke=True)
    table5 = assemble_suite(req5, suite_results(req5, unbounded=0.5)).tables["table5"]
    odd = _results_table(model="small_cnn (width 0.25) #1 & <σ>_{x}^2 [ok] 100%")
    # Through the service's entry point (jobs) and the suites' name, as the API renders them.
    body = "\n".join(
        [tables.render_results(_results_table(), "latex"), tables.render_results(odd, "latex")]
        + [render_suite_table(t, "latex") for t in [*suite.tables.values(), table5]]
    )
    doc = tmp_path / "tables.tex"
    doc.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + body + "\\end{document}\n"
    )
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    log = (tmp_path / "tables.log").read_text(errors="replace")
    assert run.returncode == 0, run.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 0
    assert "Missing character" not in log  # every glyph exists in the default fonts
