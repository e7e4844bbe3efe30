"""The API process never imports torch: it validates with ctrw.config (and expands suites with
ctrw.paper) and dispatches by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.service

SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import app.cli.main, app.main
from app.core.migrate import upgrade
from app.core.settings import Settings
from fastapi.testclient import TestClient
imported = time.perf_counter() - t0

settings = Settings(database_url=sys.argv[1], broker_url=sys.argv[2])
upgrade(settings)
client = TestClient(app.main.create_app(settings))
job = client.post("/jobs/train", json=json.loads(sys.argv[3]))
assert job.status_code == 202, job.text
job_id = job.json()["id"]
for path in (f"/jobs/{job_id}", "/jobs", f"/jobs/{job_id}/epochs", f"/jobs/{job_id}/sigma", "/readyz", "/openapi.json"):
    assert client.get(path).status_code == 200, path
assert client.get(f"/jobs/{job_id}/results").status_code == 409
assert client.post("/jobs/train", json={"optim": {"epochs": -1}}).status_code == 422
assert client.post(f"/jobs/{job_id}/cancel").status_code == 202
suite = client.post("/jobs/suite", json={"suite": "fig3b", "smoke": True})
assert suite.status_code == 202, suite.text
suite_id = suite.json()["id"]
assert client.get(f"/jobs/{suite_id}").json()["suite"]["total"] == 7
assert client.get(f"/jobs/{suite_id}/results").status_code == 409
assert client.post(f"/jobs/{suite_id}/cancel").json()["status"] == "cancelled"
heavy = [m for m in ("torch", "torchvision", "torchattacks", "ctrw.jobs", "worker.runner") if m in sys.modules]
print(json.dumps({"heavy": heavy, "import_seconds": imported}))
"""


def test_api_process_never_imports_torch(tmp_path: Path, redis_url: str, tiny_train: dict) -> None:
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", SCRIPT, f"sqlite:///{tmp_path / 'api.db'}", redis_url, json.dumps(tiny_train)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[3],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
