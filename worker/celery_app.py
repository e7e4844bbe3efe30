"""The Celery worker: `python -m worker` (or `celery -A worker.celery_app worker -Q <its queues>
-P solo -c 1`).

Concurrency 1, the solo pool (the task runs in the worker process itself, so nothing forks after
CUDA is initialised). The message is only the job id. The worker consumes the queues it serves
(`worker.routing.served_queues`: CTRW_WORKER_QUEUES or its GPUs) and announces them in the worker
registry, so the API can tell when a job waits for a kind of worker that nobody runs.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.exceptions import Reject
from celery.signals import worker_init, worker_ready, worker_shutting_down

from app.core.migrate import upgrade
from app.core.queue import TASK_RUN_JOB, make_celery, make_dispatch_group, make_in_flight
from app.core.settings import get_settings
from worker.routing import served_queues, start_announcing
from worker.runner import DatabaseUnavailable, run_job, worker_name
from worker.sweeper import start_sweeper

__all__ = ["celery_app", "run_job_task"]

log = logging.getLogger(__name__)

settings = get_settings()
queues = served_queues(settings)
# Only these queues are declared here (task_create_missing_queues stays False).
celery_app = make_celery(settings, queues=queues)
# Set by a warm shutdown (SIGTERM): the running job stops at its next batch and is requeued.
shutdown = threading.Event()
# Set at shutdown: the worker's registry entry is withdrawn.
_announced: list[threading.Event] = []


@celery_app.task(name=TASK_RUN_JOB)
def run_job_task(job_id: str) -> None:
    # Redelivery (acks_late) is safe: run_job is a no-op unless the job is queued.
    if shutdown.is_set():  # a message taken while stopping: back to the queue, unclaimed
        raise Reject("worker shutting down", requeue=True)
    try:
        run_job(job_id, settings=settings, interrupt=shutdown)
    except DatabaseUnavailable as exc:
        # Never acknowledge a message whose job was not claimed: it goes back to the queue
        # (after a pause, so that a worker cut off from the database does not spin on it).
        log.warning("%s; the message goes back to the queue", exc)
        shutdown.wait(settings.heartbeat_interval_s)
        raise Reject(str(exc), requeue=True) from exc


@worker_init.connect
def _on_worker_init(**_kwargs: Any) -> None:
    # Idempotent, and serialised by an advisory lock on PostgreSQL: safe with many workers.
    upgrade(settings)


@worker_ready.connect
def _on_worker_ready(**_kwargs: Any) -> None:
    # Jobs orphaned by a dead worker (this one before a restart, or another) go back to the
    # queue, and queued jobs whose message the broker lost are sent again.
    start_sweeper(settings, dispatch_group=make_dispatch_group(settings), in_flight=make_in_flight(settings))
    # What it consumes (`celery worker -Q` may select fewer than it declares).
    consumed = list(celery_app.amqp.queues.consume_from or queues)
    _announced.append(start_announcing(settings, worker_name(settings), consumed))


@worker_shutting_down.connect
def _on_worker_shutting_down(**_kwargs: Any) -> None:
    # Celery's warm shutdown waits for the running task; this makes the task stop at its next
    # batch instead, requeued to resume from its last checkpoint on another worker.
    shutdown.set()
    for stop in _announced:
        stop.set()
