# Two images from one file:
#   api    - FastAPI + Alembic, no torch (the API never imports it): `--target api`
#   worker - adds the ML extra (torch CUDA wheels bundle the CUDA runtime): `--target worker`
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CTRW_RUNS_DIR=/var/lib/ctrw/runs \
    CTRW_DATA_DIR=/var/lib/ctrw/data
RUN useradd --create-home --uid 1000 ctrw \
    && mkdir -p /var/lib/ctrw/runs /var/lib/ctrw/data \
    && chown -R ctrw /var/lib/ctrw
WORKDIR /srv/ctrw
COPY pyproject.toml README.md alembic.ini ./
COPY ctrw ctrw
COPY app app
COPY worker worker
COPY migrations migrations
# The images have no .git: the revision recorded with every result comes from the build.
ARG CODE_REVISION=unknown
ENV CTRW_CODE_REVISION=${CODE_REVISION}

FROM base AS api
# Editable, so `ctrw-service migrate` finds migrations/ beside the code.
RUN pip install -e .
USER ctrw
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["ctrw-service", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
COPY requirements-nodeps.txt ./
RUN pip install -e ".[ml]" && pip install --no-deps -r requirements-nodeps.txt
USER ctrw
# One job at a time, solo pool: nothing forks after CUDA initialises. Consumes the queues its GPUs
# serve (CTRW_WORKER_QUEUES to choose): `python -m worker` runs Celery with them.
CMD ["python", "-m", "worker", "--no-migrate"]
