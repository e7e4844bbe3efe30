"""One documented builder per attack, registered by name (``ATTACK_BUILDERS``).

A builder maps ``(model, params, ctx)`` to ``attack(x, y) -> x_adv``; ``params`` is
``AttackSpec.resolved()`` (defaults in ``ctrw.catalog.ATTACKS``, which also holds each attack's
norm, sign/magnitude kind and per-example-subset flag). ``ctrw.attacks.build.build_attack``
wraps the result (eval mode, seeded RNG, precision); a builder only assembles the attack.

Adding an attack: a row in ``ctrw.catalog.ATTACKS``, a ``@register_attack`` builder here with a
docstring in the same shape (paper, distance measure, arguments, shape), a cost formula in
``ctrw.cost``; the tests run every registered attack.

Every attack takes images in [0, 1] (B, C, H, W) with labels (B,) and returns adversarial
images in [0, 1] (B, C, H, W). Like the reference AutoAttack, torchattacks' ``MultiAttack`` (and
``CW``) returns the CLEAN image for an example it did not fool at attack time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchattacks
from torch import nn

from ctrw import catalog
from ctrw.attacks.apgd import BatchedEOTAPGD
from ctrw.attacks.deepfool import deepfool
from ctrw.attacks.pgd import pgd_linf
from ctrw.nn.random_weight import sampling
from ctrw.nn.randomness import grouped_draws_supported

__all__ = [
    "ATTACK_BUILDERS",
    "AUTOATTACK_TARGETS",
    "AttackFn",
    "BuildContext",
    "applies_autocast",
    "register_attack",
]

AttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# The reference AutoAttack attacks the top 9 other classes (n_target_classes = 9).
AUTOATTACK_TARGETS = 9


@dataclass(frozen=True)
class BuildContext:
    """What a builder needs besides the model and the resolved parameters.

    Attributes:
        num_classes: number of classes (AutoAttack's target count).
        seed: the attack's seed (APGD/FAB/Square take it as an argument).
        autocast_dtype: dtype a sign-based attack may run in; builders that set
            ``applies_autocast`` pass it on themselves.
        reference: build torchattacks' implementation where we have our own.
        eot_max_rows: at most this many rows (stacked EOT copies x batch) per forward.
    """

    num_classes: int
    seed: int
    autocast_dtype: torch.dtype | None
    reference: bool
    eot_max_rows: int


AttackBuilder = Callable[[nn.Module, dict[str, Any], BuildContext], AttackFn]


@dataclass(frozen=True)
class _Registered:
    build: AttackBuilder
    # The builder applies ctx.autocast_dtype itself (lean PGD); otherwise build_attack wraps a
    # sign-based torchattacks attack in autocast.
    applies_autocast: bool


ATTACK_BUILDERS: dict[str, AttackBuilder] = {}
_REGISTERED: dict[str, _Registered] = {}


def register_attack(name: str, *, applies_autocast: bool = False) -> Callable[[AttackBuilder], AttackBuilder]:
    """Register ``fn`` as the builder of catalog attack ``name`` (ValueError for unknown names)."""
    catalog.attack(name)

    def register(fn: AttackBuilder) -> AttackBuilder:
        ATTACK_BUILDERS[name] = fn
        _REGISTERED[name] = _Registered(fn, applies_autocast)
        return fn

    return register


def applies_autocast(name: str, *, reference: bool) -> bool:
    """Whether attack ``name``'s builder applies the autocast dtype itself (our lean PGD)."""
    return _REGISTERED[name].applies_autocast and not reference


# --------------------------------------------------------------------------- builders
# In catalog order (ctrw.catalog.ATTACK_NAMES; a test checks the order).


@register_attack("clean")
def build_clean(model: nn.Module, p: dict[str, Any], ctx: BuildContext) -> AttackFn:
    """No attack: returns a copy of the clean images (the table's natural accuracy).

    Distance Measure : none

    Shape:
        - images: (B, C, H, W) in [0, 1]; labels: (B,); output: (B, C, H, W), equal to images.
    """
    return lambda x, y: x.detach().clone()


def _pgd_family(model: nn.Module, p: dict[str, Any], ctx: BuildContext, *, eot_draws: int) -> AttackFn:
    """PGD with EOT over ``eot_draws`` (1 = plain PGD), lean and batched (``pgd_linf``)."""

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


@register_attack("pgd", applies_autocast=True)
def build_pgd(model: nn.Module, p: dict[str, Any], ctx: BuildContext) -> AttackFn:
    r"""PGD in the paper 'Towards Deep Learning Models Resistant to Adversarial Attacks'
    [https://arxiv.org/abs/1706.06083] (Madry et al. 2018).

    Our lean ``ctrw.attacks.pgd.pgd_linf`` (input gradients only) with torchattacks' ``PGD``
    update (sign of the summed gradient, projection, clamp), which the tests check;
    ``reference`` builds ``torchattacks.PGD``.

    Distance Measure : Linf

    Arguments:
        eps (float): radius of the L-inf ball.
        step_size (float): step size (torchattacks' ``alpha``).
        steps (int): number of steps.
        random_start (bool): start from a uniform random point of the ball.

    Shape:
        - images: (B, C, H, W) in [0, 1]; labels: (B,); output: (B, C, H, W) in [0, 1].
    """
    if ctx.reference:
        return torchattacks.PGD(
            model, eps=p["eps"], alpha=p["step_size"], steps=p["steps"], random_start=p["random_start"]
        )
    return _pgd_family(model, p, ctx, eot_draws=1)


@register_attack("fgsm")
def build_fgsm(model: nn.Module, p: dict[str, Any], ctx: BuildContext) -> AttackFn:
    r"""FGSM in the paper 'Explaining and Harnessing Adversarial Examples'
    [https://arxiv.org/abs/1412.6572] (Goodfellow et al. 2015): one signed gradient step
    (``torchattacks.FGSM``).

    Distance Measure : Linf

    Arguments:
        eps (float): radius of the L-inf ball (the step).

    Shape:
        - images: (B, C, H, W) in [0, 1]; labels: (B,); output: (B, C, H, W) in [0, 1].
    """
    return torchattacks.FGSM(model, eps=p["eps"])


@register_attack("mifgsm")
def build_mifgsm(model: nn.Module, p: dict[str, Any], ctx: BuildContext) -> AttackFn:
    r"""MI-FGSM in the paper 'Boosting Adversarial Attacks with Momentum'
    [https://arxiv.org/abs/1710.06081] (Dong et al. 2018) (``torchattacks.MIFGSM``).

    Distance Measure : Linf

    Arguments:
        eps (float): radius of the L-inf ball.
        step_size (float): step size (torchattacks' ``alpha``).
        steps (int): number of steps.
        decay (float): momentum factor (the published code's 1.0; the paper's text says 0.1).

    Shape:
        - images: (B, C, H, W) in [0, 1]; labels: (B,); output: (B, C, H, W) in [0, 1].
    """
    return torchattacks.MIFGSM(model, eps=p["eps"], alpha=p["step_size"], steps=p["steps"], decay=p["decay"])


@register_attack("deepfool")
def build_deepfool(model: nn.Module, p: dict[str, Any], ctx: BuildContext) -> AttackFn:
    r"""DeepFool in the paper 'DeepFool: a simple and accurate method to fool deep neural
    networks' [https://arxiv.org/abs/1511.04599] (Moosavi-Dezfooli et al. 2016).

    Our batched ``ctrw.attacks.deepfool.deepfool`` reproduces torchattacks' ``DeepFool``;
    ``reference`` builds torchattacks' per-image version. Forwards shrinking subsets of the
    batch (it drops the images it has fooled).

    Distance Measure : L2 (unbounded)

    Arguments:
        steps (int): maximum number of steps.
        overshoot (float): factor each step is enlarged by.

    Shape:
        - images: (B, C, H, W) in [0, 1]; labels: (B,); output: (B, C, H, W) in [0, 1].
    """
    if ctx.reference:
        return torchattacks.DeepFool(model, steps=p["steps"], overshoot=p["overshoot"])
    return lambda x, y: deepfool(model, x, y, steps=p["steps"], overshoot=p["overshoot"])[0]


@register_attack("cw")
def build_cw(model: nn.Module, p: dict[str, Any], ctx: BuildContext) -> AttackFn:
    r"""CW-L2 in the paper 'Towards Evaluating the Robustness of Neural Networks'
    [https://arxiv.org/abs/1608.04644] (Carlini & Wagner 2017) (``torchattacks.CW``).

    Distance Measure : L2 (unbounded)

    Arguments:
        c (float): weight of the misclassification term against the L2 distance.
        kappa (float): confidence margin.
        steps (int): number of Adam steps.
        lr (float): Adam's learning rate.

    Shape:
        - images: (B, C, H, W) in [0, 1]; labels: (B,); output: (B, C, H, W) in [0, 1] (the
          clean image where the attack failed).
    """
    return torchattacks.CW(model, c=p["c"], kappa=p["kappa"], steps=p["steps"], lr=p["lr"])


@register_attack("autoattack")
def build_autoattack(model: nn.Module, p: dict[str, Any], ctx: BuildContext) -> AttackFn:
    r"""AutoAttack 'standard' in the paper 'Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks' [https://arxiv.org/abs/2003.01690] (Croce & Hein
    2020): APGD-CE, APGD-T, FAB-T and Square, assembled from torchattacks like the reference.

    APGD/APGD-T/FAB-T run ``steps`` iterations (the reference's 100; torchattacks' ``AutoAttack``
    wrapper hard-codes 10) and the targeted attacks use the top min(9, K-1) target classes
    (torchattacks' wrapper would run K-1 = 99 on CIFAR-100); every attack one restart.

    Distance Measure : Linf or L2 (the ``norm`` argument)

    Arguments:
        eps (float): radius of the ball.
        norm (str): "Linf" or "L2".
        steps (int): APGD, APGD-T and FAB-T iterations.
        queries (int): Square's queries (reference: 5000).

    Shape:
        - images: (B, C, H, W) in [0, 1]; labels: (B,); output: (B, C, H, W) in [0, 1] (the
          clean image where every attack failed).

    Raises:
        ValueError: fewer than 4 classes (APGD-T's DLR loss).
    """
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


@register_attack("eotpgd", applies_autocast=True)
def build_eotpgd(model: nn.Module, p: dict[str, Any], ctx: BuildContext) -> AttackFn:
    r"""EOT-PGD: PGD on the gradient averaged over draws of the random layers (Expectation over
    Transformation), as in 'Obfuscated Gradients Give a False Sense of Security'
    [https://arxiv.org/abs/1802.00420] (Athalye et al. 2018).

    Batched: ``eot_draws`` stacked copies with one draw each, at most ``eot_max_rows`` rows per
    forward, with torchattacks' ``EOTPGD`` update (the tests check it). A model whose random
    layer cannot give stacked copies their own draws ('filters' insertion), or ``reference``,
    gets torchattacks' sequential ``EOTPGD``.

    Distance Measure : Linf

    Arguments:
        eps (float): radius of the L-inf ball.
        step_size (float): step size (torchattacks' ``alpha``).
        steps (int): number of steps.
        eot_draws (int): draws the gradient is averaged over (torchattacks' ``eot_iter``).
        random_start (bool): start from a uniform random point of the ball.

    Shape:
        - images: (B, C, H, W) in [0, 1]; labels: (B,); output: (B, C, H, W) in [0, 1].
    """
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


@register_attack("autoattack_rand")
def build_autoattack_rand(model: nn.Module, p: dict[str, Any], ctx: BuildContext) -> AttackFn:
    r"""AutoAttack version 'rand' (for randomized defenses) in the paper 'Reliable evaluation of
    adversarial robustness with an ensemble of diverse parameter-free attacks'
    [https://arxiv.org/abs/2003.01690] (Croce & Hein 2020): APGD-CE and APGD-DLR with EOT, one
    restart, assembled from torchattacks like the reference.

    The EOT draws are batched as in EOT-PGD (``ctrw.attacks.apgd.BatchedEOTAPGD``: stacked
    copies with one draw each, at most ``eot_max_rows`` rows per forward); the tests check it
    against torchattacks' sequential ``APGD`` on the same draws. A model whose random layer
    cannot give stacked copies their own draws ('filters' insertion), or ``reference``, gets
    torchattacks' sequential ``APGD``.

    Distance Measure : Linf or L2 (the ``norm`` argument)

    Arguments:
        eps (float): radius of the ball.
        norm (str): "Linf" or "L2".
        steps (int): APGD iterations.
        eot_draws (int): EOT draws per gradient (torchattacks' ``eot_iter``).

    Shape:
        - images: (B, C, H, W) in [0, 1]; labels: (B,); output: (B, C, H, W) in [0, 1] (the
          clean image where both attacks failed).

    Raises:
        ValueError: fewer than 3 classes (DLR loss).
    """
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
    if ctx.reference or not grouped_draws_supported(model):
        return torchattacks.MultiAttack(
            [torchattacks.APGD(model, loss="ce", **common), torchattacks.APGD(model, loss="dlr", **common)]
        )
    rows = ctx.eot_max_rows
    return torchattacks.MultiAttack(
        [
            BatchedEOTAPGD(model, loss="ce", max_rows=rows, **common),
            BatchedEOTAPGD(model, loss="dlr", max_rows=rows, **common),
        ]
    )


@register_attack("transfer_mean", applies_autocast=True)
def build_transfer_mean(model: nn.Module, p: dict[str, Any], ctx: BuildContext) -> AttackFn:
    r"""Transfer attack from the mean-weight surrogate: PGD (``build_pgd``) on the model with
    delta = 0 (W = mu), judged on the random model; a transfer attack in the sense of
    'Practical Black-Box Attacks against Machine Learning' [https://arxiv.org/abs/1602.02697]
    (Papernot et al. 2017). The only builder that sets a sampling mode itself ('mean').

    Distance Measure : Linf

    Arguments:
        eps (float): radius of the L-inf ball.
        step_size (float): step size.
        steps (int): number of steps.
        random_start (bool): start from a uniform random point of the ball.

    Shape:
        - images: (B, C, H, W) in [0, 1]; labels: (B,); output: (B, C, H, W) in [0, 1].
    """
    inner = build_pgd(model, p, ctx)

    def attack(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with sampling(model, "mean"):
            return inner(x, y)

    return attack
