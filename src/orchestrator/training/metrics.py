"""What the trainer reports each step, and the callback through which it leaves.

The actor layer passes a callback that forwards metrics (to the journal, Prometheus, the
driver); in-process runs may pass none. The trainer never knows where metrics go.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol


@dataclass(frozen=True)
class StepMetrics:
    step: int            # optimiser steps completed
    total_steps: int
    loss: float          # mean over the step's micro-batches
    lr: float
    grad_norm: float | None
    it_per_s: float      # over the steps run in this process
    epoch: int
    checkpoint: str | None = None  # blob key of the newest checkpoint that landed since the last report
    # (step, key) of every checkpoint that landed since the last report: uploads run behind the
    # steps, so a checkpoint's step is usually older than `step`
    checkpoints: tuple[tuple[int, str], ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)


class MetricsCallback(Protocol):
    def __call__(self, metrics: StepMetrics) -> None: ...
