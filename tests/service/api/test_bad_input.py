"""Bad input against the real API (PostgreSQL, Redis; no worker): never a 500, a 4xx naming the
field with the database unchanged; cost limits; no download by request; no server paths or worker
host names in what clients see. Ends with Schemathesis generating requests from the OpenAPI
document (valid and invalid ones) and checking every response against it. Over 400 lines: every
check shares one in-process API and the database-unchanged helpers above the tests."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import func, select, update

from app.core.db import make_engine, session_factory
from app.models import Artifact, Job, JobStatus, SuiteMember
from app.schemas import worker_alias
from ctrw.config import EvalConfig, TrainConfig
from ctrw.cost import attack_job_cost, suite_cost, total_pflop, train_job_cost
from ctrw.paper import SuiteRequest
from tests.support.api import in_process_api

pytestmark = pytest.mark.service

# Per operation and mode; each is one HTTP call (~15-60 ms on 2 shared cores): ~700 requests a mode.
SCHEMATHESIS_EXAMPLES = 50


@pytest.fixture(scope="module")
def api(
    pg_migrated: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory, fast_settings: Any
) -> Iterator[httpx.Client]:
    """The API in-process (TestClient) on the session's PostgreSQL and Redis; no worker."""
    with in_process_api(fast_settings(tmp_path_factory.mktemp("api"), database_url=pg_migrated,
                                      broker_url=redis_url)) as client:  # fmt: skip
        yield client


def _rows(url: str) -> dict[str, int]:
    with make_engine(url).connect() as conn:
        return {m.__tablename__: conn.scalar(select(func.count()).select_from(m)) for m in (Job, SuiteMember)}


def _post_raw(api: httpx.Client, path: str, text: str) -> httpx.Response:
    return api.post(path, content=text.encode(), headers={"content-type": "application/json"})


def _refused(response: httpx.Response, field: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert field in body["message"], body["message"]
    return body


# --------------------------------------------------------------------------- no 500s


@pytest.mark.parametrize(
    ("path", "field"),
    [("random_weight.mu_init", "body.random_weight.mu_init"),
     ("bounds.lower", "body.bounds.lower.fixed.value"),
     ("evaluation.attacks.0.c", "body.evaluation.attacks.0.c"),
     ("evaluation.attacks.0.kappa", "body.evaluation.attacks.0.kappa")],
)  # fmt: skip
@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_422(
    api: httpx.Client, pg_migrated: str, tiny_train: dict[str, Any], path: str, field: str, token: str
) -> None:
    """PostgreSQL's JSONB cannot store NaN or Infinity: they were accepted, then the INSERT failed (500)."""
    body = copy.deepcopy(tiny_train)
    marker = 123.25  # replaced by the bare JSON token below
    if path == "bounds.lower":
        body["bounds"]["lower"] = {"kind": "fixed", "value": marker}
    elif path.startswith("evaluation"):
        body["evaluation"]["attacks"] = [{"name": "cw", "steps": 2, path.rsplit(".", 1)[1]: marker}]
    else:
        body["random_weight"] = {"mu_init": marker}
    text = json.dumps(body).replace("123.25", token)
    before = _rows(pg_migrated)
    _refused(_post_raw(api, "/jobs/train", text), field)
    assert _rows(pg_migrated) == before


def test_non_finite_suite_override_is_422(api: httpx.Client, pg_migrated: str) -> None:
    before = _rows(pg_migrated)
    text = '{"suite": "table7", "smoke": true, "overrides": {"random_weight": {"mu_init": NaN}}}'
    body = _refused(_post_raw(api, "/jobs/suite", text), "random_weight.mu_init")
    assert "finite" in body["message"]
    assert _rows(pg_migrated) == before


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [("get", "/jobs/ab\x00cd", "path.job_id"),
     ("get", "/jobs/ab\x00cd/results", "path.job_id"),
     ("post", "/jobs/ab\x00cd/cancel", "path.job_id"),
     ("get", "/jobs/0123abcd/figures/fig\x003b", "path.name"),
     ("get", "/jobs/0123abcd/results?table=t\x001", "query.table"),
     ("get", "/jobs?parent_id=a\x00b", "query.parent_id")],
)  # fmt: skip
def test_nul_in_path_or_query_is_422(api: httpx.Client, method: str, path: str, field: str) -> None:
    """A NUL character reached PostgreSQL, which cannot store or compare one (500)."""
    url = path.replace("\x00", "%00")
    r = api.request(method, url)
    assert r.status_code == 422, r.text
    assert field in r.json()["message"]


