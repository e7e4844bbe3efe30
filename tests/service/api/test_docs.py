"""API docs that work offline and explain themselves: Swagger UI and ReDoc from packaged assets,
a description on every request field, runnable examples on the job bodies, and `GET /`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.core.db import make_engine
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.main import create_app
from app.services import auth
from ctrw.config import TrainConfig

pytestmark = pytest.mark.service

BODIES = {"/jobs/train": "TrainConfig", "/jobs/attack": "AttackJobCreate", "/jobs/suite": "SuiteRequest"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The API in-process on its own SQLite database (embedded mode: submitted jobs stay queued)."""
    tmp = tmp_path_factory.mktemp("docs")
    settings = Settings(database_url=f"sqlite:///{tmp / 'ctrw.db'}", runs_dir=tmp / "runs")
    upgrade(settings)
    # TestClient's requests arrive on "testserver", not a loopback address: the job routes want a
    # key (the docs pages and GET / do not).
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        key = auth.create_key(session=session, owner="docs")[1]
    engine.dispose()
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client:
        yield client


def _request_schemas(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every schema reachable from a request body, by name."""
    components = spec["components"]["schemas"]
    found: dict[str, dict[str, Any]] = {}
    stack: list[Any] = [spec["paths"][p]["post"]["requestBody"] for p in BODIES]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in found:
                    found[name] = components[name]
                    stack.append(components[name])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def test_every_request_field_has_a_description(api: TestClient) -> None:
    schemas = _request_schemas(api.get("/openapi.json").json())
    assert {"TrainConfig", "EvalConfig", "AttackSpec", "SuiteRequest", "OptimConfig"} <= set(schemas)
    missing = [
        f"{name}.{field}"
        for name, schema in schemas.items()
        for field, prop in schema.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert missing == []


def _example(spec: dict[str, Any], path: str) -> dict[str, Any]:
    content = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    examples = content.get("examples") or {}
    assert examples, f"{path} has no examples"
    return next(iter(examples.values()))["value"]


def test_examples_are_the_digits_demo_and_run(api: TestClient) -> None:
    from app.cli.main import DEMO_CONFIG

    spec = api.get("/openapi.json").json()
    train = _example(spec, "/jobs/train")
    assert train == DEMO_CONFIG  # the digits demo, not a 200-epoch CIFAR default
    assert TrainConfig.model_validate(train).data.dataset == "digits"
    created = []
    try:
        r = api.post("/jobs/train", json=train)
        assert r.status_code == 202, r.text
        created.append(r.json()["id"])
        suite = _example(spec, "/jobs/suite")
        r = api.post("/jobs/suite", json=suite)
        assert r.status_code == 202, r.text
        created.append(r.json()["id"])
        assert r.json()["config"]["smoke"] is True  # the digits version of the experiment
        # The attack example names a train job: valid as a body, so the answer is about the job
        # (not finished yet: 409), never a 422.
        attack = {**_example(spec, "/jobs/attack"), "train_job_id": created[0]}
        r = api.post("/jobs/attack", json=attack)
        assert r.status_code == 409, r.text
    finally:
        for job_id in created:
            api.post(f"/jobs/{job_id}/cancel")


def test_root_says_where_things_are(api: TestClient) -> None:
    body = api.get("/").json()
    assert body["docs"] == "/docs" and body["redoc"] == "/redoc" and body["dashboard"] == "/ui"
    assert body["openapi"] == "/openapi.json"
    r = api.get("/", headers={"Accept": "text/html,application/xhtml+xml"}, follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui"
    with TestClient(api.app) as anonymous:  # no key: the docs and the way to them are public
        for path in ("/", "/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui-bundle.js"):
            assert anonymous.get(path).status_code == 200, path
    page = api.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_elsewhere(api: TestClient, page: str) -> None:
    html = api.get(page).text
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html)
    assert urls and all(u.startswith("/") for u in urls), urls
    assert "fonts.googleapis" not in html and "cdn." not in html
    for url in urls:
        r = api.get(url)
        assert r.status_code == 200 and len(r.content) > 1000, url


@pytest.mark.slow
def test_swagger_ui_renders_offline_in_chromium(
    browser: Any, processes: Any, fast_settings: Any, wait_for: Any
) -> None:
    api = processes.api(fast_settings(processes.tmp))
    base = str(api.base_url).rstrip("/")
    browser.get(f"{base}/docs")

    def operations() -> list[str]:
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('.opblock-summary-path'))"
            ".map(e => e.getAttribute('data-path'));"
        )

    paths = wait_for(operations, timeout=30, what="Swagger UI's operations")
    assert {"/jobs/train", "/jobs/attack", "/jobs/suite", "/jobs/{job_id}/checkpoint"} <= set(paths)
    # Every resource the page loaded came from the service itself.
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert loaded and all(u.startswith(base) for u in loaded), loaded
    shot = browser.shot("docs")
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")

    browser.get(f"{base}/redoc")
    wait_for(
        lambda: "/jobs/train" in browser.execute_script("return document.body.innerText;"),
        timeout=30,
        what="ReDoc's operations",
    )
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    # ReDoc's bundle asks for one thing elsewhere, its sidebar attribution logo, and drops the
    # image when that fails (offline): the page does not depend on it.
    foreign = [u for u in loaded if not u.startswith(base)]
    assert foreign in ([], ["https://cdn.redoc.ly/redoc/logo-mini.svg"]), loaded
    assert any(u.endswith("/docs-assets/redoc.standalone.js") for u in loaded)
    assert Path(browser.shot("redoc")).stat().st_size > 10_000
