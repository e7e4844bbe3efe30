#!/usr/bin/env bash
# The test command (README, CI): install, make sure PostgreSQL and Redis run, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh
exec .venv/bin/python -m pytest "$@"
