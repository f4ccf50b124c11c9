"""Discffusion as a variant (its spec, `SPEC`, is at the end; models/spec.py says what each part
is): a matcher over any Stable Diffusion base.

The base loads exactly as the `sd` variant loads it (a diffusers directory, the tiny shapes base,
tiny-random); the model is those components, the score's options (`model.discffusion`) and the
adapters (p_k / p_v or LoRA, with head weights: adapters.py; at the identity: zero-shot), which a
trial trains on choices (`data.train` of a matching kind) with the margin loss. It scores through
`orch eval` / the winoground and matching suites.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.manifest.schema import MATCHING_KINDS
from orchestrator.models.registry import INDEX_KEY, get_variant
from orchestrator.models.spec import VariantSpec

from .options import DiscffusionOptions

if TYPE_CHECKING:
    import numpy as np
    import torch

    from orchestrator.manifest.schema import ModelSpec

NAME = "discffusion"
OPTIONS_FILE, ADAPTERS_FILE = "discffusion.json", "adapters.safetensors"


@dataclass
class Discffusion:
    sd: Any                                   # SDComponents
    options: DiscffusionOptions
    adapters: "torch.nn.ModuleDict"
    _scorer: Any = field(default=None, repr=False)

    def scorer(self):
        from .score import DiffusionScorer

        if self._scorer is None:
            self._scorer = DiffusionScorer(self.sd, self.options, adapters=self.adapters)
        return self._scorer


def _build(sd, options: DiscffusionOptions | None) -> Discffusion:
    from .adapters import make_adapters

    options = options or DiscffusionOptions()
    return Discffusion(sd, options, make_adapters(sd.unet, options))


def load_base(spec: "ModelSpec", store: Any, base_dir: Path | None) -> Discffusion:
    return _build(get_variant("sd").load_base(spec.with_variant("sd"), store, base_dir), spec.options)


def modules(m: Discffusion) -> dict[str, "torch.nn.Module"]:
    return {**get_variant("sd").modules(m.sd), "adapters": m.adapters}


def objective(m: Discffusion, data: Any, spec: Any, options: Any, *, store: Any, device: Any,
              use_cache: bool = True) -> Any:
    """The adapters trained with the margin loss on text choices (objective.MarginObjective)."""
    from .objective import MarginObjective

    return MarginObjective(m, data, spec, m.options, device=device)


def export(m: Discffusion, out_dir: Path) -> None:
    from safetensors.torch import save_file

    from .adapters import base_layers_only

    with base_layers_only(m.sd.unet):  # the base in diffusers' layout; LoRA goes with the adapters
        m.sd.save(out_dir)
    (out_dir / OPTIONS_FILE).write_text(m.options.model_dump_json(indent=2) + "\n")
    save_file({k: v.detach().contiguous().cpu() for k, v in m.adapters.state_dict().items()},
              str(out_dir / ADAPTERS_FILE))
    index = json.loads((out_dir / "model_index.json").read_text())
    (out_dir / "model_index.json").write_text(json.dumps({**index, INDEX_KEY: NAME}, indent=2) + "\n")


def load(path: Path) -> Discffusion:
    from safetensors.torch import load_file

    m = _build(get_variant("sd").load(path), DiscffusionOptions.model_validate_json((path / OPTIONS_FILE).read_text()))
    m.adapters.load_state_dict(load_file(str(path / ADAPTERS_FILE)))
    return m


def resolution(m: Discffusion) -> int:
    return get_variant("sd").resolution(m.sd)


def score(m: Discffusion, captions: list[str], images: list[Any]) -> "np.ndarray":
    """One score per (caption, image) pair, higher = better fit (score.DiffusionScorer)."""
    return m.scorer().score_pairs(captions, images)


SPEC = VariantSpec(
    name=NAME,
    kind="matcher",
    trains_on=MATCHING_KINDS,
    suites=("winoground", "matching"),
    load_base=load_base, modules=modules, objective=objective, export=export, load=load, resolution=resolution,
    score=score,
    options=DiscffusionOptions,
    train_data="choices",
)
