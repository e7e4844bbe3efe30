"""Where a job runs: the devices it needs (``resources``, routing) and how many processes train it
(``distributed``). Neither changes what the job computes, so neither enters ``config_hash``.

``resources.gpus``: 0 (the CPU), 1 (one device: a GPU where the worker has one, today's default)
or N (N GPUs of one host, for ``distributed.nproc_per_node`` N). ``resources.gpu_kind``: an
optional GPU model (``h100``, ``a100``) the worker must have. The service routes a job to the
queue named after these (``app.core.queue.queue_name``: ``cpu``, ``gpu``, ``gpu-x4``, ``gpu-x4-h100``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from ctrw.config.common import StrictModel

__all__ = [
    "MAX_GPUS",
    "PLACEMENT_FIELDS",
    "DistributedConfig",
    "ResourcesConfig",
    "WithPlacement",
    "WithResources",
]

# One host's GPUs (DGX-class machines have 8 or 16).
MAX_GPUS = 16
# The top-level fields that say where a job runs, not what it computes (left out of config_hash).
PLACEMENT_FIELDS = frozenset({"resources", "distributed"})


class ResourcesConfig(StrictModel):
    gpus: int = Field(
        1,
        ge=0,
        le=MAX_GPUS,
        description="devices the job needs: 0 = CPU only, 1 = one device (a GPU where the worker has one), "
        "N = N GPUs of one host (distributed.nproc_per_node N)",
    )
    gpu_kind: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9_]{0,31}$",
        description="the GPU model the worker must have, lower case as in the queue name (e.g. 'h100', 'a100'); "
        "null: any",
    )

    @field_validator("gpu_kind")
    @classmethod
    def _not_a_count(cls, v: str | None) -> str | None:
        if v is not None and re.fullmatch(r"x[0-9]+", v):  # gpu-x4 names a GPU count
            raise ValueError("gpu_kind 'x<N>' would read as a GPU count in the queue name")
        return v


class DistributedConfig(StrictModel):
    nproc_per_node: int = Field(
        1,
        ge=1,
        le=MAX_GPUS,
        description="training processes on the worker's host (torch.distributed: NCCL on GPUs, gloo on the "
        "CPU), one per GPU; optim.batch_size stays the global batch, split evenly over them",
    )


class WithResources(StrictModel):
    """A job config with ``resources`` (train and attack jobs)."""

    resources: ResourcesConfig = Field(
        default_factory=ResourcesConfig, description="what the worker must have (routes the job to a queue)"
    )

    @model_validator(mode="after")
    def _kind_needs_gpu(self) -> Any:
        if self.resources.gpu_kind is not None and self.resources.gpus == 0:
            raise ValueError("resources.gpu_kind needs resources.gpus >= 1")
        return self


class WithPlacement(WithResources):
    """A training config: ``resources`` and ``distributed``."""

    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description="one job on several processes of one host"
    )

    @model_validator(mode="before")
    @classmethod
    def _gpus_from_processes(cls, data: Any) -> Any:
        """Unset ``resources.gpus`` follows the config: one GPU per process, none on the CPU."""
        if not isinstance(data, dict):
            return data
        resources = data.get("resources")
        if resources is not None and (not isinstance(resources, dict) or "gpus" in resources):
            return data
        dist = data.get("distributed")
        nproc = (
            dist.get("nproc_per_node", 1) if isinstance(dist, dict) else getattr(dist, "nproc_per_node", 1)
        )
        gpus = 0 if data.get("device") == "cpu" else nproc if isinstance(nproc, int) else None
        if gpus is None or gpus == 1:
            return data
        return {**data, "resources": {**(resources or {}), "gpus": gpus}}

    @model_validator(mode="after")
    def _one_gpu_per_process(self) -> Any:
        n, gpus = self.distributed.nproc_per_node, self.resources.gpus
        if gpus > 1 and n != gpus:
            raise ValueError(
                f"distributed.nproc_per_node ({n}) must equal resources.gpus ({gpus}): one process per GPU"
            )
        if n > 1 and gpus == 1:
            raise ValueError(f"distributed.nproc_per_node {n} needs resources.gpus {n} (or 0: CPU processes)")
        if n > 1 and gpus == 0 and getattr(self, "device", "cpu") != "cpu":
            raise ValueError("distributed.nproc_per_node on the CPU (resources.gpus 0) needs device 'cpu'")
        optim, random_weight = getattr(self, "optim", None), getattr(self, "random_weight", None)
        if n > 1 and optim is not None and optim.batch_size % n:
            raise ValueError(
                f"optim.batch_size ({optim.batch_size}) must be divisible by distributed.nproc_per_node ({n})"
            )
        if n > 1 and random_weight is not None and random_weight.per_example:
            # Every rank draws from the same generator (ctrw.training.distributed): per-example
            # draws would repeat across the ranks' shards.
            raise ValueError("distributed.nproc_per_node > 1 does not support random_weight.per_example")
        return self
