"""Evaluation protocols, stochastic scoring and confidence intervals, resuming and cancelling."""

import math

import pytest
import torch

from ctrw.config import AttackSpec, EvalConfig, RandomWeightConfig
from ctrw.evaluation.evaluate import evaluate
from ctrw.evaluation.intervals import wilson_interval
from ctrw.evaluation.scoring import RepeatScores, score_batch, summarize, vote_counts
from ctrw.hooks import Cancelled, Hooks, Progress
from ctrw.nn.random_weight import random_layers, seed_random_layers
from ctrw.nn.randomness import grouped_draws_supported
from tests.support.models import NUM_CLASSES, prototype_data, small_cnn, trained_small_cnn

ROW_KEYS = {
    "attack",
    "name",
    "protocol",
    "accuracy",
    "n",
    "ci_low",
    "ci_high",
    "seconds",
    "params",
    "repeats",
    "std",
    "scoring",
}
SCORING_KEYS = {"draws", "mean", "ci_low", "ci_high", "worst_case", "majority", "seeds"}


@pytest.fixture(scope="module")
def random_model() -> torch.nn.Module:
    # A large sigma so that draws visibly change predictions (the scoring has something to score).
    return trained_small_cnn(RandomWeightConfig(sigma_init=0.6))


@pytest.fixture(scope="module")
def test_set() -> tuple[torch.Tensor, torch.Tensor]:
    return prototype_data(40, seed=3)


def _cfg(**kw: object) -> EvalConfig:
    base: dict[str, object] = {
        "attacks": [AttackSpec(name="clean"), AttackSpec(name="pgd", steps=3), AttackSpec(name="fgsm")],
        "batch_size": 16,
        "score_draws": 5,
        "diagnostics": False,
    }
    return EvalConfig(**{**base, **kw})


