"""A small detector for the shapes world: colour thresholding + connected components + geometry.

Each pixel takes the nearest palette colour (or the background) if it lies within `max_distance`
in RGB; each 8-connected blob of one colour with at least `min_area` pixels is an object.
Its shape comes from two scale-free features of the blob inside its box:
fill = area / box area (square ~1.0, circle ~pi/4, triangle ~1/2) and the share of pixels in the
top half (an apex-up triangle has ~1/4 there, a circle or square 1/2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from PIL import Image

from .shapes import BACKGROUND, COLOURS

SQUARE_MIN_FILL = 0.9
TRIANGLE_MAX_TOP_SHARE = 0.4


@dataclass(frozen=True)
class Detection:
    shape: str
    colour: str
    box: tuple[int, int, int, int]  # x, y, w, h (pixels x..x+w-1)
    centre: tuple[float, float]  # box centre, x + w/2, y + h/2 (the spatial rule's convention)
    area: int  # pixels in the blob
    fill: float  # area / (w * h)


def label_components(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label connected True regions 1..K in raster order of their first pixel (as scipy.ndimage.label).

    Vectorised union-find: hook each edge's larger root onto the smaller one, then compress paths
    by pointer jumping, until every edge joins pixels of one root (a few rounds for compact blobs).
    """
    if connectivity not in (4, 8):
        raise ValueError("connectivity must be 4 or 8")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    h, w = mask.shape
    idx = np.arange(h * w).reshape(h, w)
    shifts = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    src, dst = [], []
    for dy, dx in shifts:
        x0, x1 = max(0, -dx), w - max(0, dx)  # columns whose neighbour at +dx is inside
        a = idx[: h - dy, x0:x1]
        b = idx[dy:, x0 + dx: x1 + dx]
        both = mask.flat[a.ravel()] & mask.flat[b.ravel()]
        src.append(a.ravel()[both])
        dst.append(b.ravel()[both])
    ea, eb = np.concatenate(src), np.concatenate(dst)
    parent = np.arange(h * w)
    while True:
        ra, rb = parent[ea], parent[eb]
        if np.array_equal(ra, rb):
            break
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:  # pointer jumping until every pixel points at its root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
    roots = parent[mask.ravel()]
    uniq, inverse = np.unique(roots, return_inverse=True)  # roots are each blob's first pixel
    labels = np.zeros(h * w, dtype=np.int32)
    labels[mask.ravel()] = inverse + 1
    return labels.reshape(h, w), len(uniq)


def classify_shape(blob: np.ndarray) -> str:
    """Shape of a boolean blob cropped to its bounding box."""
    h, w = blob.shape
    area = int(blob.sum())
    if area == 0:
        raise ValueError("empty blob")
    if area / (w * h) >= SQUARE_MIN_FILL:
        return "square"
    rows = blob.sum(axis=1).astype(float)
    half = h / 2
    top = rows[: int(half)].sum() + (rows[int(half)] / 2 if h % 2 else 0.0)  # middle row split evenly
    return "triangle" if top / area < TRIANGLE_MAX_TOP_SHARE else "circle"


def colour_map(rgb: np.ndarray, palette: Mapping[str, tuple[int, int, int]] = COLOURS,
               background: tuple[int, int, int] = BACKGROUND, max_distance: float = 100.0) -> np.ndarray:
    """Per pixel: index into `palette` (0..P-1), or -1 for background / unclassifiable pixels."""
    ref = np.array([*palette.values(), background], dtype=np.float32)
    d = np.linalg.norm(rgb[:, :, None, :].astype(np.float32) - ref[None, None], axis=-1)
    nearest = d.argmin(axis=-1)
    ok = (d.min(axis=-1) <= max_distance) & (nearest < len(palette))
    return np.where(ok, nearest, -1)


def _as_rgb(image: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:  # floats in [0, 1] (e.g. a decoded model sample)
        arr = np.clip(np.rint(arr.astype(np.float64) * (255 if arr.max() <= 1.0 else 1)), 0, 255).astype(np.uint8)
    return arr


def detect(image: np.ndarray | Image.Image, *, palette: Mapping[str, tuple[int, int, int]] = COLOURS,
           background: tuple[int, int, int] = BACKGROUND, max_distance: float = 100.0,
           min_area: int | None = None) -> list[Detection]:
    """Objects in an image, sorted by (x, y, colour). `min_area` defaults to 1/256 of the image
    (4 px at 32x32, 16 px at 64x64), which drops speckle in generated images."""
    return [d for d, _ in detect_with_masks(image, palette=palette, background=background, max_distance=max_distance,
                                            min_area=min_area)]


def detect_with_masks(image: np.ndarray | Image.Image, *, palette: Mapping[str, tuple[int, int, int]] = COLOURS,
                      background: tuple[int, int, int] = BACKGROUND, max_distance: float = 100.0,
                      min_area: int | None = None) -> list[tuple[Detection, np.ndarray]]:
    """`detect`'s objects, in its order, each with its blob: a bool mask of the image's size (H x W)."""
    rgb = _as_rgb(image)
    h, w = rgb.shape[:2]
    min_area = max(2, (h * w) // 256) if min_area is None else min_area
    cmap = colour_map(rgb, palette, background, max_distance)
    names = list(palette)
    out: list[tuple[Detection, np.ndarray]] = []
    for ci, name in enumerate(names):
        labels, k = label_components(cmap == ci)
        for lab in range(1, k + 1):
            mask = labels == lab
            ys, xs = np.nonzero(mask)
            if len(ys) < min_area:
                continue
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
            bw, bh = x1 - x0 + 1, y1 - y0 + 1
            blob = mask[y0: y1 + 1, x0: x1 + 1]
            out.append((Detection(classify_shape(blob), name, (x0, y0, bw, bh),
                                  (x0 + bw / 2, y0 + bh / 2), len(ys), len(ys) / (bw * bh)), mask))
    return sorted(out, key=lambda item: (item[0].box[0], item[0].box[1], item[0].colour))
