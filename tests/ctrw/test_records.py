"""The records (ctrw.records) are what the producers emit: a tiny digits training, its evaluation
with diagnostics and its σ report, through the job entry points the workers call."""

import json
import math
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from ctrw.config import EvalConfig, TrainConfig
from ctrw.hooks import Hooks
from ctrw.jobs import run_evaluation, run_sigma_stats, run_training
from ctrw.records import Diagnostic, EpochMetrics, EpochRecord, ResultRow, SigmaLayer, SigmaLayerStats
from tests.support.configs import DIGITS_LEMMA_TRAIN, merged

DIGITS = merged(
    DIGITS_LEMMA_TRAIN,
    data={"train_subset": 192},
    optim={"epochs": 2, "batch_size": 64, "milestones": [1]},
    val_examples=32,
)
EVAL = {
    "attacks": [{"name": "clean"}, {"name": "pgd", "steps": 2}, {"name": "fgsm"}],
    "protocol": "both",
    "n_examples": 32,
    "batch_size": 16,
    "score_draws": 2,
    "diagnostics": True,
}


class Collect(Hooks):
    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []

    def on_epoch(self, record: dict[str, Any]) -> None:
        self.epochs.append(record)

    def on_result(self, row: dict[str, Any]) -> None:
        self.rows.append(row)


def same(record: type[BaseModel], emitted: dict[str, Any]) -> None:
    """``emitted`` validates as ``record`` and dumps back to itself (key order aside; NaN == NaN)."""
    dumped = record.model_validate(emitted).model_dump()
    assert json.dumps(dumped, sort_keys=True) == json.dumps(emitted, sort_keys=True)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("records")
    hooks = Collect()
    cfg = TrainConfig.model_validate(DIGITS)
    run_training(cfg, run_dir=run_dir, hooks=hooks)
    out = run_evaluation(run_dir / "best.safetensors", EvalConfig.model_validate(EVAL), cfg, hooks=hooks)
    sigma = run_sigma_stats(run_dir / "best.safetensors", cfg, n_pairs=200, grad_examples=16)
    return hooks, out, sigma


def test_training_emits_epoch_records(digits):
    hooks, _, _ = digits
    assert [r["epoch"] for r in hooks.epochs] == [1, 2]
    for r in hooks.epochs:
        same(EpochRecord, r)
    assert hooks.epochs[0]["sigma_sum"] is not None and hooks.epochs[0]["bound_lower"] is not None


def test_a_baseline_epoch_is_a_record_with_no_sigma(tmp_path):
    hooks = Collect()
    cfg = TrainConfig.model_validate({**DIGITS, "variant": "baseline", "bounds": {}, "optim": {"epochs": 1}})
    run_training(cfg, run_dir=tmp_path, hooks=hooks)
    (r,) = hooks.epochs
    same(EpochRecord, r)
    assert r["sigma_sum"] is None and r["bounds"] == []


def test_evaluation_emits_result_rows_and_diagnostics(digits):
    hooks, out, _ = digits
    assert [(r["attack"], r["protocol"]) for r in out["rows"]] == [
        (a, p) for a in ("clean", "pgd2", "fgsm") for p in ("paper", "adaptive")
    ]
    assert hooks.rows == out["rows"]
    for row in out["rows"]:
        same(ResultRow, row)
    assert len(out["diagnostics"]) == 7
    for d in out["diagnostics"]:
        same(Diagnostic, d)
    # The extra runs (steps sweep) are rows too.
    assert any(d["details"].get("applicable") for d in out["diagnostics"] if d["name"] == "steps_sweep")


def test_sigma_report_layers_are_records(digits):
    _, _, sigma = digits
    assert sigma["layers"]
    for layer in sigma["layers"]:
        same(SigmaLayer, layer)


def test_a_key_the_record_does_not_know_is_refused():
    # extra="forbid": a producer cannot grow a field without it being defined here first.
    row = {"name": "x", "fired": False, "verdict": "", "details": {}}
    Diagnostic.model_validate(row)
    with pytest.raises(ValidationError, match="surprise"):
        Diagnostic.model_validate({**row, "surprise": 1})


def test_the_stored_parts_are_prefixes_of_the_records():
    # The service stores EpochMetrics / SigmaLayerStats as columns; the records only add fields.
    assert list(EpochRecord.model_fields)[: len(EpochMetrics.model_fields)] == list(EpochMetrics.model_fields)
    assert list(SigmaLayer.model_fields)[: len(SigmaLayerStats.model_fields)] == list(
        SigmaLayerStats.model_fields
    )


def test_a_diverged_epoch_is_still_a_record():
    assert math.isnan(EpochRecord.model_validate({**_epoch(), "train_loss": float("nan")}).train_loss)


def _epoch() -> dict[str, Any]:
    return {f: None for f in EpochRecord.model_fields} | {
        "epoch": 1, "lr": 0.1, "is_best": True, "bounds": [], "bound_events": [],
    }  # fmt: skip
