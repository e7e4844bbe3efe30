"""API docs that work offline (Swagger UI at /docs, ReDoc at /redoc, their assets served from the
pinned `fastapi-offline` package rather than a CDN) and `GET /`, which says where things are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_URL", "install"]

ASSETS_URL = "/docs-assets"
_ASSETS = Path(fastapi_offline.__file__).parent / "static"
_OAUTH2_REDIRECT = "/docs/oauth2-redirect"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        oauth2_redirect_url=_OAUTH2_REDIRECT,
        # Operations shown with their examples; "Try it out" sends the digits example as is.
        swagger_ui_parameters={
            "docExpansion": "list",
            "displayRequestDuration": True,
            "tryItOutEnabled": False,
        },
    )


@router.get(_OAUTH2_REDIRECT)
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
        with_google_fonts=False,  # offline: the system fonts
    )


@router.get("/")
def root(request: Request) -> Response:
    """Where the docs and the dashboard are (JSON); a browser (Accept: text/html) goes to /ui."""
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/ui", status_code=307)
    body: dict[str, Any] = {
        "service": request.app.title,
        "version": request.app.version,
        "dashboard": "/ui",
        "docs": "/docs",
        "redoc": "/redoc",
        "openapi": request.app.openapi_url,
        "jobs": "/jobs",
        "health": "/healthz",
    }
    return JSONResponse(body)


def install(app: FastAPI) -> None:
    """Serve the docs pages and their packaged assets (create the app with docs_url=None and
    redoc_url=None so FastAPI's CDN pages are not registered)."""
    app.mount(ASSETS_URL, StaticFiles(directory=_ASSETS), name="docs-assets")
    app.include_router(router)
