"""Mask2Former configs for tests and benchmarks, built with random weights (no download): a tiny one for the CPU,
and GenEval's architecture (Swin-S, 100 queries, COCO's 80 instance classes) for timing it on a GPU.

`save_random_mask2former` writes a directory `detectors.Mask2FormerDetector` loads: config.json, weights and a
preprocessor_config.json. Labels are COCO's spelling ("mouse", "remote", "keyboard"), as detectron2's and
transformers' COCO-instance models have them, so loading one exercises the mapping to GenEval's names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.data.loaders.geneval import OBJECT_NAMES

__all__ = ["COCO_LABELS", "mask2former_config", "save_random_mask2former"]

_COCO_SPELLING = {"computer mouse": "mouse", "tv remote": "remote", "computer keyboard": "keyboard"}
COCO_LABELS: tuple[str, ...] = tuple(_COCO_SPELLING.get(n, n) for n in OBJECT_NAMES)


def mask2former_config(size: str = "tiny", labels: tuple[str, ...] = COCO_LABELS) -> Any:
    """'tiny': a few hundred thousand parameters (Swin of width 16, one block per stage, 32-d decoder, 8 queries);
    'swin-s': transformers' defaults, facebook/mask2former-swin-small-coco-instance's architecture (Swin-S:
    width 96, depths 2-2-18-2; 256-d pixel decoder of 6 layers, 9+1 decoder layers, 100 queries)."""
    from transformers import Mask2FormerConfig, SwinConfig

    id2label = dict(enumerate(labels))
    label2id = {v: k for k, v in id2label.items()}
    if size == "swin-s":
        return Mask2FormerConfig(num_labels=len(labels), id2label=id2label, label2id=label2id)
    if size != "tiny":
        raise ValueError(f"unknown Mask2Former config {size!r} (tiny or swin-s)")
    swin = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                      window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    return Mask2FormerConfig(backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32,
                             encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1, decoder_layers=2,
                             num_attention_heads=2, num_queries=8, num_labels=len(labels), id2label=id2label,
                             label2id=label2id)


def save_random_mask2former(path: str | Path, config: Any, *, seed: int = 0, input_size: int = 64,
                            favour: str | None = None) -> Path:
    """A randomly initialised Mask2Former with its image processor (inputs resized to `input_size` on the short
    side, at most that on the long side) saved to `path`. `favour`: a label whose class logit is raised above all
    others for every query, so that each query is a confident detection of it (random weights detect nothing
    otherwise: what a test of the colour path needs)."""
    import torch
    from transformers import Mask2FormerForUniversalSegmentation

    from .detectors import image_processor_class

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Mask2FormerForUniversalSegmentation(config).eval()
    if favour is not None:
        with torch.no_grad():
            model.class_predictor.weight.zero_()
            model.class_predictor.bias.zero_()
            model.class_predictor.bias[config.label2id[favour]] = 20.0
    path = Path(path)
    model.save_pretrained(path)
    image_processor_class()(size={"shortest_edge": input_size, "longest_edge": input_size}).save_pretrained(path)
    return path
