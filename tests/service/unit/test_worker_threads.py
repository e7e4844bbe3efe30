"""The worker sets torch's CPU threads from CTRW_TORCH_THREADS (Settings.torch_threads) at start."""

from __future__ import annotations

import torch

from app.core.settings import Settings
from ctrw.threads import default_threads
from worker.__main__ import _set_threads


def test_the_worker_applies_the_threads_setting(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("CTRW_TORCH_THREADS", "2")
        _set_threads(Settings().torch_threads)
        assert torch.get_num_threads() == 2
        _set_threads(None)  # unset: the usable cores shared by the workers (one per GPU)
        assert torch.get_num_threads() == default_threads(max(1, torch.cuda.device_count()))
    finally:
        torch.set_num_threads(before)
