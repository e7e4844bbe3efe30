"""What this worker serves: its queues (CTRW_WORKER_QUEUES, or what the host's GPUs can run) and
its entry in the worker registry, renewed while it lives (``app.core.queue``)."""

from __future__ import annotations

import logging
import re
import threading

from app.core.queue import WorkerRegistry, host_queues
from app.core.settings import Settings

__all__ = ["gpu_kind", "served_queues", "start_announcing"]

log = logging.getLogger(__name__)

# The model in a CUDA device name: "NVIDIA H100 80GB HBM3" -> h100, "NVIDIA A100-SXM4-40GB" -> a100.
_KIND = re.compile(r"\b([A-Za-z]{1,2}[0-9]{1,4}[A-Za-z]?)\b")


def gpu_kind(device_name: str) -> str | None:
    """The queue's GPU kind of a device name (lower case), None if the name has no model number."""
    m = _KIND.search(device_name)
    return m.group(1).lower() if m else None


def served_queues(settings: Settings) -> list[str]:
    """CTRW_WORKER_QUEUES, or the queues of this host's GPUs (all of them: one job may use them
    all; run one worker per host for multi-GPU jobs, or set the queues per worker)."""
    if settings.worker_queues:
        return settings.worker_queues.split(",")
    import torch

    n = torch.cuda.device_count()
    return host_queues(n, gpu_kind(torch.cuda.get_device_name(0)) if n else None)


def start_announcing(settings: Settings, worker: str, queues: list[str]) -> threading.Event:
    """Register ``queues`` for ``worker`` now and every heartbeat interval, from a daemon thread,
    until the returned event is set (then the entry is removed)."""
    registry, stop = WorkerRegistry(settings), threading.Event()

    def loop() -> None:
        while True:
            try:
                registry.register(worker, queues)
            except Exception:  # Redis is down: the next beat retries
                log.warning("could not announce worker %s", worker, exc_info=True)
            if stop.wait(settings.heartbeat_interval_s):
                break
        try:
            registry.unregister(worker)
        except Exception:
            log.warning("could not withdraw worker %s", worker, exc_info=True)

    threading.Thread(target=loop, name="worker-registry", daemon=True).start()
    log.info("worker %s serves queues %s", worker, ",".join(queues))
    return stop
