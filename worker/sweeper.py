"""The reconciliation loop of every worker: requeue running jobs whose worker died (stale
heartbeat), fail those that lost their worker too often, queue waiting jobs whose dependencies
have finished, and resend queued jobs whose message the broker lost (see `jobs.reconcile`)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from app.core.db import session_factory
from app.core.queue import Dispatch, InFlight
from app.core.settings import Settings
from app.services import jobs

__all__ = ["start_sweeper", "sweep"]

log = logging.getLogger(__name__)


def sweep(
    settings: Settings, *, dispatch: Dispatch, in_flight: InFlight | None = None
) -> jobs.Reconciliation:
    """One reconciliation against the database (`in_flight` None: no broker to check)."""
    with session_factory(settings.database_url)() as session:
        return jobs.reconcile(
            session=session,
            stale_after=timedelta(seconds=settings.stale_after_s),
            max_attempts=settings.max_attempts,
            dispatch=dispatch,
            in_flight=in_flight,
        )


def start_sweeper(
    settings: Settings, *, dispatch: Dispatch, in_flight: InFlight | None = None
) -> threading.Thread:
    """Sweep now and then every quarter of the stale timeout, in a daemon thread."""

    def loop() -> None:
        while True:
            try:
                sweep(settings, dispatch=dispatch, in_flight=in_flight)
            except Exception:  # the database or the broker is down: the next sweep retries
                log.warning("reconciliation failed; retrying", exc_info=True)
            time.sleep(settings.stale_after_s / 4)

    thread = threading.Thread(target=loop, name="stale-job-sweeper", daemon=True)
    thread.start()
    return thread
