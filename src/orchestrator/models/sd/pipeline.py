"""Stable Diffusion components: build tiny, load and save in diffusers' directory layout.

A model directory is what `StableDiffusionPipeline.save_pretrained` writes: model_index.json and
unet/, vae/, text_encoder/, tokenizer/, scheduler/ with safetensors weights. The same loader
reads SD v1-5 / v2-1 directories and the project's tiny base, from a local path or a blob prefix
(downloaded to a temporary directory first, since diffusers loads from files). Our own directories
also name the variant in model_index.json (`_orch_variant`), which diffusers ignores.

With LoRA (`model.sd.lora`, components.lora set) the directory holds the base's U-Net and the
adapters in diffusers' LoRA file beside it (pytorch_lora_weights.safetensors, what
`StableDiffusionPipeline.load_lora_weights` reads; the loader here reads it too), or, with
`merge_on_export`, the U-Net with the adapters fused into its weights and no LoRA file.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

from orchestrator.models.common import lora as lora_tools
from orchestrator.models.common.serialize import module_hash  # noqa: F401 - re-exported (sd.module_hash)
from orchestrator.models.common.shapes_tokenizer import build_tokenizer
from orchestrator.models.registry import INDEX_KEY
from orchestrator.storage.location import put_dir, resolve_location, strip_file_scheme

from . import tiny_config
from .options import SDLora

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class SDComponents:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: Any
    scheduler: DDPMScheduler  # the training noise schedule; samplers are built from its config
    lora: lora_tools.Adapters | None = None   # the U-Net's LoRA / DoRA adapters, when it carries them

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def vae_downsample(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def freeze_encoders(self) -> None:
        """SD finetuning trains the U-Net only."""
        for m in (self.vae, self.text_encoder):
            m.requires_grad_(False)
            m.eval()

    def to(self, device: torch.device | str) -> "SDComponents":
        for m in (self.unet, self.vae, self.text_encoder):
            m.to(device)
        return self

    def save(self, out_dir: str | Path) -> Path:
        """Write the diffusers layout (safetensors); loadable by `load_components` and diffusers."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self._save_unet(out)
        self.vae.save_pretrained(out / "vae", safe_serialization=True)
        self.text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(out / "tokenizer")
        self.scheduler.save_pretrained(out / "scheduler")
        index = {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": _diffusers_version(),
            "unet": ["diffusers", type(self.unet).__name__],
            "vae": ["diffusers", type(self.vae).__name__],
            "text_encoder": ["transformers", type(self.text_encoder).__name__],
            # transformers 5 names the fast tokenizer class TokenizersBackend; the older name is
            # an alias of it there and the real class in transformers 4, so either library loads it.
            "tokenizer": ["transformers", _tokenizer_class_name(self.tokenizer)],
            "scheduler": ["diffusers", type(self.scheduler).__name__],
            "safety_checker": [None, None],
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
            INDEX_KEY: "sd",
        }
        (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        return out

    def _save_unet(self, out: Path) -> None:
        """unet/ in diffusers' layout; with adapters, the base's weights and the LoRA file beside
        them, or the adapters fused in (merge_on_export)."""
        def save() -> None:
            self.unet.save_pretrained(out / "unet", safe_serialization=True)

        if self.lora is None:
            save()
        else:
            from diffusers import StableDiffusionPipeline

            lora_tools.save_with_adapters(self.unet, self.lora, save, StableDiffusionPipeline.save_lora_weights,
                                          out, "unet")


def _tokenizer_class_name(tokenizer: Any) -> str:
    name = type(tokenizer).__name__
    return "PreTrainedTokenizerFast" if name == "TokenizersBackend" else name


def _diffusers_version() -> str:
    import diffusers
    return diffusers.__version__


def build_tiny(seed: int = 0, resolution: int = 32, caption_texts: list[str] | None = None,
               latent_downsample: int = 4) -> SDComponents:
    """Randomly initialised tiny SD; the same seed gives bitwise the same weights.
    `latent_downsample`: image side / latent side (tiny_config.LATENT_DOWNSAMPLES)."""
    tokenizer = build_tokenizer(caption_texts or [])
    ids = tokenizer.convert_tokens_to_ids
    tcfg = tiny_config.text_config(len(tokenizer), ids(tokenizer.pad_token), ids(tokenizer.bos_token),
                                   ids(tokenizer.eos_token))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**tiny_config.vae_config(resolution, latent_downsample))
        text_encoder = CLIPTextModel(CLIPTextConfig(**tcfg))
        unet = UNet2DConditionModel(**tiny_config.unet_config(resolution, tcfg["hidden_size"],
                                                              downsample=latent_downsample))
    # from_config keeps the DDIM-only keys (set_alpha_to_one, steps_offset) for samplers built later.
    scheduler = DDPMScheduler.from_config(tiny_config.SCHEDULER_CONFIG)
    return SDComponents(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def fresh_denoiser(c: SDComponents, seed: int, size: str = "tiny") -> SDComponents:
    """`c` with a newly initialised text encoder and U-Net of a tiny_config denoiser size; its VAE,
    latent scale, tokenizer and schedule kept. The same seed gives bitwise the same weights."""
    ids = c.tokenizer.convert_tokens_to_ids
    tcfg = tiny_config.text_config(len(c.tokenizer), ids(c.tokenizer.pad_token), ids(c.tokenizer.bos_token),
                                   ids(c.tokenizer.eos_token), size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(**tcfg))
        unet = UNet2DConditionModel(**tiny_config.unet_config(c.vae.config.sample_size, tcfg["hidden_size"], size,
                                                              c.vae_downsample))
    return SDComponents(unet=unet, vae=c.vae, text_encoder=text_encoder, tokenizer=c.tokenizer, scheduler=c.scheduler)


def load_components(source: str | Path, store=None, dtype: torch.dtype | None = None) -> SDComponents:
    """Load a diffusers-format SD directory, offline: a local directory (or file:// URI), an
    az:// URI, or a blob prefix in `store` (e.g. 'models/tiny-sd-base'), downloaded first."""
    with resolve_location(str(source), store=store).local_dir() as path:
        return _load_dir(Path(path), dtype)


def _load_dir(path: Path, dtype: torch.dtype | None) -> SDComponents:
    if not (path / "model_index.json").exists():
        raise FileNotFoundError(f"{path} is not a diffusers model directory (no model_index.json)")
    kw: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kw["torch_dtype"] = dtype
    unet = UNet2DConditionModel.from_pretrained(path / "unet", **kw)
    vae = AutoencoderKL.from_pretrained(path / "vae", **kw)
    te_kw = {"local_files_only": True, **({"dtype": dtype} if dtype is not None else {})}
    text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", **te_kw)
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    # Train with DDPM's forward process whatever sampler the directory ships (SD ships PNDM).
    sched_cfg = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    scheduler = DDPMScheduler.from_config(sched_cfg)
    adapters = lora_tools.load_diffusers_file(unet, path, "unet", SDLora)  # None: no LoRA file
    return SDComponents(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                        lora=adapters)


def save_components(components: SDComponents, dest: str | Path, store=None) -> str:
    """Save to a local directory, or to a blob prefix when a store is given."""
    if store is None:
        return str(components.save(strip_file_scheme(str(dest))))
    with tempfile.TemporaryDirectory(prefix="orch-sd-") as tmp:
        components.save(tmp)
        put_dir(store, tmp, str(dest))
    return str(dest)
