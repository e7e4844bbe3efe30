"""The service's API as Python calls: `Client` (submit, read, list), `Job` (wait, results, download,
cancel) and `Results` (a table's cells as flat rows)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from ctrw.catalog import TERMINAL_STATUSES
from ctrw.client.errors import APIError, ChecksumError, JobFailed
from ctrw.client.progress import ProgressBar

__all__ = ["Client", "Job", "Results"]

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = TERMINAL_STATUSES


class Client:
    """The service's API as Python calls.

    Args:
        url: the service's base URL (default: CTRW_API_URL, else http://127.0.0.1:8000).
        key: an API key, sent as ``Authorization: Bearer KEY`` (default: CTRW_API_KEY, else none).
        timeout: seconds per request.
        transport: an httpx transport (e.g. to talk to an ASGI app in-process).
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("CTRW_API_URL") or DEFAULT_URL).rstrip("/")
        key = key if key is not None else os.environ.get("CTRW_API_KEY") or None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; raises `APIError` unless the answer is 2xx."""
        response = self._http.request(method, path, **kwargs)
        if response.is_success:
            return response
        raise APIError.from_response(response)

    # ------------------------------------------------------------------ submit

    def train(self, config: Mapping[str, Any] | Any) -> Job:
        """Queue a training job. ``config``: a dict in the shape of POST /jobs/train (or a
        pydantic model, e.g. ``ctrw.config.TrainConfig``)."""
        return self._submit("/jobs/train", _as_body(config))

    def attack(self, train_job: Job | str, evaluation: Mapping[str, Any] | None = None, **fields: Any) -> Job:
        """Queue an evaluation of a succeeded training job's checkpoint.

        Args:
            train_job: the training job or its id.
            evaluation: the evaluation config (attacks, protocol, n_examples, checkpoint, ...).
            **fields: further fields of POST /jobs/attack.
        """
        body: dict[str, Any] = {"train_job_id": train_job.id if isinstance(train_job, Job) else train_job}
        if evaluation is not None:
            body["evaluation"] = _as_body(evaluation)
        return self._submit("/jobs/attack", {**body, **fields})

    def suite(self, suite: str | Mapping[str, Any], **fields: Any) -> Job:
        """Queue one of the paper's experiments: ``suite("table1", smoke=True)`` or a full body."""
        body = {"suite": suite} if isinstance(suite, str) else _as_body(suite)
        return self._submit("/jobs/suite", {**body, **fields})

    def submit(self, kind: str, body: Mapping[str, Any]) -> Job:
        """Queue a body of the given kind (train, attack or suite) as is."""
        if kind not in ("train", "attack", "suite"):
            raise ValueError(f"kind must be train, attack or suite, not {kind!r}")
        return self._submit(f"/jobs/{kind}", _as_body(body))

    def _submit(self, path: str, body: Mapping[str, Any]) -> Job:
        return Job(self, self.request("POST", path, json=body).json())

    # ------------------------------------------------------------------ read

    def job(self, job_id: str) -> Job:
        """The job with this id (404: `APIError`)."""
        return Job(self, self.request("GET", f"/jobs/{job_id}").json())

    def jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        parent_id: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> Iterator[Job]:
        """Jobs, newest first, fetched page by page through the list's ``next_cursor``.

        Args:
            status, kind, parent_id: the list endpoint's filters.
            page_size: jobs per request (1..500).
            limit: stop after this many jobs (None: all).

        Yields:
            `Job` objects holding the list's summary rows (``refresh()`` loads the full job).
        """
        params: dict[str, Any] = {"limit": page_size}
        params.update({k: v for k, v in (("status", status), ("kind", kind), ("parent_id", parent_id)) if v})
        seen = 0
        while True:
            page = self.request("GET", "/jobs", params=params).json()
            for row in page["data"]:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield Job(self, row)
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]


