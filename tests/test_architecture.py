"""The architecture as tests: the import rules (import-linter contracts in pyproject.toml), the
library tests never loading the service, and no module over 400 lines without a stated reason."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVICE = ("app", "worker", "sqlalchemy", "redis", "celery", "httpx", "fastapi")
MAX_LINES = 400
# A longer file says why in its first lines, with these words (e.g. "# Over 400 lines: ...").
REASON = "400 lines"


def test_import_contracts_hold() -> None:
    out = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _imported(path: Path) -> set[str]:
    """Top-level packages a file imports (at any depth of the file: function-level ones count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "path",
    [
        "tests/conftest.py",
        "tests/support/configs.py",
        "tests/support/models.py",
        "tests/support/timing.py",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "ctrw").rglob("*.py")),
    ],
)
def test_library_tests_import_nothing_of_the_service(path: str) -> None:
    assert not _imported(ROOT / path) & set(SERVICE), f"{path} imports the service"


PROBE = """
import json, os, sys
def pytest_collection_finish(session):
    with open(os.environ["CTRW_TEST_PROBE_OUT"], "w") as f:
        json.dump(sorted(sys.modules), f)
"""


@pytest.mark.slow
def test_collecting_the_library_tests_loads_no_service_module(tmp_path: Path) -> None:
    # The real thing, beyond the source check above: what `pytest tests/ctrw` has imported.
    (tmp_path / "ctrw_test_probe.py").write_text(PROBE)
    out_file = tmp_path / "modules.json"
    env = {"PYTHONPATH": str(tmp_path), "CTRW_TEST_PROBE_OUT": str(out_file)}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/ctrw", "--co", "-q", "-p", "no:cacheprovider", "-p", "ctrw_test_probe"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **env},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    loaded = {m.split(".")[0] for m in json.loads(out_file.read_text())}
    assert not loaded & set(SERVICE)


def _python_files() -> list[Path]:
    dirs = ("ctrw", "app", "worker", "tests", "scripts", "benchmarks", "migrations")
    return sorted(p for d in dirs if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py"))


def test_no_module_over_400_lines_without_a_reason_at_its_top() -> None:
    long = {}
    for path in _python_files():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_LINES and not any(REASON in line for line in lines[:15]):
            long[str(path.relative_to(ROOT))] = len(lines)
    assert not long, f"over {MAX_LINES} lines with no reason in their first lines ({REASON!r}): {long}"
