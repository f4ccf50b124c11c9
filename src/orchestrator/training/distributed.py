"""Data-parallel training with torch.distributed (gloo on CPU, NCCL on GPUs); no Ray here.

Every rank walks the same global batch order and draws the same random numbers for the whole
global batch (one seeded generator per run), but loads and runs only its own shard: rank r of w
takes rows r, r+w, r+2w, ... of each global batch (`rank_rows`; `shard_indices` gives the example
indices). So the ranks together compute exactly the single-process step, and the gradient
all-reduce (mean over ranks of per-rank mean losses = the global mean, for equal slices) makes
their updates equal to it up to float summation order.

The shard rule is a pure function of (rank, world size, epoch, batch position, dataset size,
batch size, seed): the trainer slices its batches with it and the ShardPlanner actor
(actors/shard_planner.py) hands out and records the same shards, so a replacement rank
recomputes a dead rank's shards from the rule and the run's checkpointed cursor alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .state import BatchOrder


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    backend: str | None = None  # None: nccl when CUDA is available, else gloo
    timeout_s: float = 300.0    # a collective waiting longer than this on a lost peer raises

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> torch.Tensor:
        """This rank's rows of a global batch (deterministic; the ShardPlanner hands out the same)."""
        if batch_size % self.world_size:
            raise ValueError(f"batch_size {batch_size} does not split evenly over {self.world_size} ranks")
        return rank_rows(batch_size, self.rank, self.world_size)


def rank_rows(batch_size: int, rank: int, world_size: int) -> torch.Tensor:
    """Positions within a global batch that `rank` of `world_size` owns (strided, equal sizes)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} does not split evenly over {world_size} ranks")
    return torch.arange(rank, batch_size, world_size)


def shard_indices(order: BatchOrder, epoch: int, position: int, rank: int, world_size: int) -> torch.Tensor:
    """Example indices of `rank`'s shard of global batch `position` of `epoch`."""
    if not 0 <= position < order.batches_per_epoch:
        raise ValueError(f"batch position {position} is outside an epoch of {order.batches_per_epoch} batches")
    start = position * order.batch_size
    batch = order.permutation(epoch)[start:start + order.batch_size]
    return batch[rank_rows(order.batch_size, rank, world_size)]


def epoch_shards(n: int, batch_size: int, seed: int, epoch: int, rank: int, world_size: int) -> list[list[int]]:
    """`rank`'s shard of every global batch of `epoch`, in order (what the ShardPlanner hands out)."""
    order = BatchOrder(n, batch_size, seed)
    return [shard_indices(order, epoch, p, rank, world_size).tolist() for p in range(order.batches_per_epoch)]


def batches_done(step: int, grad_accum: int, batches_per_epoch: int) -> tuple[int, int]:
    """The data cursor (epoch, position) after `step` optimiser steps: every step consumes
    `grad_accum` global batches and an epoch's remainder is dropped, so the step alone fixes it."""
    return divmod(step * grad_accum, batches_per_epoch)


def init_process_group(ctx: DistContext, device: torch.device | str | None = None) -> None:
    """Join the group; the backend is `ctx.backend`, else the one this rank's device takes (NCCL
    on CUDA, gloo on CPU; with no device, CUDA when the process sees one)."""
    if dist.is_initialized():
        return
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    backend = ctx.backend or ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.index is not None:
        torch.cuda.set_device(device)  # NCCL binds each rank's communicator to its current device
    dist.init_process_group(backend, init_method=f"tcp://{ctx.master_addr}:{ctx.master_port}",
                            rank=ctx.rank, world_size=ctx.world_size, timeout=timedelta(seconds=ctx.timeout_s))


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean_(params: list[torch.nn.Parameter], world_size: int) -> None:
    """Average gradients over ranks, in place, as one flat buffer (one collective per step)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
