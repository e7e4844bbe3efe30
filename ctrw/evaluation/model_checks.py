"""Model checks: gradient-masking warning signs that need the model itself (torch).

- ``randomness_check``: do repeated forwards of the same input disagree (AutoAttack's
  ``check_randomized``)?
- ``zero_gradients``: the fraction of examples whose input gradient is exactly zero or not finite.

Both run on the diagnostic subset (``ctrw.evaluation.diagnostics.Probe``); the sentences come
from ``ctrw.evaluation.verdicts`` and docs/evaluation.md explains them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctrw.evaluation import verdicts as V
from ctrw.evaluation.entries import Diagnostic, diagnostic
from ctrw.evaluation.scoring import vote_counts
from ctrw.evaluation.verdicts import pct
from ctrw.nn.randomness import random_modules, sampling

__all__ = ["RANDOMNESS_RTOL", "ZERO_GRADIENT_MAX_FRACTION", "randomness_check", "zero_gradients"]

# Logit differences between two forwards above this (relative) tolerance mean "randomized".
RANDOMNESS_RTOL = 1e-5
# More than this fraction of examples with an all-zero input gradient fires zero_gradients.
ZERO_GRADIENT_MAX_FRACTION = 0.01


@torch.no_grad()
def randomness_check(model: nn.Module, x: torch.Tensor, *, draws: int, max_rows: int) -> Diagnostic:
    """(e) Do repeated forwards of the same input disagree (the deployed, per-forward model)?

    Like AutoAttack's ``check_randomized``: two forwards are compared, and the predictions of
    ``draws`` fresh draws show how often the predicted class changes.

    Args:
        model: the model (eval mode).
        x: clean inputs, (m, C, H, W).
        draws: fresh draws for the prediction-change rate (at least 2).
        max_rows: largest batch of stacked copies in one forward.

    Returns:
        The diagnostic.
    """
    draws = max(draws, 2)
    with sampling(model, "per_forward"), torch.autocast(x.device.type, enabled=False):
        a = model(x)  # (m, K)
        b = model(x)
    max_diff = float((a - b).abs().max())
    scale = float(a.abs().max())
    votes = vote_counts(model, x, draws, max_rows=max_rows)  # (m, K)
    split = float((votes.max(1).values < draws).double().mean())
    randomized = max_diff > RANDOMNESS_RTOL * (1.0 + scale)
    n_layers = len(random_modules(model))
    details = {
        "applicable": True,
        "max_logit_difference": max_diff,
        "prediction_changes_fraction": split,
        "draws": draws,
        "n": int(x.shape[0]),
        "random_layers": n_layers,
    }
    if not randomized:
        return diagnostic("randomness", fired=False, verdict=V.RANDOMNESS_OK, details=details)
    verdict = V.RANDOMNESS_FIRED.format(max_diff=max_diff, changes=pct(split), draws=draws)
    if n_layers == 0:
        verdict += V.RANDOMNESS_OUTSIDE
    return diagnostic("randomness", fired=True, verdict=verdict, details=details)


def zero_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_fraction: float = ZERO_GRADIENT_MAX_FRACTION
) -> Diagnostic:
    """(f) Fraction of examples whose input gradient is all zero (CE and margin loss) or not finite.

    Args:
        model: the model (eval mode, parameters frozen); its random layers draw per forward.
        x: clean inputs, (m, C, H, W).
        y: labels, (m,).
        max_fraction: fraction of all-zero gradients above which the diagnostic fires.

    Returns:
        The diagnostic.
    """
    with sampling(model, "per_forward"), torch.autocast(x.device.type, enabled=False):
        xr = x.detach().clone().requires_grad_(True)
        logits = model(xr).float()  # (m, K)
        ce = F.cross_entropy(logits, y, reduction="sum")
        (g_ce,) = torch.autograd.grad(ce, xr, retain_graph=True)
        true = logits.gather(1, y.view(-1, 1)).squeeze(1)  # (m,)
        other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)  # (m,)
        (g_margin,) = torch.autograd.grad((other - true).sum(), xr)
    flat_ce, flat_m = g_ce.flatten(1), g_margin.flatten(1)  # (m, C*H*W)
    zero_ce = float((flat_ce == 0).all(1).double().mean())
    zero_margin = float((flat_m == 0).all(1).double().mean())
    nonfinite = float((~torch.isfinite(flat_ce).all(1) | ~torch.isfinite(flat_m).all(1)).double().mean())
    fired = zero_ce > max_fraction or zero_margin > max_fraction or nonfinite > 0
    details = {
        "applicable": True,
        "zero_fraction_ce": zero_ce,
        "zero_fraction_margin": zero_margin,
        "nonfinite_fraction": nonfinite,
        "threshold": max_fraction,
        "n": int(x.shape[0]),
    }
    if not fired:
        verdict = V.ZERO_OK.format(ce=pct(zero_ce), margin=pct(zero_margin))
    else:
        verdict = V.ZERO_FIRED.format(ce=pct(zero_ce), margin=pct(zero_margin), nonfinite=pct(nonfinite))
        # The cross-entropy saturates while the margin still has a gradient: say which loss to use.
        verdict += V.ZERO_CE_ONLY if zero_ce > max_fraction and zero_margin <= max_fraction else V.ZERO_END
    return diagnostic("zero_gradients", fired=fired, verdict=verdict, details=details)
