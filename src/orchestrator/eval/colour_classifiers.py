"""Colour classifiers behind GenEval's interface (`geneval.ColourClassifier`: one of `geneval.COLORS` per detection).

- `ClipColourClassifier`: GenEval's, zero-shot CLIP as clip_benchmark's ``zero_shot_classifier`` builds it: per
  object class, each colour's three texts (`geneval.colour_texts`) are encoded, L2-normalised, averaged and
  normalised again (cached per class); each detection's `geneval.crop_for_colour` crop is encoded with the
  encoder's own preprocessing, and the colour whose text embedding has the highest cosine is its colour (GenEval
  scales the cosines by 100 before the argmax, which changes nothing). GenEval runs ViT-L/14 "openai" through
  open_clip under autocast (fp16 on CUDA); here transformers' CLIPModel, in its loaded dtype.
- `ShapesColourClassifier`: the shapes world's colours are a palette: the detection's colour is the palette
  colour most of its pixels take (over its mask, else its box), by GenEval's colour name where the palette's name
  is one (red, green, blue and yellow all are).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .geneval import BACKGROUND, COLORS, ObjectDetection, colour_texts, crop_for_colour

__all__ = ["ClipColourClassifier", "ShapesColourClassifier"]


class ClipColourClassifier:
    """Zero-shot CLIP colour of each detection (GenEval's ``color_classification``); `encoder` a `ClipEncoder`."""

    def __init__(self, encoder: Any, colours: Sequence[str] = COLORS, background: str = BACKGROUND):
        self.encoder = encoder
        self.colours = tuple(colours)
        self.background = background
        self._weights: dict[str, torch.Tensor] = {}

    @property
    def name(self) -> str:
        return self.encoder.name

    def text_weights(self, classname: str) -> torch.Tensor:
        """[colours, D]: per colour, the normalised mean of its three normalised text embeddings (cached)."""
        if classname not in self._weights:
            texts = colour_texts(classname)
            flat = [t for c in self.colours for t in texts[c]]
            emb = self.encoder.encode_texts(flat).float().view(len(self.colours), -1, self.encoder.embed_dim)
            mean = emb.mean(dim=1)
            self._weights[classname] = mean / mean.norm(dim=-1, keepdim=True)
        return self._weights[classname]

    def crops(self, image: Image.Image, detections: Sequence[ObjectDetection]) -> list[Image.Image]:
        crops = [crop_for_colour(image, d, self.background) for d in detections]
        for crop, det in zip(crops, detections):
            if crop.width < 1 or crop.height < 1:
                raise ValueError(f"cannot classify the colour of a {det.classname} detection with an empty box "
                                 f"{det.box}")
        return crops

    def cosines(self, image: Image.Image, detections: Sequence[ObjectDetection], classname: str) -> torch.Tensor:
        """[detections, colours]: each crop's cosine with each colour's text embedding."""
        if not detections:
            return torch.zeros(0, len(self.colours))
        emb = self.encoder.encode_image_list(self.crops(image, detections)).float()
        return emb @ self.text_weights(classname).T

    def __call__(self, image: Image.Image, detections: list[ObjectDetection], classname: str) -> list[str]:
        return [self.colours[int(i)] for i in self.cosines(image, detections, classname).argmax(dim=1)]


class ShapesColourClassifier:
    """The palette colour most of a detection's pixels take (`data.detector.colour_map`), by GenEval's name."""
    name = "shapes-palette"

    def __init__(self, palette: Mapping[str, tuple[int, int, int]] | None = None, **colour_map_kw: Any):
        from orchestrator.data.shapes import COLOURS

        self.palette = dict(palette or COLOURS)
        self.colour_map_kw = colour_map_kw

    def __call__(self, image: Image.Image, detections: list[ObjectDetection], classname: str) -> list[str]:
        from orchestrator.data.detector import colour_map

        if not detections:
            return []
        cmap = colour_map(np.asarray(image.convert("RGB")), self.palette, **self.colour_map_kw)
        names = list(self.palette)  # GenEval's colour names already (red, green, blue, yellow); another passes
        out = []                    # through and matches no GenEval prompt
        for det in detections:
            if det.mask is not None:
                pixels = cmap[np.asarray(det.mask, dtype=bool)]
            else:
                x0, y0, x1, y1 = (int(round(v)) for v in det.box)
                pixels = cmap[y0:y1, x0:x1].ravel()
            counts = np.bincount(pixels[pixels >= 0], minlength=len(names))
            out.append(names[int(counts.argmax())] if counts.sum() else "none")
        return out