@pytest.mark.parametrize(
    ("path", "field"),
    [("name", "body.name"), ("evaluation.attacks.0.label", "body.evaluation.attacks.0.label"),
     ("data.root", "body.data.root")],
)  # fmt: skip
def test_nul_in_body_strings_is_422(
    api: httpx.Client, pg_migrated: str, tiny_train: dict[str, Any], path: str, field: str
) -> None:
    body = copy.deepcopy(tiny_train)
    node: Any = body
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[leaf] = "bad\x00name"
    before = _rows(pg_migrated)
    _refused(api.post("/jobs/train", json=body), field)
    r = api.post(
        "/jobs/attack", json={"train_job_id": "ab\x00cd", "evaluation": {"attacks": [{"name": "fgsm"}]}}
    )
    _refused(r, "body.train_job_id")
    assert _rows(pg_migrated) == before


def test_offset_beyond_64_bits_is_422(api: httpx.Client) -> None:
    r = api.get("/jobs", params={"offset": 2**63})
    assert r.status_code == 422 and "query.offset" in r.json()["message"]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [("seed", 1e30, "body.seed"), ("seed", 1e18, "body.seed"), ("seed", 2**40, "body.seed"), ("evaluation.seed", -1, "body.evaluation.seed"),
     ("attack.steps", False, "body.attack.steps"), ("attack.eps", True, "body.attack.eps"),
     ("optim.epochs", "3", "body.optim.epochs"), ("amp", 1, "body.amp"), ("data.channels", True, "body.data.channels"),
     ("optim.milestones", [2, 10**6], "body.optim.milestones.1"),
     ("evaluation.attacks", [], "body.evaluation.attacks")],
    ids=["seed-1e30", "seed-1e18", "seed-2^40", "negative-eval-seed", "false-as-int", "true-as-float", "string-as-int",
         "int-as-bool", "true-as-channels", "huge-milestone", "no-attacks"],
)  # fmt: skip
def test_values_outside_the_schema_are_422(
    api: httpx.Client, pg_migrated: str, tiny_train: dict[str, Any], path: str, value: Any, field: str
) -> None:
    """Seeds beyond 32 bits (1e18, 2^40) were accepted and reached the workers' generators; `false`
    was taken as 0, `true` as 1.0, `"3"` as 3; a milestone of 10^6 was accepted."""
    body = copy.deepcopy(tiny_train)
    node: Any = body
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    before = _rows(pg_migrated)
    _refused(api.post("/jobs/train", json=body), field)
    assert _rows(pg_migrated) == before


def test_suite_seed_is_bounded(api: httpx.Client, pg_migrated: str) -> None:
    """A suite seed of 1e18 was accepted and reached the workers' generators."""
    before = _rows(pg_migrated)
    r = api.post("/jobs/suite", json={"suite": "table7", "smoke": True, "seed": 1e18})
    assert r.status_code == 422 and "body.seed" in r.json()["message"], r.text
    assert _rows(pg_migrated) == before


def test_the_schema_states_what_is_refused(api: httpx.Client) -> None:
    """`attacks: []` was allowed by the documented schema and refused by the server."""
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["EvalConfig"]["properties"]["attacks"]["minItems"] == 1
    assert schemas["DataConfig"]["properties"]["download"]["const"] is False
    assert schemas["TrainConfig"]["properties"]["seed"]["maximum"] == 2**32 - 1


