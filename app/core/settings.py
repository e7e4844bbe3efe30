"""The service's one Settings object, read from CTRW_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Deployment settings. Unset broker_url means the embedded default (SQLite + local worker)."""

    model_config = SettingsConfigDict(env_prefix="CTRW_", extra="forbid", frozen=True)

    # Unset: SQLite in the runs directory (``sqlite:////abs/runs/ctrw.db``), so every process that
    # shares CTRW_RUNS_DIR shares the database, whatever its working directory.
    database_url: str = ""
    broker_url: str | None = None
    # Made absolute at start: artifact paths stored in the database must not depend on the cwd.
    runs_dir: Path = Path("runs")
    data_dir: Path = Path("data")
    # Where checkpoints, figures and run metadata go (app.core.artifacts): unset = the runs directory
    # (one host, or a shared volume); `file:///abs/dir`; or `s3://bucket/prefix` for any
    # S3-compatible store, so hosts share nothing but the database, the broker and the store. The runs
    # directory is then each worker's local cache. Credentials: boto3's chain (AWS_* variables, roles).
    artifacts_url: str = ""
    s3_endpoint_url: str | None = None  # a non-AWS store (SeaweedFS, MinIO, Ceph): http://host:8333
    s3_region: str | None = None
    # Data sets in the store (`s3://bucket/data`: e.g. cifar-10-batches-py/ under it): each worker
    # mirrors it into its data_dir before a job (cached per host; only changed files are fetched).
    data_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # A train config is ~2 KB; anything far larger is a mistake or abuse.
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    # POST /models: the largest safetensors upload (a WRN-34-10 is ~185 MB in fp32), and how long
    # the route waits for a worker to check its tensors before it answers 202 (still validating).
    max_upload_bytes: int = Field(1024**3, ge=1024)
    upload_validation_s: float = Field(60.0, ge=0)
    # The worker writes progress to the job row at most this often.
    progress_interval_s: float = Field(5.0, gt=0)
    # A running job's worker touches heartbeat_at this often and reads the cancel flag then.
    heartbeat_interval_s: float = Field(2.0, gt=0)
    # A running job whose heartbeat is older than this has lost its worker and is requeued.
    stale_after_s: float = Field(120.0, gt=0)
    # A job whose worker is lost (killed, out of host memory: stale heartbeat) this many times
    # fails with the reason instead of being requeued again; a clean shutdown does not count.
    max_attempts: int = Field(3, ge=1)
    # Redis redelivers an unacked message after this long: longer than the longest job.
    visibility_timeout_s: int = Field(2 * 24 * 3600, ge=1)
    # Embedded worker: how often an idle worker looks for queued jobs.
    poll_interval_s: float = Field(1.0, gt=0)
    # Name recorded on the jobs a worker runs (default: host:pid).
    worker_name: str | None = None
    # The queues a worker consumes, comma-separated (app.core.queue: cpu, gpu, gpu-x4, gpu-x4-h100);
    # unset: what the host's GPUs serve (host_queues). The embedded worker runs only such jobs too.
    worker_queues: str | None = None
    # torch CPU threads of a worker process (unset: the usable cores divided by the workers on the
    # host, one per GPU; ctrw.threads). Too many threads spinning against each other are slower.
    torch_threads: int | None = Field(None, ge=1)
    # Estimated cost limits (ctrw.cost), in PFLOP (1e15 FLOPs): a job (or a suite's sub-job), and a
    # suite's sub-jobs together. The paper's largest job (WRN-34-10, Table 2 attacks) is ~5.5k, its
    # largest suite (Figure 3b, both models) ~46k; the ImageNet recipe ~6.7k.
    max_job_pflop: float = Field(10_000.0, gt=0)
    max_suite_pflop: float = Field(100_000.0, gt=0)
    # Workers and the CLI may download missing CIFAR archives (read by ctrw.data from the
    # environment); never a job field.
    allow_download: bool = False
    # Access control (app.services.auth). `auto`: a key is required iff any key exists or the API listens on
    # a non-loopback address (`serve` refuses that without keys); `required`: always.
    auth: Literal["auto", "required"] = "auto"
    # Per owner: submissions are refused (429) while the owner has this many unfinished jobs
    # (waiting, queued or running; a suite and each of its sub-jobs count). 0: no limit.
    max_active_jobs_per_owner: int = Field(100, ge=0)
    # Per API key, per API process (an in-memory token bucket): requests a minute. 0: no limit.
    rate_limit_per_minute: int = Field(600, ge=0)
    # An admin key (owner "admin") that `migrate` and `serve` store if absent: how docker-compose
    # gets its first key from the .env file. Unset: create keys with `ctrw-service keys create`.
    bootstrap_admin_key: str | None = Field(None, min_length=32, repr=False)
    # Code revision recorded with results where `git rev-parse HEAD` is unavailable (images).
    code_revision: str | None = None
    log_level: str = "INFO"

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @field_validator("worker_queues")
    @classmethod
    def _known_queues(cls, v: str | None) -> str | None:
        from app.core.queue import parse_queues  # queue.py builds on this module

        return None if v is None else ",".join(parse_queues(v))

    @field_validator("runs_dir")
    @classmethod
    def _absolute_runs_dir(cls, v: Path) -> Path:
        return v.expanduser().absolute()

    @field_validator("data_url")
    @classmethod
    def _data_in_s3(cls, v: str) -> str:
        if v and not (v.startswith("s3://") and len(v) > len("s3://")):
            raise ValueError(f"{v!r}: expected s3://bucket[/prefix] (a local data set: CTRW_DATA_DIR)")
        return v

    @field_validator("artifacts_url")
    @classmethod
    def _known_store(cls, v: str) -> str:
        if v and not (v.startswith("file:///") or (v.startswith("s3://") and len(v) > len("s3://"))):
            raise ValueError(f"{v!r}: expected file:///abs/dir or s3://bucket[/prefix]")
        return v.rstrip("/") if v.startswith("s3://") else v

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            # The model is frozen; this sets the derived default once, during validation.
            object.__setattr__(self, "database_url", f"sqlite:///{self.runs_dir / 'ctrw.db'}")
        return self

    @model_validator(mode="after")
    def _stale_outlives_heartbeat(self) -> Settings:
        if self.stale_after_s < 2 * self.heartbeat_interval_s:
            raise ValueError(
                f"stale_after_s ({self.stale_after_s}) must be at least twice heartbeat_interval_s "
                f"({self.heartbeat_interval_s}), or live jobs would be requeued"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
