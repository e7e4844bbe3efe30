"""The reconciliation loop of every worker: requeue running jobs whose worker died (stale
heartbeat), fail those that lost their worker too often, queue waiting jobs whose dependencies
have finished, and resend queued jobs whose message the broker lost (see `app.services.reconcile`)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from app.core.db import session_factory
from app.core.queue import DispatchGroup, InFlight
from app.core.settings import Settings
from app.services.reconcile import Reconciliation, reconcile

__all__ = ["start_sweeper", "sweep"]

log = logging.getLogger(__name__)


def sweep(
    settings: Settings, *, dispatch_group: DispatchGroup, in_flight: InFlight | None = None
) -> Reconciliation:
    """One reconciliation against the database (`in_flight` None: no broker to check)."""
    with session_factory(settings.database_url)() as session:
        return reconcile(
            session=session,
            stale_after=timedelta(seconds=settings.stale_after_s),
            max_attempts=settings.max_attempts,
            dispatch_group=dispatch_group,
            in_flight=in_flight,
        )


def start_sweeper(
    settings: Settings, *, dispatch_group: DispatchGroup, in_flight: InFlight | None = None
) -> threading.Thread:
    """Sweep now and then every quarter of the stale timeout, in a daemon thread."""

    def loop() -> None:
        while True:
            try:
                sweep(settings, dispatch_group=dispatch_group, in_flight=in_flight)
            except Exception:  # the database or the broker is down: the next sweep retries
                log.warning("reconciliation failed; retrying", exc_info=True)
            time.sleep(settings.stale_after_s / 4)

    thread = threading.Thread(target=loop, name="stale-job-sweeper", daemon=True)
    thread.start()
    return thread
