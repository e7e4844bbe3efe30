"""config_hash identifies what a job computes: where a host keeps the data is not part of it, so a
checkpoint written on one host resumes on another whose data directory differs."""

from __future__ import annotations

from ctrw.config import TrainConfig, config_hash


def test_data_root_is_not_hashed_but_the_data_is() -> None:
    cfg = TrainConfig.model_validate({"data": {"dataset": "digits", "image_size": 8, "channels": 1}})
    elsewhere = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": "/mnt/other-host/data"})})
    smaller = cfg.model_copy(update={"data": cfg.data.model_copy(update={"train_subset": 100})})
    assert config_hash(elsewhere) == config_hash(cfg)
    assert config_hash(smaller) != config_hash(cfg)
