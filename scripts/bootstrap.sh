#!/usr/bin/env bash
# Create .venv if missing and install the project with its ML and dev extras (pinned in
# pyproject.toml). Idempotent: a second run only checks a stamp and returns in a second.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $("$python" --version)"
    "$python" -m venv .venv
fi

stamp=.venv/.ctrw-bootstrap
want="$(cat pyproject.toml requirements-nodeps.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import app, ctrw, worker, torch, torchattacks" 2>/dev/null; then
    echo "bootstrap: pip install -e '.[ml,dev]' (CUDA builds of torch run on CPU too; ~1 min)"
    .venv/bin/python -m pip install --quiet -e '.[ml,dev]'
    .venv/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
    echo "$want" >"$stamp"
fi

# docker-compose (v1, no engine needed) lets the tests validate docker-compose.yml offline.
if ! command -v docker-compose >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing docker-compose to validate docker-compose.yml"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; } ||
        echo "bootstrap: could not install docker-compose; the compose check will be skipped" >&2
fi

# pdflatex (~15 MB, ~30 s) lets the tests compile the LaTeX tables.
if ! command -v pdflatex >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing pdflatex to compile the LaTeX tables in the tests"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        texlive-latex-base texlive-latex-recommended >/dev/null; } ||
        echo "bootstrap: could not install pdflatex; the LaTeX tables will be checked without it" >&2
fi

# Headless Chromium + chromedriver (Debian packages) for the dashboard's browser tests; those tests
# fail, never skip, without them.
if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing chromium and chromium-driver for the dashboard's browser tests"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null; } ||
        echo "bootstrap: could not install chromium; the browser tests will fail" >&2
fi
