"""Training core: the generic trainer, checkpoint state, optimisers, EMA, tiny-base pretraining.

Runs in-process with no Ray; the actors call `train_resolved` with a `RunControl` and a
`LoopConfig` (control.py) and forward what it reports.
"""
from .control import LoopConfig, RunControl
from .loop import Trainer, TrainResult, set_deterministic
from .metrics import MetricsCallback, StepMetrics
from .pretrain import TINY_BASE_PREFIX, pretrain_base
from .trial import train_resolved, train_trial

__all__ = ["LoopConfig", "MetricsCallback", "RunControl", "StepMetrics", "TINY_BASE_PREFIX", "TrainResult",
           "Trainer", "pretrain_base", "set_deterministic", "train_resolved", "train_trial"]
