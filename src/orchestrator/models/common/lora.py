"""LoRA / DoRA on a generator's denoiser through peft (the options: lora_options.LoraSpec).

A variant uses it in a few lines (models/sd does; a transformer is the same with its own name):

    c.lora = lora.configure(c.unet, c.lora, options.lora)   # load_base: peft layers in, the rest frozen
    modules["unet_lora"] = c.lora                # what the loop trains, checkpoints and averages
    lora.save_with_adapters(c.unet, c.lora, lambda: c.unet.save_pretrained(out / "unet"),
                            StableDiffusionPipeline.save_lora_weights, out, "unet")   # export
    c.lora = lora.load_diffusers_file(c.unet, out, "unet", SDLora)                   # ... and back

`Adapters` is a module holding the injected adapter layers (the same objects the denoiser runs) at
their paths in the denoiser, so its parameters are exactly the trained ones and its state dict is
the denoiser's adapter entries under the denoiser's own key names: a checkpoint of it holds the
adapters and nothing else, and loading it loads the denoiser's adapters. peft's initialisation is
drawn from a generator seeded with `seed`, so one manifest always starts from the same adapters.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .lora_options import LoraSpec

LORA_FILE = "pytorch_lora_weights.safetensors"   # diffusers' name (save_lora_weights / load_lora_weights)
_METADATA_KEY = "lora_adapter_metadata"           # where diffusers keeps the LoraConfig in that file
ADAPTER = "default"                               # peft's adapter name: one adapter per denoiser


class Adapters(torch.nn.Module):
    """The LoRA / DoRA layers peft injected into `host`, at their paths in it (see the module
    docstring); `spec` is the LoRA section they were built from."""

    def __init__(self, host: torch.nn.Module, spec: LoraSpec):
        from peft.tuners.lora import LoraLayer

        super().__init__()
        self.spec = spec
        for name, layer in host.named_modules():
            if not isinstance(layer, LoraLayer):
                continue
            holder: torch.nn.Module = self
            for part in name.split("."):
                if part not in holder._modules:
                    holder.add_module(part, torch.nn.Module())
                holder = holder._modules[part]
            for attr in LoraLayer.adapter_layer_names:   # lora_A, lora_B (+ lora_magnitude_vector: DoRA)
                held = getattr(layer, attr, None)
                if held is not None and len(held) > 0:
                    holder.add_module(attr, held)


def lora_config(spec: LoraSpec):
    """peft's LoraConfig for `spec` (what diffusers' LoRA scripts build: Gaussian init of A, B = 0)."""
    from peft import LoraConfig

    return LoraConfig(r=spec.rank, lora_alpha=spec.scale_alpha, target_modules=spec.target_modules,
                      lora_dropout=spec.dropout, use_dora=spec.dora, init_lora_weights="gaussian")


def has_lora(host: torch.nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in host.modules())


def apply(host: torch.nn.Module, spec: LoraSpec, seed: int = 0) -> Adapters:
    """Inject `spec`'s adapters into `host`, freeze everything else; the adapters as one module.
    The B matrices start at zero, so the model starts as the base."""
    from peft import inject_adapter_in_model

    if not spec.target_modules:
        raise ValueError("lora: no targets (name module-name suffixes in lora.targets)")
    if has_lora(host):
        raise ValueError("lora: the model already carries LoRA layers")
    try:
        with torch.random.fork_rng(devices=[]):   # peft draws A from the global generator
            torch.manual_seed(seed)
            inject_adapter_in_model(lora_config(spec), host, adapter_name=ADAPTER)
    except ValueError as exc:   # peft: "Target modules {...} not found in the base model"
        raise ValueError(f"lora.targets {spec.target_modules} do not name linear layers of the "
                         f"{type(host).__name__}: {exc}") from None
    host.requires_grad_(False)
    adapters = Adapters(host, spec)
    adapters.requires_grad_(True)
    return adapters


def adapter_state(host: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors under peft's names without the adapter's (what diffusers saves)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().contiguous().cpu() for k, v in
            get_peft_model_state_dict(host, adapter_name=ADAPTER).items()}


@contextlib.contextmanager
def base_layers_only(host: torch.nn.Module) -> Iterator[None]:
    """`host` as it was before the adapters went in (each LoRA layer's base layer back in its
    place), e.g. to save the base in diffusers' layout; the LoRA layers return afterwards."""
    from peft.tuners.lora import LoraLayer

    swapped = []
    for name, m in list(host.named_modules()):
        if isinstance(m, LoraLayer):
            parent_name, _, child = name.rpartition(".")
            parent = host.get_submodule(parent_name) if parent_name else host
            swapped.append((parent, child, m))
            setattr(parent, child, m.get_base_layer())
    try:
        yield
    finally:
        for parent, child, m in reversed(swapped):
            setattr(parent, child, m)


