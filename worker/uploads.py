"""An uploaded model's job (``POST /models``): fetch the stored file, check its tensors against
the network and write the run's checkpoints (``ctrw.uploads``); the runner then records them like
a training job's, so attack jobs evaluate the upload. A file that does not fit fails the job with
``UploadRejected: ...`` naming the tensors, and its stored bytes are deleted here: the API then
deletes the job and answers 422, or, when it stopped waiting (202 after CTRW_UPLOAD_VALIDATION_S),
the failed job stays as the record of the refusal, with nothing of the file kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.core.artifacts import ArtifactError, make_store
from app.core.settings import Settings
from app.models import Job
from ctrw.config import TrainConfig
from ctrw.uploads import UploadRejected, import_state_dict
from worker.hooks import JobHooks

__all__ = ["import_upload", "is_upload"]

UPLOAD_NAME = "upload.safetensors"  # app.services.models.UPLOAD_NAME


def is_upload(job: Job) -> bool:
    return bool((job.summary or {}).get("upload"))


def import_upload(
    job: Job, cfg: TrainConfig, *, settings: Settings, hooks: JobHooks, summary: dict[str, Any]
) -> None:
    upload = dict(job.summary["upload"])
    summary["upload"] = upload
    hooks.update_job(
        progress={"phase": "validate", "detail": "checking the uploaded tensors", "percent": 0.0}
    )
    run_dir = settings.runs_dir / job.id
    local = run_dir / UPLOAD_NAME
    store = make_store(settings)
    url = store.url(upload["key"])
    source = {k: upload.get(k) for k in ("filename", "sha256", "size_bytes", "owner")}
    try:
        try:
            src = store.get(url, local if "://" in url else Path(url), sha256=upload["sha256"])
        except ArtifactError as exc:
            raise UploadRejected(f"the uploaded file: {exc}") from exc
        import_state_dict(cfg, src, run_dir, source=source)
    except UploadRejected:
        store.delete(url)  # a refused file is not kept
        raise
    finally:
        if "://" in url:
            local.unlink(missing_ok=True)  # the store keeps the upload; the checkpoint holds it now
    summary["training"] = {"uploaded": True, "epochs": 0}
