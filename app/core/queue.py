"""The Celery app as the API sees it: a producer that sends job ids by task NAME, each to the
queue named after what the job needs (routing), and the registry of what the workers serve.

Nothing here imports the task code (or torch); the worker builds on the same configuration.

Routing: a job's ``resources`` (``ctrw.config.resources``) name its queue (``queue_name``:
``cpu``, ``gpu``, ``gpu-x4``, ``gpu-h100``, ``gpu-x4-h100``); a worker consumes the queues it can
serve (CTRW_WORKER_QUEUES, default ``host_queues`` of its GPUs). ``task_create_missing_queues``
stays False: a queue exists for Celery only where this module declares it, the producer's for the
job it routes (a name ``parse_queue`` accepts) and the worker's from its subscription, so a
misspelt queue is an error rather than a queue nobody reads. Workers announce their queues in
Redis (``WorkerRegistry``); a job whose queue no live worker serves stays queued, with a message
saying what it waits for (``app.services.scheduling``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from celery import Celery, group
from kombu import Queue

from app.core.settings import Settings

__all__ = [
    "CPU_QUEUE",
    "GPU_QUEUE",
    "TASK_RUN_JOB",
    "Dispatch",
    "DispatchGroup",
    "InFlight",
    "Routed",
    "WorkerRegistry",
    "describe_queue",
    "host_queues",
    "make_celery",
    "make_dispatch",
    "make_dispatch_group",
    "make_in_flight",
    "parse_queue",
    "parse_queues",
    "queue_name",
    "queue_of",
]

log = logging.getLogger(__name__)

TASK_RUN_JOB = "ctrw.run_job"
GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"
# cpu | gpu[-x<N>][-<kind>]: N in 2..16 GPUs of one host, kind as in resources.gpu_kind.
_QUEUE = re.compile(
    r"^(?:cpu|gpu(?:-x(?P<n>[2-9]|1[0-6]))?(?:-(?!x[0-9]+$)(?P<kind>[a-z0-9][a-z0-9_]{0,31}))?)$"
)
# A worker's entry in the registry lives this long unless renewed (every heartbeat interval).
_WORKER_KEY = "ctrw:worker:"

# Send a job's message (a group: one per job), each to its queue (a `Routed` id; a plain id: the
# gpu queue). They return the queues sent to that no live worker serves (None: not known).
Dispatch = Callable[[str], "set[str] | None"]
DispatchGroup = Callable[[Sequence[str]], "set[str] | None"]
# The ids of the jobs whose message the broker holds (see make_in_flight).
InFlight = Callable[[], set[str]]


class Routed(str):
    """A job id that carries its queue: a str, so whatever passes job ids along passes it too."""

    queue: str

    def __new__(cls, job_id: str, queue: str) -> Routed:
        routed = super().__new__(cls, job_id)
        routed.queue = parse_queue(queue)
        return routed


def _queue(job_id: str) -> str:
    return getattr(job_id, "queue", GPU_QUEUE)


def queue_name(gpus: int, gpu_kind: str | None = None) -> str:
    """The queue of a job that needs ``gpus`` devices (0: the CPU), optionally of one GPU kind."""
    if gpus == 0:
        return CPU_QUEUE
    name = GPU_QUEUE if gpus == 1 else f"{GPU_QUEUE}-x{gpus}"
    return f"{name}-{gpu_kind}" if gpu_kind else name


def queue_of(config: Mapping[str, Any]) -> str:
    """A job's queue from its stored config (``resources``; none, e.g. a suite: ``gpu`` as before)."""
    resources = config.get("resources") or {}
    return queue_name(int(resources.get("gpus", 1)), resources.get("gpu_kind"))


def parse_queue(name: str) -> str:
    """``name`` if it is a queue this service routes to; ValueError otherwise."""
    if not _QUEUE.match(name):
        raise ValueError(f"{name!r} is not a queue name (cpu, gpu, gpu-x<N>, gpu-<kind>, gpu-x<N>-<kind>)")
    return name


def parse_queues(text: str) -> list[str]:
    """A comma-separated list of queue names (CTRW_WORKER_QUEUES), validated, in order, no repeats."""
    names = [parse_queue(q.strip()) for q in text.split(",") if q.strip()]
    if not names:
        raise ValueError("no queue named")
    return list(dict.fromkeys(names))


def host_queues(gpus: int, gpu_kind: str | None = None) -> list[str]:
    """What a worker with ``gpus`` GPUs (of ``gpu_kind``) serves by default: CPU jobs, and jobs
    needing 1..gpus GPUs, of any kind or of its own. A host without a GPU also serves ``gpu``:
    single-device jobs run on its CPU, as before routing (CTRW_WORKER_QUEUES=cpu keeps them off)."""
    if gpus == 0:
        return [CPU_QUEUE, GPU_QUEUE]
    kinds = [None, gpu_kind] if gpu_kind else [None]
    return [CPU_QUEUE, *(queue_name(n, k) for n in range(1, gpus + 1) for k in kinds)]


def describe_queue(queue: str) -> str:
    """What a worker needs to serve ``queue``, in words."""
    m = _QUEUE.match(queue)
    if m is None or queue == CPU_QUEUE:
        return "a worker"
    n = int(m.group("n") or 1)
    gpus = "a GPU" if n == 1 else f"{n} GPUs"
    return f"a worker with {gpus}" + (f" ({m.group('kind')})" if m.group("kind") else "")


