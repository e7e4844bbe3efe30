"""The batched DeepFool gives torchattacks' DeepFool results, on a deterministic and a random model."""

import pytest
import torch
import torchattacks

from ctrw.attacks.deepfool import deepfool
from ctrw.config import AttackSpec, RandomWeightConfig
from ctrw.evaluation.evaluate import evaluation_mode
from ctrw.nn.random_weight import resample
from tests.support.models import NUM_CLASSES, prototype_data, trained_small_cnn


@pytest.fixture(scope="module", params=["deterministic", "random_fixed_draw"])
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    rw = None if request.param == "deterministic" else RandomWeightConfig(sigma_init=0.3)
    m = trained_small_cnn(rw)
    resample(m)  # 'fixed' mode: one draw shared by every forward, as in the paper protocol
    return m


def test_batched_deepfool_matches_torchattacks(model: torch.nn.Module) -> None:
    x, y = prototype_data(48, seed=3)
    with evaluation_mode(model):
        clean_correct = model(x).argmax(1) == y
        ours, our_labels = deepfool(model, x, y, steps=50, overshoot=0.02)
        ref, ref_labels = torchattacks.DeepFool(model, steps=50, overshoot=0.02).forward_return_target_labels(
            x, y
        )
        ours_logits, ref_logits = model(ours), model(ref)
    ours_pred, ref_pred = ours_logits.argmax(1), ref_logits.argmax(1)
    assert (
        clean_correct.float().mean() > 0.8
    )  # the comparison is about real attacks, not misclassified inputs
    assert (ours - ref).abs().max() < 1e-4
    # DeepFool stops on the decision boundary (overshoot 0.02); where clamping to [0, 1] leaves an
    # image exactly on it, float rounding of batched vs single-image convolutions decides the class.
    # Predictions must agree everywhere else.
    top2 = ours_logits.topk(2, dim=1).values
    knife_edge = (top2[:, 0] - top2[:, 1]) < 1e-4
    differ = ours_pred != ref_pred
    assert not (differ & ~knife_edge).any()
    assert differ.sum() <= 1
    assert torch.equal(our_labels[~knife_edge], ref_labels[~knife_edge])
    dist_ours = (ours - x).flatten(1).norm(dim=1)
    dist_ref = (ref - x).flatten(1).norm(dim=1)
    assert torch.allclose(dist_ours, dist_ref, atol=1e-4)
    assert (ours_pred != y).float().mean() > 0.9  # an unbounded attack on an undefended model


def test_deepfool_output_is_valid_and_needs_no_weight_gradients(model: torch.nn.Module) -> None:
    x, y = prototype_data(16, seed=4)
    with evaluation_mode(model):
        adv, labels = deepfool(model, x, y, steps=5)
    assert adv.shape == x.shape and labels.shape == y.shape
    assert torch.isfinite(adv).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert all(p.grad is None for p in model.parameters())


def test_build_attack_offers_both_implementations(model: torch.nn.Module) -> None:
    from ctrw.attacks.build import build_attack

    x, y = prototype_data(16, seed=5)
    spec = AttackSpec(name="deepfool", steps=20)
    with evaluation_mode(model):
        ours = build_attack(spec, model, num_classes=NUM_CLASSES)(x, y)
        ref = build_attack(spec, model, num_classes=NUM_CLASSES, reference=True)(x, y)
    assert (ours - ref).abs().max() < 1e-4
