"""The Celery app as the API sees it: a producer that sends job ids by task NAME.

Nothing here imports the task code (or torch); the worker builds on the same configuration.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery, group
from kombu import Queue

from app.core.settings import Settings

__all__ = [
    "GPU_QUEUE",
    "TASK_RUN_JOB",
    "Dispatch",
    "DispatchGroup",
    "InFlight",
    "make_celery",
    "make_dispatch",
    "make_dispatch_group",
    "make_in_flight",
]

log = logging.getLogger(__name__)

TASK_RUN_JOB = "ctrw.run_job"
GPU_QUEUE = "gpu"

Dispatch = Callable[[str], None]
DispatchGroup = Callable[[Sequence[str]], None]
# The ids of the jobs whose message the broker holds (see make_in_flight).
InFlight = Callable[[], set[str]]


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
    through the database (see `app.services.scheduling.dispatch_ready`). Embedded mode: nothing to send."""
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


def make_in_flight(settings: Settings) -> InFlight | None:
    """How the reconciliation learns which queued jobs still have a message in the broker.

    A job's message is in flight while it waits in the queue, or while a worker holds it
    unacknowledged for less than `stale_after_s` (a worker claims its job at once; one that holds
    a message longer without having claimed the job has died or cannot reach the database and
    will give it back). Anything else is lost: a Redis restarted without persistence, a send that
    never happened. Redis as kombu lays it out: one list per queue and priority step, and the
    unacknowledged messages in a hash with a time index. None in embedded mode (no broker).
    """
    if settings.embedded:
        return None
    celery_app = make_celery(settings)

    def in_flight() -> set[str]:
        with celery_app.connection_for_write() as conn:
            channel: Any = conn.default_channel
            with channel.conn_or_acquire() as client:
                messages = [
                    json.loads(raw)
                    for pri in channel.priority_steps
                    for raw in client.lrange(channel._q_for_pri(GPU_QUEUE, pri), 0, -1)
                ]
                since = time.time() - settings.stale_after_s
                tags = client.zrangebyscore(channel.unacked_index_key, since, "+inf")
                if tags:  # each value is [message, exchange, routing key]
                    messages += [json.loads(raw)[0] for raw in client.hmget(channel.unacked_key, tags) if raw]
            return {job_id for m in messages if (job_id := _job_id(channel, m)) is not None}

    return in_flight


def _job_id(channel: Any, message: dict[str, Any]) -> str | None:
    """The job id a ctrw.run_job message carries (task protocol 2: the body is [args, kwargs,
    embed]); None for anything else."""
    try:
        if message["headers"].get("task") != TASK_RUN_JOB:
            return None
        body = channel.decode_body(message["body"], message["properties"].get("body_encoding"))
        return str(json.loads(body)[0][0])
    except (KeyError, IndexError, TypeError, ValueError):
        log.warning("unreadable message in the %s queue", GPU_QUEUE, exc_info=True)
        return None
