"""What Discffusion's few-shot training adapts, as one ModuleDict (`Discffusion.adapters`, the
trial's one trained module, exported as adapters.safetensors):

    pk_pv   {layer: KVAdapter}: p_k, p_v added to the frozen W_k, W_v of each cross-attention
            (the paper's Eq. 5), applied by capture.ScoringProcessor
    lora    {"lora": {module: {"A", "B"}}}: peft's LoRA layers injected into q, k, v and out of every
            attention (self and cross: the public code's choice), the dict holding the same modules
            the U-Net runs, so loading its state loads the U-Net's LoRA
    + "heads" {layer: HeadWeights} with `head_weighting`: the scored layers' learned head weights

All start at the identity (p_k = p_v = 0, LoRA's B = 0, head weights 1): untrained = zero-shot.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch

from .capture import HeadWeights, KVAdapter, cross_attention_layers, scored_layers
from .options import DiscffusionOptions

LORA_TARGETS = r".*attn[12]\.(to_q|to_k|to_v|to_out\.0)$"   # q, k, v, out of every attention


def key_of(module_name: str) -> str:
    return module_name.replace(".", "_")


def make_adapters(unet, options: DiscffusionOptions) -> torch.nn.ModuleDict:
    """The adapters `options` ask for, at the identity; LoRA is injected into `unet` here."""
    mods = dict(unet.named_modules())
    names = cross_attention_layers(unet)
    if options.adapter == "pk_pv":
        out = torch.nn.ModuleDict({key_of(n): KVAdapter(mods[n].to_k.out_features, mods[n].to_k.in_features)
                                   for n in names})
    else:
        out = torch.nn.ModuleDict({"lora": inject_lora(unet, options.lora_rank, options.seed)})
    if options.head_weighting:
        out["heads"] = torch.nn.ModuleDict({key_of(n): HeadWeights(mods[n].heads)
                                            for n in scored_layers(names, options.layers)})
    return out


def inject_lora(unet, rank: int, seed: int = 0) -> torch.nn.ModuleDict:
    """peft LoRA (rank `rank`, alpha = rank: scale 1, as diffusers' LoRA processors) on q, k, v, out
    of every attention of `unet`; a dict of the injected A / B layers, by module. A is drawn as
    peft draws it (kaiming-uniform, a = √5: U(±1/√fan_in)) but from a generator seeded by `seed`,
    so the same manifest starts from the same LoRA whatever the process's global RNG did."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    if any(isinstance(m, LoraLayer) for m in unet.modules()):
        raise ValueError("the U-Net already carries LoRA layers; build Discffusion's adapters on a fresh base")
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS), unet)
    layers = {name: m for name, m in unet.named_modules() if isinstance(m, LoraLayer)}
    if not layers:
        raise ValueError("no attention projections (attn1/attn2 to_q, to_k, to_v, to_out.0) to put LoRA on")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in layers.values():
            a = m.lora_A["default"].weight
            bound = 1 / math.sqrt(a.shape[1])
            a.copy_((torch.rand(a.shape, generator=g) * 2 - 1) * bound)
    return torch.nn.ModuleDict({key_of(name): torch.nn.ModuleDict({"A": m.lora_A["default"], "B": m.lora_B["default"]})
                                for name, m in layers.items()})


@contextlib.contextmanager
def base_layers_only(unet) -> Iterator[None]:
    """The U-Net as it was before LoRA was injected (its base layers back in place), for saving the
    base in diffusers' layout; the LoRA layers return afterwards."""
    from peft.tuners.lora import LoraLayer

    swapped = []
    for name, m in list(unet.named_modules()):
        if isinstance(m, LoraLayer):
            parent_name, _, child = name.rpartition(".")
            parent = unet.get_submodule(parent_name) if parent_name else unet
            swapped.append((parent, child, m))
            setattr(parent, child, m.base_layer)
    try:
        yield
    finally:
        for parent, child, m in swapped:
            setattr(parent, child, m)
