"""Training core: the SD trainer, checkpoint state, latent cache, optimisers, tiny-base pretraining.

Runs in-process with no Ray; the actors call `train_trial` / `Trainer` and forward metrics.
"""
from .loop import Trainer, TrainResult, set_deterministic
from .metrics import MetricsCallback, StepMetrics
from .pretrain import pretrain_base
from .trial import TINY_BASE_PREFIX, train_trial

__all__ = ["MetricsCallback", "StepMetrics", "TINY_BASE_PREFIX", "TrainResult", "Trainer", "pretrain_base",
           "set_deterministic", "train_trial"]
