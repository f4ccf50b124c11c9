"""GLIDE-mini's architecture as data: the released base (64 px) and the tiny shapes-world size.

The numbers of the full config are those of glide-text2im's `model_and_diffusion_defaults()`
(base-filtered GLIDE): 385,030,726 parameters, 783 state-dict keys. `attention_ds` holds
downsampling factors (image_size // resolution), as the U-Net builder counts them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

GPT2_VOCAB = 50257


@dataclass(frozen=True)
class GlideConfig:
    image_size: int = 64
    model_channels: int = 192
    num_res_blocks: int = 3
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    attention_ds: tuple[int, ...] = (2, 4, 8)        # attention at 32, 16 and 8 px of a 64 px image
    num_head_channels: int = 64
    dropout: float = 0.1
    norm_groups: int = 32
    in_channels: int = 3
    out_channels: int = 6                            # ε and the variance interpolation v
    text_ctx: int = 128
    xf_width: int = 512
    xf_layers: int = 16
    xf_heads: int = 8
    vocab_size: int = GPT2_VOCAB
    diffusion_steps: int = 1000

    @property
    def learn_sigma(self) -> bool:
        return self.out_channels == 2 * self.in_channels

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "GlideConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown GLIDE-mini config keys {unknown}")
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**data)

    @classmethod
    def read(cls, path: Path) -> "GlideConfig":
        return cls.from_dict(json.loads(path.read_text()), str(path))


FULL = GlideConfig()


def tiny(resolution: int = 32, vocab_size: int = 128, text_ctx: int = 32) -> GlideConfig:
    """Every part of the full model, narrow: three levels, text-joint attention at 1/4 of the image
    (8 px of 32: attention at 1/2 too costs much more step time on a CPU; docs/measurements.md),
    a 2-layer text transformer."""
    return GlideConfig(image_size=resolution, model_channels=32, num_res_blocks=1, channel_mult=(1, 2, 2),
                       attention_ds=(4,), num_head_channels=16, dropout=0.0, norm_groups=8,
                       text_ctx=text_ctx, xf_width=64, xf_layers=2, xf_heads=4, vocab_size=vocab_size)
