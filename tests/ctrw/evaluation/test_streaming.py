"""Evaluation at scale: uint8 images streamed per batch, the batch size by device, cuDNN autotuning
off for the attacks that shrink their batches, and overall progress with an ETA."""

import gc

import pytest
import torch

from ctrw.config import AttackSpec, EvalConfig, RandomWeightConfig
from ctrw.evaluation.evaluate import evaluate
from ctrw.hooks import Hooks, Progress
from tests.support.models import NUM_CLASSES, prototype_data, trained_small_cnn


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return trained_small_cnn(RandomWeightConfig(sigma_init=0.3))


def _uint8(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = prototype_data(n, seed=21)
    return (x * 255).round().to(torch.uint8), y


def _cfg(**kw: object) -> EvalConfig:
    base: dict[str, object] = {
        "attacks": [AttackSpec(name="clean"), AttackSpec(name="fgsm"), AttackSpec(name="pgd", steps=2)],
        "batch_size": 16,
        "score_draws": 3,
        "diagnostics": False,
    }
    return EvalConfig(**{**base, **kw})


def _without_timing(out: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in out["rows"]]


def test_uint8_images_give_the_rows_of_their_float_equivalent(model: torch.nn.Module) -> None:
    x8, y = _uint8(48)
    cfg = _cfg(protocol="both", diagnostics=True)
    streamed = evaluate(model, x8, y, cfg, num_classes=NUM_CLASSES, sweep_steps=(2,), diagnostic_examples=32)
    floats = evaluate(
        model, x8.float() / 255, y, cfg, num_classes=NUM_CLASSES, sweep_steps=(2,), diagnostic_examples=32
    )
    assert _without_timing(streamed) == _without_timing(floats)
    assert streamed["diagnostics"] == floats["diagnostics"]


def _peak_float_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """The most bytes of float tensors alive at any forward of the evaluation (the model's own
    parameters and buffers left out), counted from the garbage collector's view of all objects."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    peak = 0

    def count(module: torch.nn.Module, inputs: tuple) -> None:
        nonlocal peak
        seen: set[int] = set()
        total = 0
        for obj in gc.get_objects():
            if type(obj) is torch.Tensor and obj.is_floating_point():
                storage = obj.untyped_storage()
                ptr = storage.data_ptr()
                if ptr not in own and ptr not in seen:
                    seen.add(ptr)
                    total += storage.nbytes()
        peak = max(peak, total)

    handle = model.register_forward_pre_hook(count)
    try:
        cfg = _cfg(attacks=[AttackSpec(name="fgsm")], score_draws=1, batch_size=32)
        evaluate(model, x, y, cfg, num_classes=NUM_CLASSES)
    finally:
        handle.remove()
    return peak


def test_memory_of_the_float_images_is_bounded_by_the_batch_whatever_n_examples(
    model: torch.nn.Module,
) -> None:
    small, large = _uint8(64), _uint8(320)
    small_peak = _peak_float_bytes(model, *small)
    large_peak = _peak_float_bytes(model, *large)
    # A batch of 32 images is 8 KiB as float32; the 256 more images would add 64 KiB. What does
    # grow is the per-example results (a few bytes each).
    assert small_peak >= 32 * 64 * 4
    assert large_peak - small_peak < 1024
    # The measure sees held images: the same 512 images passed as float are counted whole.
    x8, y = large
    assert _peak_float_bytes(model, x8.float() / 255, y) >= large_peak + x8.numel() * 4


def test_the_batch_size_is_resolved_by_device_and_explicit_ones_are_kept(model: torch.nn.Module) -> None:
    auto = EvalConfig()
    assert auto.batch_size == "auto"
    assert auto.resolved_batch_size("cuda", 32) == 1024
    assert auto.resolved_batch_size("cuda", 224) == 256
    assert auto.resolved_batch_size("cpu", 32) == 256
    assert EvalConfig(batch_size=64).resolved_batch_size("cuda", 32) == 64
    x8, y = _uint8(40)
    out = evaluate(model, x8, y, _cfg(batch_size="auto"), num_classes=NUM_CLASSES)
    assert out["meta"]["batch_size"] == 256 and out["meta"]["autocast"] == "fp32"
    assert EvalConfig.model_validate({"batch_size": 30}).batch_size == 30
    with pytest.raises(ValueError):
        EvalConfig.model_validate({"batch_size": "big"})


def test_cudnn_autotuning_is_off_for_attacks_that_shrink_their_batches(model: torch.nn.Module) -> None:
    seen: dict[str, set[bool]] = {}
    current = {"attack": ""}

    class Track(Hooks):
        def on_progress(self, progress: Progress) -> None:
            current["attack"] = progress.detail

    handle = model.register_forward_pre_hook(
        lambda m, inp: seen.setdefault(current["attack"], set()).add(torch.backends.cudnn.benchmark)
    )
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # a flag only on a CPU, as prepare_for_device sets it on CUDA
    try:
        x8, y = _uint8(32)
        cfg = _cfg(attacks=[AttackSpec(name="pgd", steps=2), AttackSpec(name="deepfool", steps=3)])
        evaluate(model, x8, y, cfg, num_classes=NUM_CLASSES, hooks=Track())
        assert torch.backends.cudnn.benchmark  # restored
    finally:
        handle.remove()
        torch.backends.cudnn.benchmark = before
    # Forwards are filed under the previous progress detail: pgd's first batch under "", the
    # rest under "pgd2 (paper)"; deepfool's second batch under "deepfool (paper)".
    assert seen["pgd2 (paper)"] >= {True}
    assert seen["deepfool (paper)"] == {False}


class Progressed(Hooks):
    def __init__(self) -> None:
        self.events: list[Progress] = []

    def on_progress(self, progress: Progress) -> None:
        self.events.append(progress)


def test_progress_covers_every_attack_and_protocol_with_an_eta(model: torch.nn.Module) -> None:
    x8, y = _uint8(48)
    hooks = Progressed()
    cfg = _cfg(protocol="both", repeats=2, diagnostics=True)
    evaluate(
        model, x8, y, cfg, num_classes=NUM_CLASSES, hooks=hooks, sweep_steps=(2, 4), diagnostic_examples=32
    )
    events = hooks.events
    assert {e.detail for e in events} >= {"clean (paper)", "fgsm (adaptive)", "pgd2 (paper)"}
    assert any(e.detail.startswith("diagnostics") for e in events)
    fractions = [e.fraction for e in events]
    assert all(isinstance(f, float) for f in fractions)
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] < 1
    # Weighted by cost: the planned work is met (the last batches bring it close to 1).
    assert fractions[-1] > 0.9
    assert all(isinstance(e.eta_seconds, float) and e.eta_seconds >= 0 for e in events)
    # Per-attack counters stay as they were: batch within the row, of the row's batches.
    first = [e for e in events if e.detail == "pgd2 (paper)"]
    assert [e.batch for e in first] == list(range(1, 7)) and {e.batches for e in first} == {6}


def test_cost_weighting_moves_progress_by_each_attacks_cost(model: torch.nn.Module) -> None:
    """pgd with 8 steps costs 2 * 8 + 1 + K passes per image, clean 1 + K: pgd's batches move
    the fraction (17 + 3) / (1 + 3) = 5 times as far as clean's."""
    x8, y = _uint8(32)
    hooks = Progressed()
    cfg = _cfg(attacks=[AttackSpec(name="clean"), AttackSpec(name="pgd", steps=8)])
    evaluate(model, x8, y, cfg, num_classes=NUM_CLASSES, hooks=hooks)
    f = [0.0] + [e.fraction for e in hooks.events]
    steps = [b - a for a, b in zip(f, f[1:], strict=False)]
    assert steps[2] == pytest.approx(5 * steps[0])


class _Decoded(torch.utils.data.Dataset):
    """A map-style data set that 'decodes' (as ToTensor does: uint8 / 255) and counts the images it decodes."""

    def __init__(self, x8: torch.Tensor, y: torch.Tensor) -> None:
        self.x8, self.y, self.decoded = x8, y, 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.decoded += 1
        return self.x8[i].float().div(255), int(self.y[i])


def test_streamed_images_are_decoded_per_batch_and_give_the_same_rows(model: torch.nn.Module) -> None:
    from ctrw.data import StreamedImages

    x8, y = _uint8(48)
    data = _Decoded(x8, y)
    images = StreamedImages(data)
    assert images.shape == (48, 1, 8, 8) and images.dtype == torch.uint8
    assert torch.equal(images[16:32].to("cpu"), x8[16:32]) and torch.equal(
        images[:40][30:].to("cpu"), x8[30:40]
    )
    cfg = _cfg(n_examples=40, batch_size=8, diagnostics=True)
    data.decoded = 0
    streamed = evaluate(
        model, images, y, cfg, num_classes=NUM_CLASSES, sweep_steps=(2,), diagnostic_examples=16
    )
    held = evaluate(model, x8, y, cfg, num_classes=NUM_CLASSES, sweep_steps=(2,), diagnostic_examples=16)
    assert _without_timing(streamed) == _without_timing(held)
    assert streamed["diagnostics"] == held["diagnostics"]
    # Each of the 3 attack rows decodes the 40 images once, batch by batch (plus the shape probes).
    assert data.decoded >= 3 * 40
    with pytest.raises(TypeError):
        images[::2]
