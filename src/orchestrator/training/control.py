"""The two objects a training run is given besides its trial: how the loop runs, and how its caller
steers it and hears from it.

One object per concern: `LoopConfig` is chosen once before the run (device, caches, what is
written) and never changes the trained numbers' meaning; `RunControl` is the caller's side of a
run — when to stop, what must hold before anything is written, where metrics and notices go, and
what the journal expects to resume from. A caller (the trainer actor, `orch train`, a test) builds
each once; `train_resolved` and `Trainer` pass them down unchanged. Nothing here imports Ray or torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .metrics import MetricsCallback

NoticeCallback = Callable[[str, dict], None]  # (kind, details), e.g. ("resumed_from_older", {...})


@dataclass(frozen=True)
class LoopConfig:
    """How the loop runs. The defaults are an in-process run's."""
    device: Any = None              # torch.device or name; None: CUDA when this process sees one, else CPU
    num_threads: int | None = None  # CPU threads, fixed with deterministic kernels before the run (train_resolved)
    use_cache: bool = True          # the objective may cache frozen encoders' outputs in the blob store
    export_model: bool = True       # export the model directory when the run reaches its last step
    keep_last: int | None = 3       # checkpoints kept in the store (None: all)
    background_upload: bool = True  # checkpoints upload while the next steps train (uploader.py)


@dataclass(frozen=True)
class RunControl:
    """How a caller steers a run and hears from it. The defaults: nobody listening, nothing expected."""
    # Asked at every step boundary: true = checkpoint now and return, preempted (one process only:
    # the ranks of a data-parallel group would have to agree on the step first).
    stop: Callable[[], bool] | None = None
    # Asked at every step boundary of every rank, before anything is written: raises when the run
    # that owns this trial is gone (nothing more may be written for it).
    guard: Callable[[], None] | None = None
    on_metrics: MetricsCallback | None = None  # every step's metrics, with the checkpoints landed since the last
    on_notice: NoticeCallback | None = None    # every fallback resume takes (Trainer.resume)
    progress: bool = False                     # a progress bar (drawn by the process that writes)
    # The journal's newest checkpoint step: "no checkpoint left" is then an error (CheckpointsMissing)
    # unless `restart_missing` says to train again from step 0.
    expect_checkpoint: int | None = None
    restart_missing: bool = False
    # Steps whose checkpoint must land before the step is reported (early-stopping rungs: the caller
    # decides there whether the run goes on, so the run may not train past one meanwhile).
    land_at: frozenset[int] = frozenset()