@contextlib.contextmanager
def merged(host: torch.nn.Module) -> Iterator[None]:
    """The adapters fused into their base layers' weights (W + scale·BA, or DoRA's rescaled
    weight), then the base weights restored bit for bit (a copy, not peft's subtraction)."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in host.modules() if isinstance(m, LoraLayer)]
    saved = [{k: v.detach().clone() for k, v in m.get_base_layer().named_parameters(recurse=False)} for m in layers]
    try:
        for m in layers:
            m.merge(adapter_names=[ADAPTER])
        yield
    finally:
        with torch.no_grad():
            for m, weights in zip(layers, saved):
                if m.merged:
                    m.unmerge()   # peft's bookkeeping; the weights are then put back exactly
                params = dict(m.get_base_layer().named_parameters(recurse=False))
                for k, v in weights.items():
                    params[k].data = v


def fold(host: torch.nn.Module) -> None:
    """Fuse the adapters into the weights for good and take the LoRA layers out: a plain model."""
    from peft.tuners.lora import LoraLayer

    for name, m in list(host.named_modules()):
        if isinstance(m, LoraLayer):
            m.merge(adapter_names=[ADAPTER])
            parent_name, _, child = name.rpartition(".")
            setattr(host.get_submodule(parent_name) if parent_name else host, child, m.get_base_layer())
    host.requires_grad_(True)


def configure(host: torch.nn.Module, current: Adapters | None, spec: LoraSpec | None) -> Adapters | None:
    """The adapters a base loaded for training carries: adapters it came with (a LoRA export used
    as a base) fused into its weights first, since a base is a plain model; then `spec`'s fresh
    adapters, or None."""
    if current is not None:
        fold(host)
    return apply(host, spec) if spec is not None else None


def save_with_adapters(host: torch.nn.Module, adapters: Adapters, save_host: Callable[[], Any],
                       save_lora_weights: Callable[..., Any], out_dir: str | Path, component: str) -> None:
    """Export a denoiser that carries adapters: `save_host()` (its diffusers directory) writes the
    base's weights and diffusers' LoRA file goes beside them, or, with merge_on_export, it writes
    the weights with the adapters fused in and there is no LoRA file. The model is left as it was."""
    merge = adapters.spec.merge_on_export
    with merged(host) if merge else contextlib.nullcontext(), base_layers_only(host):
        save_host()
    if not merge:
        save_diffusers_file(save_lora_weights, out_dir, host, adapters.spec, component)


def save_diffusers_file(save_lora_weights: Callable[..., Any], out_dir: str | Path, host: torch.nn.Module,
                        spec: LoraSpec, component: str) -> Path:
    """diffusers' LoRA file (`pytorch_lora_weights.safetensors`) of `host`'s adapters, written by the
    pipeline's own `save_lora_weights` (StableDiffusionPipeline's with component "unet",
    StableDiffusion3Pipeline's with "transformer"), with peft's config as its metadata so
    `load_lora_weights` rebuilds the same rank, alpha, targets and DoRA (dropout 0: see below)."""
    config = lora_config(spec).to_dict()
    config["target_modules"] = sorted(config["target_modules"])   # a set in peft: a fixed order in the file
    # The file is for sampling: no adapter dropout. (load_lora_weights would build the dropout
    # layers in training mode inside an eval-mode pipeline, and sample with them active.)
    config["lora_dropout"] = 0.0
    save_lora_weights(str(out_dir), **{f"{component}_lora_layers": adapter_state(host),
                                       f"{component}_lora_adapter_metadata": config})
    return Path(out_dir) / LORA_FILE


def read_file_spec(path: str | Path, component: str, spec_class: type[LoraSpec] = LoraSpec) -> LoraSpec:
    """The LoRA section a LoRA file of ours was written with (from its metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    if _METADATA_KEY not in metadata:
        raise ValueError(f"{path}: no LoRA config in its metadata (written by an older diffusers?): "
                         f"cannot rebuild its adapters")
    prefix = f"{component}."
    config = {k[len(prefix):]: v for k, v in json.loads(metadata[_METADATA_KEY]).items() if k.startswith(prefix)}
    if not config:
        raise ValueError(f"{path}: its metadata holds no config for {component!r}")
    return spec_class(rank=config["r"], alpha=config["lora_alpha"], targets=sorted(config["target_modules"]),
                      dora=bool(config.get("use_dora")), dropout=config.get("lora_dropout") or 0.0)


def load_diffusers_file(host: torch.nn.Module, directory: str | Path, component: str,
                        spec_class: type[LoraSpec] = LoraSpec) -> Adapters | None:
    """The adapters of `directory`'s LoRA file (save_diffusers_file's) injected into `host` and
    loaded; None when the directory has no LoRA file."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(directory) / LORA_FILE
    if not path.exists():
        return None
    adapters = apply(host, read_file_spec(path, component, spec_class))
    prefix = f"{component}."
    state = {k[len(prefix):]: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}
    result = set_peft_model_state_dict(host, state, adapter_name=ADAPTER)
    expected = set(adapters.state_dict())
    missing = [k for k in result.missing_keys if k in expected]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path}: does not fit the model's adapters (missing {missing[:2]}, "
                         f"unexpected {list(result.unexpected_keys)[:2]})")
    return adapters
