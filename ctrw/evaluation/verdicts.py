"""The plain-language verdicts of the diagnostics, as templates filled in by the checks.

Every sentence a diagnostic can say is here, so the wording is read and changed in one place;
the checks (``ctrw.evaluation.checks``, ``ctrw.evaluation.model_checks``) only decide which
template applies and fill in the numbers. What each verdict means and why it matters is
explained in docs/evaluation.md. Pure strings: no torch.

Percentages are passed in already formatted (``pct``: "42.0%", ``pts``: "3.5 points").
"""

from __future__ import annotations

from ctrw.render import to_percent

__all__ = ["pct", "pts"]


def pct(v: float) -> str:
    """A fraction as a percentage with one decimal: 0.4213 -> "42.1%"."""
    return f"{to_percent(v):.1f}%"


def pts(v: float) -> str:
    """A difference of fractions in percentage points: 0.035 -> "3.5 points"."""
    return f"{to_percent(v):.1f} points"


# --------------------------------------------------------------------------- any diagnostic

NOT_APPLICABLE = "Not applicable: {why}"
# A threat-model group's verdict inside the combined verdict, and the groups that were not judged.
GROUP = "{label}: {verdict}"
GROUP_SKIPPED = "{label}: {why}"
NOT_JUDGED = " Not judged: {groups}."
NOT_JUDGED_GROUP = "{label} ({why})"
DISABLED = "diagnostics are disabled for this evaluation (no extra runs)"

# --------------------------------------------------------------------------- attack_ordering

ORDERING_NONE = "no eps-bounded attack in this table (attacks are ordered only at one norm and eps)"
ORDERING_NO_PAIR = (
    "needs a PGD row and an AutoAttack, FGSM, MIFGSM or EOT-PGD row under the same protocol "
    "(this budget has {have})"
)
# Why the stronger attack of a pair should score at most the weaker one's accuracy.
REASON_AUTOATTACK_PGD = "AutoAttack contains a full APGD run plus three further attacks"
REASON_PGD_FGSM = "a single FGSM step is a weaker version of PGD"
REASON_PGD_MIFGSM = "{weak_steps}-step MIFGSM is not stronger than {strong_steps}-step PGD"
REASON_EOTPGD_PGD = "EOT-PGD with at least as many steps only averages more gradient samples"
REASON_PGD_STEPS = "more PGD steps should never help the defender"
ORDERING_VIOLATION = (
    "{stronger} scores {stronger_accuracy}, above {weaker} at {weaker_accuracy} by {excess} "
    "(CI {tolerance}), although {reason}"
)
ORDERING_FIRED = (
    "A stronger attack does worse than a weaker one: {violations}. The attacks are not optimizing "
    "against the model that judges them (gradient masking): these robust accuracies are overestimates."
)
ORDERING_OK = "Stronger attacks score at most as high as weaker ones ({pairs} pairs checked, within the CIs)."

# --------------------------------------------------------------------------- unbounded_attacks

UNBOUNDED_NONE = "no CW or DeepFool row in this table"
UNBOUNDED_ROW = "{attack} {accuracy}"
UNBOUNDED_OK = "Unbounded attacks reach near 0% ({rows}), as they should."
UNBOUNDED_HIGH_ROW = "{attack} leaves {accuracy} correct{clean}"
UNBOUNDED_CLEAN = " (clean accuracy {accuracy})"
UNBOUNDED_FIRED = (
    "Unbounded attacks should reach ~0% since they may move an image as far as needed, but {rows}. "
    "Either the attack never sees a useful gradient (masking) or it is configured too weakly."
)
UNBOUNDED_WEAK_CW = (
    " Note CW's c = {c:g}: the misclassification term carries almost no weight, "
    "so part of this failure is the attack's setting, not robustness."
)

# --------------------------------------------------------------------------- protocol_gap

