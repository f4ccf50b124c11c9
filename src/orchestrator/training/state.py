"""Everything a run needs to continue bitwise where it stopped: RNG states and the data cursor.

A checkpoint's bytes are a function of the training state only, so the same trial trained twice,
or stopped and resumed, writes the same bytes at every step (the journal keeps one hash per
step). So it holds the state of the run's own generator alone, never a process-global RNG:
those (Python's, NumPy's, torch's CPU and CUDA ones, e.g. what dropout draws from) are seeded
from the run's seed and the step before every step (`seed_global_rngs`), which makes their state
during a step a function of (seed, step) that needs no checkpointing. The generator state is a
tensor, so a checkpoint loads with `torch.load(weights_only=True)`.
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


def seed_global_rngs(seed: int, step: int) -> None:
    """Seed the process-global RNGs for optimiser step `step` of a run seeded `seed`.

    SeedSequence mixes the pair, so adjacent seeds do not share streams shifted by a step."""
    s = int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0])
    random.seed(s)
    np.random.seed(s & 0xFFFF_FFFF)  # the legacy global takes 32 bits
    torch.default_generator.manual_seed(s)
    if torch.cuda.is_initialized():  # a run on CUDA initialised it when it placed the model
        torch.cuda.manual_seed_all(s)  # (torch.manual_seed would also queue a lazy call per step)


def capture_rng(generator: torch.Generator) -> dict:
    """What a checkpoint keeps of randomness: the run's own generator (see the module docstring)."""
    return {"generator": generator.get_state()}


def restore_rng(state: dict, generator: torch.Generator) -> None:
    """Set the run's generator from a checkpoint. Global states that older checkpoints also
    carry are ignored: every step seeds the globals itself."""
    generator.set_state(state["generator"])
