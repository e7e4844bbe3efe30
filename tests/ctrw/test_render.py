"""The one table renderer (``ctrw.render``) for jobs and suites: the sub-jobs' diagnostics in the
suite tables, LaTeX that compiles, intervals as [lo, hi], percent in every rendering. (The
service's job tables through it: tests/service/unit/test_tables.py.)"""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest

from ctrw import render as report
from ctrw.config import AttackSpec
from ctrw.evaluation.checks import attack_ordering
from ctrw.paper import SuiteRequest, assemble_suite, render_suite_table
from tests.support.rows import PGD, suite_results


def test_suite_tables_carry_their_sub_jobs_diagnostics() -> None:
    # The smoke Table 1 of the issue: CW-L2 at 98.4% beside the paper's 78.5% fires
    # unbounded_attacks on the sub-job; the table must say so in JSON, Markdown and LaTeX.
    req = SuiteRequest(suite="table1", smoke=True)
    inputs = suite_results(req, unbounded=0.984)
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
    quiet = assemble_suite(req, suite_results(req, unbounded=0.0)).tables["table1"]
    md = render_suite_table(quiet, "markdown")
    assert "⚠" not in md and "- Diagnostics: 0 fired." in md
    assert "unbounded_attacks (passed for 4)" in md


def test_a_sub_job_behind_several_rows_has_one_note() -> None:
    # Figure 3c: every row is the same attack sub-job; its finding is one footnote.
    req = SuiteRequest(suite="fig3c", smoke=True)
    inputs = suite_results(req, unbounded=0.5)
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
