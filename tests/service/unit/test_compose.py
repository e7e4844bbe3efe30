"""docker-compose.yml is valid (checked offline with docker-compose v1, no engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose not installed (scripts/bootstrap.sh installs it)",
)
def test_compose_file_is_valid(tmp_path: Path) -> None:
    # The secrets an operator puts in .env (README "Access control"); an empty --env-file keeps a
    # real .env out.
    (tmp_path / "empty.env").write_text("")
    secrets = {"POSTGRES_PASSWORD": "pw-from-env", "CTRW_BOOTSTRAP_ADMIN_KEY": "k" * 43}
    env = {k: v for k, v in os.environ.items() if k not in secrets}
    command = ["docker-compose", "--env-file", str(tmp_path / "empty.env"), "-f", "docker-compose.yml",
               "--profile", "monitoring", "--profile", "s3", "config"]  # fmt: skip
    for missing in secrets:  # no default passwords: compose refuses to start without each one
        partial = {**env, **{k: v for k, v in secrets.items() if k != missing}}
        out = subprocess.run(command, cwd=ROOT, env=partial, capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and f"set {missing} in .env" in out.stderr, out.stderr
    out = subprocess.run(
        command, cwd=ROOT, env={**env, **secrets}, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "flower", "s3"} <= set(services)
    assert services["worker"]["environment"]["CTRW_ARTIFACTS_URL"] == ""  # unset: the runs volume
    assert "-s3" in services["s3"]["command"]
    assert services["postgres"]["healthcheck"]
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    (gpu,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["worker"]["environment"]["CTRW_BROKER_URL"].startswith("redis://")
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw-from-env"
    assert ":pw-from-env@" in services["api"]["environment"]["CTRW_DATABASE_URL"]
    assert services["migrate"]["environment"]["CTRW_BOOTSTRAP_ADMIN_KEY"] == "k" * 43
