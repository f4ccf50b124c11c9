"""A VCDM model — the prior, the embedding-conditioned image U-Net and its noise schedule — and its
directory layout, one directory for both parts:

    model_index.json      {"_class_name": "VCDMPipeline", "_orch_variant": "vcdm", ...}
    prior/                config.json (PriorConfig) + model.safetensors
    unet/                 the diffusers UNet2DModel (save_pretrained; loadable by diffusers alone)
    embed_proj/           model.safetensors: the embedding projection added to the timestep embedding
    scheduler/            the DDPM noise schedule (scheduler_config.json)
    vcdm.json             the prior's EDM constants; the sha256 (module_hash) of the CLIP it is conditioned on
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

from orchestrator.models.common.serialize import module_hash
from orchestrator.models.registry import INDEX_KEY

from .edm import EDMConfig
from .image import SCHEDULER_CONFIG, EmbeddingUNet, tiny_unet_config
from .prior import Prior, PriorConfig, tiny_prior

CLASS_NAME = "VCDMPipeline"
PARTS = ("prior", "unet", "embed_proj", "scheduler")


@dataclass
class VCDM:
    prior: Prior
    image: EmbeddingUNet
    scheduler: DDPMScheduler
    edm: EDMConfig = field(default_factory=EDMConfig)
    clip: Any = None  # the frozen CLIP whose image embeddings it trains on (set by load_base; never saved)
    clip_sha256: str | None = None  # that CLIP's module_hash as an exported directory records it

    @property
    def conditioning_clip_sha256(self) -> str | None:
        """module_hash of the CLIP it is conditioned on: the attached one's, else the recorded one."""
        return module_hash(self.clip.model) if self.clip is not None else self.clip_sha256

    @property
    def embed_dim(self) -> int:
        return self.prior.cfg.embed_dim

    @property
    def resolution(self) -> int:
        return int(self.image.unet.config.sample_size)

    @property
    def device(self) -> torch.device:
        return next(self.image.parameters()).device

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"prior": self.prior, "unet": self.image}


def build(prior_cfg: PriorConfig, unet_config: dict[str, Any], seed: int = 0) -> VCDM:
    """Randomly initialised (bitwise the same for a seed); the embedding projection starts at zero."""
    if prior_cfg.embed_dim < 1:
        raise ValueError(f"embedding width must be positive, not {prior_cfg.embed_dim}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prior = Prior(prior_cfg)
        image = EmbeddingUNet(UNet2DModel(**unet_config), prior_cfg.embed_dim)
    return VCDM(prior, image, DDPMScheduler.from_config(SCHEDULER_CONFIG))


def build_tiny(seed: int = 0, resolution: int = 32, embed_dim: int = 64) -> VCDM:
    """The shapes-world size: embed_dim is the CLIP's projection width (64 for the tiny shapes CLIP)."""
    return build(tiny_prior(embed_dim), tiny_unet_config(resolution), seed)


def save(m: VCDM, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prior").mkdir(exist_ok=True)
    (out_dir / "prior" / "config.json").write_text(m.prior.cfg.to_json())
    save_file(_cpu(m.prior.state_dict()), str(out_dir / "prior" / "model.safetensors"))
    m.image.unet.save_pretrained(out_dir / "unet", safe_serialization=True)
    (out_dir / "embed_proj").mkdir(exist_ok=True)
    save_file(_cpu(m.image.embed_proj.state_dict()), str(out_dir / "embed_proj" / "model.safetensors"))
    m.scheduler.save_pretrained(out_dir / "scheduler")
    record = {"edm": asdict(m.edm), "clip_sha256": m.conditioning_clip_sha256}
    (out_dir / "vcdm.json").write_text(json.dumps(record, indent=2) + "\n")
    index = {"_class_name": CLASS_NAME, INDEX_KEY: "vcdm",
             "prior": ["orchestrator", "Prior"], "unet": ["diffusers", "UNet2DModel"],
             "embed_proj": ["torch", "Linear"], "scheduler": ["diffusers", "DDPMScheduler"]}
    (out_dir / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out_dir


def load(path: Path) -> VCDM:
    for name in ("prior/config.json", "prior/model.safetensors", "unet/config.json", "embed_proj/model.safetensors",
                 "scheduler/scheduler_config.json", "vcdm.json"):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path}: not a VCDM model directory (no {name})")
    cfg = PriorConfig.read(path / "prior" / "config.json")
    with torch.device("meta"):
        prior = Prior(cfg)
    prior.to_empty(device="cpu")
    prior.load_state_dict(load_file(str(path / "prior" / "model.safetensors")))
    unet = UNet2DModel.from_pretrained(path / "unet", local_files_only=True)
    image = EmbeddingUNet(unet, cfg.embed_dim)
    image.embed_proj.load_state_dict(load_file(str(path / "embed_proj" / "model.safetensors")))
    scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
    record = json.loads((path / "vcdm.json").read_text())
    return VCDM(prior, image, scheduler, EDMConfig(**record["edm"]), clip_sha256=record.get("clip_sha256"))


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}
