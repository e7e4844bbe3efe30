"""The one table renderer (``ctrw.render``) for jobs and suites: the sub-jobs' diagnostics in the
suite tables, LaTeX that compiles, intervals as [lo, hi], percent in every rendering."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.models import JobKind, JobStatus
from app.schemas import ResultCell, ResultColumn, ResultRow, ResultsTable
from app.services import tables
from ctrw import render as report
from ctrw.config import AttackSpec
from ctrw.evaluation.checks import attack_ordering, not_applicable, unbounded_attacks
from ctrw.paper.suites import SuiteRequest, assemble_suite, expand_suite, render_suite_table

# A job's PGD row with an asymmetric interval (a Wilson interval near 0 or 1 is asymmetric).
PGD = {"attack": "pgd2", "name": "pgd", "protocol": "paper", "accuracy": 0.5, "ci_low": 0.40, "ci_high": 0.55,
       "n": 64, "std": None, "params": {"steps": 2}, "scoring": {"worst_case": 0.25, "majority": 0.5}}  # fmt: skip
CLEAN = {**PGD, "attack": "clean", "name": "clean", "accuracy": 0.75, "ci_low": 0.63, "ci_high": 0.84}


def _suite_results(req: SuiteRequest, unbounded: float) -> dict[str, dict[str, Any]]:
    """Every sub-job succeeded at 50% (CW and DeepFool at ``unbounded``), with the diagnostics that
    ``ctrw.evaluation.diagnostics`` computes from those rows, as the worker stores them."""
    out: dict[str, dict[str, Any]] = {}
    for job in expand_suite(req):
        evaluation = job.config.evaluation if job.config is not None else job.evaluation
        assert evaluation is not None
        rows = []
        for spec in evaluation.attacks:
            acc = unbounded if spec.name in ("cw", "deepfool") else 0.5
            protocol = spec.protocol or evaluation.protocol
            for p in ("paper", "adaptive") if protocol == "both" else (protocol,):
                rows.append({"attack": spec.column, "name": spec.name, "protocol": p, "accuracy": acc,
                             "ci_low": max(0.0, acc - 0.08), "ci_high": min(1.0, acc + 0.05), "n": 64,
                             "std": None, "params": spec.model_dump(exclude_none=True)})  # fmt: skip
        diagnostics = [
            attack_ordering(rows),
            unbounded_attacks(rows),
            not_applicable("randomness", "diagnostics are disabled for this evaluation (no extra runs)"),
        ]
        out[job.key] = {"status": "succeeded", "rows": rows, "diagnostics": diagnostics}
    return out


def test_suite_tables_carry_their_sub_jobs_diagnostics() -> None:
    # The smoke Table 1 of the issue: CW-L2 at 98.4% beside the paper's 78.5% fires
    # unbounded_attacks on the sub-job; the table must say so in JSON, Markdown and LaTeX.
    req = SuiteRequest(suite="table1", smoke=True)
    inputs = _suite_results(req, unbounded=0.984)
    table = assemble_suite(req, inputs).tables["table1"]
    cw = AttackSpec.model_validate({"name": "cw", "steps": 5}).column

    body = table.model_dump(mode="json")
    assert body["unit"] == "percent"
    for row in body["rows"]:
        (key,) = row["sub_jobs"]
        assert [(d["source"], d["name"]) for d in row["diagnostics"]] == [
            (key, "attack_ordering"), (key, "unbounded_attacks"), (key, "randomness")
        ]  # fmt: skip
        fired = next(d for d in row["diagnostics"] if d["name"] == "unbounded_attacks")
        assert fired["fired"] and f"{cw} (paper) leaves 98.4% correct" in fired["verdict"]
        randomness = next(d for d in row["diagnostics"] if d["name"] == "randomness")
        assert not randomness["fired"] and not randomness["applicable"]
        # The cells the verdict names carry the flag (CW, DeepFool), the others do not.
        assert row["cells"]["cw"]["flags"] == ["unbounded_attacks"]
        assert row["cells"]["deepfool"]["flags"] == ["unbounded_attacks"]
        assert row["cells"]["natural"]["flags"] == [] and row["cells"]["pgd20"]["flags"] == []

    md = render_suite_table(table, "markdown")
    ctrw_line = next(line for line in md.splitlines() if line.startswith("| ResNet18 | CTRW (ours) |"))
    assert "98.40 [90.40, 100.00] ⚠d | 82.93 |" in ctrw_line
    note = next(line for line in md.splitlines() if line.startswith("- ⚠d "))
    assert "unbounded_attacks FIRED, sub-job resnet18/digits/ctrw (ResNet18 / CTRW (ours))" in note
    assert f"{cw} (paper) leaves 98.4% correct" in note
    assert "randomness (not applicable for 4)" in md

    latex = render_suite_table(table, "latex")
    assert r"98.40 {[}90.40, 100.00]\textsuperscript{d} & 82.93" in latex
    assert r"\textsuperscript{d}~unbounded\_attacks FIRED, sub-job resnet18/digits/ctrw" in latex

    rows = list(csv.DictReader(io.StringIO(render_suite_table(table, "csv"))))
    assert rows[3]["diagnostics_fired"] == "unbounded_attacks (resnet18/digits/ctrw)"

    # Nothing fired: no marks, the table says so.
    quiet = assemble_suite(req, _suite_results(req, unbounded=0.0)).tables["table1"]
    md = render_suite_table(quiet, "markdown")
    assert "⚠" not in md and "- Diagnostics: 0 fired." in md
    assert "unbounded_attacks (passed for 4)" in md


def test_a_sub_job_behind_several_rows_has_one_note() -> None:
    # Figure 3c: every row is the same attack sub-job; its finding is one footnote.
    req = SuiteRequest(suite="fig3c", smoke=True)
    inputs = _suite_results(req, unbounded=0.5)
    (key,) = [k for k in inputs if k.endswith("+pgd_steps")]
    inputs[key]["diagnostics"] = [
        {"name": "steps_sweep", "fired": True, "verdict": "PGD accuracy rises with more steps (pgd1 (paper) ...)",
         "details": {"applicable": True}},
    ]  # fmt: skip
    table = assemble_suite(req, inputs).tables["fig3c"]
    assert all(r.cells["paper"].ours == 50.0 for r in table.rows)
    md = render_suite_table(table, "markdown")
    assert md.count("- ⚠a steps_sweep FIRED") == 1 and "⚠b" not in md
    assert [r.cells["paper"].flags for r in table.rows] == [[], ["steps_sweep"], [], []]


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
    table = assemble_suite(req, _suite_results(req, unbounded=0.5)).tables["table1"]
    head = render_suite_table(table, "csv").splitlines()[0].split(",")
    assert head[:5] == ["model", "method", "natural_pct", "natural_ci_low_pct", "natural_ci_high_pct"]
    (row, *_) = csv.DictReader(io.StringIO(render_suite_table(table, "csv")))
    assert row["natural_pct"] == "50.0" and row["natural_paper_pct"] == "81.84"
    job = next(csv.DictReader(io.StringIO(tables.render_results(_results_table(), "csv"))))
    assert float(job["pgd2 (paper)_pct"]) == float(row["pgd20_pct"]) == 50.0


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("small_cnn", r"small\_cnn"),
        ("50% & #1 $x$", r"50\% \& \#1 \$x\$"),
        ("{a}~b^c\\", r"\{a\}\textasciitilde{}b\textasciicircum{}c\textbackslash{}"),
        ("a <= b | c > d", r"a \textless{}= b \textbar{} c \textgreater{} d"),
        (
            "σ ± 1 × 2 ≤ 3",
            r"\ensuremath{\sigma} \ensuremath{\pm} 1 \ensuremath{\times} 2 \ensuremath{\leq} 3",
        ),
        ("[lo, hi]", "{[}lo, hi]"),
        ("café 中", "cafe ?"),
    ],
)
def test_latex_escapes(text: str, escaped: str) -> None:
    assert report.latex_escape(text) == escaped


@pytest.mark.skipif(
    shutil.which("pdflatex") is None, reason="pdflatex is not installed (scripts/bootstrap.sh)"
)
def test_latex_compiles(tmp_path: Path) -> None:
    req = SuiteRequest(suite="table1", smoke=True)
    suite = assemble_suite(req, _suite_results(req, unbounded=0.984))
    req5 = SuiteRequest(suite="table5", smoke=True)
    table5 = assemble_suite(req5, _suite_results(req5, unbounded=0.5)).tables["table5"]
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


def test_report_imports_no_torch() -> None:
    code = "import sys, ctrw.render; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_the_groups_that_fired_mark_their_cells() -> None:
    # A stronger attack scoring higher at 8/255 fires; the eps 0.2 group is judged fine. Its rows
    # appear in the entry's details too, but no diagnostic fired about them.
    eps = 8 / 255
    rows = [
        {**PGD, "attack": "pgd20", "accuracy": 0.40, "ci_low": 0.39, "ci_high": 0.41, "n": 10000,
         "params": {"eps": eps, "step_size": eps / 4, "steps": 20}},
        {**PGD, "attack": "autoattack", "name": "autoattack", "accuracy": 0.60, "ci_low": 0.59,
         "ci_high": 0.61, "n": 10000, "params": {"eps": eps}},
        {**PGD, "attack": "pgd20_02", "accuracy": 0.30, "ci_low": 0.29, "ci_high": 0.31, "n": 10000,
         "params": {"eps": 0.2, "step_size": 0.05, "steps": 20}},
        {**PGD, "attack": "fgsm_02", "name": "fgsm", "accuracy": 0.35, "ci_low": 0.34, "ci_high": 0.36,
         "n": 10000, "params": {"eps": 0.2}},
    ]  # fmt: skip
    entry = attack_ordering(rows)
    assert entry["fired"], entry["verdict"]
    fired = [g for g in entry["details"]["groups"] if g.get("fired")]
    assert [g["threat_model"] for g in fired] == ["Linf eps=8/255"]
    assert report.cell_flags([entry], "autoattack", "paper") == ["attack_ordering"]
    assert report.cell_flags([entry], "fgsm_02", "paper") == []
    assert report.cell_flags([entry], "pgd20_02", "paper") == []
