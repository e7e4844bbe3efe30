"""Domain errors raised by services; the API maps them to HTTP statuses in one place."""

from __future__ import annotations

__all__ = ["ConflictError", "NotFoundError", "ServiceError", "UnavailableError"]


class ServiceError(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(ServiceError):
    """The job (or its file) does not exist: 404."""


class ConflictError(ServiceError):
    """The job is not in a state that allows the request: 409."""

    def __init__(self, detail: str, *, status: str | None = None) -> None:
        super().__init__(detail)
        self.status = status


class UnavailableError(ServiceError):
    """A dependency (the broker) cannot be reached: 503."""
