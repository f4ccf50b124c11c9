"""Detectors behind GenEval's one interface (`geneval.Detector`: every detection of an image, all classes, raw
scores), so the judging code (`geneval.select`, `judge`) serves real images and the shapes world alike.

- `Mask2FormerDetector`: GenEval's detector for real images, Mask2Former instance segmentation on COCO, here
  transformers' `Mask2FormerForUniversalSegmentation` loaded from a local directory (offline), its class names
  mapped to GenEval's 80 (`geneval_labels`).
- `ShapesDetector`: the shapes world's colour-threshold detector (`data.detector`), its shapes as classes.

How transformers scores an instance, read from its source (``Mask2FormerImageProcessor*``
``.post_process_instance_segmentation``, transformers 5.23), against mmdet's Mask2Former as GenEval runs it
(mmdet 2.x ``MaskFormerFusionHead.instance_postprocess``, config mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco,
``test_cfg.max_per_image=100``):

- the same score: softmax over the classes and "no object", the no-object column dropped; the top k of all
  query x class pairs (transformers: k = the model's queries, 100 for COCO; mmdet: k = max_per_image = 100), each
  scored by its class probability times its mask score, the mean sigmoid of the query's mask logits over the
  pixels where the logit is > 0; a query may appear under several classes. The box is the binary mask's tight
  box, (x0, y0, last column + 1, last row + 1), as mmdet's ``mask2bbox`` (here `mask_box`).
- where the mask is read: mmdet upsamples the mask logits (1/4 of the network input) bilinearly to the padded
  input, crops the padding, upsamples bilinearly to the original image and binarises and averages there;
  transformers resizes the logits bilinearly to a fixed 384 x 384, binarises and averages there, then
  upsamples the binary mask to the image by nearest neighbour. So mask scores differ slightly and masks and
  boxes are quantised to that grid (4/3 px steps at 512 px).
- transformers drops empty masks (mmdet keeps them with a zero box and score 0: neither passes GenEval's 0.3)
  and rounds scores to 6 decimals.
- test-time resize: the directory's ``preprocessor_config.json`` (PIL bilinear, ImageNet mean/std, sides rounded
  to multiples of 32); mmdet's test pipeline resizes to 1333 x 800 keeping the ratio and pads to 32 (OpenCV
  bilinear, the same mean/std). Set the file's size to ``{"shortest_edge": 800, "longest_edge": 1333}`` to match.
- the weights: transformers' facebook/mask2former-swin-small-coco-instance (the Mask2Former authors' Swin-S
  COCO-instance model) is not mmdet's GenEval checkpoint (mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco), so
  GenEval numbers from it are not GenEval's published ones; the difference has not been measured here.

The processor runs with ``threshold=0`` and ``return_binary_maps=True`` (every query's own mask; the default
segmentation map would let later instances overwrite earlier ones where they overlap): GenEval's thresholds are
`geneval.select`'s.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np
from PIL import Image

from orchestrator.data.detector import Detection, detect_with_masks
from orchestrator.data.loaders.geneval import OBJECT_NAMES
from orchestrator.data.shapes import SHAPES, SIZE_FRACTION

from .geneval import ObjectDetection

__all__ = ["IDEAL_FILL", "LABEL_ALIASES", "Mask2FormerDetector", "ShapesDetector", "detector_labels",
           "geneval_labels", "mask_box", "shape_confidence", "size_class"]

# Other spellings of GenEval's COCO names (after lower-casing, "_"/"-" to spaces): COCO's own ("mouse", "remote",
# "keyboard", which detectron2, mmdet and transformers' COCO id2label use) and the VOC-style ones some exports use.
LABEL_ALIASES = {
    "mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard", "tvmonitor": "tv",
    "tv monitor": "tv", "motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch",
    "pottedplant": "potted plant", "diningtable": "dining table", "cellphone": "cell phone",
    "hair dryer": "hair drier", "doughnut": "donut",
}


def _normalised(label: str) -> str:
    return re.sub(r"\s+", " ", str(label).replace("_", " ").replace("-", " ")).strip().lower()


def geneval_labels(id2label: Mapping[Any, str], where: str = "the detector") -> dict[int, str]:
    """{class id: GenEval name} for a COCO-instance detector's labels, which must be GenEval's 80 classes, each
    once, in any order and in COCO's or GenEval's spelling (`LABEL_ALIASES`). Anything else is a ValueError naming
    the labels: a class GenEval cannot name, one named twice, or a GenEval class the detector lacks (its prompts
    could never pass)."""
    known = set(OBJECT_NAMES)
    mapped: dict[int, str] = {}
    unknown: list[str] = []
    for key, label in sorted(((int(k), v) for k, v in id2label.items())):
        name = _normalised(label)
        name = name if name in known else LABEL_ALIASES.get(name, name)
        if name in known:
            mapped[key] = name
        else:
            unknown.append(repr(label))
    problems = []
    if unknown:
        problems.append(f"labels {', '.join(unknown)} are not GenEval's COCO class names (nor a known spelling of one)")
    twice = sorted({n for n in mapped.values() if list(mapped.values()).count(n) > 1})
    if twice:
        problems.append("labels " + "; ".join(
            " and ".join(repr(id2label.get(k, id2label.get(str(k)))) for k, n in mapped.items() if n == name)
            + f" are all {name!r}" for name in twice))
    missing = [n for n in OBJECT_NAMES if n not in mapped.values()]
    if missing and not unknown:
        problems.append(f"it has no class for GenEval's {', '.join(map(repr, missing))}")
    if problems:
        raise ValueError(f"{where} cannot judge GenEval: {'; '.join(problems)} (it must detect GenEval's 80 COCO "
                         f"classes)")
    return mapped


def detector_labels(source: str | Path) -> dict[int, str]:
    """`geneval_labels` of a detector directory's config.json, without loading its weights (a requirement check)."""
    path = Path(source)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a detector directory (config.json: {exc})") from None
    if "id2label" not in config:
        raise ValueError(f"{path}/config.json has no id2label: not a detector trained on COCO's classes")
    return geneval_labels(config["id2label"], where=str(path))


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """A bool mask's tight box (x0, y0, x1, y1), x1 and y1 one past the last column and row (mmdet's mask2bbox);
    (0, 0, 0, 0) for an empty mask."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if not len(cols):
        return (0.0, 0.0, 0.0, 0.0)
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def image_processor_class() -> type:
    """transformers' Mask2Former image processor class that needs no torchvision."""
    try:  # transformers 5: the PIL backend by name (the default class needs torchvision, never installed here)
        from transformers import Mask2FormerImageProcessorPil as processor
    except ImportError:  # transformers 4
        from transformers import Mask2FormerImageProcessor as processor
    return processor