class Job:
    """A job on the service. ``data`` is the last JSON the service gave for it."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data
        self.id: str = data["id"]

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, kind={self.kind!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def refresh(self) -> Job:
        """Reload the job from the service."""
        self.data = self.client.request("GET", f"/jobs/{self.id}").json()
        return self

    def wait(
        self,
        progress: bool = True,
        *,
        timeout: float | None = None,
        interval: float = 1.0,
        check: bool = True,
    ) -> Job:
        """Poll until the job has finished.

        Args:
            progress: show a progress bar per phase with the server's ETA (tqdm if installed,
                else one line on stderr per change).
            timeout: give up after this many seconds (TimeoutError); None waits for ever.
            interval: seconds between polls.
            check: raise `JobFailed` if the job ends failed or cancelled.

        Returns:
            The job, refreshed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = ProgressBar(self.id) if progress else None
        try:
            while True:
                self.refresh()
                if bar is not None:
                    bar.update(self.data)
                if self.done:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {self.id} still {self.status} after {timeout} s")
                time.sleep(interval)
        finally:
            if bar is not None:
                bar.close()
        if check and self.status != "succeeded":
            raise JobFailed(self)
        return self

    def results(self, table: str | None = None) -> Results:
        """The results table (409 `APIError` until the job has finished)."""
        params = {"table": table} if table else {}
        return Results(self.client.request("GET", f"/jobs/{self.id}/results", params=params).json())

    def results_text(self, format: str = "markdown", table: str | None = None) -> str:
        """The results rendered by the service: csv, markdown or latex."""
        params = {"format": format, **({"table": table} if table else {})}
        return self.client.request("GET", f"/jobs/{self.id}/results", params=params).text

    def epochs(self) -> list[dict[str, Any]]:
        """The training curve, one dict per finished epoch."""
        return self.client.request("GET", f"/jobs/{self.id}/epochs").json()["data"]

    def sigma(self) -> dict[str, Any]:
        """sum(σ) and bounds per epoch (``epochs``) and per-layer statistics (``layers``)."""
        return self.client.request("GET", f"/jobs/{self.id}/sigma").json()

    def download_checkpoint(self, path: str | Path, which: str = "best") -> Path:
        """Save the best or last checkpoint (safetensors) to ``path`` and verify its SHA-256
        against the server's X-Content-SHA256 header; a mismatch removes the file and raises
        `ChecksumError`. Returns the path."""
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        digest = hashlib.sha256()
        with self.client._http.stream("GET", f"/jobs/{self.id}/checkpoint", params={"which": which}) as r:
            if not r.is_success:
                r.read()
                raise APIError.from_response(r)
            expected = r.headers.get("X-Content-SHA256")
            with partial.open("wb") as f:
                for chunk in r.iter_bytes():
                    digest.update(chunk)
                    f.write(chunk)
        if expected is None or digest.hexdigest() != expected.lower():
            partial.unlink(missing_ok=True)
            raise ChecksumError(
                f"checkpoint of job {self.id}: sha256 {digest.hexdigest()}, server said {expected}"
            )
        partial.replace(path)
        return path

    def cancel(self) -> Job:
        """Cancel the job (a running job stops at its next batch); returns it refreshed."""
        self.data = self.client.request("POST", f"/jobs/{self.id}/cancel").json()
        return self


class Results:
    """A job's results: the service's JSON (``data``) and its cells as flat rows.

    Each row of ``rows`` is one cell of the table: model, variant, checkpoint, column (its key),
    attack, protocol, accuracy, ci_low, ci_high, n and the cell's other statistics. A suite's
    results have no cells of this shape: use ``data["tables"]``.
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Results(job_id={self.data.get('job_id')!r}, rows={len(self.rows)})"

    @property
    def diagnostics(self) -> list[dict[str, Any]]:
        """The evaluation's diagnostics (gradient masking and other warnings)."""
        return self.data.get("diagnostics", [])

    @property
    def rows(self) -> list[dict[str, Any]]:
        columns = {c["key"]: c for c in self.data.get("columns", [])}
        out = []
        for row in self.data.get("rows", []):
            for key, cell in row["cells"].items():
                column = columns.get(key, {})
                out.append(
                    {
                        "model": row["model"],
                        "variant": row["variant"],
                        "checkpoint": row["checkpoint"],
                        "column": key,
                        "attack": column.get("attack"),
                        "protocol": column.get("protocol"),
                        **cell,
                    }
                )
        return out

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("Results.to_pandas() needs pandas: pip install pandas") from e
        return pd.DataFrame(self.rows)


def _as_body(config: Any) -> dict[str, Any]:
    if hasattr(config, "model_dump"):  # a pydantic model (ctrw.config), without importing pydantic
        return config.model_dump(mode="json")
    if not isinstance(config, Mapping):
        raise TypeError(f"a job body is a mapping, not {type(config).__name__}")
    return dict(config)
