"""Configs of the tiny shapes-world CLIP: transformers' CLIPModel, only narrow.

A 32 px image is 4x4 patches of 8 px (a 16-token vision sequence keeps a training step cheap on a
CPU); captions use the word-level shapes tokenizer (ids padded to 32 tokens, EOS id 3, so CLIP
pools the first EOS as it does for its own BPE tokenizer). About 0.2M parameters.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import CLIPConfig, CLIPModel

from orchestrator.models.common.shapes_tokenizer import build_tokenizer
from orchestrator.models.sd.tiny_config import MAX_TOKENS

EMBED_DIM = 64
# Scales [0, 1] pixels to [-1, 1]; written to preprocessor_config.json in CLIPImageProcessor's format.
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


def clip_config(vocab_size: int, pad_id: int, bos_id: int, eos_id: int, image_size: int = 32) -> CLIPConfig:
    text = {
        "vocab_size": vocab_size, "hidden_size": EMBED_DIM, "intermediate_size": 2 * EMBED_DIM,
        "num_hidden_layers": 3, "num_attention_heads": 4, "max_position_embeddings": MAX_TOKENS,
        "pad_token_id": pad_id, "bos_token_id": bos_id, "eos_token_id": eos_id,
    }
    vision = {
        "image_size": image_size, "patch_size": image_size // 4, "hidden_size": EMBED_DIM,
        "intermediate_size": 2 * EMBED_DIM, "num_hidden_layers": 3, "num_attention_heads": 4,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=EMBED_DIM)


def preprocessor_config(image_size: int = 32) -> dict[str, Any]:
    """CLIPImageProcessor's fields: images arrive at `image_size`, so resize and crop are identities."""
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True, "size": {"shortest_edge": image_size}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": list(IMAGE_MEAN), "image_std": list(IMAGE_STD),
        "do_convert_rgb": True,
    }


def build_tiny_clip(seed: int = 0, image_size: int = 32, caption_texts: list[str] | None = None):
    """(CLIPModel, tokenizer), randomly initialised; the same seed gives the same weights."""
    tokenizer = build_tokenizer(caption_texts or [])
    ids = tokenizer.convert_tokens_to_ids
    cfg = clip_config(len(tokenizer), ids(tokenizer.pad_token), ids(tokenizer.bos_token), ids(tokenizer.eos_token),
                      image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(cfg)
    return model.eval(), tokenizer
