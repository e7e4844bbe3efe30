"""`ctrw.client` is importable where torch (and the service's own packages) are not installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import importlib.abc, json, sys

class Absent(importlib.abc.MetaPathFinder):
    # As if these were not installed: importing one raises ModuleNotFoundError.
    blocked = ("torch", "torchvision", "torchattacks", "numpy", "pydantic", "fastapi", "sqlalchemy", "celery", "app")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Absent())
from ctrw.client import APIError, Client, Job, Results
client = Client("http://127.0.0.1:9", key="k")
assert client._http.headers["Authorization"] == "Bearer k"
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in Absent.blocked)))
"""


def test_client_imports_without_torch() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[3])  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
