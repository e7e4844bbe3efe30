"""A Python client for the CTRW job service (httpx only: importable without torch or pydantic).

    from ctrw.client import Client

    client = Client("http://127.0.0.1:8000", key=None)   # or CTRW_API_URL / CTRW_API_KEY
    job = client.train({"data": {"dataset": "digits", ...}})
    job.wait()                                            # a tqdm bar with the server's ETA
    print(job.results().to_pandas())
    job.download_checkpoint("model.safetensors")          # verified by its SHA-256

Every non-2xx answer raises `APIError` with the server's status, message and (422) field paths.
"""

from __future__ import annotations

from ctrw.client.api import DEFAULT_URL, Client, Job, Results
from ctrw.client.errors import APIError, ChecksumError, JobFailed

__all__ = ["DEFAULT_URL", "APIError", "ChecksumError", "Client", "Job", "JobFailed", "Results"]