def test_integral_floats_are_integers(api: httpx.Client, tiny_train: dict[str, Any]) -> None:
    """JSON Schema counts 2.0 as an integer: the strict types take it."""
    body = {**tiny_train, "optim": {**tiny_train["optim"], "epochs": 2.0, "milestones": [1.0]}, "seed": 7.0}
    r = api.post("/jobs/train", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["config"]["optim"]["epochs"] == 2 and job["config"]["seed"] == 7
    api.post(f"/jobs/{job['id']}/cancel")


def test_unparseable_body_is_422_not_400(api: httpx.Client, pg_migrated: str) -> None:
    before = _rows(pg_migrated)
    for content in (b'{"name": "\xff\xfe"}', b"[" * 100_00 + b"]" * 100_00):
        r = api.post("/jobs/train", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"][0] == "body"
    assert _rows(pg_migrated) == before


# --------------------------------------------------------------------------- cost limits


def test_absurd_job_is_refused_naming_the_fields_and_the_budget(api: httpx.Client, pg_migrated: str) -> None:
    body = {
        "model": {"name": "wrn34_10", "width": 4.0},
        "optim": {"epochs": 1000},
        "data": {"dataset": "synthetic", "image_size": 32, "synthetic_train": 1_000_000},
        "evaluation": {"attacks": [{"name": "cw", "steps": 10_000}]},
    }
    before = _rows(pg_migrated)
    r = api.post("/jobs/train", json=body)
    assert r.status_code == 422, r.text
    message = r.json()["message"]
    for named in ("CTRW_MAX_JOB_PFLOP", "10,000 PFLOP", "model.name=wrn34_10", "model.width=4.0",
                  "data.synthetic_train=1000000", "optim.epochs=1000"):  # fmt: skip
        assert named in message, message
    assert r.json()["detail"][0]["loc"] == ["body"]
    assert _rows(pg_migrated) == before


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [("data.synthetic_train", 10_000_000, "body.data.synthetic_train"),
     ("data.synthetic_test", 10**6, "body.data.synthetic_test"),
     ("data.train_subset", 10**7, "body.data.train_subset"),
     ("data.test_subset", 10**6, "body.data.test_subset"),
     ("val_examples", 10**6, "body.val_examples"),
     ("evaluation.n_examples", 10**6, "body.evaluation.n_examples")],
)  # fmt: skip
def test_size_fields_are_bounded(
    api: httpx.Client, tiny_train: dict[str, Any], path: str, value: int, field: str
) -> None:
    body = copy.deepcopy(tiny_train)
    section, leaf = path.split(".") if "." in path else (None, path)
    (body[section] if section else body)[leaf] = value
    r = api.post("/jobs/train", json=body)
    assert r.status_code == 422 and field in r.json()["message"], r.text


def test_synthetic_data_must_fit_in_memory(api: httpx.Client) -> None:
    body = {"data": {"dataset": "synthetic", "image_size": 512, "synthetic_train": 1_000_000}}
    r = api.post("/jobs/train", json=body)
    assert r.status_code == 422 and "body.data" in r.json()["message"] and "GiB" in r.json()["message"]


def test_the_estimate_is_in_the_job_record(api: httpx.Client, tiny_train: dict[str, Any]) -> None:
    job = api.post("/jobs/train", json=tiny_train).json()
    expected = train_job_cost(TrainConfig.model_validate(tiny_train)).pflop
    assert api.get(f"/jobs/{job['id']}").json()["cost_pflop"] == pytest.approx(expected) and expected > 0
    api.post(f"/jobs/{job['id']}/cancel")


def test_attack_job_estimate_uses_its_train_jobs_model(api: httpx.Client, pg_migrated: str) -> None:
    """An attack job costs its evaluation of the train job's model on that job's test set."""
    train = {"model": {"name": "wrn34_10"}, "evaluation": None}
    train_id = api.post("/jobs/train", json=train).json()["id"]
    with session_factory(pg_migrated)() as session:  # as if a worker had trained it
        session.execute(update(Job).where(Job.id == train_id).values(status=JobStatus.SUCCEEDED))
        session.commit()
    heavy = {"attacks": [{"name": "eotpgd", "steps": 10_000, "eot_draws": 1000}]}
    before = _rows(pg_migrated)
    r = api.post("/jobs/attack", json={"train_job_id": train_id, "evaluation": heavy})
    assert r.status_code == 422, r.text
    assert "CTRW_MAX_JOB_PFLOP" in r.json()["message"] and "eotpgd" in r.json()["message"]
    assert _rows(pg_migrated) == before
    light = {"attacks": [{"name": "pgd", "steps": 10}], "n_examples": 1000}
    r = api.post("/jobs/attack", json={"train_job_id": train_id, "evaluation": light})
    assert r.status_code == 202, r.text
    expected = attack_job_cost(TrainConfig.model_validate(train), EvalConfig.model_validate(light)).pflop
    assert r.json()["cost_pflop"] == pytest.approx(expected)
    # 1000 images x (20 PGD + 1 judging + 10 scoring passes) x 13.3 GFLOP
    assert expected == pytest.approx(1000 * 31 * 13.3178e9 / 1e15, rel=1e-3)
    api.post(f"/jobs/{r.json()['id']}/cancel")


def test_paper_scale_suite_is_accepted_with_its_summed_estimate(api: httpx.Client, pg_migrated: str) -> None:
    """The budget refuses absurd requests, not the paper: Table 1 for both networks (8 jobs)."""
    body = {"suite": "table1", "model": "all", "seed": 11}
    r = api.post("/jobs/suite", json=body)
    assert r.status_code == 202, r.text
    suite = r.json()
    try:
        costs = suite_cost(SuiteRequest.model_validate(body))
        assert suite["cost_pflop"] == pytest.approx(total_pflop(costs.values()))
        assert suite["cost_pflop"] > 1000  # WRN-34-10 at 200 epochs: thousands of PFLOP
        with session_factory(pg_migrated)() as session:
            members = session.execute(
                select(SuiteMember.key, Job.cost_pflop).join(Job, Job.id == SuiteMember.job_id)
                .where(SuiteMember.suite_id == suite["id"])
            ).all()  # fmt: skip
        assert {k: pytest.approx(c) for k, c in members} == {k: c.pflop for k, c in costs.items()}
    finally:
        assert api.post(f"/jobs/{suite['id']}/cancel").status_code == 202


def test_suite_over_the_budget_is_refused(api: httpx.Client, pg_migrated: str) -> None:
    before = _rows(pg_migrated)
    r = api.post(
        "/jobs/suite",
        json={
            "suite": "table1",
            "model": "wrn34_10",
            "epochs": 1000,
            "overrides": {"attack": {"steps": 100}},
        },
    )
    assert r.status_code == 422, r.text
    message = r.json()["message"]
    assert "sub-job wrn34_10/cifar10/" in message and "CTRW_MAX_JOB_PFLOP" in message
    assert "optim.epochs=1000" in message and "attack.steps=100" in message
    assert _rows(pg_migrated) == before


# --------------------------------------------------------------------------- download


def test_download_is_not_a_request_field(
    api: httpx.Client, pg_migrated: str, tiny_train: dict[str, Any]
) -> None:
    before = _rows(pg_migrated)
    body = {**tiny_train, "data": {**tiny_train["data"], "download": True}}
    message = _refused(api.post("/jobs/train", json=body), "body.data.download")["message"]
    assert "CTRW_ALLOW_DOWNLOAD" in message
    r = api.post("/jobs/suite", json={"suite": "table7", "overrides": {"data": {"download": True}}})
    assert r.status_code == 422 and "data.download" in r.json()["message"]
    assert _rows(pg_migrated) == before


# --------------------------------------------------------------------------- no leaks


def test_job_record_hides_server_paths_and_host_names(
    api: httpx.Client, pg_migrated: str, tiny_train: dict[str, Any], tmp_path: Any
) -> None:
    """As a worker on host `gpu-node-7` would leave a failed job: the error names the data
    directory, the environment the host, the summary the checkpoint path."""
    job_id = api.post("/jobs/train", json=tiny_train).json()["id"]
    secret = f"{tmp_path}/srv/ctrw/data"
    with session_factory(pg_migrated)() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(
                status=JobStatus.FAILED, worker="gpu-node-7:4242",
                error=f"DataNotFoundError: cifar10: no data in {secret}. Put the extracted folder there",
                environment={"torch": "2.x", "hostname": "gpu-node-7"},
                summary={"training": {"best_checkpoint": f"{tmp_path}/runs/{job_id}/best.safetensors"}},
            )
        )  # fmt: skip
        session.add(Artifact(job_id=job_id, kind="best_checkpoint", path=f"{secret}/gone.safetensors",
                             sha256="0" * 64, size_bytes=1))  # fmt: skip
        session.commit()
    for text in (api.get(f"/jobs/{job_id}").text, api.get("/jobs", params={"limit": 500}).text,
                 api.get(f"/jobs/{job_id}/checkpoint").text):  # fmt: skip
        assert str(tmp_path) not in text and "gpu-node-7" not in text, text
    job = api.get(f"/jobs/{job_id}").json()
    assert job["error"] == "DataNotFoundError: cifar10: no data in .../data. Put the extracted folder there"
    assert job["worker"] == worker_alias("gpu-node-7:4242") and job["environment"] == {"torch": "2.x"}
    assert job["summary"]["training"]["best_checkpoint"] == ".../best.safetensors"
    r = api.get(f"/jobs/{job_id}/checkpoint")
    assert r.status_code == 404 and ".../gone.safetensors" in r.json()["detail"]
    with session_factory(pg_migrated)() as session:  # operators keep the full text
        stored = session.get(Job, job_id)
        assert stored is not None and stored.worker == "gpu-node-7:4242" and secret in (stored.error or "")


