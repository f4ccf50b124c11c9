"""A GLIDE-mini model: config, U-Net, text encoder, tokenizer; its directory layout; the release.

Directory (what `export` writes, `load` reads): model_index.json naming the variant, config.json
(GlideConfig), model.safetensors (the state dict in the released checkpoint's key layout: U-Net
and text keys side by side at the top level), tokenizer/ (tokenizer.json + glide_tokenizer.json).

The released `base.pt` (glide-text2im's base-filtered model) is a plain state dict in that layout;
`load_release` loads it strictly into the full config, with the GPT-2 BPE files given by path.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from orchestrator.models.registry import INDEX_KEY

from .config import FULL, GlideConfig
from .diffusion import Schedule
from .text import TextEncoder
from .tokenizer import GlideTokenizer
from .unet import UNet

CLASS_NAME = "GlideMiniPipeline"


@dataclass
class GlideMini:
    config: GlideConfig
    unet: UNet
    text: TextEncoder
    tokenizer: GlideTokenizer
    vlb_weight: float | None = field(default=None)  # set by the manifest's options, not saved

    @cached_property
    def schedule(self) -> Schedule:
        return Schedule.cosine(self.config.diffusion_steps)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "text": self.text}

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokenizer.padded(texts, self.config.text_ctx)

    def denoise(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        proj, seq = self.text(tokens, mask)
        return self.unet(x, t, proj, seq)

    # ---- the released layout -----------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.unet.state_dict(), **self.text.state_dict()}

    def load_state_dict(self, state: dict[str, torch.Tensor], where: str) -> None:
        """Strict: a missing, extra or misshapen key is an error that names the keys."""
        check_layout(self.state_dict(), state, where)
        unet_keys = set(self.unet.state_dict())
        self.unet.load_state_dict({k: v for k, v in state.items() if k in unet_keys})
        self.text.load_state_dict({k: v for k, v in state.items() if k not in unet_keys})


def check_layout(expected: dict[str, torch.Tensor], state: dict, where: str) -> None:
    if not isinstance(state, dict):
        raise ValueError(f"{where}: not a state dict (a {type(state).__name__})")
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
                    for k in set(expected) & set(state)
                    if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape)
    problems = [f"{len(keys)} {what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                for what, keys in (("missing keys", missing), ("unexpected keys", extra),
                                   ("misshapen keys", shapes)) if keys]
    if problems:
        raise ValueError(f"{where} does not fit the GLIDE-mini layout ({len(expected)} keys): " + "; ".join(problems))


def build(config: GlideConfig, tokenizer: GlideTokenizer, seed: int = 0,
          device: torch.device | str | None = None) -> GlideMini:
    """Randomly initialised (bitwise the same for a seed); `device="meta"` builds shapes only."""
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens, the config's embedding {config.vocab_size}")
    with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
        torch.manual_seed(seed)
        unet, text = UNet(config), TextEncoder(config)
    return GlideMini(config, unet, text, tokenizer)


def save(model: GlideMini, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(model.config.to_json())
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              str(out_dir / "model.safetensors"))
    model.tokenizer.save(out_dir / "tokenizer")
    index = {"_class_name": CLASS_NAME, INDEX_KEY: "glide_mini"}
    (out_dir / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out_dir


def load(path: Path) -> GlideMini:
    for name in ("config.json", "model.safetensors", "tokenizer/tokenizer.json"):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path}: not a GLIDE-mini model directory (no {name})")
    config = GlideConfig.read(path / "config.json")
    model = build(config, GlideTokenizer.load(path / "tokenizer"), device="meta")
    model.unet.to_empty(device="cpu")
    model.text.to_empty(device="cpu")
    model.load_state_dict(load_file(str(path / "model.safetensors")), str(path / "model.safetensors"))
    return model


def load_release(weights: bytes, where: str, bpe_dir: Path, config: GlideConfig = FULL) -> GlideMini:
    """glide-text2im's `base.pt` (a state dict; its bytes, read from `where`) into the full config,
    strictly, with the GPT-2 BPE pair in `bpe_dir` (encoder.json, vocab.bpe)."""
    from .tokenizer import gpt2_bpe

    tokenizer = gpt2_bpe(bpe_dir / "encoder.json", bpe_dir / "vocab.bpe")
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"{bpe_dir / 'encoder.json'}: {tokenizer.vocab_size} tokens, the released model "
                         f"embeds {config.vocab_size}")
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is no checkpoint
        raise ValueError(f"{where}: not a readable torch state dict ({type(exc).__name__}: {exc})") from None
    model = build(config, tokenizer, device="meta")
    model.unet.to_empty(device="cpu")
    model.text.to_empty(device="cpu")
    model.load_state_dict(state, where)
    return model