GAP_NONE = "no attack rows in this table"
GAP_MISSING = "no {missing}-protocol attack at this budget to compare with"
# A row that is the diagnostics' own PGD run on the diagnostic subset, said plainly.
PROBE_SOURCE = "{attack}: the diagnostics' PGD-{steps} at this budget on {n} examples"
GAP_COLUMN = "{attack}: {paper} under the paper protocol vs {adaptive} adaptive"
GAP_FIRED = (
    "The paper protocol overestimates robustness: its lowest robust accuracy is {paper} "
    "({paper_source}) while an attacker facing the deployed model gets {adaptive} "
    "({adaptive_source}): overestimated by {over} (CI {tolerance})."
)
GAP_LARGEST_COLUMN = " Largest gap for one attack: {column}."
GAP_COLUMN_FIRED = (
    "The paper protocol overestimates the robustness to {attack}: {column}, overestimated by "
    "{over} (CI {tolerance}). The lowest accuracies over all attacks "
    "({paper} paper, {adaptive} adaptive) agree within the CIs."
)
GAP_OK = (
    "Adaptive and paper-protocol accuracies agree within the CIs (lowest: paper {paper} "
    "({paper_source}), adaptive {adaptive} ({adaptive_source}); difference {difference}, "
    "CI {tolerance}): no significant sign that the paper protocol overestimates robustness."
)

# --------------------------------------------------------------------------- steps_sweep

SWEEP_DISABLED = "the PGD steps sweep did not run (diagnostics are disabled)"
SWEEP_NONE = (
    "no L-inf attack in this table: the sweep runs PGD at the table's own L-inf budget, and there is none"
)
SWEEP_LINF_ONLY = "the PGD steps sweep is L-inf only"
SWEEP_TOO_FEW = "the sweep has fewer than 2 step counts at this budget"
SWEEP_SPAN = "{first} at {n0} steps to {last} at {n1} steps, {protocol} protocol"
SWEEP_RISING = (
    "PGD accuracy rises with more steps ({low} at {n0} -> {high} at {n1} steps, "
    "{protocol} protocol): more iterations should never help the defender, so the gradient the "
    "attack follows is not informative (masking)."
)
SWEEP_PLATEAU = (
    "PGD accuracy does not fall beyond the CIs ({span}) while {best} reaches {best_accuracy}: the "
    "plateau is the limit of an attack that cannot see the right gradient, not the model's robustness."
)
SWEEP_FLAT = (
    "PGD accuracy does not fall beyond the CIs ({span}) and no other attack at this budget goes lower"
)
SWEEP_FLAT_CONFIRMED = " (lowest: {best} {best_accuracy}): consistent with a converged attack."
SWEEP_FLAT_UNCONFIRMED = (
    ": consistent with a converged attack (run EOT-PGD or AutoAttack at this budget to confirm)."
)
SWEEP_FALLING = "PGD accuracy falls as steps grow ({span}): the attack keeps making progress."

# --------------------------------------------------------------------------- peer_baseline

PEER_OTHER_MODEL = "the published PGD-AT reference exists for ResNet18 on CIFAR-10 only"
PEER_NO_ROWS = "needs an adaptive-protocol L-inf attack at eps 8/255 (the reference's budget)"
PEER_FIRED = (
    "{where}: under adaptive attack this model keeps {accuracy} ({attack}), below plain PGD "
    "adversarial training of the same ResNet18 ({low}-{high} AutoAttack): the random weight has "
    "bought no real robustness."
)
PEER_OK = (
    "{where}: adaptive robust accuracy {accuracy} ({attack}) is not below plain PGD adversarial "
    "training's range ({low}-{high} AutoAttack)."
)

# --------------------------------------------------------------------------- randomness

RANDOMNESS_OK = "Repeated forwards give the same output: the model is deterministic, EOT is not needed."
RANDOMNESS_FIRED = (
    "The model is randomized: two forwards of the same input differ by up to {max_diff:.3g} in the "
    "logits and the predicted class changes between draws for {changes} of clean examples ({draws} "
    "draws). Its accuracy is a random variable: single-draw attacks and single-draw scoring are "
    "unreliable; trust adaptive rows (EOT, AutoAttack 'rand') scored over many draws."
)
RANDOMNESS_OUTSIDE = " The randomness is outside ctrw's random layers, so the protocols cannot control it."

# --------------------------------------------------------------------------- zero_gradients

ZERO_OK = (
    "Input gradients are informative: {ce} of examples have an all-zero cross-entropy gradient, "
    "{margin} an all-zero margin gradient, none are NaN/inf."
)
ZERO_FIRED = (
    "Gradients are missing: {ce} of examples have an all-zero cross-entropy gradient, {margin} an "
    "all-zero margin gradient and {nonfinite} a NaN/inf gradient. Gradient attacks cannot move "
    "these points, so their robust accuracy is not evidence of robustness"
)
ZERO_CE_ONLY = (
    " (the cross-entropy saturates while the margin still has a gradient: use margin losses such "
    "as APGD-DLR or CW)."
)
ZERO_END = "."
