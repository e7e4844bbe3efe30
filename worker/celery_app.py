"""The Celery worker: `celery -A worker.celery_app worker -Q gpu -P solo -c 1`.

One worker process per GPU, concurrency 1, the solo pool (the task runs in the worker process
itself, so nothing forks after CUDA is initialised). The message is only the job id.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_init, worker_ready

from app.migrate import upgrade
from app.queue import TASK_RUN_JOB, make_celery, make_dispatch
from app.settings import get_settings
from worker.runner import run_job
from worker.sweeper import start_sweeper

__all__ = ["celery_app", "run_job_task"]

settings = get_settings()
celery_app = make_celery(settings)


@celery_app.task(name=TASK_RUN_JOB)
def run_job_task(job_id: str) -> None:
    # Redelivery (acks_late) is safe: run_job is a no-op unless the job is queued.
    run_job(job_id, settings=settings)


@worker_init.connect
def _on_worker_init(**_kwargs: Any) -> None:
    # Idempotent, and serialised by an advisory lock on PostgreSQL: safe with many workers.
    upgrade(settings)


@worker_ready.connect
def _on_worker_ready(**_kwargs: Any) -> None:
    # Jobs orphaned by a dead worker (this one before a restart, or another) go back to the queue.
    start_sweeper(settings, dispatch=make_dispatch(settings))
