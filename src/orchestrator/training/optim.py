"""Optimiser and learning-rate schedule for the trainer.

8-bit AdamW comes from bitsandbytes and runs on CUDA only; anywhere else the trainer says so
once and uses torch's AdamW, so a manifest written for a GPU host still runs on a laptop.
"""
from __future__ import annotations

import logging
import math

import torch

from orchestrator.manifest.schema import LR_SCHEDULES

log = logging.getLogger(__name__)


def make_optimizer(params, kind: str, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if kind == "adamw8bit":
        reason = None
        if device.type != "cuda":
            reason = f"it needs CUDA and the trainer runs on {device.type}"
        else:
            try:
                import bitsandbytes as bnb  # optional, GPU hosts only
            except ImportError:
                reason = "bitsandbytes is not installed"
        if reason is None:
            return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
        log.warning("optimizer adamw8bit unavailable (%s); using torch.optim.AdamW (32-bit state)", reason)
    elif kind != "adamw":
        raise ValueError(f"unknown optimizer {kind!r} (adamw or adamw8bit)")
    # foreach=False: the per-tensor path, bitwise reproducible whatever the tensor grouping.
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=False)


class WarmupThenDecay:
    """LR multiplier: linear warm-up over `warmup_steps` optimiser steps, then constant, or decaying
    to zero at `total_steps` along a half cosine or a line (diffusers' `cosine` and `linear`).

    A class rather than a lambda so the schedule is picklable and its state is plain data.
    """

    def __init__(self, warmup_steps: int, total_steps: int = 0, decay: str = "constant"):
        if decay not in LR_SCHEDULES:
            raise ValueError(f"unknown lr schedule {decay!r} ({', '.join(LR_SCHEDULES)})")
        if decay != "constant" and total_steps <= warmup_steps:
            raise ValueError(f"a {decay} schedule needs total_steps ({total_steps}) above warmup_steps "
                             f"({warmup_steps})")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.decay = decay

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        done = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        if self.decay == "linear":
            return 1.0 - done
        return 0.5 * (1.0 + math.cos(math.pi * done))


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int = 0,
                   decay: str = "constant") -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupThenDecay(warmup_steps, total_steps, decay))
