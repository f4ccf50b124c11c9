"""A CLIP model as an image/text encoder: load, save, embed, score.

Loads any CLIP saved in transformers' format (config.json + weights, the tokenizer files,
preprocessor_config.json) from a local directory, or from a blob prefix (downloaded first), offline.
Preprocessing follows preprocessor_config.json (resize the shortest edge, centre crop, normalise)
with torch ops on batches rather than CLIPImageProcessor, whose default backend needs torchvision;
the bicubic resize is antialiased like PIL's, so results are close to, not bit-identical with, it.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoTokenizer, CLIPModel

from orchestrator.storage.location import put_dir, resolve_location

MARKER = "config.json"  # uploaded last: a reader that finds it knows the rest is there
ImageBatch = torch.Tensor | np.ndarray | Sequence[Image.Image | np.ndarray]


def images_to_tensor(images: ImageBatch) -> torch.Tensor:
    """[N, 3, H, W] float in [0, 1] from a float tensor in [0, 1], uint8 arrays/tensors, or PIL images."""
    if isinstance(images, torch.Tensor):
        t = images
    elif isinstance(images, np.ndarray):
        t = torch.from_numpy(images)
        if t.ndim == 4 and t.shape[-1] in (3, 4) and t.shape[1] not in (3, 4):
            t = t[..., :3].permute(0, 3, 1, 2)
    else:
        arrs = [np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im) for im in images]
        if not arrs:
            return torch.zeros(0, 3, 1, 1)
        t = torch.from_numpy(np.stack(arrs))[..., :3].permute(0, 3, 1, 2)
    if t.ndim != 4 or t.shape[1] != 3:
        raise ValueError(f"expected images [N, 3, H, W], got shape {tuple(t.shape)}")
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


def _side(value: Any, key: str) -> int:
    if isinstance(value, dict):
        return int(value.get(key) or value.get("height") or value.get("shortest_edge"))
    return int(value)


@dataclass
class Preprocess:
    shortest_edge: int | None
    crop: int | None
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "Preprocess":
        size = _side(cfg["size"], "shortest_edge") if cfg.get("do_resize", True) and "size" in cfg else None
        crop = _side(cfg["crop_size"], "height") if cfg.get("do_center_crop", True) and "crop_size" in cfg else None
        normalise = cfg.get("do_normalize", True)
        mean = torch.tensor(cfg.get("image_mean", [0.0] * 3) if normalise else [0.0] * 3).view(1, 3, 1, 1)
        std = torch.tensor(cfg.get("image_std", [1.0] * 3) if normalise else [1.0] * 3).view(1, 3, 1, 1)
        return cls(size, crop, mean, std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> the vision tower's input."""
        if self.shortest_edge is not None and min(x.shape[-2:]) != self.shortest_edge:
            h, w = x.shape[-2:]
            scale = self.shortest_edge / min(h, w)
            size = (max(self.shortest_edge, round(h * scale)), max(self.shortest_edge, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        if self.crop is not None:
            h, w = x.shape[-2:]
            top, left = max(0, (h - self.crop) // 2), max(0, (w - self.crop) // 2)
            x = x[:, :, top:top + self.crop, left:left + self.crop]
        return (x - self.mean.to(x)) / self.std.to(x)


def _pooled(out: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projection; 4 a tensor
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipEncoder:
    """Normalised CLIP embeddings and cosine scores; `name` says which CLIP (for reports)."""

    def __init__(self, model: CLIPModel, tokenizer: Any, preprocess: Preprocess, name: str = "clip",
                 device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.name = name
        self.device = torch.device(device)
        self.max_length = min(int(getattr(tokenizer, "model_max_length", 77) or 77),
                              int(model.config.text_config.max_position_embeddings))

    # ---- embeddings -----------------------------------------------------------------
    def _text_inputs(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Projected, unnormalised text embeddings (with grad; the trainer uses this)."""
        return _pooled(self.model.get_text_features(**self._text_inputs(texts)))

    def image_features(self, images: ImageBatch) -> torch.Tensor:
        pixels = self.preprocess(images_to_tensor(images).to(self.device))
        return _pooled(self.model.get_image_features(pixel_values=pixels))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """[N, D] L2-normalised, float32, on the CPU."""
        outs = [F.normalize(self.text_features(texts[i:i + batch_size]).float(), dim=-1).cpu()
                for i in range(0, len(texts), batch_size)]
        return torch.cat(outs) if outs else torch.zeros(0, self.embed_dim)

    @torch.inference_mode()
    def encode_images(self, images: ImageBatch, batch_size: int = 64) -> torch.Tensor:
        x = images_to_tensor(images)
        outs = [F.normalize(self.image_features(x[i:i + batch_size]).float(), dim=-1).cpu()
                for i in range(0, len(x), batch_size)]
        return torch.cat(outs) if outs else torch.zeros(0, self.embed_dim)

    @torch.inference_mode()
    def encode_image_list(self, images: Sequence[Image.Image], batch_size: int = 64) -> torch.Tensor:
        """[N, D] L2-normalised, float32, on the CPU, for images of differing sizes (crops): each is
        preprocessed on its own (resize, centre crop), as a per-image transform would, then batched."""
        if not images:
            return torch.zeros(0, self.embed_dim)
        pixels = [self.preprocess(images_to_tensor([im]).to(self.device)) for im in images]
        if len({tuple(p.shape) for p in pixels}) > 1:  # a config without a centre crop: one at a time
            feats = [_pooled(self.model.get_image_features(pixel_values=p)) for p in pixels]
        else:
            x = torch.cat(pixels)
            feats = [_pooled(self.model.get_image_features(pixel_values=x[i:i + batch_size]))
                     for i in range(0, len(x), batch_size)]
        return F.normalize(torch.cat(feats).float(), dim=-1).cpu()

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    # ---- scores (the Winoground / R-precision scorer interface) ---------------------
    def similarity(self, captions: Sequence[str], images: ImageBatch) -> np.ndarray:
        """Cosine similarities [len(captions), len(images)], float64."""
        t, v = self.encode_texts(captions), self.encode_images(images)
        return (t.double() @ v.double().T).numpy()

    def score_pairs(self, captions: Sequence[str], images: ImageBatch) -> np.ndarray:
        """s(caption_k, image_k) for each k."""
        t, v = self.encode_texts(captions), self.encode_images(images)
        return (t.double() * v.double()).sum(-1).numpy()

    def __call__(self, caption: str, image: Any) -> float:
        return float(self.score_pairs([caption], [image] if not isinstance(image, torch.Tensor) else image[None])[0])

    # ---- files ----------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        cfg = {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": self.preprocess.shortest_edge is not None,
            "size": {"shortest_edge": self.preprocess.shortest_edge or 0}, "resample": 3,
            "do_center_crop": self.preprocess.crop is not None,
            "crop_size": {"height": self.preprocess.crop or 0, "width": self.preprocess.crop or 0},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": self.preprocess.mean.flatten().tolist(), "image_std": self.preprocess.std.flatten().tolist(),
            "do_convert_rgb": True,
        }
        (out / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        return out


def load_clip_dir(path: str | Path, device: str | torch.device = "cpu", name: str | None = None) -> ClipEncoder:
    path = Path(path)
    missing = [f for f in (MARKER, "preprocessor_config.json") if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a CLIP directory in transformers' format "
                                f"(missing {', '.join(missing)})")
    model = CLIPModel.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    pre = Preprocess.from_config(json.loads((path / "preprocessor_config.json").read_text()))
    return ClipEncoder(model, tokenizer, pre, name or path.name, device)


def load_clip(source: str | Path, store: Any = None, device: str | torch.device = "cpu") -> ClipEncoder:
    """From a local directory / file:// URI, an az://container/prefix URI, or a prefix in `store`."""
    try:
        loc = resolve_location(str(source), store=store)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no CLIP directory: {exc}") from None
    if not loc.has(MARKER):
        where = loc.path if loc.is_local else f"blob prefix {loc.prefix!r} in {loc.store!r}"
        raise FileNotFoundError(f"no CLIP model under {where} (no {MARKER})")
    if loc.is_local:
        return load_clip_dir(loc.path, device)
    with loc.local_dir() as path:
        return load_clip_dir(path, device, name=loc.prefix.rsplit("/", 1)[-1] or str(source))


def save_clip(encoder: ClipEncoder, dest: str | Path, store: Any = None) -> str:
    """To a local directory, or to a blob prefix (config.json last) when a store is given."""
    if store is None:
        return str(encoder.save(str(dest)[len("file://"):] if str(dest).startswith("file://") else dest))
    with tempfile.TemporaryDirectory(prefix="orch-clip-") as tmp:
        encoder.save(tmp)
        put_dir(store, tmp, str(dest))  # config.json (MARKER) last
    return str(dest)
