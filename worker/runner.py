"""Run one job, from its queued row to its stored results. Shared by the Celery task and the
embedded worker, and safe to call again for the same job: a finished job is a no-op, a job
that was interrupted resumes from its last epoch checkpoint and its stored results."""

from __future__ import annotations

import functools
import gc
import importlib.metadata
import logging
import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.core.artifacts import ArtifactError, make_store
from app.core.db import session_factory
from app.core.queue import DispatchGroup, make_dispatch_group
from app.core.settings import Settings
from app.models import Job, JobKind, JobStatus
from app.services import execution, jobs, records, scheduling, suites
from app.services.models import REJECTED
from ctrw.checkpoint import CheckpointError, environment_info
from ctrw.config import EvalConfig, TrainConfig
from ctrw.hooks import Cancelled
from ctrw.jobs import run_evaluation, run_sigma_stats, run_training
from ctrw.paper import SuiteRequest, assemble_suite
from ctrw.training import pick_device
from worker import storage, uploads
from worker.hooks import JobHooks

__all__ = ["DatabaseUnavailable", "run_job", "worker_name"]

log = logging.getLogger(__name__)

OOM_MESSAGE = "GPU out of memory: reduce batch_size (optim.batch_size for training, evaluation.batch_size)"
_DISPATCHERS: dict[str | None, DispatchGroup] = {}


class SuiteIncomplete(Exception):
    """Some of a suite's sub-jobs did not succeed (the suite is assembled from the others)."""


class DatabaseUnavailable(Exception):
    """The job could not be claimed: the database did not answer. Its message must not be
    acknowledged (the Celery task gives it back to the queue)."""


def worker_name(settings: Settings) -> str:
    return settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"


@functools.cache
def _code_revision(fallback: str | None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return fallback
    return out.stdout.strip() or fallback


def _environment(settings: Settings, device: str | None) -> dict[str, Any]:
    return {
        **environment_info(pick_device(device)),
        "ctrw": importlib.metadata.version("ctrw-service"),
        "code_revision": _code_revision(settings.code_revision),
        "hostname": socket.gethostname(),
    }


def _train_config(config: dict[str, Any], settings: Settings) -> TrainConfig:
    # Where data lives is a deployment fact, not a job parameter.
    cfg = TrainConfig.model_validate(config)
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(settings.data_dir)})})


