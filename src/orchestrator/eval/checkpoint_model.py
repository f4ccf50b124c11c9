"""Load the model a checkpoint URI names, and generate the images the suites judge.

A checkpoint URI is one of:
- a diffusers model directory: a local path or file:// URI (e.g. an exported `trials/<id>/model`
  downloaded, or the tiny base);
- `az://container/prefix` of a diffusers model in Azure Blob;
- a key in the blob store given alongside: a diffusers prefix (`trials/<id>/model`) or a training
  checkpoint (`trials/<id>/checkpoints/step-00000200.pt`). A training checkpoint holds the U-Net
  (and its EMA, used when present, as the export does) but not the frozen VAE and text encoder:
  those come from `base` (default: the tiny shapes base the trainer starts from).
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # diffusers loads only when a model does: importing the suites stays cheap
    from orchestrator.models.sd.pipeline import SDComponents

TINY_RANDOM = "tiny-random"  # the manifest's reserved base: the tiny architecture, freshly initialised
_STEP = re.compile(r"step-(\d+)")


@dataclass(frozen=True)
class LoadedCheckpoint:
    components: "SDComponents"
    uri: str
    step: int | None  # the training step, when the URI or the checkpoint says


def _strip(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def _step_of(uri: str) -> int | None:
    m = _STEP.search(uri)
    return int(m.group(1)) if m else None


def load_checkpoint_model(uri: str, *, store: Any = None, base: str | None = None,
                          device: str | torch.device = "cpu") -> LoadedCheckpoint:
    from orchestrator.models.sd.pipeline import load_components

    local = Path(_strip(uri)).expanduser()
    if local.is_dir():
        return LoadedCheckpoint(load_components(local).to(device), uri, _step_of(uri))
    if uri.startswith("az://"):
        from orchestrator.storage import open_store

        return LoadedCheckpoint(load_components("", store=open_store(uri)).to(device), uri, _step_of(uri))
    if store is None:
        raise FileNotFoundError(f"checkpoint {uri!r}: no such model directory, and no blob store given "
                                f"to look it up in")
    if uri.endswith(".pt"):
        return _load_training_checkpoint(uri, store, base, device)
    prefix = uri.strip("/")
    if not store.exists(f"{prefix}/model_index.json"):
        raise FileNotFoundError(f"checkpoint {uri!r}: neither a training checkpoint (.pt) nor a diffusers "
                                f"model (no {prefix}/model_index.json) in {store!r}")
    return LoadedCheckpoint(load_components(prefix, store=store).to(device), uri, _step_of(uri))


def _load_base(base: str | None, store: Any) -> "SDComponents":
    from orchestrator.models.sd.pipeline import build_tiny, load_components

    if base == TINY_RANDOM:
        return build_tiny(seed=0)
    if base is None:
        from orchestrator.models.sd import TINY_BASE_PREFIX  # where `orch pretrain` put it

        if not store.exists(f"{TINY_BASE_PREFIX}/model_index.json"):
            raise FileNotFoundError(f"a training checkpoint needs its base model (VAE, text encoder): none given "
                                    f"and no tiny base at {TINY_BASE_PREFIX}/ in {store!r}")
        return load_components(TINY_BASE_PREFIX, store=store)
    local = Path(_strip(base)).expanduser()
    return load_components(local if local.is_dir() else base, store=None if local.is_dir() else store)


def _load_training_checkpoint(key: str, store: Any, base: str | None, device: str | torch.device) -> LoadedCheckpoint:
    if not store.exists(key):
        raise FileNotFoundError(f"no training checkpoint {key!r} in {store!r}")
    state = torch.load(io.BytesIO(store.get(key)), map_location="cpu", weights_only=True)
    if "unet" not in state:
        raise ValueError(f"{key}: not a training checkpoint (no 'unet' state)")
    c = _load_base(base, store)
    c.unet.load_state_dict(state["unet"])
    if state.get("ema"):
        shadow = state["ema"]["shadow"]
        params = [p for p in c.unet.parameters() if p.requires_grad]
        if len(shadow) != len(params):
            raise ValueError(f"{key}: EMA state has {len(shadow)} tensors for {len(params)} U-Net parameters")
        with torch.no_grad():
            for p, s in zip(params, shadow):
                p.copy_(s.to(p.dtype))
    step = state.get("step")
    return LoadedCheckpoint(c.to(device), key, int(step) if step is not None else _step_of(key))
