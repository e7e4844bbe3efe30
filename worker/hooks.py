"""The library's Hooks for a job row: progress, epochs, results, cancellation, heartbeat."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.services import execution, records
from ctrw.hooks import Cancelled, Hooks, Progress

__all__ = ["JobHooks"]

log = logging.getLogger(__name__)


class JobHooks(Hooks):
    """Writes what the library reports into the database, for one attempt at one job.

    A background thread touches the job's heartbeat and reads its cancel flag, so liveness does
    not depend on how long a batch takes and `should_cancel` never waits for the database.
    Progress is written at most every `progress_interval_s`.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        job_id: str,
        attempt: int,
        progress_interval_s: float,
        heartbeat_interval_s: float,
        interrupt: threading.Event | None = None,
    ) -> None:
        self.sessions = sessions
        self._job_id = job_id
        self._attempt = attempt
        self._progress_interval_s = progress_interval_s
        self._heartbeat_interval_s = heartbeat_interval_s
        self._interrupt = interrupt or threading.Event()
        self._cancel = threading.Event()
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)
        self._last_write = 0.0
        self._phase_start: dict[Any, tuple[float, float]] = {}
        self.progress: dict[str, Any] | None = None
        self.last_metrics: dict[str, Any] | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> JobHooks:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def lost(self) -> bool:
        """Another worker took the job over (this one was presumed dead)."""
        return self._lost.is_set()

    @property
    def interrupted(self) -> bool:
        """The worker is shutting down: the job goes back to the queue to resume later."""
        return self._interrupt.is_set()

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_interval_s):
            try:
                self._touch()
            except Exception:  # a database blip must not kill the job; the next beat retries
                log.warning("heartbeat for job %s failed", self._job_id, exc_info=True)

    def _touch(self) -> None:
        """Heartbeat, and read the cancel flag and whether this attempt still owns the job."""
        with self.sessions() as session:
            flag = execution.heartbeat(session=session, job_id=self._job_id, attempt=self._attempt)
        if flag is None:
            self._lost.set()
        elif flag:
            self._cancel.set()
        else:  # a cancel withdrawn before the job stopped (a suite wants it after all)
            self._cancel.clear()

    def stop_if_cancelled(self, *, shutdown_too: bool = True) -> None:
        """Between steps that do not look at `should_cancel` (σ statistics, a suite's assembly):
        read the cancel flag now, not at the next heartbeat, and stop if asked to.

        Args:
            shutdown_too: also stop for a worker shutdown (False once all the work is done:
                finishing is cheaper than resuming elsewhere).

        Raises:
            Cancelled: the job was cancelled or taken over, or the worker is shutting down.
        """
        try:
            self._touch()
        except Exception:  # the flag as last seen; finish_job still honours a cancel
            log.warning("could not read the cancel flag of job %s", self._job_id, exc_info=True)
        if self._cancel.is_set() or self._lost.is_set() or (shutdown_too and self._interrupt.is_set()):
            raise Cancelled("cancelled between steps")

    # ------------------------------------------------------------------ library hooks

    def should_cancel(self) -> bool:
        return self._cancel.is_set() or self._lost.is_set() or self._interrupt.is_set()

    def on_progress(self, progress: Progress) -> None:
        self.progress = self._describe(progress)
        now = time.monotonic()
        if now - self._last_write >= self._progress_interval_s:
            self._last_write = now
            self.flush_progress()

    def flush_progress(self) -> None:
        if self.progress is not None:
            self.update_job(progress=self.progress)

    def update_job(self, **values: Any) -> None:
        with self.sessions() as session:
            execution.update_running_job(
                session=session, job_id=self._job_id, attempt=self._attempt, **values
            )

    def on_epoch(self, record: dict[str, Any]) -> None:
        with self.sessions() as session:
            records.upsert_epoch(session=session, job_id=self._job_id, record=record)
        self.last_metrics = {k: v for k, v in record.items() if isinstance(v, int | float | bool | None)}
        if self.progress is not None:
            self.progress["last_metrics"] = self.last_metrics

    def on_result(self, row: dict[str, Any]) -> None:
        with self.sessions() as session:
            records.upsert_result(session=session, job_id=self._job_id, row=row)

    def _describe(self, p: Progress) -> dict[str, Any]:
        """Percent and ETA of the current phase. Training counts validation in its epochs; an ETA
        is measured from where this attempt started (a resumed run starts part-way)."""
        if p.phase in ("train", "validate"):
            within = p.batch / max(p.batches, 1) if p.phase == "train" else 1.0
            fraction = ((p.epoch - 1) + within) / max(p.epochs, 1)
            key: Any = "train"
        else:
            fraction = p.batch / max(p.batches, 1) if p.fraction is None else p.fraction
            key = (p.phase, p.detail if p.fraction is None else "")
        now = time.monotonic()
        start_time, start_fraction = self._phase_start.setdefault(key, (now, fraction))
        done = fraction - start_fraction
        eta = (now - start_time) * (1.0 - fraction) / done if done > 0 else None
        if p.eta_seconds is not None:  # the library's own (evaluation: weighted by each attack's cost)
            eta = p.eta_seconds
        return {
            "phase": p.phase,
            "epoch": p.epoch,
            "epochs": p.epochs,
            "batch": p.batch,
            "batches": p.batches,
            "detail": p.detail,
            "percent": round(100.0 * min(max(fraction, 0.0), 1.0), 2),
            "eta_seconds": None if eta is None else round(eta, 1),
            "last_metrics": self.last_metrics,
        }
