"""Training (Algorithm 1): ``train`` runs a whole job; ``TrainState`` is a run one can drive step by step.

Modules: ``setup`` (device, model, optimizer, schedule, data, bounds from a TrainConfig), ``state``
(TrainState and its exact round trip through checkpoints), ``step`` (one batch of Algorithm 1),
``validate`` (epoch-end measurements), ``writer`` (epoch checkpoints written in the background,
reported once durable), ``loop`` (``train``, top to bottom). What each variant does
with σ is in ``ctrw.nn.sigma_policy``.
"""

from ctrw.training.loop import epoch_record, train, train_epoch
from ctrw.training.setup import (
    build_model,
    load_trained_model,
    lr_at,
    pick_device,
    prepare_for_device,
    uses_channels_last,
)
from ctrw.training.state import TrainState, settle_checkpoints

__all__ = [
    "TrainState",
    "build_model",
    "epoch_record",
    "load_trained_model",
    "lr_at",
    "pick_device",
    "prepare_for_device",
    "settle_checkpoints",
    "train",
    "train_epoch",
    "uses_channels_last",
]
