"""The client's exceptions: what the service refused (`APIError`), a job that failed (`JobFailed`), a
download that did not match its checksum (`ChecksumError`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from ctrw.client.api import Job

__all__ = ["APIError", "ChecksumError", "JobFailed"]


class APIError(Exception):
    """A request the service refused or could not answer.

    Attributes:
        status_code: the HTTP status (404 unknown job, 409 wrong status, 422 invalid body, ...).
        message: the server's message.
        fields: for a 422, the dotted path of each invalid field (``body.optim.epochs``).
        errors: for a 422, the server's error list (``loc``, ``msg``, ``type``).
        job_status: for a 409, the job's current status.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        fields: list[str] | None = None,
        errors: list[dict[str, Any]] | None = None,
        job_status: str | None = None,
    ) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.fields = fields or []
        self.errors = errors or []
        self.job_status = job_status

    @classmethod
    def from_response(cls, response: httpx.Response) -> APIError:
        try:
            body = response.json()
        except ValueError:
            return cls(response.status_code, response.text.strip() or response.reason_phrase)
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, list):  # 422: one entry per invalid field
            errors = [e for e in detail if isinstance(e, dict)]
            fields = [".".join(str(p) for p in e.get("loc", ())) for e in errors]
            message = body.get("message") or "; ".join(
                f"{f}: {e.get('msg')}" for f, e in zip(fields, errors, strict=True)
            )
            return cls(response.status_code, message, fields=fields, errors=errors)
        message = detail if isinstance(detail, str) else body.get("message") or json.dumps(body)
        return cls(response.status_code, message, job_status=body.get("status"))


class JobFailed(Exception):
    """`Job.wait()` saw the job end failed or cancelled (``job`` holds it, with its error)."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} {job.status}: {job.data.get('error') or ''}".rstrip(": "))
        self.job = job


class ChecksumError(Exception):
    """A download whose SHA-256 differs from the server's X-Content-SHA256 (the file is removed)."""
