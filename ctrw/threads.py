"""How many CPU threads torch uses in a process: set deliberately by each entry point.

torch's default is one thread per core for every process. Several processes on one host (the
workers, the CLI, the test suite's children) then run cores x processes threads that spin
against each other: 3 epochs of the digits config took 105 s instead of 19 s on a loaded 2-core
machine (docs/benchmarks.md). Entry points (worker, ``ctrw`` CLI; the tests through the
environment) call ``set_torch_threads`` once at start; the library itself never does.

Setting: ``CTRW_TORCH_THREADS`` (a positive integer); unset means the usable cores divided by
the torch processes on the host, at least 1.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

__all__ = ["ENV", "default_threads", "set_torch_threads", "threads_from_env", "usable_cores"]

ENV = "CTRW_TORCH_THREADS"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_threads(processes: int = 1) -> int:
    """The usable cores shared evenly by ``processes`` torch processes on the host, at least 1."""
    return max(1, usable_cores() // max(1, processes))


def threads_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """``CTRW_TORCH_THREADS`` as a positive integer, or None when unset or empty.

    Raises:
        ValueError: set to anything but a positive integer (a typo must not silently mean 'all').
    """
    raw = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{ENV} must be a positive integer, not {raw!r}")
    return int(raw)


def set_torch_threads(threads: int | None = None, *, processes: int = 1) -> int:
    """Set torch's intra-op threads: ``threads``, or ``default_threads(processes)``; returns it."""
    n = threads if threads is not None else default_threads(processes)
    if n < 1:
        raise ValueError(f"torch threads must be at least 1, not {n}")
    torch.set_num_threads(n)
    return n
