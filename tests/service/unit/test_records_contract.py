"""The library's records (ctrw.records) against the database and the API, in-process (SQLite built
by the migrations in a temporary directory): the columns are the records' fields, and a record
the service stores is served in the JSON shape below. The shapes are a contract with clients: a
change to them is a change of the API, made here on purpose."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic.fields import FieldInfo
from sqlalchemy.orm import Session

from app.core.db import session_factory
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.models import Epoch, Job, JobKind, JobStatus, Result, SigmaStat
from app.schemas import EpochPublic, SigmaEpoch, SigmaPublic
from app.services import records as stored
from app.services.tables import build_table, render_results
from ctrw import records

# The JSON the API serves, key order included (GET /jobs/{id}/epochs, /sigma, /results).
EPOCH_JSON = [
    "epoch", "lr", "train_loss", "train_clean_acc", "train_adv_acc", "val_clean_acc", "val_pgd_acc",
    "sigma_sum", "sigma_min", "sigma_mean", "sigma_max", "bound_lower", "bound_upper", "seconds", "is_best",
    "extra", "created_at",
]  # fmt: skip
SIGMA_EPOCH_JSON = [
    "epoch",
    "sigma_sum",
    "sigma_min",
    "sigma_mean",
    "sigma_max",
    "bound_lower",
    "bound_upper",
]
SIGMA_LAYER_JSON = [
    "layer", "numel", "sigma_sum", "sigma_min", "sigma_mean", "sigma_max", "mu_mean", "bound_lower",
    "bound_upper", "hist_sigma", "hist_mu", "table6", "grad_cos",
]  # fmt: skip
RESULT_CELL_JSON = [
    "accuracy", "n", "ci_low", "ci_high", "std", "repeats", "draws", "worst_case", "majority",
    "ci_covers_attack_randomness",
]  # fmt: skip
DIAGNOSTIC_JSON = ["name", "fired", "verdict", "details"]

# Columns that are the service's own, not a record's.
SERVICE_COLUMNS = {"id", "job_id", "created_at"}


def _columns(table: Any) -> set[str]:
    return {c.name for c in table.__table__.columns}


def _may_be_none(field: FieldInfo) -> bool:
    return isinstance(field.annotation, types.UnionType) and type(None) in field.annotation.__args__


def test_the_columns_are_the_records_fields() -> None:
    assert _columns(Epoch) - SERVICE_COLUMNS - {"extra"} == set(records.EpochMetrics.model_fields)
    assert _columns(Result) - SERVICE_COLUMNS == set(records.ResultRow.model_fields)
    # The library's layer ``name`` is the service's ``layer``.
    assert _columns(SigmaStat) - SERVICE_COLUMNS - {"layer"} == set(records.SigmaLayerStats.model_fields)


@pytest.mark.parametrize(
    ("table", "record"),
    [(Epoch, records.EpochMetrics), (Result, records.ResultRow), (SigmaStat, records.SigmaLayerStats)],
)
def test_a_field_that_may_be_none_has_a_nullable_column(table: Any, record: Any) -> None:
    columns = table.__table__.columns
    assert [
        f for f, info in record.model_fields.items() if _may_be_none(info) and not columns[f].nullable
    ] == []


def test_the_sigma_view_of_an_epoch_is_its_metrics() -> None:
    metrics = records.EpochMetrics.model_fields
    assert {f: i.annotation for f, i in SigmaEpoch.model_fields.items()} == {
        f: metrics[f].annotation for f in SigmaEpoch.model_fields
    }


@pytest.fixture
def session(tmp_path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path / 'ctrw.db'}"
    upgrade(Settings(database_url=url, broker_url=None))
    with session_factory(url)() as s:
        yield s


def _job(session: Session, **values: Any) -> Job:
    job = Job(kind=JobKind.TRAIN, status=JobStatus.SUCCEEDED, config={}, config_hash="0" * 64, **values)
    session.add(job)
    session.commit()
    return job


def _epoch(epoch: int) -> records.EpochRecord:
    return records.EpochRecord(
        epoch=epoch, lr=0.1, train_loss=2.0, train_clean_acc=0.3, train_adv_acc=0.2, val_clean_acc=0.25,
        val_pgd_acc=0.15, sigma_sum=60.0, sigma_min=0.1, sigma_mean=0.5, sigma_max=0.9, bound_lower=19.2,
        bound_upper=90.0, seconds=1.5, is_best=epoch == 1, mu_mean=0.01,
        bounds=[{"lower": 19.2, "upper": 90.0}], bound_events=["start: bounds.upper of random layer 1: ..."],
    )  # fmt: skip


def test_an_epoch_record_is_served_as_its_metrics_and_extra(session: Session) -> None:
    job = _job(session)
    for e in (1, 2):
        stored.upsert_epoch(session=session, job_id=job.id, record=_epoch(e).model_dump())
    served = [
        EpochPublic.model_validate(e).model_dump(mode="json")
        for e in stored.list_epochs(session=session, job_id=job.id)
    ]
    assert [list(e) for e in served] == [EPOCH_JSON, EPOCH_JSON]
    record = _epoch(2).model_dump()
    assert {k: v for k, v in served[1].items() if k not in ("extra", "created_at")} == {
        k: record[k] for k in records.EpochMetrics.model_fields
    }
    assert served[1]["extra"] == {k: record[k] for k in ("mu_mean", "bounds", "bound_events")}


def test_a_sigma_layer_record_is_served_under_layer(session: Session) -> None:
    job = _job(session)
    stored.upsert_epoch(session=session, job_id=job.id, record=_epoch(1).model_dump())
    layer = records.SigmaLayer(
        name="features.3", shape=[16, 8, 3, 3], numel=1152, sigma_sum=60.0, sigma_min=0.01, sigma_mean=0.05,
        sigma_max=0.2, mu_mean=0.0, mu_sum=0.1, hist_sigma={"edges": [0, 1], "counts": [1152]},
        hist_mu={"edges": [0, 1], "counts": [1152]}, bound_lower=19.2, bound_upper=90.0,
        table6={"ratio": 0.5}, grad_cos={"mean": 0.9, "min": 0.8, "max": 1.0, "n": 4},
    )  # fmt: skip
    stored.replace_sigma_stats(session=session, job_id=job.id, layers=[layer.model_dump()])
    served = SigmaPublic.model_validate(
        {
            "job_id": job.id,
            "status": job.status,
            "epochs": stored.list_epochs(session=session, job_id=job.id),
            "layers": stored.list_sigma_stats(session=session, job_id=job.id),
        },
        from_attributes=True,
    ).model_dump(mode="json")
    assert [list(e) for e in served["epochs"]] == [SIGMA_EPOCH_JSON]
    (out,) = served["layers"]
    assert list(out) == SIGMA_LAYER_JSON
    assert out == {
        "layer": "features.3",
        **layer.model_dump(include=set(records.SigmaLayerStats.model_fields)),
    }


def test_a_result_row_is_stored_whole_and_served_as_a_cell(session: Session) -> None:
    row = records.ResultRow(
        attack="pgd20", name="pgd", protocol="paper", accuracy=0.4, n=64, ci_low=0.3, ci_high=0.5, std=None,
        repeats=[0.4], seconds=2.0, params={"eps": 0.03, "steps": 20},
        scoring=records.Scoring(
            draws=2, mean=0.41, ci_low=0.31, ci_high=0.51, worst_case=0.3, majority=0.42, per_repeat_mean=[0.41],
            draw_std=0.01, seeds=[7], ci={"method": "batches", "covers_attack_randomness": True}, seed_rule="...",
        ),
    )  # fmt: skip
    diagnostic = records.Diagnostic(
        name="attack_ordering",
        fired=True,
        verdict="pgd20 (paper) scores above fgsm (paper)",
        details={"groups": []},
    )
    job = _job(session, summary={"diagnostics": [diagnostic.model_dump()]})
    stored.upsert_result(session=session, job_id=job.id, row=row.model_dump())
    # A resumed evaluation reads the stored rows back as the library emitted them.
    assert stored.stored_rows(session=session, job_id=job.id) == [row.model_dump()]
    served = build_table(
        job=job,
        train_config={"model": {"name": "small_cnn", "width": 1.0}, "variant": "ctrw"},
        results=stored.list_results(session=session, job_id=job.id),
    )
    assert "pgd20" in render_results(served, "markdown")  # the served diagnostics render too
    table = served.model_dump(mode="json")
    (column,) = table["columns"]
    cell = table["rows"][0]["cells"][column["key"]]
    assert list(cell) == RESULT_CELL_JSON
    assert cell == {
        **row.model_dump(include={"accuracy", "n", "ci_low", "ci_high", "std", "repeats"}),
        "draws": 2, "worst_case": 0.3, "majority": 0.42, "ci_covers_attack_randomness": True,
    }  # fmt: skip
    assert [list(d) for d in table["diagnostics"]] == [DIAGNOSTIC_JSON]
    assert table["diagnostics"] == [diagnostic.model_dump()]
