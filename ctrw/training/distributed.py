"""One training job on N processes of one host (``distributed.nproc_per_node``): torch.distributed,
NCCL on GPUs (one process per GPU), gloo on the CPU.

``run`` is what a job calls. It spawns ranks 1..N-1 and runs rank 0 in the calling process (the
worker's, so that the job's hooks, its database session, stay where they are). Every rank runs the
same ``ctrw.training.train`` with a ``DistContext`` on its state; the loop then:

- takes the same global batch of ``optim.batch_size`` examples as one process (same data order,
  same augmentation draws) and keeps its contiguous 1/N of it (``DistContext.batches``);
- attacks its shard (PGD-k against draw A), then updates through ``DistributedDataParallel``:
  gradients are averaged over the ranks, which is the global batch's mean loss;
- normalises with the global batch's statistics (``sync_batchnorm``), so the attack and the update
  see the same BatchNorm as one process with the global batch;
- sums its metrics over the ranks at the epoch end (``DistContext.sum``);
- asks for cancellation on rank 0 only and broadcasts the answer (``CancelBroadcast``), so every
  rank stops at the same batch.

Randomness (Algorithm 1): every rank seeds identically, so the random layer's generators are in
the same state on every rank and each draw (A for the attack, B for the update) is ONE draw per
global batch, shared by all ranks, as in one process: the faithful reading of Algorithm 1, where
the whole batch is attacked against one W[1] and the update uses one W[2]. No extra communication
is needed (the draws are a function of the common seed and the step). Per-example draws would
repeat across shards and are refused by the config. The PGD random start draws from the attack
generator, also identical on every rank: a shard's i-th example starts from the same noise as the
other shards' i-th (each start is still uniform in the eps-ball; bitwise equality with one process
holds with ``random_start`` off).

Checkpoints and resume: rank 0 alone writes checkpoints and reports epochs and progress; every
state a rank needs (weights, optimizer, generators) is identical on all ranks, so a resume loads
rank 0's ``last`` everywhere and continues exactly. A SIGKILLed worker takes its ranks with it
(parent-death signal); a cancel stops every rank at the same batch. Validation runs on every rank
over the same examples (identical results, no reduction; it is ~1% of an ImageNet epoch).
``compile='auto'`` stays off here (torch.compile with DDP and the collective BatchNorm is not
measured yet); ``true`` forces it.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from ctrw.config import TrainConfig
from ctrw.data import TensorSplit, iterate_batches
from ctrw.hooks import Cancelled, Hooks
from ctrw.training.writer import CheckpointWriter

if TYPE_CHECKING:
    from ctrw.training.state import TrainState

__all__ = ["CancelBroadcast", "DistContext", "NoCheckpoints", "attach", "run", "sync_batchnorm"]

log = logging.getLogger(__name__)

# A rank that stops answering (died, hung) fails the others' collectives after this long instead
# of blocking the worker forever; the job is then requeued and resumes from its last checkpoint.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
_PR_SET_PDEATHSIG = 1


def run(
    config: TrainConfig, *, run_dir: Path, hooks: Hooks | None, train: Callable[..., dict[str, Any]]
) -> dict[str, Any]:
    """``train(config, run_dir=, hooks=)`` on ``config.distributed.nproc_per_node`` processes
    (one: in this process, unchanged). Returns rank 0's result; raises what rank 0 raised."""
    n = config.distributed.nproc_per_node
    if n == 1:
        return train(config, run_dir=run_dir, hooks=hooks)
    cuda = _uses_cuda(config)
    if cuda and torch.cuda.device_count() < n:
        raise RuntimeError(
            f"distributed.nproc_per_node {n} needs {n} GPUs; this host has {torch.cuda.device_count()}"
        )
    address = f"tcp://127.0.0.1:{_free_port()}"
    threads = max(1, torch.get_num_threads() // n)  # the host's cores, shared by the ranks
    ctx = mp.get_context("spawn")  # never fork a process that may hold a CUDA context
    children = [
        ctx.Process(
            target=_rank_main,
            args=(rank, n, address, config.model_dump(mode="json"), str(run_dir), threads, train),
            name=f"ctrw-rank{rank}",
            daemon=True,
        )
        for rank in range(1, n)
    ]
    for child in children:
        child.start()
    kept_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _init(0, n, address, cuda)
        result = train(config, run_dir=run_dir, hooks=CancelBroadcast(hooks or Hooks()))
    except BaseException:
        for child in children:  # a rank 0 that stops leaves the others blocked in a collective
            child.kill()
        raise
    finally:
        torch.set_num_threads(kept_threads)
        if dist.is_initialized():
            dist.destroy_process_group()
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
    failed = [c.name for c in children if c.exitcode not in (0, None)]
    if failed:
        raise RuntimeError(f"training ranks {failed} failed (their log is the worker's)")
    return result


def _rank_main(
    rank: int, world: int, address: str, config: dict[str, Any], run_dir: str, threads: int, train: Any
) -> None:
    """A spawned rank: dies with its parent (a SIGKILLed worker leaves no orphan holding a GPU)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    torch.set_num_threads(threads)
    cfg = TrainConfig.model_validate(config)
    _init(rank, world, address, _uses_cuda(cfg))
    try:
        train(cfg, run_dir=Path(run_dir), hooks=CancelBroadcast(Hooks()))
    except Cancelled:
        pass  # rank 0 reports it
    finally:
        dist.destroy_process_group()


def _init(rank: int, world: int, address: str, cuda: bool) -> None:
    if cuda:
        torch.cuda.set_device(rank)  # "cuda" in the config means this rank's GPU
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=address,
        rank=rank,
        world_size=world,
        timeout=COLLECTIVE_TIMEOUT,
        **({"device_id": torch.device("cuda", rank)} if cuda else {}),
    )


def _uses_cuda(config: TrainConfig) -> bool:
    if config.device is not None and config.device.startswith("cuda:"):
        raise ValueError("distributed training uses one GPU per rank: set device 'cuda' or leave it unset")
    return config.device != "cpu" and config.resources.gpus > 0 and torch.cuda.is_available()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DistContext:
    """A rank's view of the process group (``TrainState.dist``)."""

    rank: int
    world: int
    ddp: nn.Module  # the update's forward: DistributedDataParallel around the step's model

    def batches(
        self, split: Any, batch_size: int, **kwargs: Any
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's 1/N of every global batch ``iterate_batches`` yields (same order, same
        augmentation draws); a data set read by a DataLoader loads only this rank's part."""
        b = batch_size // self.world
        lo, hi = self.rank * b, (self.rank + 1) * b
        if isinstance(split, TensorSplit):
            for x, y in iterate_batches(split, batch_size, **kwargs):
                yield x[lo:hi], y[lo:hi]
            return
        sampler = (
            RandomSampler(split, generator=kwargs["generator"])
            if kwargs["shuffle"]
            else SequentialSampler(split)
        )
        device = kwargs["device"]
        loader = DataLoader(
            split,
            batch_sampler=_Slice(BatchSampler(sampler, batch_size, kwargs.get("drop_last", False)), lo, hi),
            num_workers=kwargs.get("num_workers", 0),
            pin_memory=device.type == "cuda",
        )
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def sum(self, *values: torch.Tensor | float) -> list[float]:
        """Each value summed over the ranks (one collective)."""
        device = next(v.device for v in values if isinstance(v, torch.Tensor))
        packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
        dist.all_reduce(packed)
        return packed.tolist()


class _Slice:
    """The [lo, hi) part of every batch of a batch sampler."""

    def __init__(self, batches: BatchSampler, lo: int, hi: int) -> None:
        self.batches, self.lo, self.hi = batches, lo, hi

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[self.lo : self.hi]

    def __len__(self) -> int:
        return len(self.batches)


def attach(state: TrainState) -> DistContext | None:
    """Make a fresh state a rank of the running process group (None outside one)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    if state.config.compile == "auto":
        state.compiled = None
    sync_batchnorm(state.model)
    cuda = state.device.type == "cuda"
    ddp = DistributedDataParallel(
        state.step_model,
        device_ids=[torch.cuda.current_device()] if cuda else None,
        # BatchNorm statistics are global (sync_batchnorm): every rank's buffers are equal already.
        forward_sync_buffers=False,
    )
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), ddp=ddp)


class CancelBroadcast(Hooks):
    """Rank 0's hooks (another rank's: none) with cancellation decided on rank 0 and broadcast,
    once per batch, so every rank stops at the same batch."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks

    def on_progress(self, progress: Any) -> None:
        self.hooks.on_progress(progress)

    def on_epoch(self, record: dict[str, Any]) -> None:
        self.hooks.on_epoch(record)

    def on_result(self, row: dict[str, Any]) -> None:
        self.hooks.on_result(row)

    def should_cancel(self) -> bool:
        flag = torch.tensor([int(dist.get_rank() == 0 and self.hooks.should_cancel())])
        dist.broadcast(flag, src=0, group=_control_group())
        return bool(flag.item())


