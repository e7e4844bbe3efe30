"""The embedded worker: polls the database for queued jobs (no broker), one job at a time."""

from __future__ import annotations

import logging
import os
import signal
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import session_factory
from app.core.queue import Routed, queue_of
from app.core.settings import Settings
from app.models import Job, JobStatus
from app.services import execution, scheduling
from worker.routing import served_queues
from worker.runner import DatabaseUnavailable, run_job
from worker.sweeper import sweep

__all__ = ["serve_forever"]

log = logging.getLogger(__name__)


def serve_forever(settings: Settings, *, parent_pid: int | None = None) -> None:
    """Run queued jobs until SIGTERM/SIGINT (or until `parent_pid`, the serving process, is gone).
    A job interrupted by shutdown is requeued and resumes from its last epoch checkpoint."""
    shutdown = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("worker stopping (signal %d)", signum)
        shutdown.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid, shutdown), daemon=True).start()
    sessions = session_factory(settings.database_url)
    queues = served_queues(settings)  # the local worker runs what this host can serve
    log.info("embedded worker polling %s for queues %s", settings.database_url, ",".join(queues))
    while not shutdown.is_set():
        sweep(settings, dispatch_group=lambda job_ids: None)  # requeued jobs are picked up below
        with sessions() as session:
            job_id = execution.next_queued_job_id(session=session, queues=queues)
            if job_id is None:
                _note_unservable(session, queues)
        if job_id is None:
            shutdown.wait(settings.poll_interval_s)
            continue
        try:
            run_job(job_id, settings=settings, interrupt=shutdown)
        except DatabaseUnavailable:  # the job stays queued; try again after a pause
            log.warning("database unavailable; job %s stays queued", job_id, exc_info=True)
            shutdown.wait(settings.poll_interval_s)


def _note_unservable(session: Session, queues: list[str]) -> None:
    """Queued jobs this host cannot run say what they wait for (once)."""
    rows = session.execute(
        select(Job.id, Job.config, Job.progress).where(Job.status == JobStatus.QUEUED)
    ).all()
    jobs = [Routed(job_id, queue_of(config or {})) for job_id, config, progress in rows if not progress]
    scheduling.note_unserved(session=session, jobs=jobs, unserved={j.queue for j in jobs} - set(queues))


def _watch_parent(parent_pid: int, shutdown: threading.Event) -> None:
    # An orphaned worker (its `serve` was killed) stops instead of polling forever.
    while not shutdown.wait(1.0):
        if os.getppid() != parent_pid:
            log.warning("serving process %d is gone; worker stopping", parent_pid)
            shutdown.set()
