"""torch's CPU threads are set deliberately by each entry point (ctrw.threads)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from ctrw import cli
from ctrw.threads import ENV, default_threads, set_torch_threads, threads_from_env, usable_cores


@pytest.fixture
def threads_kept() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_setting_is_a_positive_integer_or_unset():
    assert threads_from_env({}) is None and threads_from_env({ENV: " "}) is None
    assert threads_from_env({ENV: "3"}) == 3
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ValueError, match=ENV):
            threads_from_env({ENV: bad})


def test_default_shares_the_usable_cores_among_the_processes_at_least_one(threads_kept):
    cores = usable_cores()
    assert default_threads() == cores
    assert default_threads(processes=2) == max(1, cores // 2)
    assert default_threads(processes=10 * cores) == 1
    assert set_torch_threads(None, processes=10 * cores) == 1 and torch.get_num_threads() == 1
    assert set_torch_threads(2) == 2 and torch.get_num_threads() == 2
    with pytest.raises(ValueError):
        set_torch_threads(0)


def test_the_cli_applies_the_setting(monkeypatch, threads_kept, tmp_path, capsys):
    missing = str(tmp_path / "missing.yaml")
    monkeypatch.setenv(ENV, "2")
    assert cli.main(["train", missing]) == 2  # the config is missing; the threads were set first
    assert torch.get_num_threads() == 2
    monkeypatch.setenv(ENV, "lots")
    assert cli.main(["train", missing]) == 2
    assert f"{ENV} must be a positive integer" in capsys.readouterr().err