_CONTROL: dict[int, Any] = {}


def _control_group() -> Any:
    """A gloo group for host-side flags (with NCCL too: no GPU sync for a cancel check)."""
    if dist.get_backend() == "gloo":
        return None
    key = id(dist.group.WORLD)
    if key not in _CONTROL:
        _CONTROL.clear()
        _CONTROL[key] = dist.new_group(backend="gloo")
    return _CONTROL[key]


class NoCheckpoints(CheckpointWriter):
    """A rank other than 0: checkpoints are rank 0's to write; the epoch is done at once."""

    def submit(self, write: Callable[[], None], done: Callable[[], None]) -> None:
        done()


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: each rank's input gets the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class _GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch in training mode: mean and variance summed over the ranks
    (differentiable all-reduce, any backend: NCCL and gloo alike, which ``nn.SyncBatchNorm`` is
    not). The running statistics follow ``nn.BatchNorm``'s update exactly; eval mode is unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, ...)
        if not self.training:
            return super().forward(x)
        # In float32, as BatchNorm runs under autocast; every rank holds an equal shard
        # (batch_size divisible by the ranks, drop_last), so the count needs no collective.
        x = x.float()
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        total = float(x.numel() // x.shape[1] * dist.get_world_size())
        mean = _AllReduceSum.apply(x.sum(dims)) / total  # (C,)
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / total  # biased, as BatchNorm normalises
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1  # type: ignore[operator]
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (total / (total - 1)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


_GLOBAL = {
    cls: type(f"Global{cls.__name__}", (_GlobalBatchNorm, cls), {})
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
}


def sync_batchnorm(model: nn.Module) -> None:
    """Every BatchNorm of ``model`` normalises over the global batch (in place: same parameters,
    buffers and state-dict keys, so checkpoints are those of one process)."""
    for m in model.modules():
        if type(m) in _GLOBAL:
            m.__class__ = _GLOBAL[type(m)]
