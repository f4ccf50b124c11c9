"""Everything a run needs to continue bitwise where it stopped: RNG states and the data cursor.

RNG states are turned into tensors and plain Python values so a checkpoint loads with
`torch.load(weights_only=True)` (no arbitrary unpickling of stored bytes).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DataCursor:
    """Where the data stream is: `position` batches into the shuffled order of `epoch`."""
    epoch: int = 0
    position: int = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    @classmethod
    def from_state(cls, state: dict) -> "DataCursor":
        return cls(int(state["epoch"]), int(state["position"]))


class BatchOrder:
    """Seeded permutation per epoch, cut into full batches (the remainder of an epoch is dropped),
    so (epoch, position) alone determines every future batch."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            raise ValueError(f"dataset has {n} examples, fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.batches_per_epoch = n // batch_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def next(self, cursor: DataCursor) -> torch.Tensor:
        """Indices of the batch at `cursor`; advances the cursor in place."""
        start = cursor.position * self.batch_size
        idx = self.permutation(cursor.epoch)[start:start + self.batch_size]
        cursor.position += 1
        if cursor.position == self.batches_per_epoch:
            cursor.epoch, cursor.position = cursor.epoch + 1, 0
        return idx


def capture_rng(generator: torch.Generator | None = None) -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict, generator: torch.Generator | None = None) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], npst[1].numpy().astype(np.uint32), npst[2], npst[3], npst[4]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
