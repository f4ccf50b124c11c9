"""Exponential moving average of the trained weights, with diffusers' warm-up rule.

decay(s) = min((1 + s) / (10 + s), max_decay): early updates follow the weights closely so the
average is not dominated by the random initialisation.
"""
from __future__ import annotations

import torch


class EMA:
    def __init__(self, module: torch.nn.Module, decay: float = 0.9999):
        self.max_decay = decay
        self.step = 0
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        # Names travel with the shadow so a loader can apply it without rebuilding the optimiser's
        # view of the model (models.common.objective.apply_trained_state).
        self.names = [n for n, _ in named]
        self.shadow = [p.detach().clone().float() for _, p in named]

    def decay(self) -> float:
        return min((1 + self.step) / (10 + self.step), self.max_decay)

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        params = [p for p in module.parameters() if p.requires_grad]
        w = 1.0 - self.decay()
        # shadow += (1 - decay) * (param - shadow), one elementwise op per tensor: deterministic.
        for s, p in zip(self.shadow, params):
            s.lerp_(p.detach().float(), w)
        self.step += 1

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, [p for p in module.parameters() if p.requires_grad]):
            p.copy_(s.to(p.dtype))

    def state_dict(self) -> dict:
        return {"step": self.step, "max_decay": self.max_decay, "names": list(self.names),
                "shadow": list(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        if list(state.get("names", self.names)) != self.names or len(state["shadow"]) != len(self.shadow):
            raise ValueError("EMA state does not match the model's trainable parameters")
        self.step = int(state["step"])
        self.max_decay = float(state["max_decay"])
        for s, v in zip(self.shadow, state["shadow"]):
            s.copy_(v)
