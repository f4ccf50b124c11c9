"""Data-parallel training with torch.distributed (gloo on CPU, NCCL on GPUs); no Ray here.

Every rank walks the same global batch order and draws the same random numbers for the whole
global batch (one seeded generator per run), then keeps only its own rows: rank r of w takes
rows r, r+w, r+2w, ... So the ranks together compute exactly the single-process step, and the
gradient all-reduce (mean over ranks of per-rank mean losses = the global mean, for equal
slices) makes their updates equal to it up to float summation order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    backend: str | None = None  # None: nccl when CUDA is available, else gloo

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> torch.Tensor:
        """This rank's rows of a global batch (deterministic; the ShardPlanner hands out the same)."""
        if batch_size % self.world_size:
            raise ValueError(f"batch_size {batch_size} does not split evenly over {self.world_size} ranks")
        return rank_rows(batch_size, self.rank, self.world_size)


def rank_rows(batch_size: int, rank: int, world_size: int) -> torch.Tensor:
    return torch.arange(rank, batch_size, world_size)


def init_process_group(ctx: DistContext) -> None:
    if dist.is_initialized():
        return
    backend = ctx.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend, init_method=f"tcp://{ctx.master_addr}:{ctx.master_port}",
                            rank=ctx.rank, world_size=ctx.world_size)


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
