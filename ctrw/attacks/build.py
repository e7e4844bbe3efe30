"""Attack factory: ``build_attack(spec, model)`` returns ``attack(x, y) -> x_adv``.

Every attack takes clean images in [0, 1] (B, C, H, W) with labels (B,) and returns detached
adversarial images in [0, 1]. Parameters come from ``AttackSpec.resolved()`` (the paper's
defaults, see ``ctrw.config``).

Paper attacks (Table 1): clean, pgd, fgsm, mifgsm, deepfool, cw, autoattack.
Adaptive attacks: eotpgd, autoattack_rand, transfer_mean.

Which draws of the random layers an attack sees is NOT decided here but by the sampling mode
the caller sets (``ctrw.nn.random_weight.sampling``): the evaluation protocols put the layers in
'fixed' mode (paper: one draw A for the whole attack) or 'per_forward' mode (adaptive: a fresh
draw on every forward). Only ``transfer_mean`` switches to 'mean' itself (its surrogate is the
model with delta = 0).

Implementation notes:

- ``pgd``, ``eotpgd`` and ``transfer_mean`` use the lean ``ctrw.attacks.pgd.pgd_linf`` (input gradients
  only; EOT batched as stacked copies with one draw each, at most ``eot_max_rows`` rows per
  forward). Its update is torchattacks' ``PGD`` / ``EOTPGD`` update (sign of the summed
  gradient, projection, clamp), which the tests check; ``reference=True`` builds torchattacks'
  own classes instead, for comparisons. A model whose random layer cannot give stacked copies
  their own draws ('filters' insertion) gets torchattacks' sequential ``EOTPGD``.
- ``deepfool`` uses the batched ``ctrw.attacks.deepfool.deepfool``, which reproduces torchattacks'
  ``DeepFool`` (``reference=True`` gives torchattacks' per-image version).
- ``autoattack`` is AutoAttack 'standard' assembled from torchattacks' APGD-CE, APGD-T, FAB-T and
  Square like the reference implementation: APGD/APGD-T/FAB-T run ``steps`` iterations (the
  reference's 100; torchattacks' ``AutoAttack`` wrapper hard-codes 10) and the targeted attacks
  use the top min(9, K-1) target classes (torchattacks' wrapper would run K-1 = 99 on CIFAR-100).
  Square uses ``queries`` queries (reference: 5000), every attack one restart.
- ``autoattack_rand`` is the reference's version 'rand': APGD-CE and APGD-DLR with ``eot_draws``
  (20) EOT iterations and ``steps`` (100) iterations, 1 restart. torchattacks loops over the EOT
  draws sequentially; it is not our code, so it is not batched.
- Like the reference AutoAttack, torchattacks' ``MultiAttack`` (and ``CW``) returns the CLEAN
  image for an example it did not fool at attack time.
- Attacks that use gradient magnitudes or margins (CW, DeepFool, APGD, FAB, Square) always run
  in fp32 (autocast disabled) so reduced precision cannot inflate robustness. Sign-based attacks
  (pgd, fgsm, mifgsm, eotpgd, transfer_mean) may run under ``autocast_dtype`` (bf16 on CUDA);
  by default they run in fp32 as well.
- Every call puts the model in eval mode (as torchattacks does) and restores its mode, and
  runs with its own forked global RNG seeded from ``seed`` and the call index, so results are
  reproducible and the caller's RNG stream is untouched (torchattacks' APGD/FAB reseed the
  global RNG on every call).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torchattacks
from torch import nn

from ctrw.attacks.deepfool import deepfool
from ctrw.attacks.pgd import pgd_linf
from ctrw.catalog import ATTACKS
from ctrw.config import AttackSpec
from ctrw.evaluation.scoring import grouped_draws_supported
from ctrw.nn.random_weight import sampling

__all__ = [
    "ATTACK_BUILDERS",
    "AttackFn",
    "MAGNITUDE_ATTACKS",
    "SIGN_ATTACKS",
    "build_attack",
    "derive_seed",
]

AttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Attacks whose steps use only the sign of the gradient: exact under any loss scale, safe in bf16.
SIGN_ATTACKS = frozenset(n for n, a in ATTACKS.items() if a.kind == "sign")
# Attacks that use gradient magnitudes, margins or losses directly: always fp32.
MAGNITUDE_ATTACKS = frozenset(n for n, a in ATTACKS.items() if a.kind == "magnitude")

# Batched EOT stacks copies of the batch; at most this many rows go through one forward with
# gradients (build_attack's eot_max_rows overrides it), the chunks' gradients are summed.
EOT_MAX_ROWS = 1024
# The reference AutoAttack attacks the top 9 other classes (n_target_classes = 9).
AUTOATTACK_TARGETS = 9


def derive_seed(*parts: object) -> int:
    """A reproducible 53-bit seed from any parts (sha256 of their repr).

    Used to give every (attack, repeat, batch, stage) its own independent, recorded stream.
    53 bits keep the recorded seeds exact in JSON consumers that use doubles.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 11