class Recorder(Hooks):
    """Collects what the evaluation reports; cancels after ``cancel_after`` progress events."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.rows: list[dict] = []
        self.progress: list[Progress] = []
        self.cancel_after = cancel_after

    def on_progress(self, progress: Progress) -> None:
        self.progress.append(progress)

    def on_result(self, row: dict) -> None:
        self.rows.append(row)

    def should_cancel(self) -> bool:
        return self.cancel_after is not None and len(self.progress) >= self.cancel_after


# --------------------------------------------------------------------------- confidence intervals


def _scores(
    draw_correct: list[int], majority: list[bool], single: list[bool] | None, var: float = 0.0
) -> RepeatScores:
    return RepeatScores(
        single_correct=None if single is None else torch.tensor(single),
        draw_correct=torch.tensor(draw_correct),
        majority_correct=torch.tensor(majority),
        batch_sizes=torch.tensor([len(draw_correct)]),
        batch_draw_var=torch.tensor([var], dtype=torch.float64),
    )


def test_score_batch_and_summarize(random_model: torch.nn.Module) -> None:
    """Paper accuracy = the single draw B; adaptive accuracy = the K-draw mean; worst case, majority."""
    votes = torch.tensor([[3, 0], [1, 2], [0, 3], [2, 1]])  # (B=4, classes=2) under K=3 draws
    y = torch.tensor([0, 0, 1, 1])
    draw_correct = votes.gather(1, y.view(-1, 1)).squeeze(1).tolist()  # [3, 1, 3, 1]
    majority = (votes.argmax(1) == y).tolist()  # example 1 votes class 1, example 3 votes class 0
    paper = summarize(
        [_scores(draw_correct, majority, [True, False, True, True])], draws=3, protocol="paper", seeds=[1]
    )
    adaptive = summarize([_scores(draw_correct, majority, None)], draws=3, protocol="adaptive", seeds=[1])
    assert paper["accuracy"] == 0.75
    assert paper["scoring"]["mean"] == adaptive["accuracy"] == pytest.approx(8 / 12)
    assert paper["scoring"]["worst_case"] == 0.5 and paper["scoring"]["majority"] == 0.5
    assert paper["std"] is None and paper["scoring"]["seeds"] == [1]
    # score_batch on a real model gives the same bookkeeping.
    x = prototype_data(8, seed=9)[0]
    labels = torch.arange(8) % NUM_CLASSES
    seed_random_layers(random_model, 3)
    s = score_batch(random_model, x, labels, draws=4, max_rows=16)
    seed_random_layers(random_model, 3)
    v = vote_counts(random_model, x, 4, max_rows=16)
    assert torch.equal(s.draw_correct, v.gather(1, labels.view(-1, 1)).squeeze(1))
    assert torch.equal(s.majority_correct, v.argmax(1) == labels)
    assert s.batch_sizes.tolist() == [8] and s.batch_draw_var.shape == (1,)


def test_a_draw_shared_by_the_batch_widens_the_interval() -> None:
    """One draw per batch moves every example together: the CI must not treat them as independent."""
    draw_correct = [5] * 60 + [0] * 40
    majority = [True] * 60 + [False] * 40
    single = [True] * 60 + [False] * 40
    alone = summarize([_scores(draw_correct, majority, single)], draws=5, protocol="paper", seeds=[0])
    shared = summarize(
        [_scores(draw_correct, majority, single, var=0.01)], draws=5, protocol="paper", seeds=[0]
    )
    assert (alone["ci_low"], alone["ci_high"]) == pytest.approx(wilson_interval(60, 100))
    assert shared["ci_high"] - shared["ci_low"] > alone["ci_high"] - alone["ci_low"]
    # The K-draw mean averages 5 shared draws, so it widens less than the single draw does.
    widen_single = (shared["ci_high"] - shared["ci_low"]) - (alone["ci_high"] - alone["ci_low"])
    widen_mean = (shared["scoring"]["ci_high"] - shared["scoring"]["ci_low"]) - (
        alone["scoring"]["ci_high"] - alone["scoring"]["ci_low"]
    )
    assert 0 < widen_mean < widen_single
    assert shared["scoring"]["draw_std"] == pytest.approx(0.1)


def test_vote_counts_chunk_the_draws(random_model: torch.nn.Module, test_set: tuple) -> None:
    x, _ = test_set
    x = 0.5 * (x + x.roll(1, 0))  # halfway between two classes: the draws decide
    seed_random_layers(random_model, 4)
    small = vote_counts(random_model, x, 7, max_rows=len(x) * 2)  # chunks of 2, 2, 2, 1 draws
    seed_random_layers(random_model, 4)
    large = vote_counts(random_model, x, 7, max_rows=len(x) * 7)  # one forward of 7 copies
    assert small.shape == (len(x), NUM_CLASSES)
    assert torch.equal(small.sum(1), torch.full((len(x),), 7))
    # The random layer has 64 elements: a (k, 64) draw equals k draws of 64 in a row.
    assert torch.equal(small, large)
    assert (small.max(1).values < 7).any()  # the draws really differ


def test_filter_insertion_is_scored_with_one_draw_per_forward(test_set: tuple) -> None:
    """A 'filters' random layer draws one kernel multiplier per forward: copies cannot be stacked."""
    x, _ = test_set
    model = small_cnn(RandomWeightConfig(insertion="filters")).eval()
    assert not grouped_draws_supported(model) and grouped_draws_supported(trained_small_cnn(None))
    batches: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, inp: batches.append(inp[0].shape[0]))
    try:
        counts = vote_counts(model, x, 3, max_rows=10 * len(x))
    finally:
        handle.remove()
    assert batches == [len(x)] * 3
    assert torch.equal(counts.sum(1), torch.full((len(x),), 3))


# --------------------------------------------------------------------------- protocols


def test_rows_have_the_contract_fields_and_scoring_is_consistent(
    random_model: torch.nn.Module, test_set: tuple
) -> None:
    x, y = test_set
    hooks = Recorder()
    result = evaluate(
        random_model, x, y, _cfg(protocol="both", repeats=2), num_classes=NUM_CLASSES, hooks=hooks
    )
    rows = result["rows"]
    assert [(r["attack"], r["protocol"]) for r in rows] == [
        (c, p) for c in ("clean", "pgd3", "fgsm") for p in ("paper", "adaptive")
    ]
    assert hooks.rows == rows
    for r in rows:
        assert set(r) == ROW_KEYS and SCORING_KEYS <= set(r["scoring"])
        s = r["scoring"]
        assert r["n"] == len(x) and s["draws"] == 5 and len(s["seeds"]) == 2
        assert 0.0 <= s["worst_case"] <= s["mean"] <= 1.0
        assert s["worst_case"] <= s["majority"] + 1e-12
        assert s["ci_low"] <= s["mean"] <= s["ci_high"]
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]
        assert len(r["repeats"]) == 2 and r["std"] is not None and r["seconds"] > 0
        assert r["accuracy"] == pytest.approx(sum(r["repeats"]) / 2)
        if r["protocol"] == "adaptive":
            assert r["accuracy"] == pytest.approx(s["mean"])
    assert rows[2]["params"] == AttackSpec(name="pgd", steps=3).resolved()
    # Progress: one event per batch and repeat, numbered 1..batches within a row.
    batches = 2 * math.ceil(len(x) / 16)
    assert len(hooks.progress) == batches * len(rows)
    first = hooks.progress[:batches]
    assert [p.batch for p in first] == list(range(1, batches + 1))
    assert {p.batches for p in first} == {batches} and first[0].phase == "evaluate"
    assert result["meta"]["protocols"] == ["paper", "adaptive"] and result["meta"]["score_draws"] == 5


def test_paper_protocol_attacks_draw_a_and_predicts_with_draw_b(
    random_model: torch.nn.Module, test_set: tuple
) -> None:
    x, y = test_set
    layer = random_layers(random_model)[0]
    log: list[tuple[str, int, torch.Tensor | None]] = []
    handle = layer.register_forward_pre_hook(
        lambda m, inp: log.append((m.mode, inp[0].shape[0], None if m.delta is None else m.delta.clone()))
    )
    try:
        evaluate(
            random_model,
            x[:16],
            y[:16],
            _cfg(attacks=[AttackSpec(name="pgd", steps=3)], protocol="paper"),
            num_classes=NUM_CLASSES,
        )
    finally:
        handle.remove()
    fixed = [d for mode, _, d in log if mode == "fixed"]
    assert len(fixed) == 4  # 3 attack steps with draw A, then one prediction with draw B
    draw_a, draw_b = fixed[0], fixed[-1]
    assert all(torch.equal(d, draw_a) for d in fixed[:3])
    assert not torch.equal(draw_a, draw_b)
    # Then the K = 5 scoring draws: fresh draws, batched as stacked copies, at most 4 * 16 rows.
    assert [(mode, b) for mode, b, _ in log[4:]] == [("per_forward", 16 * 4), ("per_forward", 16)]


def test_adaptive_protocol_gives_the_attacker_a_fresh_draw_on_every_forward(
    random_model: torch.nn.Module, test_set: tuple
) -> None:
    x, y = test_set
    layer = random_layers(random_model)[0]
    modes: list[str] = []
    handle = layer.register_forward_pre_hook(lambda m, inp: modes.append(m.mode))
    try:
        evaluate(
            random_model,
            x[:16],
            y[:16],
            _cfg(attacks=[AttackSpec(name="pgd", steps=3)], protocol="adaptive"),
            num_classes=NUM_CLASSES,
        )
    finally:
        handle.remove()
    assert modes == ["per_forward"] * 5  # 3 attack steps, 2 scoring forwards


def test_evaluation_is_reproducible_and_restores_the_model(
    random_model: torch.nn.Module, test_set: tuple
) -> None:
    x, y = test_set
    random_model.train()
    flags = [p.requires_grad for p in random_model.parameters()]
    cfg = _cfg(protocol="both", attacks=[AttackSpec(name="pgd", steps=3)])
    a = evaluate(random_model, x, y, cfg, num_classes=NUM_CLASSES)["rows"]
    b = evaluate(random_model, x, y, cfg, num_classes=NUM_CLASSES)["rows"]
    c = evaluate(
        random_model, x, y, _cfg(protocol="both", attacks=cfg.attacks, seed=1), num_classes=NUM_CLASSES
    )["rows"]
    key = [(r["accuracy"], r["scoring"]["mean"], r["scoring"]["worst_case"]) for r in a]
    assert key == [(r["accuracy"], r["scoring"]["mean"], r["scoring"]["worst_case"]) for r in b]
    assert [r["scoring"]["seeds"] for r in a] != [r["scoring"]["seeds"] for r in c]
    assert random_model.training
    assert [p.requires_grad for p in random_model.parameters()] == flags
    assert all(p.grad is None for p in random_model.parameters())  # no weight gradients were computed
    assert {layer.mode for layer in random_layers(random_model)} == {"fixed"}
    random_model.eval()


def test_deterministic_model_gives_identical_protocols(test_set: tuple) -> None:
    model = trained_small_cnn(None)
    x, y = test_set
    rows = evaluate(model, x, y, _cfg(protocol="both", score_draws=3), num_classes=NUM_CLASSES)["rows"]
    by = {(r["attack"], r["protocol"]): r for r in rows}
    for col in ("clean", "pgd3", "fgsm"):
        p, a = by[(col, "paper")], by[(col, "adaptive")]
        assert p["accuracy"] == a["accuracy"] == a["scoring"]["worst_case"] == a["scoring"]["majority"]


def test_done_columns_are_skipped(random_model: torch.nn.Module, test_set: tuple) -> None:
    x, y = test_set
    hooks = Recorder()
    result = evaluate(
        random_model,
        x,
        y,
        _cfg(protocol="both"),
        num_classes=NUM_CLASSES,
        hooks=hooks,
        done_columns={("pgd3", "paper"), ("clean", "adaptive")},
    )
    done = [(r["attack"], r["protocol"]) for r in result["rows"]]
    assert done == [("clean", "paper"), ("pgd3", "adaptive"), ("fgsm", "paper"), ("fgsm", "adaptive")]
    assert [(r["attack"], r["protocol"]) for r in hooks.rows] == done


def test_cancellation_between_batches_keeps_finished_rows(
    random_model: torch.nn.Module, test_set: tuple
) -> None:
    x, y = test_set
    hooks = Recorder(cancel_after=4)  # 3 batches per row: cancels in the second row
    with pytest.raises(Cancelled):
        evaluate(random_model, x, y, _cfg(protocol="paper"), num_classes=NUM_CLASSES, hooks=hooks)
    assert [r["attack"] for r in hooks.rows] == ["clean"]
    assert len(hooks.progress) == 4
    assert all(p.requires_grad for p in random_model.parameters())  # restored on the way out


def test_an_attack_can_override_the_protocol(random_model: torch.nn.Module, test_set: tuple) -> None:
    x, y = test_set
    cfg = _cfg(
        attacks=[
            AttackSpec(name="clean"),
            AttackSpec(name="pgd", steps=3),
            AttackSpec(name="eotpgd", steps=3, eot_draws=2, protocol="adaptive"),
        ]
    )
    result = evaluate(random_model, x, y, cfg, num_classes=NUM_CLASSES)
    assert [(r["attack"], r["protocol"]) for r in result["rows"]] == [
        ("clean", "paper"),
        ("pgd3", "paper"),
        ("eotpgd3", "adaptive"),
    ]
    assert result["meta"]["protocols"] == ["paper", "adaptive"]
