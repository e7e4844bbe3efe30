"""The FastAPI application factory (`uvicorn --factory app.main:create_app`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import ui
from app.api.middleware import BodySizeLimitMiddleware
from app.api.routes import admin, docs, health, jobs, models
from app.core.queue import make_dispatch, make_dispatch_group
from app.core.settings import Settings, get_settings
from app.schemas import redact_paths
from app.services.auth import RateLimiter
from app.services.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    QuotaError,
    ServiceError,
    UnavailableError,
)

__all__ = ["create_app"]

_STATUS = {NotFoundError: 404, ConflictError: 409, QuotaError: 429, UnavailableError: 503}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="CTRW job service",
        summary="Train randomized adversarial defenses and evaluate them honestly, as jobs.",
        version="0.1.0",
        docs_url=None,  # app.api.routes.docs serves /docs and /redoc from packaged assets, no CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.dispatch = make_dispatch(settings)
    app.state.dispatch_group = make_dispatch_group(settings)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        per_path={"/models": settings.max_upload_bytes},
    )
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(ui.router)
    docs.install(app)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    # Server paths (a missing checkpoint file's) are for operators: clients get the file's name.
    detail = redact_paths(exc.detail)
    if isinstance(exc, InvalidInputError):
        return _invalid([{"loc": exc.loc, "msg": detail, "type": "value_error"}])
    content: dict[str, str] = {"detail": detail}
    if isinstance(exc, ConflictError) and exc.status is not None:
        content["status"] = exc.status
    return JSONResponse(content, status_code=_STATUS.get(type(exc), 500))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 with FastAPI's error list plus one readable line per field path (`body.optim.epochs: ...`).
    The submitted input is not echoed back."""
    assert isinstance(exc, RequestValidationError)
    return _invalid([{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()])


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI answers 400 for a JSON body it cannot parse beyond a syntax error (not UTF-8, nested
    too deeply): that is an invalid body like any other, so 422 naming the body."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        return _invalid(
            [{"loc": ("body",), "msg": "the body could not be parsed as JSON", "type": "json_invalid"}]
        )
    return await http_exception_handler(request, exc)


def _invalid(errors: list[dict[str, Any]]) -> JSONResponse:
    lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors]
    return JSONResponse(
        jsonable_encoder({"detail": errors, "message": "invalid request: " + "; ".join(lines)}),
        status_code=422,
    )
