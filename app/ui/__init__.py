"""The dashboard at ``/ui``: server-rendered page shells whose small vanilla-JS layer (static/*.js)
reads the JSON API (so API keys, filters and live progress work exactly as for any client) and draws
charts as inline SVG. No CDN, no build step; the API process still imports neither torch nor matplotlib."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any

import yaml
from fastapi import APIRouter, Body, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from app.api.deps import PrincipalDep, SessionDep
from app.models import JobKind
from app.schemas import JOB_ID_PATTERN, SuiteResults
from app.services import jobs
from app.services.tables import get_results
from ctrw.config import PRESETS
from ctrw.paper import SuiteRequest, SuiteTable
from ctrw.paper.common import attack_column
from ctrw.paper.experiments import SUITE_NAMES

__all__ = ["router"]

_HERE = FsPath(__file__).parent
_STATIC = {p.name: p for p in (_HERE / "static").iterdir() if p.suffix in (".js", ".css")}
_MEDIA = {".js": "text/javascript", ".css": "text/css"}
# Repository presets when the configs/ folder is next to the package (a source checkout).
_CONFIGS = _HERE.parents[1] / "configs"
templates = Jinja2Templates(directory=_HERE / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)

# A digits smoke run: seconds on a laptop CPU, every page of the dashboard has data to show.
_SMOKE: dict[str, Any] = {
    "name": "digits-smoke",
    "model": {"name": "small_cnn", "width": 0.25},
    "data": {"dataset": "digits", "image_size": 8, "channels": 1, "augment": False,
             "train_subset": 256, "test_subset": 64},
    "optim": {"epochs": 3, "batch_size": 64, "milestones": [2]},
    "attack": {"steps": 2},
    "val_pgd_steps": 2,
    "val_examples": 64,
    "evaluation": {"attacks": [{"name": "clean"}, {"name": "pgd", "steps": 3}], "n_examples": 64,
                   "score_draws": 2},
    "amp": False,
}  # fmt: skip


def presets() -> dict[str, dict[str, Any]]:
    """Submit-page presets: name -> {kind, text}; ``text`` is YAML as a user would write it."""
    out = {"digits-smoke (train)": {"kind": "train", "text": yaml.safe_dump(_SMOKE, sort_keys=False)}}
    if _CONFIGS.is_dir():
        for path in sorted(_CONFIGS.glob("*.yaml")):
            kind = "attack" if path.stem.startswith("eval") else "train"
            out[f"{path.stem} ({kind})"] = {"kind": kind, "text": path.read_text()}
    out["suite table1 smoke (suite)"] = {
        "kind": "suite", "text": yaml.safe_dump({"suite": "table1", "smoke": True}, sort_keys=False)}  # fmt: skip
    return out


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {"page": template.removesuffix(".html"), **context})


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    return _page(request, "jobs.html", suite_names=SUITE_NAMES)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str = Path(..., pattern=r"^[0-9a-f-]{8,64}$")) -> HTMLResponse:
    return _page(request, "job.html", job_id=job_id)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request) -> HTMLResponse:
    return _page(request, "compare.html")


@router.get("/submit", response_class=HTMLResponse)
def submit_page(request: Request) -> HTMLResponse:
    return _page(request, "submit.html", presets_json=json.dumps(presets()).replace("</", "<\\/"))


@router.post("/parse")
def parse_config(text: str = Body(..., media_type="text/plain", max_length=64 * 1024)) -> Any:
    """YAML (or JSON, a subset) from the editor as JSON; the job routes then validate it."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise HTTPException(422, f"body: not valid YAML/JSON{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(value, dict):
        raise HTTPException(422, "body: the config must be a mapping (key: value)")
    return _expand_preset(value)


def _expand_preset(value: dict[str, Any]) -> dict[str, Any]:
    """``preset: published`` (as in configs/, for the CLI) as the full training config it stands for,
    since the job routes take complete configs only."""
    if "preset" not in value:
        return value
    rest = {k: v for k, v in value.items() if k != "preset"}
    name = value["preset"]
    if name == "paper":
        return rest
    if name not in PRESETS:
        raise HTTPException(422, f"body.preset: unknown preset {name!r} (paper | {' | '.join(PRESETS)})")
    try:
        return PRESETS[name](**rest).model_dump(mode="json")
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
        ) from None


@router.get("/paper-values/{job_id}")
def paper_values(
    session: SessionDep, principal: PrincipalDep, job_id: str = Path(..., pattern=JOB_ID_PATTERN)
) -> dict[str, dict[str, float]]:
    """For the compare page: the paper's value (percent) of a suite's sub-jobs' result columns,
    ``{sub-job id: {"attack|protocol": value}}``, where the suite's tables give one for a row of
    one sub-job (a table's own columns, e.g. Figure 3c's two protocols, are left out)."""
    job = jobs.get_job(session=session, job_id=job_id, owner=principal.scope)  # 404: not the key's
    if job.kind is not JobKind.SUITE:
        raise HTTPException(404, f"job {job_id} is not a suite")
    results = get_results(session=session, job_id=job_id)
    assert isinstance(results, SuiteResults)
    return sub_job_paper_values(SuiteRequest.model_validate(job.config), results.tables, results.sub_jobs)


def sub_job_paper_values(
    req: SuiteRequest, tables: Mapping[str, SuiteTable], sub_jobs: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """``{sub-job id: {"attack|protocol": paper value}}`` from a suite's tables (``sub_jobs``: key -> id)."""
    out: dict[str, dict[str, float]] = {}
    for table in tables.values():
        for row in table.rows:
            sub_job = sub_jobs.get(row.sub_jobs[0]) if len(row.sub_jobs) == 1 else None
            for column in table.columns if sub_job else ():
                cell = row.cells.get(column.key)
                if cell is None or cell.paper is None:
                    continue
                try:
                    attack, protocol = attack_column(req, column.key)
                except (KeyError, ValueError):
                    continue
                out.setdefault(sub_job, {})[f"{attack}|{protocol}"] = cell.paper
    return out


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    path = _STATIC.get(name)
    if path is None:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(path, media_type=_MEDIA[path.suffix], headers={"Cache-Control": "no-cache"})
