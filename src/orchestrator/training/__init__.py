"""Training core: the generic trainer, checkpoint state, optimisers, EMA, tiny-base pretraining.

Runs in-process with no Ray; the actors call `train_resolved` with a `RunControl` and a
`LoopConfig` (control.py) and forward what it reports.

The names below are imported on first use: a trainer process imports `training.trial` and what its
variant needs, not the tiny-base pretraining (which pulls in diffusers' SD stack for every variant:
about 4 s of each trial's start, measured with `python -X importtime`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.lazy import lazy_exports

# name -> the module that defines it
_EXPORTS = {
    "LoopConfig": ".control", "RunControl": ".control",
    "Trainer": ".loop", "TrainResult": ".loop", "set_deterministic": ".loop",
    "MetricsCallback": ".metrics", "StepMetrics": ".metrics",
    "TINY_BASE_PREFIX": ".pretrain", "pretrain_base": ".pretrain",
    "train_resolved": ".trial", "train_trial": ".trial",
}
__all__ = ["LoopConfig", "MetricsCallback", "RunControl", "StepMetrics", "TINY_BASE_PREFIX", "TrainResult",
           "Trainer", "pretrain_base", "set_deterministic", "train_resolved", "train_trial"]


__getattr__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .control import LoopConfig, RunControl
    from .loop import Trainer, TrainResult, set_deterministic
    from .metrics import MetricsCallback, StepMetrics
    from .pretrain import TINY_BASE_PREFIX, pretrain_base
    from .trial import train_resolved, train_trial
