"""ShardPlanner: which examples of which global batches each trainer rank owns, and who holds them.

The assignment is the ML core's pure rule (`training.distributed.shard_indices`: rank r of w takes
rows r, r+w, ... of every global batch of the seeded per-epoch order), the same function the
trainer slices its batches with, so the planner and the ranks can never disagree. The actor adds
the record a data-parallel group needs to survive a lost rank:

- which worker (trainer actor) holds which rank, and how far each rank has got;
- the durable cursor: the global batches covered by the group's newest checkpoint;
- the unfinished shards of a rank: its shards from the durable cursor to the end of the run;
- `reassign(dead, new)`: the replacement takes the dead worker's rank, and with it that rank's
  unfinished shards (the surviving ranks resume from the same checkpoint, so the group stays in
  step and the run's result does not change).
"""
from __future__ import annotations

from dataclasses import dataclass

import ray

from orchestrator.training.distributed import batches_done, epoch_shards, shard_indices
from orchestrator.training.state import BatchOrder


def assign(rank: int, world_size: int, epoch: int, n: int, batch_size: int, seed: int) -> list[list[int]]:
    """Example indices of `rank`'s shard of every global batch of `epoch` (pure; no actor needed)."""
    return epoch_shards(n, batch_size, seed, epoch, rank, world_size)


@dataclass(frozen=True)
class Shard:
    epoch: int
    position: int          # global batch within the epoch
    rank: int
    indices: list[int]     # example indices of this rank's rows of that batch


class ShardPlanner:
    def __init__(self, n: int, batch_size: int, seed: int, world_size: int, *, grad_accum: int = 1,
                 total_steps: int | None = None):
        self.order = BatchOrder(n, batch_size, seed)  # raises when n < batch_size, like the trainer
        self.n, self.batch_size, self.seed, self.world_size = n, batch_size, seed, world_size
        self.grad_accum, self.total_steps = grad_accum, total_steps
        self.holders: dict[int, str] = {}       # rank -> worker id (trainer actor) holding it
        self.progress: dict[int, int] = {}      # rank -> optimiser steps it reported done
        self.durable_step = 0                   # steps covered by the newest checkpoint
        self.history: list[tuple[str, int, str | None]] = []  # (worker, rank, replaced worker)

    # ---------------------------------------------------------------- the pure rule
    def shards(self, rank: int, epoch: int) -> list[list[int]]:
        return assign(rank, self.world_size, epoch, self.n, self.batch_size, self.seed)

    def shard(self, rank: int, epoch: int, position: int) -> Shard:
        return Shard(epoch, position, rank,
                     shard_indices(self.order, epoch, position, rank, self.world_size).tolist())

    # ------------------------------------------------------------------ the record
    def join(self, worker: str, rank: int) -> int:
        """`worker` holds `rank` (a group's first start); returns the rank."""
        self._check_rank(rank)
        holder = self.holders.get(rank)
        if holder is not None and holder != worker:
            raise ValueError(f"rank {rank} is held by {holder}; a replacement comes in through reassign()")
        self.holders[rank] = worker
        self.history.append((worker, rank, None))
        return rank

    def rank_of(self, worker: str) -> int:
        for rank, holder in self.holders.items():
            if holder == worker:
                return rank
        raise KeyError(f"worker {worker} holds no rank")

    def assignment(self) -> dict[int, str]:
        return dict(self.holders)

    def report(self, rank: int, step: int) -> None:
        """`rank` finished its shards of the first `step` optimiser steps."""
        self._check_rank(rank)
        self.progress[rank] = max(step, self.progress.get(rank, 0))

    def checkpointed(self, step: int) -> None:
        """The group's state after `step` steps is durable: shards up to there never run again."""
        self.durable_step = max(self.durable_step, step)

    def cursor(self) -> tuple[int, int]:
        """(epoch, position) of the first global batch not covered by the newest checkpoint."""
        return batches_done(self.durable_step, self.grad_accum, self.order.batches_per_epoch)

    def unfinished(self, rank: int, limit: int | None = None) -> list[Shard]:
        """`rank`'s shards from the durable cursor on (to the end of the run, or the end of the
        cursor's epoch when the run's length is unknown), at most `limit` of them."""
        self._check_rank(rank)
        bpe = self.order.batches_per_epoch
        start = self.durable_step * self.grad_accum
        end = (self.total_steps * self.grad_accum if self.total_steps is not None
               else (start // bpe + 1) * bpe)
        if limit is not None:
            end = min(end, start + limit)
        return [self.shard(rank, *divmod(b, bpe)) for b in range(start, end)]

    def reassign(self, dead: str, replacement: str, limit: int | None = None) -> dict:
        """Hand the rank `dead` held, and that rank's unfinished shards, to `replacement`."""
        rank = self.rank_of(dead)
        self.holders[rank] = replacement
        self.progress[rank] = self.durable_step  # what it did after the checkpoint is lost with it
        self.history.append((replacement, rank, dead))
        return {"rank": rank, "cursor": self.cursor(), "shards": self.unfinished(rank, limit)}

    def status(self) -> dict:
        return {"holders": dict(self.holders), "progress": dict(self.progress), "durable_step": self.durable_step,
                "cursor": self.cursor(), "history": list(self.history)}

    def _check_rank(self, rank: int) -> None:
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside a world of {self.world_size}")


ShardPlannerActor = ray.remote(num_cpus=0)(ShardPlanner)