def run_job(job_id: str, *, settings: Settings, interrupt: threading.Event | None = None) -> JobStatus | None:
    """Claim and run a queued job. Returns its final status, or None if there was nothing to do
    (not queued: finished, cancelled, or running elsewhere) or this worker gave the job up."""
    sessions = session_factory(settings.database_url)
    try:
        with sessions() as session:
            job = execution.claim_job(session=session, job_id=job_id, worker=worker_name(settings))
    except (OperationalError, InterfaceError, PoolTimeout) as exc:
        raise DatabaseUnavailable(f"job {job_id} not claimed: {type(exc).__name__}: {exc}") from exc
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise DatabaseUnavailable(f"job {job_id} not claimed: {type(exc).__name__}: {exc}") from exc
    if job is None:
        log.info("job %s is not queued (finished, cancelled or running elsewhere): nothing to do", job_id)
        return None
    log.info("job %s (%s) started, attempt %d", job_id, job.kind, job.attempts)

    hooks = JobHooks(
        sessions=sessions,
        job_id=job_id,
        attempt=job.attempts,
        interrupt=interrupt,
        progress_interval_s=settings.progress_interval_s,
        heartbeat_interval_s=settings.heartbeat_interval_s,
    )
    summary: dict[str, Any] = {}
    status, error = JobStatus.FAILED, None
    with hooks:
        try:
            _run(job, settings=settings, hooks=hooks, summary=summary)
            hooks.stop_if_cancelled(shutdown_too=False)  # a cancel that came during the last step
            status = JobStatus.SUCCEEDED
        except Cancelled:
            status = JobStatus.CANCELLED
        except torch.cuda.OutOfMemoryError:
            log.warning("job %s: out of GPU memory", job_id)
            error = OOM_MESSAGE
        except CheckpointError as exc:
            error = f"bad checkpoint: {exc}"
        except SuiteIncomplete as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("job %s failed", job_id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            # Leave the worker fit for the next job whatever happened.
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    with sessions() as session:
        if hooks.lost:
            log.warning("job %s was taken over by another worker; leaving it alone", job_id)
            return None
        # Shutdown: back to the queue at once with a new message; a job also cancelled
        # meanwhile ends cancelled below instead.
        if (
            status is JobStatus.CANCELLED
            and hooks.interrupted
            and execution.release_job(session=session, job_id=job_id, attempt=job.attempts)
        ):
            scheduling.dispatch_ready(session=session, dispatch_group=_dispatcher(settings), queued=[job_id])
            log.info("job %s interrupted by shutdown; requeued to resume elsewhere", job_id)
            return JobStatus.QUEUED
        if job.kind is JobKind.TRAIN:
            storage.record_checkpoints(session, job_id, settings.runs_dir / job_id, make_store(settings))
        progress = {**(hooks.progress or {}), "phase": status.value, "eta_seconds": None}
        if status is JobStatus.SUCCEEDED:
            progress.update(phase="done", detail="", percent=100.0, eta_seconds=0.0)
        finished = execution.finish_job(
            session=session,
            job_id=job_id,
            attempt=job.attempts,
            status=status,
            error=error,
            summary=summary,
            progress=progress,
        )
    if finished is None:
        log.warning("job %s was taken over by another worker; its result here is dropped", job_id)
        return None
    if finished is not status:
        log.info("job %s was cancelled while it finished", job_id)
    status = finished
    log.info("job %s %s%s", job_id, status, f": {error}" if error else "")
    # A refused upload keeps nothing in the store (worker.uploads; the API deletes its job), so it
    # gets no run record either: one written now could land after that deletion and outlive it.
    if not (error or "").startswith(REJECTED):
        storage.store_run_record(job_id, settings=settings, sessions=sessions)
    try:
        _dispatch_dependents(job_id, settings)
    except Exception:  # the sweeper's reconciliation catches up
        log.warning("could not advance the jobs waiting for job %s", job_id, exc_info=True)
    return status


def _dispatcher(settings: Settings) -> DispatchGroup:
    if settings.broker_url not in _DISPATCHERS:
        _DISPATCHERS[settings.broker_url] = make_dispatch_group(settings)
    return _DISPATCHERS[settings.broker_url]


def _dispatch_dependents(job_id: str, settings: Settings) -> None:
    """Jobs that waited for this one (a suite's assembly, an attack on this train job) move on;
    this worker dispatches the ones that became queued (see scheduling.dispatch_ready)."""
    with session_factory(settings.database_url)() as session:
        ready = scheduling.dispatch_ready(
            session=session, dispatch_group=_dispatcher(settings), finished=[job_id]
        )
    for ready_id in ready:
        log.info("job %s is ready (waited for job %s)", ready_id, job_id)


def _run(job: Job, *, settings: Settings, hooks: JobHooks, summary: dict[str, Any]) -> None:
    if job.kind is JobKind.SUITE:
        hooks.update_job(environment=_environment(settings, None))
        _assemble(job, settings=settings, hooks=hooks, summary=summary)
        return
    with hooks.sessions() as session:
        train_job = jobs.get_job(session=session, job_id=job.train_job_id) if job.train_job_id else job
    storage.sync_data(settings)  # CTRW_DATA_URL: the data sets, cached on this host
    cfg = _train_config(train_job.config, settings)
    hooks.update_job(environment=_environment(settings, cfg.device))
    if job.kind is JobKind.TRAIN and uploads.is_upload(job):
        uploads.import_upload(job, cfg, settings=settings, hooks=hooks, summary=summary)
    elif job.kind is JobKind.TRAIN:
        _train(job, cfg, settings=settings, hooks=hooks, summary=summary)
    else:
        _attack(job, train_job, cfg, settings=settings, hooks=hooks, summary=summary)
    _render_job_figures(job, cfg, settings=settings, hooks=hooks)


def _render_job_figures(job: Job, cfg: TrainConfig, *, settings: Settings, hooks: JobHooks) -> None:
    """The job's figures (PNG and SVG under runs/<id>/figures/, recorded as figure artifacts); the API
    cannot draw them (no matplotlib there). A drawing error is logged: the job's numbers stand."""
    from ctrw.figures import render_job_figures

    def row(obj: Any) -> dict[str, Any]:
        return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}

    train = job.kind is JobKind.TRAIN
    with hooks.sessions() as session:
        epochs = [row(e) for e in records.list_epochs(session=session, job_id=job.id)] if train else []
        layers = (
            [row(layer) for layer in records.list_sigma_stats(session=session, job_id=job.id)]
            if train
            else []
        )
        results = [row(r) for r in records.list_results(session=session, job_id=job.id)]
    width = f" (width {cfg.model.width:g})" if getattr(cfg.model, "width", None) else ""
    label = (f"{cfg.model.name}{width}, {cfg.data.dataset} {cfg.data.image_size}x{cfg.data.image_size}, "
             f"{job.kind.value} job {job.id[:8]}")  # fmt: skip
    try:
        figures = render_job_figures(
            label=label,
            epochs=epochs,
            layers=layers,
            results=results,
            out_dir=settings.runs_dir / job.id / "figures",
        )
    except Exception:
        log.warning("job %s: its figures could not be drawn", job.id, exc_info=True)
        return
    storage.store_figures(job.id, figures, settings=settings, hooks=hooks)


