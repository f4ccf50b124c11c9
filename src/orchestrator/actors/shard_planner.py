"""ShardPlanner: which rows of which global batches each trainer rank owns, per epoch.

The assignment is a pure function of (rank, world size, epoch, batch size, dataset size and
seed), the same rule `training.distributed.rank_rows` applies inside the trainer, so a replaced
rank recomputes its shards without asking anyone. The actor adds bookkeeping: ranks report
finished batches, and a dead rank's unfinished batches go to its replacement.
"""
from __future__ import annotations

import ray

from orchestrator.training.distributed import rank_rows
from orchestrator.training.state import BatchOrder


def assign(rank: int, world_size: int, epoch: int, n: int, batch_size: int, seed: int) -> list[list[int]]:
    """Example indices of `rank`'s slice of every global batch of `epoch`."""
    order = BatchOrder(n, batch_size, seed)
    perm, rows = order.permutation(epoch), rank_rows(batch_size, rank, world_size)
    return [perm[b * batch_size:(b + 1) * batch_size][rows].tolist() for b in range(order.batches_per_epoch)]


class ShardPlanner:
    def __init__(self, n: int, batch_size: int, seed: int, world_size: int):
        self.n, self.batch_size, self.seed, self.world_size = n, batch_size, seed, world_size
        self.done: dict[tuple[int, int], set[int]] = {}  # (rank, epoch) -> finished batch positions

    def shards(self, rank: int, epoch: int) -> list[list[int]]:
        return assign(rank, self.world_size, epoch, self.n, self.batch_size, self.seed)

    def report(self, rank: int, epoch: int, position: int) -> None:
        self.done.setdefault((rank, epoch), set()).add(position)

    def unfinished(self, rank: int, epoch: int) -> list[int]:
        """Batch positions of `rank` in `epoch` not reported done: what a replacement picks up."""
        total = self.n // self.batch_size
        return [p for p in range(total) if p not in self.done.get((rank, epoch), set())]


ShardPlannerActor = ray.remote(num_cpus=0)(ShardPlanner)
