"""A checkpoint downloaded from the API is all the CLI needs: `ctrw evaluate` and `ctrw sigma-stats`
run on the downloaded file alone, in another directory, and reproduce the service's numbers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import BIN

pytestmark = [pytest.mark.service, pytest.mark.slow]


def _ctrw(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTRW_")}
    return subprocess.run(
        [str(BIN / "ctrw"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_downloaded_checkpoint_runs_in_the_cli(
    tmp_path: Path,
    processes: Any,
    fast_settings: Any,
    wait_for: Callable[..., Any],
    tiny_train: dict[str, Any],
) -> None:
    api = processes.api(fast_settings(processes.tmp), embedded_worker=True)
    job_id = api.post("/jobs/train", json=tiny_train).json()["id"]
    job = wait_for(lambda: (j := api.get(f"/jobs/{job_id}").json())["status"] not in ("queued", "running") and j,
                   timeout=240, what="the training job")  # fmt: skip
    assert job["status"] == "succeeded", job["error"]

    r = api.get(f"/jobs/{job_id}/checkpoint", params={"which": "best"})
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == r.headers["x-content-sha256"]
    elsewhere = tmp_path / "client"
    elsewhere.mkdir()
    checkpoint = elsewhere / "downloaded.safetensors"
    checkpoint.write_bytes(r.content)
    assert [p.name for p in elsewhere.iterdir()] == ["downloaded.safetensors"]  # nothing beside it

    # The same evaluation the job ran, from the file alone.
    (elsewhere / "eval.json").write_text(json.dumps(job["config"]["evaluation"]))
    ev = _ctrw("evaluate", checkpoint.name, "eval.json", "--out", "results.json", cwd=elsewhere)
    assert ev.returncode == 0, ev.stderr[-3000:]
    rows = json.loads((elsewhere / "results.json").read_text())["rows"]
    served = api.get(f"/jobs/{job_id}/results").json()["rows"][0]["cells"]
    assert (
        sorted(f"{r['attack']} ({r['protocol']})" for r in rows)
        == sorted(served)
        == [
            "clean (paper)",
            "pgd3 (paper)",
        ]
    )
    for row in rows:
        cell = served[f"{row['attack']} ({row['protocol']})"]
        assert row["accuracy"] == pytest.approx(cell["accuracy"]) and row["n"] == cell["n"] == 64, (row, cell)

    stats = _ctrw("sigma-stats", checkpoint.name, "--pairs", "200", "--out", "sigma.json", cwd=elsewhere)
    assert stats.returncode == 0, stats.stderr[-3000:]
    report = json.loads((elsewhere / "sigma.json").read_text())
    served_layers = api.get(f"/jobs/{job_id}/sigma").json()["layers"]
    assert report["layers"] and len(report["layers"]) == len(served_layers)
    assert report["layers"][0]["sigma_sum"] == pytest.approx(served_layers[0]["sigma_sum"])
    assert [e["epoch"] for e in report["epochs"]] == list(range(1, report["checkpoint_epoch"] + 1))
