"""One way from "what to use" to a model ready to use: a base, an export directory, or a checkpoint.

    load_model(None, spec=manifest.model, store=store, base_dir=dir)     # the manifest's base
    load_model("trials/<id>/model", store=store)                          # an exported model directory
    load_model("runs/exported-dir")  /  load_model("az://c/models/x")     # the same, local or Azure
    load_model("trials/<id>/checkpoints/step-00000200.pt", store=store)   # a training checkpoint

A model directory's model_index.json names its variant, so none of these needs a manifest. A
training checkpoint holds only the trained modules (and their EMA, applied when present, as an
export does); the rest comes from the base it was trained from, which the checkpoint records
(`origin`: the trial's model section and manifest directory) — or from `spec` when given.
Training (the base), `orch eval`, `orch sample` and the Evaluator actor all come through here.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from orchestrator.manifest.schema import ModelSpec
from orchestrator.storage.location import resolve_location

from .common.objective import apply_trained_state
from .common.serialize import from_bytes
from .registry import get_variant, variant_of_index
from .spec import GENERATING_KINDS, VariantSpec

_STEP = re.compile(r"step-(\d+)")


@dataclass(frozen=True)
class LoadedModel:
    variant: VariantSpec
    model: Any
    source: str               # what was loaded: a checkpoint key, a directory, or "base"
    step: int | None = None   # the training step, where the checkpoint or the name says

    @property
    def kind(self) -> str:
        return self.variant.kind

    @property
    def generates(self) -> bool:
        """Whether `generate` makes images (a generator, or a chain of models ending in one)."""
        return self.kind in GENERATING_KINDS

    @property
    def resolution(self) -> int:
        return self.variant.resolution(self.model)

    @property
    def conditioning_clip_sha256(self) -> str | None:
        """module_hash of the CLIP whose embeddings the model is conditioned on, for a variant with
        the `conditioning_clip_sha256` hook; None for the others."""
        declared = self.variant.conditioning_clip_sha256
        return declared(self.model) if declared is not None else None

    def eval(self) -> "LoadedModel":
        for m in self.variant.modules(self.model).values():
            m.eval()
        return self


def load_model(source: str | None, *, spec: ModelSpec | None = None, store: Any = None,
               base_dir: Path | None = None, base: str | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """The model `source` names (see the module docstring), on `device`, in eval mode. `base`
    replaces the base a training checkpoint records (a copy moved elsewhere, say)."""
    if source is None or source == "base":
        if spec is None:
            raise ValueError("loading a base model needs the manifest's model section")
        variant = get_variant(spec.variant)
        loaded = LoadedModel(variant, variant.load_base(spec, store, base_dir), "base", 0)
    elif source.endswith(".pt"):
        loaded = _from_checkpoint(source, spec, store, base_dir, base)
    else:
        loaded = _from_directory(source, store, base_dir)
    for m in loaded.variant.modules(loaded.model).values():
        m.to(device)
    return loaded.eval()


def _from_directory(source: str, store: Any, base_dir: Path | None) -> LoadedModel:
    loc = resolve_location(source, base_dir=base_dir, store=store)
    if not loc.has("model_index.json"):
        raise FileNotFoundError(f"{source}: not a model directory (no model_index.json at {loc.describe()}) "
                                f"and not a training checkpoint (.pt)")
    index = json.loads(loc.read_bytes("model_index.json"))
    variant = get_variant(variant_of_index(index, f"{source}/model_index.json"))
    with loc.local_dir() as path:
        model = variant.load(path)
    return LoadedModel(variant, model, source, _step_of(source))


def _from_checkpoint(source: str, spec: ModelSpec | None, store: Any, base_dir: Path | None,
                     base: str | None) -> LoadedModel:
    loc = resolve_location(source, base_dir=base_dir, store=store)
    try:
        state = from_bytes(loc.read_bytes())
    except KeyError:
        raise FileNotFoundError(f"no training checkpoint {source!r} in {loc.describe()}") from None
    modules, origin = state.get("modules"), state.get("origin") or {}
    if not isinstance(modules, dict):
        raise ValueError(f"{source}: not a training checkpoint of this project (no trained modules)")
    if spec is None and "model" in origin:
        spec = ModelSpec.model_validate(origin["model"], context={"check_files": False})
        base_dir = Path(origin["base_dir"]) if origin.get("base_dir") else base_dir
    if base is not None:
        spec = (spec.model_copy(update={"base": base}) if spec is not None
                else ModelSpec.model_validate({"variant": state.get("variant") or "", "base": base},
                                              context={"check_files": False}))
    if spec is None:
        raise ValueError(f"{source}: the checkpoint does not record its base model; give the model "
                         f"section (or --base) it was trained from")
    if state.get("variant") not in (None, spec.variant):
        raise ValueError(f"{source}: a checkpoint of variant {state['variant']!r}, not {spec.variant!r}")
    variant = get_variant(spec.variant)
    model = variant.load_base(spec, store, base_dir)
    apply_trained_state(variant.modules(model), state, source)
    step = state.get("step")
    return LoadedModel(variant, model, source, int(step) if step is not None else _step_of(source))


def _step_of(uri: str) -> int | None:
    m = _STEP.search(uri)
    return int(m.group(1)) if m else None