@dataclass(frozen=True)
class _Ctx:
    """What a builder needs besides the model and the resolved parameters."""

    num_classes: int
    seed: int
    autocast_dtype: torch.dtype | None
    reference: bool
    eot_max_rows: int


_Builder = Callable[[nn.Module, dict[str, Any], _Ctx], AttackFn]


# --------------------------------------------------------------------------- builders


def _clean(model: nn.Module, p: dict[str, Any], ctx: _Ctx) -> AttackFn:
    return lambda x, y: x.detach().clone()


def _pgd_family(model: nn.Module, p: dict[str, Any], ctx: _Ctx, *, eot_draws: int) -> AttackFn:
    """PGD with EOT over ``eot_draws`` (1 = plain PGD), lean and batched."""

    def attack(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pgd_linf(
            model,
            x,
            y,
            eps=p["eps"],
            step_size=p["step_size"],
            steps=p["steps"],
            random_start=p["random_start"],
            eot_draws=eot_draws,
            autocast_dtype=ctx.autocast_dtype,
            eot_chunk=max(1, ctx.eot_max_rows // x.shape[0]),
        )

    return attack


def _pgd(model: nn.Module, p: dict[str, Any], ctx: _Ctx) -> AttackFn:
    if ctx.reference:
        return torchattacks.PGD(
            model, eps=p["eps"], alpha=p["step_size"], steps=p["steps"], random_start=p["random_start"]
        )
    return _pgd_family(model, p, ctx, eot_draws=1)


def _eotpgd(model: nn.Module, p: dict[str, Any], ctx: _Ctx) -> AttackFn:
    # Batched EOT needs one draw per stacked copy; otherwise loop over the draws (torchattacks).
    if ctx.reference or not grouped_draws_supported(model):
        return torchattacks.EOTPGD(
            model,
            eps=p["eps"],
            alpha=p["step_size"],
            steps=p["steps"],
            eot_iter=p["eot_draws"],
            random_start=p["random_start"],
        )
    return _pgd_family(model, p, ctx, eot_draws=p["eot_draws"])


def _transfer_mean(model: nn.Module, p: dict[str, Any], ctx: _Ctx) -> AttackFn:
    """PGD on the mean-weight surrogate (delta = 0, W = mu); judged on the random model."""
    inner = _pgd(model, p, ctx)

    def attack(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with sampling(model, "mean"):
            return inner(x, y)

    return attack


def _fgsm(model: nn.Module, p: dict[str, Any], ctx: _Ctx) -> AttackFn:
    return torchattacks.FGSM(model, eps=p["eps"])


def _mifgsm(model: nn.Module, p: dict[str, Any], ctx: _Ctx) -> AttackFn:
    return torchattacks.MIFGSM(model, eps=p["eps"], alpha=p["step_size"], steps=p["steps"], decay=p["decay"])


def _deepfool(model: nn.Module, p: dict[str, Any], ctx: _Ctx) -> AttackFn:
    if ctx.reference:
        return torchattacks.DeepFool(model, steps=p["steps"], overshoot=p["overshoot"])
    return lambda x, y: deepfool(model, x, y, steps=p["steps"], overshoot=p["overshoot"])[0]


def _cw(model: nn.Module, p: dict[str, Any], ctx: _Ctx) -> AttackFn:
    return torchattacks.CW(model, c=p["c"], kappa=p["kappa"], steps=p["steps"], lr=p["lr"])


def _autoattack(model: nn.Module, p: dict[str, Any], ctx: _Ctx) -> AttackFn:
    """AutoAttack 'standard' as in the reference: APGD-CE, APGD-T, FAB-T, Square."""
    if ctx.num_classes < 4:
        raise ValueError(f"autoattack needs at least 4 classes (APGD-T's DLR loss), got {ctx.num_classes}")
    # torchattacks runs n_classes - 1 target classes: pass the reference's 9 + 1.
    n_cls = min(ctx.num_classes, AUTOATTACK_TARGETS + 1)
    common = {"eps": p["eps"], "norm": p["norm"], "seed": ctx.seed, "n_restarts": 1}
    return torchattacks.MultiAttack(
        [
            torchattacks.APGD(model, steps=p["steps"], loss="ce", **common),
            torchattacks.APGDT(model, steps=p["steps"], n_classes=n_cls, **common),
            torchattacks.FAB(model, steps=p["steps"], multi_targeted=True, n_classes=n_cls, **common),
            torchattacks.Square(model, n_queries=p["queries"], **common),
        ]
    )


def _autoattack_rand(model: nn.Module, p: dict[str, Any], ctx: _Ctx) -> AttackFn:
    """AutoAttack 'rand' as in the reference: APGD-CE and APGD-DLR with EOT."""
    if ctx.num_classes < 3:
        raise ValueError(f"autoattack_rand needs at least 3 classes (DLR loss), got {ctx.num_classes}")
    common = {
        "eps": p["eps"],
        "norm": p["norm"],
        "seed": ctx.seed,
        "n_restarts": 1,
        "steps": p["steps"],
        "eot_iter": p["eot_draws"],
    }
    return torchattacks.MultiAttack(
        [torchattacks.APGD(model, loss="ce", **common), torchattacks.APGD(model, loss="dlr", **common)]
    )


ATTACK_BUILDERS: dict[str, _Builder] = {
    "clean": _clean,
    "pgd": _pgd,
    "fgsm": _fgsm,
    "mifgsm": _mifgsm,
    "deepfool": _deepfool,
    "cw": _cw,
    "autoattack": _autoattack,
    "eotpgd": _eotpgd,
    "autoattack_rand": _autoattack_rand,
    "transfer_mean": _transfer_mean,
}


# --------------------------------------------------------------------------- wrapper


class _Attack:
    """Runs an attack in eval mode, with a forked seeded RNG and the right precision."""

    def __init__(
        self, fn: AttackFn, model: nn.Module, *, seed: int, amp_dtype: torch.dtype | None, wrap_amp: bool
    ):
        self.fn = fn
        self.model = model
        self.seed = seed
        self.amp_dtype = amp_dtype
        self.wrap_amp = wrap_amp  # torchattacks sign attacks: enable autocast around them
        self.calls = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # (B, C, H, W), (B,)
        devices = (
            [x.device.index if x.device.index is not None else torch.cuda.current_device()]
            if x.is_cuda
            else []
        )
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(derive_seed(self.seed, self.calls))
                self.calls += 1
                with torch.autocast(x.device.type, enabled=False):
                    amp = (
                        torch.autocast(x.device.type, dtype=self.amp_dtype)
                        if self.wrap_amp and self.amp_dtype is not None
                        else nullcontext()
                    )
                    with amp:
                        x_adv = self.fn(x, y)
        finally:
            self.model.train(was_training)
        return x_adv.detach().to(x.dtype)


def build_attack(
    spec: AttackSpec,
    model: nn.Module,
    *,
    num_classes: int,
    seed: int = 0,
    autocast_dtype: torch.dtype | None = None,
    reference: bool = False,
    eot_max_rows: int = EOT_MAX_ROWS,
) -> AttackFn:
    """Build ``attack(x, y) -> x_adv`` for one attack spec.

    Args:
        spec: the attack and its parameters (unset ones take the paper's defaults).
        model: classifier on images in [0, 1]; its random layers' sampling mode decides which
            draws the attacker sees.
        num_classes: number of classes (AutoAttack's target count).
        seed: makes the attack reproducible (random starts, APGD/FAB/Square seeds).
        autocast_dtype: run sign-based attacks under autocast with this dtype (e.g.
            ``torch.bfloat16`` on CUDA); magnitude-based attacks ignore it and stay fp32.
        reference: use torchattacks' implementations where we have our own (pgd, eotpgd,
            transfer_mean, deepfool), for comparisons and benchmarks.
        eot_max_rows: memory bound of batched EOT: at most this many rows (stacked copies x
            batch, at least one copy) per forward.

    Returns:
        A callable mapping (B, C, H, W) images in [0, 1] and (B,) labels to detached
        adversarial images in [0, 1].

    Raises:
        ValueError: unknown attack, or too few classes for AutoAttack.
    """
    if spec.name not in ATTACK_BUILDERS:
        raise ValueError(f"unknown attack '{spec.name}'; choose one of {sorted(ATTACK_BUILDERS)}")
    ctx = _Ctx(
        num_classes=num_classes,
        seed=seed,
        autocast_dtype=autocast_dtype,
        reference=reference,
        eot_max_rows=eot_max_rows,
    )
    fn = ATTACK_BUILDERS[spec.name](model, spec.resolved(), ctx)
    sign = spec.name in SIGN_ATTACKS
    # pgd_linf applies autocast itself (it gets autocast_dtype); torchattacks' attacks need the context.
    wraps = sign and (reference or spec.name in ("fgsm", "mifgsm"))
    return _Attack(fn, model, seed=seed, amp_dtype=autocast_dtype if sign else None, wrap_amp=wraps)