# --------------------------------------------------------------------------- schemathesis


def _check_generated(case: Any, api: httpx.Client, pg_migrated: str) -> None:
    before = _rows(pg_migrated)
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    if response.status_code >= 400:
        assert _rows(pg_migrated) == before, (case.method, case.path, response.text)
    if case.meta.generation.mode is GenerationMode.POSITIVE and response.status_code == 422:
        types = {e["type"] for e in response.json()["detail"]}
        assert types == {"value_error"}, (case.method, case.path, case.body, response.text)
    if response.status_code == 202 and case.path in ("/jobs/train", "/jobs/attack", "/jobs/suite"):
        api.post(f"/jobs/{response.json()['id']}/cancel")  # no worker here: leave nothing queued


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_conform_to_the_schema(
    api: httpx.Client, pg_migrated: str, mode: GenerationMode
) -> None:
    """Requests generated from /openapi.json (valid ones, then invalid ones) for every operation,
    with every check Schemathesis has: no 5xx, documented status codes, content types and
    headers, response bodies valid against their schema, invalid requests refused (4xx) and the
    database unchanged by a refused one. One exception: a request valid under the schema may still
    be refused by a rule the schema cannot state (two fields that contradict each other, the cost
    budget, a cursor this API did not issue); such a 422 must say so (`value_error`), never be a
    type or range error that the schema should have caught."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)  # type: ignore[attr-defined]
    failures: list[str] = []
    sent: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.settings(
            max_examples=SCHEMATHESIS_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            sent.append(case.path)
            _check_generated(case, api, pg_migrated)

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            # No parameters and no body: nothing to make invalid (GET /healthz in negative mode).
            assert mode is GenerationMode.NEGATIVE, operation.path
        except Exception as exc:  # one report per operation, then the next operation
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
    # not vacuous: every operation with a parameter or a body was exercised
    assert len(set(sent)) >= 11 and len(sent) > 300, (len(sent), sorted(set(sent)))
