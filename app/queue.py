"""The Celery app as the API sees it: a producer that sends job ids by task NAME.

Nothing here imports the task code (or torch); the worker builds on the same configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from celery import Celery, group
from kombu import Queue

from app.settings import Settings

__all__ = [
    "GPU_QUEUE",
    "TASK_RUN_JOB",
    "Dispatch",
    "DispatchGroup",
    "make_celery",
    "make_dispatch",
    "make_dispatch_group",
]

TASK_RUN_JOB = "ctrw.run_job"
GPU_QUEUE = "gpu"

Dispatch = Callable[[str], None]
DispatchGroup = Callable[[Sequence[str]], None]


def make_celery(settings: Settings) -> Celery:
    app = Celery("ctrw", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_queues=[Queue(GPU_QUEUE)],
        task_default_queue=GPU_QUEUE,
        task_create_missing_queues=False,
        task_routes={TASK_RUN_JOB: {"queue": GPU_QUEUE}},
        # The database holds every result; the broker carries only job ids.
        task_ignore_result=True,
        # Ack after the job ran, so a worker that dies mid-job leaves its message to be redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # One job at a time per GPU, in the worker's own process: no fork after CUDA init.
        worker_concurrency=1,
        worker_pool="solo",
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


def make_dispatch(settings: Settings) -> Dispatch:
    """How the API hands a committed job to the workers. Embedded mode: nothing to send, the
    local worker polls the database for queued jobs."""
    if settings.embedded:
        return lambda job_id: None
    celery_app = make_celery(settings)

    def dispatch(job_id: str) -> None:
        celery_app.send_task(TASK_RUN_JOB, args=[job_id], queue=GPU_QUEUE)

    return dispatch


def make_dispatch_group(settings: Settings) -> DispatchGroup:
    """How the API fans a suite's sub-jobs out: one Celery group of `ctrw.run_job` messages (by
    task name, on the gpu queue), so every free worker takes one. No chord: the suite completes
    through the database (see `app.services.jobs.advance_waiting`). Embedded mode: nothing to send."""
    if settings.embedded:
        return lambda job_ids: None
    celery_app = make_celery(settings)

    def dispatch_group(job_ids: Sequence[str]) -> None:
        if job_ids:
            group(
                celery_app.signature(TASK_RUN_JOB, args=[job_id], queue=GPU_QUEUE, immutable=True)
                for job_id in job_ids
            ).apply_async()

    return dispatch_group