def make_celery(settings: Settings, queues: Sequence[str] = (GPU_QUEUE,)) -> Celery:
    """The Celery app; ``queues``: what this process declares up front (a worker: what it consumes)."""
    app = Celery("ctrw", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_queues=[Queue(parse_queue(q)) for q in queues],
        task_default_queue=GPU_QUEUE,
        # Only declared queues exist (see the module docstring): `_declared` adds a routed one.
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


def _declared(app: Celery, queue: str) -> str:
    """Declare a routed queue on this producer before the first message to it (explicitly, with
    ``task_create_missing_queues`` off); idempotent."""
    if queue not in app.amqp.queues:
        app.amqp.queues.add(Queue(parse_queue(queue)))
    return queue


def make_dispatch(settings: Settings) -> Dispatch:
    """How the API hands a committed job to the workers, on its queue. Embedded mode: nothing to
    send, the local worker polls the database for queued jobs."""
    if settings.embedded:
        return lambda job_id: None
    celery_app = make_celery(settings)
    registry = WorkerRegistry(settings)

    def dispatch(job_id: str) -> set[str] | None:
        queue = _declared(celery_app, _queue(job_id))
        celery_app.send_task(TASK_RUN_JOB, args=[str(job_id)], queue=queue)
        return registry.unserved([queue])

    return dispatch


def make_dispatch_group(settings: Settings) -> DispatchGroup:
    """How the API fans a suite's sub-jobs out: one Celery group of `ctrw.run_job` messages (by
    task name, each on its job's queue), so every free worker takes one. No chord: the suite
    completes through the database (see `app.services.scheduling.dispatch_ready`). Embedded mode:
    nothing to send."""
    if settings.embedded:
        return lambda job_ids: None
    celery_app = make_celery(settings)
    registry = WorkerRegistry(settings)

    def dispatch_group(job_ids: Sequence[str]) -> set[str] | None:
        if not job_ids:
            return set()
        queues = {job_id: _declared(celery_app, _queue(job_id)) for job_id in job_ids}
        group(
            celery_app.signature(TASK_RUN_JOB, args=[str(job_id)], queue=queue, immutable=True)
            for job_id, queue in queues.items()
        ).apply_async()
        return registry.unserved(queues.values())

    return dispatch_group


def make_in_flight(settings: Settings) -> InFlight | None:
    """How the reconciliation learns which queued jobs still have a message in the broker.

    A job's message is in flight while it waits in its queue, or while a worker holds it
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
                # Every job queue (one list per queue and priority step: "<queue>[<sep><step>]").
                keys = [
                    key
                    for prefix in (CPU_QUEUE, GPU_QUEUE)
                    for key in client.scan_iter(match=prefix + "*", count=1000)
                    if _QUEUE.match(_text(key).split(channel.sep)[0])
                ]
                messages = [json.loads(raw) for key in keys for raw in client.lrange(key, 0, -1)]
                since = time.time() - settings.stale_after_s
                tags = client.zrangebyscore(channel.unacked_index_key, since, "+inf")
                if tags:  # each value is [message, exchange, routing key]
                    messages += [json.loads(raw)[0] for raw in client.hmget(channel.unacked_key, tags) if raw]
            return {job_id for m in messages if (job_id := _job_id(channel, m)) is not None}

    return in_flight


class WorkerRegistry:
    """Which queues the live workers serve: each Celery worker renews its entry (a Redis key with a
    time to live of ``stale_after_s``) every heartbeat interval, from a thread, so a busy worker
    (the solo pool answers no control messages mid-job) still counts and a dead one drops out."""

    def __init__(self, settings: Settings) -> None:
        self._celery = make_celery(settings)
        self._ttl_s = max(1, int(settings.stale_after_s))

    def _client(self) -> Any:
        return self._celery.connection_for_write()

    def register(self, worker: str, queues: Sequence[str]) -> None:
        with self._client() as conn, conn.default_channel.conn_or_acquire() as client:
            client.set(_WORKER_KEY + worker, json.dumps({"queues": list(queues)}), ex=self._ttl_s)

    def unregister(self, worker: str) -> None:
        with self._client() as conn, conn.default_channel.conn_or_acquire() as client:
            client.delete(_WORKER_KEY + worker)

    def served(self) -> set[str]:
        """The queues some live worker consumes."""
        with self._client() as conn, conn.default_channel.conn_or_acquire() as client:
            keys = list(client.scan_iter(match=_WORKER_KEY + "*", count=1000))
            values = client.mget(keys) if keys else []
        return {q for raw in values if raw for q in json.loads(raw).get("queues", [])}

    def unserved(self, queues: Iterable[str]) -> set[str] | None:
        """Those of ``queues`` no live worker serves (None: the registry could not be read)."""
        try:
            served = self.served()
        except Exception:  # the message is sent; what waits for whom is only a status message
            log.warning("could not read the worker registry", exc_info=True)
            return None
        return set(queues) - served


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


def _job_id(channel: Any, message: dict[str, Any]) -> str | None:
    """The job id a ctrw.run_job message carries (task protocol 2: the body is [args, kwargs,
    embed]); None for anything else."""
    try:
        if message["headers"].get("task") != TASK_RUN_JOB:
            return None
        body = channel.decode_body(message["body"], message["properties"].get("body_encoding"))
        return str(json.loads(body)[0][0])
    except (KeyError, IndexError, TypeError, ValueError):
        log.warning("unreadable message in a job queue", exc_info=True)
        return None
