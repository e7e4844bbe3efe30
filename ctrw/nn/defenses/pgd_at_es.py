"""``pgd_at_es``: PGD adversarial training with early stopping on robust validation accuracy.

Rice, Wong, Kolter, "Overfitting in adversarially robust deep learning", ICML 2020 ("Overfit" in
the paper's Table 3). Robust test accuracy of PGD-AT peaks shortly after the first learning-rate
decay and then falls (robust overfitting); the remedy is to keep the checkpoint with the best
robust accuracy on a held-out validation split. The recipe: PGD-10 training at eps 8/255, step
2/255, SGD with piecewise learning-rate decay (0.1, divided by 10 at epochs 100 and 150 of 200),
model selection by validation PGD accuracy. Training already keeps the best validation-PGD
checkpoint (``best``, which evaluation uses) for every variant; this variant adds stopping after
``optim.early_stop_patience`` (recipe default: 10) epochs without improvement, so runs do not
spend the overfitting epochs.

The network is deterministic: no random module, and its surrogate is the model itself. It is the
reference a randomized defense has to beat under the adaptive protocol.
"""

from __future__ import annotations

from ctrw.config import DefenseConfig
from ctrw.nn.models import CTRWNet

__all__ = ["build"]


def build(model: CTRWNet, cfg: DefenseConfig) -> None:
    """The plain network (the recipe lives in the training config)."""
