"""Domain errors raised by services; the API maps them to HTTP statuses in one place."""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "InvalidInputError",
    "NotFoundError",
    "QuotaError",
    "ServiceError",
    "UnavailableError",
]


class ServiceError(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(ServiceError):
    """The job (or its file) does not exist: 404."""


class InvalidInputError(ServiceError):
    """Input that passes the schema but not a check against stored state (the model a job
    attacks): 422 with the field path, like a schema error."""

    def __init__(self, detail: str, *, loc: tuple[str | int, ...]) -> None:
        super().__init__(detail)
        self.loc = loc


class ConflictError(ServiceError):
    """The job is not in a state that allows the request: 409."""

    def __init__(self, detail: str, *, status: str | None = None) -> None:
        super().__init__(detail)
        self.status = status


class UnavailableError(ServiceError):
    """A dependency (the broker) cannot be reached: 503."""


class QuotaError(ServiceError):
    """The owner has too many unfinished jobs: 429, nothing stored."""
