"""CLIP as an encoder and scorer: any CLIP in transformers' format, and the tiny shapes-world CLIP
(trained contrastively by `train_tiny_clip`, saved in transformers' format)."""
from .encoder import ClipEncoder, Preprocess, images_to_tensor, load_clip, load_clip_dir, save_clip
from .tiny import build_tiny_clip, clip_config, preprocessor_config
from .train import ClipTrainData, ClipTrainer, ClipTrainResult, contrastive_loss, shapes_clip_data, train_tiny_clip

__all__ = [
    "ClipEncoder", "ClipTrainData", "ClipTrainResult", "ClipTrainer", "Preprocess", "build_tiny_clip", "clip_config",
    "contrastive_loss", "images_to_tensor", "load_clip", "load_clip_dir", "preprocessor_config", "save_clip",
    "shapes_clip_data", "train_tiny_clip",
]