def _train(
    job: Job, cfg: TrainConfig, *, settings: Settings, hooks: JobHooks, summary: dict[str, Any]
) -> None:
    run_dir, store = settings.runs_dir / job.id, make_store(settings)
    uploading = storage.UploadingHooks(hooks, store=store, job_id=job.id, run_dir=run_dir)
    summary["training"] = run_training(cfg, run_dir=run_dir, hooks=uploading)
    hooks.flush_progress()
    if cfg.evaluation is None:
        return
    checkpoint = Path(summary["training"][f"{cfg.evaluation.checkpoint}_checkpoint"])
    _evaluate(job, checkpoint, cfg.evaluation, cfg, hooks=hooks, summary=summary)
    # σ statistics do not look at the cancel flag: check it before, and say what runs.
    hooks.stop_if_cancelled()
    hooks.progress = {
        **(hooks.progress or {}),
        "phase": "sigma",
        "detail": "σ statistics",
        "eta_seconds": None,
    }
    hooks.flush_progress()
    sigma = run_sigma_stats(checkpoint, cfg)
    with hooks.sessions() as session:
        records.replace_sigma_stats(session=session, job_id=job.id, layers=sigma.get("layers", []))


def _attack(
    job: Job,
    train_job: Job,
    cfg: TrainConfig,
    *,
    settings: Settings,
    hooks: JobHooks,
    summary: dict[str, Any],
) -> None:
    evaluation = EvalConfig.model_validate(job.config["evaluation"])
    with hooks.sessions() as session:
        artifact = records.get_artifact(
            session=session, job_id=train_job.id, kind=f"{evaluation.checkpoint}_checkpoint"
        )
    # A stored checkpoint is fetched into this host's runs directory (kept there as a cache); a
    # local path is used where it is. Either way its bytes are checked against the recorded digest.
    local = settings.runs_dir / train_job.id / Path(artifact.path).name
    try:
        checkpoint = make_store(settings).get(
            artifact.path, local if "://" in artifact.path else Path(artifact.path), sha256=artifact.sha256
        )
    except ArtifactError as exc:
        raise CheckpointError(f"checkpoint of train job {train_job.id}: {exc}") from exc
    _evaluate(job, checkpoint, evaluation, cfg, hooks=hooks, summary=summary)


def _evaluate(
    job: Job,
    checkpoint: Path,
    evaluation: EvalConfig,
    cfg: TrainConfig,
    *,
    hooks: JobHooks,
    summary: dict[str, Any],
) -> None:
    with hooks.sessions() as session:
        previous = records.stored_rows(session=session, job_id=job.id)
    out = run_evaluation(checkpoint, evaluation, cfg, hooks=hooks, previous_rows=previous)
    with hooks.sessions() as session:
        # on_result stored each row as it finished; storing the returned rows again is idempotent.
        for row in out.get("rows", []):
            records.upsert_result(session=session, job_id=job.id, row=row)
    summary["diagnostics"] = out.get("diagnostics", [])


def _assemble(job: Job, *, settings: Settings, hooks: JobHooks, summary: dict[str, Any]) -> None:
    """A suite whose sub-jobs have all finished: its tables (stored in the summary) and figures
    (PNG and SVG under runs/<suite id>/, recorded as artifacts). Fails, after storing what it
    could assemble, if some sub-jobs did not succeed."""
    from ctrw.figures import render_figures

    hooks.update_job(progress={"phase": "assemble", "detail": "tables and figures", "percent": 0.0})
    request = SuiteRequest.model_validate(job.config)
    with hooks.sessions() as session:
        inputs = suites.assembly_inputs(session=session, suite_id=job.id)
    assembly = assemble_suite(request, inputs).model_dump(mode="json")
    summary["assembly"] = assembly
    summary["sub_jobs"] = {key: sub["job_id"] for key, sub in inputs.items()}
    hooks.stop_if_cancelled()  # assembly and rendering do not look at the cancel flag
    figures = render_figures(assembly, settings.runs_dir / job.id)
    storage.store_figures(job.id, figures, settings=settings, hooks=hooks)
    failed = [
        f"{key} (job {sub['job_id']}) {sub['status']}" + (f": {sub['error']}" if sub.get("error") else "")
        for key, sub in inputs.items()
        if sub["status"] != JobStatus.SUCCEEDED.value
    ]
    if failed:
        raise SuiteIncomplete(
            f"{len(failed)} of {len(inputs)} sub-jobs did not succeed: " + "; ".join(failed)
        )
