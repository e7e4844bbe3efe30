"""``dwq``: what the generic randomness tests (test_defenses.py) cannot see: the quantizer, which
layers are quantized, the switchable BatchNorm, one draw for the whole network, and training."""

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from ctrw.config import DefenseConfig, TrainConfig
from ctrw.jobs import run_training
from ctrw.nn.defenses import apply_defense
from ctrw.nn.defenses.dwq import QuantizedLayer, SwitchableBatchNorm, fake_quantize
from ctrw.nn.models import create_model
from ctrw.nn.randomness import eot_groups, random_modules, resample, sampling, seed_random_layers
from ctrw.training import load_trained_model
from tests.support.configs import TINY_SYNTHETIC_TRAIN


def defended(cfg: DefenseConfig | None = None, model: str = "small_cnn") -> nn.Module:
    torch.manual_seed(0)
    net = create_model(model, num_classes=10, input_shape=(1, 16, 16), mean=[0.5], std=[0.25], width=0.25)
    return apply_defense("dwq", net, cfg).eval()


def test_fake_quantize_has_2_to_the_bits_levels_per_slice_and_a_straight_through_gradient():
    x = torch.randn(3, 500, requires_grad=True)
    q = fake_quantize(x, 3)
    for row, qrow in zip(x.detach(), q.detach(), strict=True):
        assert len(qrow.unique()) <= 8
        assert qrow.min() == row.min() and torch.isclose(qrow.max(), row.max())  # min-max range per slice
        assert (qrow - row).abs().max() <= (row.max() - row.min()) / 7 / 2 + 1e-6
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert torch.allclose(fake_quantize(x.detach(), 16), x.detach(), atol=1e-3)


def test_the_published_layers_stay_in_full_precision_and_every_batch_norm_switches():
    model = defended(model="resnet18")
    quantized = {n for n, m in model.named_modules() if isinstance(m, QuantizedLayer)}
    assert len(quantized) == 16  # the 3x3 convs of the residual blocks
    assert isinstance(model.stages[0].conv, nn.Conv2d) and isinstance(model.head.fc, nn.Linear)
    assert not any("shortcut" in n for n in quantized)
    assert not any(isinstance(m, nn.BatchNorm2d) and ".bns." not in n for n, m in model.named_modules())
    assert all(len(m.bns) == 13 for m in model.modules() if isinstance(m, SwitchableBatchNorm))
    assert len(random_modules(model)) == 1  # one draw for the whole network


def test_the_surrogate_is_the_highest_precision_with_its_batch_norm():
    model, x = defended(DefenseConfig(dwq={"bits": [4, 8]})), torch.rand(4, 1, 16, 16)
    bn = model.stages[1].bn
    with torch.no_grad():
        bn.bns[1].bias.fill_(0.5)  # the 8-bit BatchNorm differs from the 4-bit one
        with sampling(model, "mean"):
            surrogate = model(x)
        outs = {}
        for bits in (4, 8):
            model.dwq.fixed = bits
            outs[bits] = model(x)
    assert torch.equal(surrogate, outs[8]) and not torch.equal(surrogate, outs[4])


def test_one_precision_per_forward_and_per_stacked_copy():
    model, x = defended(), torch.rand(2, 1, 16, 16)
    seed_random_layers(model, 0)
    seen: list[tuple[int, ...]] = []
    model.stages[2].conv.register_forward_hook(lambda m, i, o: seen.append(tuple(m._draw.precisions(1))))
    model.stages[1].conv.register_forward_hook(lambda m, i, o: seen.append(tuple(m._draw.precisions(1))))
    with torch.no_grad(), sampling(model, "per_forward"):
        for _ in range(8):
            model(x)
        with eot_groups(model, 4):
            model(x.repeat(4, 1, 1, 1))
    pairs = list(zip(seen[::2], seen[1::2], strict=True))
    assert all(a == b for a, b in pairs)  # both layers of a forward see the same draw
    assert len({a for a, _ in pairs[:8]}) > 1  # forwards differ
    assert len(pairs[8][0]) == 4  # one bit-width per stacked copy


def test_the_config_checks_the_candidate_set():
    assert DefenseConfig().dwq.bits == list(range(4, 17)) and DefenseConfig().dwq.switchable_bn
    for bad in ([8], [4, 4], [1, 8], [4, 40]):
        with pytest.raises(ValidationError):
            DefenseConfig(dwq={"bits": bad})
    plain = defended(DefenseConfig(dwq={"bits": [4, 6], "switchable_bn": False}))
    assert not any(isinstance(m, SwitchableBatchNorm) for m in plain.modules())
    with torch.no_grad():
        resample(plain)
        assert plain.dwq.fixed in (4, 6) and torch.isfinite(plain(torch.rand(2, 1, 16, 16))).all()


def test_a_dwq_network_trains_and_reloads(tmp_path):
    cfg = TrainConfig.model_validate(
        {**TINY_SYNTHETIC_TRAIN, "variant": "dwq", "defense": {"dwq": {"bits": [4, 8]}}}
    )
    summary = run_training(cfg, run_dir=tmp_path)
    assert summary["epochs_done"] == 1
    model, _, _ = load_trained_model(tmp_path / "last.safetensors")
    assert model.dwq.bits == (4, 8)
    bns = [m for m in model.modules() if isinstance(m, SwitchableBatchNorm)]
    # Training drew both precisions, so each BatchNorm of each precision has moved off its init.
    assert all(int(bn.num_batches_tracked) > 0 for m in bns for bn in m.bns)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad(), sampling(model, "mean"):
        assert torch.isfinite(model(x)).all()
