"""Find running jobs whose worker died (stale heartbeat) and put them back in the queue; queue
waiting jobs whose dependencies have finished."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from app.db import session_factory
from app.queue import Dispatch
from app.services import jobs
from app.settings import Settings

__all__ = ["start_sweeper", "sweep"]

log = logging.getLogger(__name__)


def sweep(settings: Settings, *, dispatch: Dispatch) -> list[str]:
    """Requeue jobs that lost their worker, and move on waiting jobs whose dependencies finished
    (a backstop: the worker that finished the last one normally does it). Returns the ids."""
    with session_factory(settings.database_url)() as session:
        requeued = jobs.requeue_stale_jobs(
            session=session, older_than=timedelta(seconds=settings.stale_after_s)
        )
        for job_id in requeued:
            log.warning("job %s lost its worker; requeued to resume from its last checkpoint", job_id)
            jobs.dispatch_job(session=session, job_id=job_id, dispatch=dispatch)
        ready = jobs.promote_waiting(session=session)
        for job_id in ready:
            log.warning("job %s was waiting for jobs that have finished; queued", job_id)
            jobs.dispatch_job(session=session, job_id=job_id, dispatch=dispatch)
    return requeued + ready


def start_sweeper(settings: Settings, *, dispatch: Dispatch) -> threading.Thread:
    """Sweep now and then every quarter of the stale timeout, in a daemon thread."""

    def loop() -> None:
        while True:
            try:
                sweep(settings, dispatch=dispatch)
            except Exception:
                log.warning("stale-job sweep failed; retrying", exc_info=True)
            time.sleep(settings.stale_after_s / 4)

    thread = threading.Thread(target=loop, name="stale-job-sweeper", daemon=True)
    thread.start()
    return thread