class Mask2FormerDetector:
    """Mask2Former instance segmentation as a `geneval.Detector` (see the module docstring for its scores).

    `path`: a local directory in transformers' format (config.json, weights, preprocessor_config.json), e.g.
    facebook/mask2former-swin-small-coco-instance downloaded ahead of time; loaded offline. Its labels must map
    to GenEval's 80 COCO names (`geneval_labels`), or it is refused naming them.
    """

    def __init__(self, path: str | Path, device: Any = "cpu", name: str | None = None):
        import torch
        from transformers import Mask2FormerForUniversalSegmentation

        path = Path(path)
        missing = [f for f in ("config.json", "preprocessor_config.json") if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{path} is not a Mask2Former directory in transformers' format (missing "
                                    f"{', '.join(missing)})")
        self.device = torch.device(device)
        model = Mask2FormerForUniversalSegmentation.from_pretrained(path, local_files_only=True)
        self.labels = geneval_labels(model.config.id2label, where=str(path))
        self.model = model.to(self.device).eval()
        self.processor = image_processor_class().from_pretrained(path, local_files_only=True)
        self.name = name or path.name

    @property
    def classnames(self) -> tuple[str, ...]:
        return tuple(self.labels.values())

    def __call__(self, image: Image.Image) -> list[ObjectDetection]:
        import torch

        rgb = image.convert("RGB")
        inputs = self.processor(images=rgb, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(pixel_values=inputs["pixel_values"].to(self.device),
                             pixel_mask=inputs["pixel_mask"].to(self.device))
        # The post-processing builds its maps on the CPU: hand it the two outputs it reads, there.
        logits = SimpleNamespace(class_queries_logits=out.class_queries_logits.float().cpu(),
                                 masks_queries_logits=out.masks_queries_logits.float().cpu())
        [res] = self.processor.post_process_instance_segmentation(
            logits, threshold=0.0, target_sizes=[(rgb.height, rgb.width)], return_binary_maps=True)
        segments = res["segments_info"]
        if not segments:
            return []
        maps = res["segmentation"].numpy() > 0.5  # [instances, H, W], one per entry of segments_info
        return [ObjectDetection(self.labels[seg["label_id"]], seg["score"], mask_box(mask), mask)
                for seg, mask in zip(segments, maps)]


# How full a clean shape's box is: a square fills it, a circle pi/4 of it, a triangle half.
IDEAL_FILL = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}


def shape_confidence(det: Detection) -> tuple[int, float]:
    """The shapes detector's confidence in a blob, for ranking: its pixel area first (a fragment or speck is
    small), then how close its fill ratio is to its shape's ideal."""
    return det.area, -abs(det.fill - IDEAL_FILL.get(det.shape, det.fill))


def size_class(det: Detection, image_size: int) -> str:
    """'small' or 'large' by the box's longer side, split halfway between the two drawn sizes."""
    cut = (SIZE_FRACTION["small"] + SIZE_FRACTION["large"]) / 2 * image_size
    return "large" if max(det.box[2], det.box[3]) > cut else "small"


class ShapesDetector:
    """The shapes world's detector (`data.detector.detect_with_masks`) as a `geneval.Detector`: class = shape,
    box from its x, y, w, h, mask = its blob, attributes = its palette colour and size class (`size_class`), in
    the data detector's order.

    Scores. The detector has no probabilities: every blob of at least its `min_area` (its own speckle filter) is a
    detection it is sure of, so every score clears GenEval's thresholds (0.3; 0.9 for counting). A fixed 1.0 would
    leave the order among a class's detections to `geneval.rank_order`'s tie rule (the last found first); instead
    the scores are 1 - 0.05 * rank / n in (0.95, 1], rank by `shape_confidence` (ties in the order found), so "the
    most confident detection of each object" is a whole shape, not a fragment beside it.
    """
    name = "shapes"

    def __init__(self, **detect_kw: Any):
        self.classnames: tuple[str, ...] = tuple(SHAPES)
        self.detect_kw = detect_kw

    def __call__(self, image: Image.Image | np.ndarray) -> list[ObjectDetection]:
        found = detect_with_masks(image, **self.detect_kw)
        side = max(image.size) if isinstance(image, Image.Image) else max(np.asarray(image).shape[:2])
        order = sorted(range(len(found)), key=lambda i: shape_confidence(found[i][0]), reverse=True)  # stable
        rank = {i: r for r, i in enumerate(order)}
        out = []
        for i, (det, mask) in enumerate(found):
            x, y, w, h = det.box
            out.append(ObjectDetection(det.shape, 1.0 - 0.05 * rank[i] / len(found), (x, y, x + w, y + h), mask,
                                       (det.colour, size_class(det, side))))
        return out
