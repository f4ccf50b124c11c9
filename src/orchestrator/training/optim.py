"""Optimiser and learning-rate schedule for the trainer.

8-bit AdamW comes from bitsandbytes and runs on CUDA only; anywhere else the trainer says so
once and uses torch's AdamW, so a manifest written for a GPU host still runs on a laptop.
"""
from __future__ import annotations

import logging

import torch

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


class WarmupConstant:
    """LR multiplier: linear warm-up over `warmup_steps` optimiser steps, then constant.

    A class rather than a lambda so the schedule is picklable and its state is plain data.
    """

    def __init__(self, warmup_steps: int):
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        if self.warmup_steps <= 0:
            return 1.0
        return min(1.0, (step + 1) / self.warmup_steps)


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupConstant(warmup_steps))
