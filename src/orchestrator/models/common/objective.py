"""What a variant's training objective receives and gives back; the generic loop holds it.

The loop owns the order of examples, the optimiser, precision, accumulation, EMA, data
parallelism and checkpoints; the objective owns what is trained and how a batch's loss is made.

Data parallelism and exact resume need one rule: every random draw of a step is made for the
*global* batch from the loop's generator, and a rank keeps its rows (`Batch.keep`). One process
and a group of ranks then consume the generator identically, so their losses agree and a
resumed run follows the uninterrupted one bit for bit.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Protocol

import torch


@dataclass
class Batch:
    indices: torch.Tensor                 # examples this process computes (the batch or its shard)
    size: int                             # examples in the global batch: draws are made for all
    generator: torch.Generator            # every random draw of the step, on CPU
    rows: torch.Tensor | None = None      # positions of `indices` in the global batch; None: all
    autocast: Callable[[], ContextManager] = field(default=contextlib.nullcontext)  # the run's precision

    def keep(self, drawn: torch.Tensor) -> torch.Tensor:
        """This process's rows of a tensor drawn for the whole global batch."""
        return drawn if self.rows is None else drawn[self.rows]


class Objective(Protocol):
    modules: dict[str, torch.nn.Module]   # what is trained, by the name checkpoints use
    num_examples: int

    def loss(self, batch: Batch) -> torch.Tensor: ...


def trainable(modules: dict[str, torch.nn.Module]) -> torch.nn.ModuleDict:
    """The trained modules as one module: parameter names `<module>.<param>` in checkpoints/EMA."""
    return torch.nn.ModuleDict(modules)


def apply_trained_state(model_modules: dict[str, torch.nn.Module], state: dict[str, Any], where: str) -> list[str]:
    """Load a training checkpoint's modules into a model, then its EMA weights where it has them
    (what an export would hold). Returns the names of the modules loaded."""
    saved = state.get("modules") or {}
    unknown = sorted(set(saved) - set(model_modules))
    if not saved or unknown:
        raise ValueError(f"{where}: checkpoint modules {sorted(saved)} do not fit the model's "
                         f"{sorted(model_modules)}")
    for name, weights in saved.items():
        model_modules[name].load_state_dict(weights)
    ema = state.get("ema")
    if ema:
        params = dict(trainable({n: model_modules[n] for n in saved}).named_parameters())
        missing = [n for n in ema["names"] if n not in params]
        if missing:
            raise ValueError(f"{where}: EMA names parameters the model lacks, e.g. {missing[0]}")
        with torch.no_grad():
            for name, shadow in zip(ema["names"], ema["shadow"]):
                params[name].copy_(shadow.to(params[name].dtype))
    return list(saved)
