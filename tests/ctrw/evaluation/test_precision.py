"""bf16 for the sign-based attacks (the CUDA default) does not move their accuracy beyond the CI.

Run on the CPU's bf16 autocast, which rounds like CUDA's (8-bit mantissa); the GPU numbers are
measured separately (docs/evaluation.md)."""

import pytest
import torch

from ctrw.catalog import ATTACKS
from ctrw.config import EvalConfig
from ctrw.evaluation.entries import tolerance
from ctrw.evaluation.evaluate import evaluate
from tests.support.models import NUM_CLASSES, digits_small_cnn

SIGN = [
    {"name": "pgd", "eps": 0.2, "step_size": 0.05, "steps": 10},
    {"name": "fgsm", "eps": 0.2},
    {"name": "mifgsm", "eps": 0.2, "step_size": 0.05, "steps": 5},
    {"name": "eotpgd", "eps": 0.2, "step_size": 0.05, "steps": 5, "eot_draws": 3, "protocol": "adaptive"},
]


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    return digits_small_cnn()


def test_the_attacks_given_bf16_are_the_catalogs_sign_attacks() -> None:
    assert {a["name"] for a in SIGN} <= {n for n, a in ATTACKS.items() if a.kind == "sign"}
    assert {n for n, a in ATTACKS.items() if a.kind == "magnitude"} == {
        "deepfool",
        "cw",
        "autoattack",
        "autoattack_rand",
    }


def test_bf16_sign_attacks_stay_within_the_ci_of_fp32_on_digits(digits: tuple) -> None:
    model, x, y = digits
    cfg = EvalConfig.model_validate(
        {"attacks": SIGN, "protocol": "paper", "batch_size": 30, "score_draws": 2, "diagnostics": False}
    )
    dtypes: set[torch.dtype] = set()
    handle = model.register_forward_hook(lambda m, inp, out: dtypes.add(out.dtype))
    try:
        fp32 = evaluate(model, x, y, cfg, num_classes=NUM_CLASSES)
        assert dtypes == {torch.float32}
        bf16 = evaluate(model, x, y, cfg, num_classes=NUM_CLASSES, autocast_dtype=torch.bfloat16)
    finally:
        handle.remove()
    assert torch.bfloat16 in dtypes  # the attacks' forwards ran in bf16 (the judging ones in fp32)
    assert bf16["meta"]["autocast"] == "bfloat16"
    for a, b in zip(fp32["rows"], bf16["rows"], strict=True):
        assert a["attack"] == b["attack"] and a["n"] == b["n"] == 360
        assert abs(a["accuracy"] - b["accuracy"]) <= tolerance(a, b), (
            a["attack"],
            a["accuracy"],
            b["accuracy"],
        )
        assert abs(a["scoring"]["mean"] - b["scoring"]["mean"]) <= tolerance(a, b)
