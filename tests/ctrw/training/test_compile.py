"""torch.compile'd training computes what the eager step computes and never recompiles.

CPU tests with the aot_eager backend (inductor's guards without its code generation); the real
inductor run is marked ``slow``, the bf16 + channels_last one on CUDA ``gpu``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
import torch

from ctrw.config import TrainConfig
from ctrw.hooks import Hooks
from ctrw.training import TrainState
from tests.support.configs import TINY_SYNTHETIC_TRAIN
from tests.support.models import seeded_batch, train_config


def tiny(**over) -> TrainConfig:
    return train_config(TINY_SYNTHETIC_TRAIN, over)


@pytest.fixture
def compile_backend(monkeypatch) -> Iterator[None]:
    """torch.compile with the aot_eager backend: the guards (and so the recompiles) and the
    autograd graphs are inductor's, without its code generation (minutes on 2 CPU cores)."""
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("randomness,bn_mode", [("blackbox", "train"), ("eot", "eval")])
def test_compiled_step_matches_eager_and_never_recompiles(compile_backend, tmp_path, randomness, bn_mode):
    attack, data = {"steps": 2, "randomness": randomness, "bn_mode": bn_mode}, {"synthetic_train": 32}
    eager = TrainState.create(tiny(attack=attack, data=data))
    compiled = TrainState.create(tiny(attack=attack, data=data, compile=True))
    assert compiled.compiled is not None and eager.compiled is None
    assert list(compiled.model.state_dict()) == list(eager.model.state_dict())  # checkpoint keys
    x, y = seeded_batch(eager)
    for run in (eager, compiled):
        run.attack_gen.manual_seed(5)
    loss_e, adv_e, _ = eager.train_step(x, y)
    loss_c, adv_c, _ = compiled.train_step(x, y)
    assert float(loss_c) == pytest.approx(float(loss_e), rel=1e-4) and int(adv_c) == int(adv_e)
    compiled.train_epoch(Hooks())  # every graph of the step is compiled in its first batch
    with torch.compiler.set_stance("fail_on_recompile"):
        compiled.train_epoch(Hooks())
        compiled.train_epoch(Hooks())
    compiled.validate(Hooks())  # validation and checkpoints use the eager module
    compiled.save(tmp_path, best=False)
    assert all(p.requires_grad for p in compiled.model.parameters())  # unfrozen after the attacks


def test_later_compiled_runs_in_one_process_are_still_compiled(compile_backend, monkeypatch):
    """A worker process runs job after job. Each compiled run adds ~3 variants of the one
    CTRWNet.forward code object; past dynamo's limit of 8 it would silently fall back to eager,
    which this switch turns into an error."""
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    for batch in (4, 8, 16, 32):  # 4 runs x 3 graphs > 8
        run = TrainState.create(tiny(compile=True, optim={"batch_size": batch}, attack={"steps": 2}))
        run.train_epoch(Hooks())
        with torch.compiler.set_stance("fail_on_recompile"):
            run.train_epoch(Hooks())


@pytest.mark.slow
def test_inductor_compiles_the_step_to_the_eager_result():
    """The real backend, not the aot_eager stand-in: inductor generates C++ on the CPU (Triton on
    CUDA) for the same dynamo and autograd graphs (~30 s of compilation on 2 cores)."""
    torch._dynamo.reset()
    data = {"synthetic_train": 32}
    eager = TrainState.create(tiny(data=data))
    compiled = TrainState.create(tiny(data=data, compile=True))
    x, y = seeded_batch(eager)
    for run in (eager, compiled):
        run.attack_gen.manual_seed(5)
    loss_e, adv_e, clean_e = eager.train_step(x, y)
    loss_c, adv_c, clean_c = compiled.train_step(x, y)
    assert float(loss_c) == pytest.approx(float(loss_e), rel=1e-4)
    assert (int(adv_c), int(clean_c)) == (int(adv_e), int(clean_e))
    compiled.train_epoch(Hooks())
    with torch.compiler.set_stance("fail_on_recompile"):
        metrics = compiled.train_epoch(Hooks())
    assert 0 <= metrics["train_adv_acc"] <= 1
    torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_bf16_channels_last_training_on_gpu_never_recompiles():
    torch._dynamo.reset()
    cfg = tiny(
        device="cuda",
        amp=True,
        compile=True,
        model={"name": "resnet18", "width": 0.25},
        data={"image_size": 32},
    )
    run = TrainState.create(cfg)
    run.train_epoch(Hooks())
    with torch.compiler.set_stance("fail_on_recompile"):
        metrics = run.train_epoch(Hooks())
    assert metrics["train_loss"] == metrics["train_loss"]  # not NaN
    torch._dynamo.reset()
