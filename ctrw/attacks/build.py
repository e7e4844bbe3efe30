"""Attack factory: ``build_attack(spec, model)`` returns ``attack(x, y) -> x_adv``.

Every attack takes clean images in [0, 1] (B, C, H, W) with labels (B,) and returns detached
adversarial images in [0, 1]. ``build_attack`` looks the attack's builder up in the registry
(``ctrw.attacks.builders``: one documented builder per attack, paper, norm and arguments in its
docstring), its parameters come from ``AttackSpec.resolved()`` and its properties (norm,
sign/magnitude kind, per-example subset, label) from ``ctrw.catalog.ATTACKS``.

Paper attacks (Table 1): clean, pgd, fgsm, mifgsm, deepfool, cw, autoattack.
Adaptive attacks: eotpgd, autoattack_rand, transfer_mean.

Which draws of the random layers an attack sees is NOT decided here but by the sampling mode
the caller sets (``ctrw.nn.random_weight.sampling``): the evaluation protocols put the layers in
'fixed' mode (paper: one draw A for the whole attack) or 'per_forward' mode (adaptive: a fresh
draw on every forward). Only ``transfer_mean`` switches to 'mean' itself (its surrogate is the
model with delta = 0).

What the wrapper adds to every attack:

- Precision: attacks that use gradient magnitudes or margins (CW, DeepFool, APGD, FAB, Square)
  always run in fp32 (autocast disabled) so reduced precision cannot inflate robustness.
  Sign-based attacks (pgd, fgsm, mifgsm, eotpgd, transfer_mean) may run under
  ``autocast_dtype``: the jobs pass bf16 on CUDA when the run's ``amp`` is on (the default;
  ``ctrw.jobs.run_evaluation``), fp32 elsewhere.
- Every call puts the model in eval mode (as torchattacks does) and restores its mode, and
  runs with its own forked global RNG seeded from ``seed`` and the call index, so results are
  reproducible and the caller's RNG stream is untouched (torchattacks' APGD/FAB reseed the
  global RNG on every call).
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext

import torch
from torch import nn

from ctrw.attacks.builders import ATTACK_BUILDERS, AttackFn, BuildContext, applies_autocast
from ctrw.catalog import ATTACKS
from ctrw.config import AttackSpec

__all__ = [
    "ATTACK_BUILDERS",
    "AttackFn",
    "MAGNITUDE_ATTACKS",
    "SIGN_ATTACKS",
    "build_attack",
    "derive_seed",
]

# Attacks whose steps use only the sign of the gradient: exact under any loss scale, safe in bf16.
SIGN_ATTACKS = frozenset(n for n, a in ATTACKS.items() if a.kind == "sign")
# Attacks that use gradient magnitudes, margins or losses directly: always fp32.
MAGNITUDE_ATTACKS = frozenset(n for n, a in ATTACKS.items() if a.kind == "magnitude")

# Batched EOT stacks copies of the batch; at most this many rows go through one forward with
# gradients (build_attack's eot_max_rows overrides it), the chunks' gradients are summed.
EOT_MAX_ROWS = 1024


def derive_seed(*parts: object) -> int:
    """A reproducible 53-bit seed from any parts (sha256 of their repr).

    Used to give every (attack, repeat, batch, stage) its own independent, recorded stream.
    53 bits keep the recorded seeds exact in JSON consumers that use doubles.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 11


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
    ctx = BuildContext(
        num_classes=num_classes,
        seed=seed,
        autocast_dtype=autocast_dtype,
        reference=reference,
        eot_max_rows=eot_max_rows,
    )
    fn = ATTACK_BUILDERS[spec.name](model, spec.resolved(), ctx)
    sign = spec.name in SIGN_ATTACKS
    # Our lean PGD applies autocast itself (it gets autocast_dtype); torchattacks' attacks need the context.
    wraps = sign and not applies_autocast(spec.name, reference=reference)
    return _Attack(fn, model, seed=seed, amp_dtype=autocast_dtype if sign else None, wrap_amp=wraps)
