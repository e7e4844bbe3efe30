"""docker-compose.yml is valid (checked offline with docker-compose v1, no engine needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose not installed (scripts/bootstrap.sh installs it)",
)
def test_compose_file_is_valid() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "--profile", "monitoring", "config"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "flower"} <= set(services)
    assert services["postgres"]["healthcheck"]
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    (gpu,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["worker"]["environment"]["CTRW_BROKER_URL"].startswith("redis://")
