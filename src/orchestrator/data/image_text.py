"""Image-caption data the trainer reads: a shard held in memory as uint8 pixels and strings.

    data = open_image_text(manifest.data.train, resolution=64, base_dir=loaded.base_dir)

`open_image_text` turns any source that pairs images with captions into training data for a
generator: the generated shapes world, or files read through the benchmark loaders
(imagefolder, GQA-Captions shards with their GQA images, Winoground's caption/image pairs).
Every image is decoded, made RGB, resized so its short side is the resolution, centre-cropped
square, and only then kept, so a folder of large photos costs resolution² × 3 bytes per image.
Same files and settings give the same bytes, hence the same `content_hash` (the latent cache's
key), in every trial.

`load_image_text_dir` reads the shapes world's directory layout (images/<id>.png +
captions.jsonl with one field per caption style).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from orchestrator.data.worlds import DEFAULT_WORLD
from orchestrator.manifest.schema import IMAGE_TEXT_KINDS
from orchestrator.storage.location import resolve_location

from .loaders import BlobRoot, DataFormatError, ImageRef, SkipReport, open_loader
from .loaders.base import Role

if TYPE_CHECKING:
    from orchestrator.manifest.schema import DataSource
    from orchestrator.storage import BlobStore

log = logging.getLogger("orchestrator.data")

# What a broken image file raises while PIL decodes it (truncated, not an image, a bomb).
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclass
class ImageTextData:
    images: torch.Tensor   # uint8 [N, 3, H, W]
    captions: list[str]
    # What on_error: skip left out while reading (empty for generated data); not part of the
    # content hash: the same examples are the same data however they were reached.
    skips: SkipReport = field(default_factory=SkipReport, compare=False, repr=False)
    # Train on each image or its mirror image, drawn per step (the source's random_flip): a
    # property of how the data is used, so not part of the content hash either.
    random_flip: bool = field(default=False, compare=False)

    def __len__(self) -> int:
        return len(self.captions)

    @cached_property
    def content_hash(self) -> str:
        """sha256 of pixels and captions: the identity caches of this shard are keyed by."""
        h = hashlib.sha256()
        h.update(f"{tuple(self.images.shape)};".encode())
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(json.dumps(self.captions).encode())
        return h.hexdigest()

    def pixels(self, idx: torch.Tensor) -> torch.Tensor:
        """Float pixels in [-1, 1], the VAE's input range."""
        return self.images[idx].float().div(127.5).sub(1.0)


def load_image_text_dir(root: str | Path, caption: str = "generic") -> ImageTextData:
    root = Path(root)
    records = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines() if line.strip()]
    if records and caption not in records[0]:
        raise KeyError(f"{root / 'captions.jsonl'} has no caption field {caption!r}")
    images = [np.asarray(Image.open(root / "images" / f"{r['image_id']}.png").convert("RGB")) for r in records]
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ImageTextData(pixels, [r[caption] for r in records])


def shapes_data(n: int, seed: int, size: int = 32, caption: str = "generic", world: str | None = None) -> ImageTextData:
    """Generate a shapes-world dataset (deterministic by seed; `world`: worlds.WORLDS, default mixed) and load it."""
    from orchestrator.data.shapes import write_shapes_dataset

    with tempfile.TemporaryDirectory(prefix="orch-shapes-") as tmp:
        write_shapes_dataset(Path(tmp) / "ds", n=n, seed=seed, size=size, world=world or DEFAULT_WORLD)
        return load_image_text_dir(Path(tmp) / "ds", caption)


# ---------------------------------------------------------------- any source -> training data

def open_image_text(src: DataSource, resolution: int, *, base_dir: Path | None = None,
                    store: BlobStore | None = None, role: Role = "train") -> ImageTextData:
    """The image-caption pairs of a manifest data source, at resolution × resolution.

    Kinds: ``shapes`` (generated: caption style `captions`, image size `size` or the
    resolution), ``imagefolder`` (options: caption_column, category_column, split),
    ``gqa-captions`` (options: images, the GQA images folder; `captions` picks a style when
    the shards carry several), ``winoground`` (caption_0 with image_0, caption_1 with image_1).
    `n` keeps the first n examples in file order (after `categories`; for Winoground an
    example is one caption with its image, two per pair). Relative roots and option paths
    resolve against `base_dir`. `store` (the manifest's blob store) is where a root that is
    neither an az:// URI nor an existing local path is looked up, as a prefix in it.
    `role`: what the data is for, "train" (data.train, the default) or "eval" (data.eval read
    by an eval suite); an imagefolder with split folders reads train, else test or validation.

    `random_flip` is carried to the result, not applied: the objective draws a flip per example
    and step from the run's generator (so exact resume holds), and the data stays the files'
    content.

    Raises ValueError for a kind that cannot train a generator, a filter that selects nothing
    (listing the values the data has) or an empty result; DataFormatError for a bad record
    (unless on_error: skip, which counts it in the result's `skips`).
    """
    data = _source_data(src, resolution, base_dir, store, role)
    data.random_flip = src.random_flip
    return data


def _source_data(src: DataSource, resolution: int, base_dir: Path | None, store: BlobStore | None,
                 role: Role) -> ImageTextData:
    if resolution < 1:
        raise ValueError(f"resolution must be positive, not {resolution}")
    if src.kind not in IMAGE_TEXT_KINDS:
        raise ValueError(f"data kind {src.kind!r} cannot train a generator; kinds that pair images with "
                         f"captions: {', '.join(IMAGE_TEXT_KINDS)}")
    if src.kind == "shapes":
        return _shapes(src, resolution)
    if src.captions is not None and src.kind != "gqa-captions":
        raise ValueError(f"data kind {src.kind!r} has one caption per image; `captions: {src.captions}` "
                         f"applies to shapes and gqa-captions only")
    return _read(src, resolution, base_dir, store, role)


def _shapes(src: DataSource, resolution: int) -> ImageTextData:
    if src.categories:
        raise ValueError("data kind 'shapes' has no categories to filter on; remove `categories`")
    if src.n is None:
        raise ValueError("data kind 'shapes' needs n (number of examples)")
    return shapes_data(src.n, src.seed, src.size or resolution, src.captions or "generic", src.world)


@dataclass(frozen=True)
class _Pair:
    """One training example before decoding, with where it was named (for messages)."""
    image: ImageRef
    caption: str
    file: str
    line: int | None
    unit: str = "line"


def _read(src: DataSource, resolution: int, base_dir: Path | None, store: BlobStore | None,
          role: Role) -> ImageTextData:
    loader = _open(src, base_dir, store, role=role)
    where = f"data kind {src.kind!r} at {loader.root.describe()}"
    pairs = _PAIRS[src.kind](src)
    matched: set[str] = set()  # the filter's categories some example matched
    decode = _Decoder(resolution)
    arrays: list[np.ndarray | None] = []
    captions: list[str] = []
    full = False
    for example in loader:
        if loader.categories:
            matched.update(loader.matched_categories(example))
        for pair in pairs(example):
            try:
                arrays.append(decode(pair.image))
            except _UNREADABLE as exc:
                # Through the loader's policy: raised, or counted with the pass's other skips.
                named = "" if pair.file == pair.image.uri else f" {pair.image}"  # GQA: the file is the image
                loader.bad("unreadable image", DataFormatError(
                    pair.file, pair.line, f"unreadable image{named}: {exc}", unit=pair.unit))
                continue
            captions.append(pair.caption)
            full = src.n is not None and len(captions) >= src.n
            if full:
                break
        if full:
            break  # the loader logs its skips when it finishes a pass; this one was cut short
    skips = loader.skips
    if full and skips:
        log.warning("%s: %s", where, skips.summary())
    decode.clear()
    missing = loader.unmet_categories(matched)  # a default filter that partly matched is fine
    if missing:
        _check_categories(src, base_dir, store, missing, role)
    if not captions:
        raise ValueError(f"{where} gave no examples" + (f" ({skips.summary()})" if skips else ""))
    return ImageTextData(_stack(arrays, resolution), captions, skips)


def _open(src: DataSource, base_dir: Path | None, store: BlobStore | None, **options: Any):
    """The kind's loader over the source, without `n`: n counts training examples (decoded
    images), which the loader cannot know (a Winoground pair gives two, a broken image none)."""
    root: Any = src.root
    if store is not None and root is not None:
        # The house rule for locations (storage.location): az:// as written, an existing local
        # path as files, anything else a prefix in the store handed in (the manifest's blobs).
        loc = resolve_location(root, base_dir=base_dir, store=store)
        if loc.is_local:
            root = str(loc.path)  # the loader reads it as files (or as a local blob store: shards)
        else:
            prefix = loc.prefix.strip("/")
            root = BlobRoot(loc.store, prefix, uri=root if loc.store is not store else f"{store!r}/{prefix}")
    # model_copy does not validate: the root may be a DataRoot, which open_loader passes through.
    return open_loader(src.model_copy(update={"root": root, "n": None}), base_dir, **options)


def _check_categories(src: DataSource, base_dir: Path | None, store: BlobStore | None,
                      missing: list[str], role: Role) -> None:
    """Categories unmatched in a pass cut short by `n`: one more pass over the annotations only
    (no images), in which the loader itself refuses a category the data does not have. A
    default filter (the source names none) stays the loader's default, held to its rule."""
    update: dict[str, Any] = {"on_error": "skip"}
    if src.categories:
        update["categories"] = missing
    lister = _open(src.model_copy(update=update), base_dir, store, check_images=False, role=role)
    for _ in lister:
        pass


# ---------------------------------------------------------------- examples -> (image, caption)

def _imagefolder_pairs(src: DataSource) -> Callable[[Any], Iterator[_Pair]]:
    def pairs(ex) -> Iterator[_Pair]:
        yield _Pair(ex.image, ex.caption, ex.file, ex.line)
    return pairs


def _winoground_pairs(src: DataSource) -> Callable[[Any], Iterator[_Pair]]:
    def pairs(ex) -> Iterator[_Pair]:
        file, line, unit = _split_source(ex.source)
        yield _Pair(ex.image_0, ex.caption_0, file, line, unit)
        yield _Pair(ex.image_1, ex.caption_1, file, line, unit)
    return pairs


def _gqa_pairs(src: DataSource) -> Callable[[Any], Iterator[_Pair]]:
    style = src.captions

    def pairs(ex) -> Iterator[_Pair]:
        caption = ex.caption
        if style is not None:
            if style not in ex.styles:
                held = ["caption (the default: leave `captions` unset)"] + sorted(ex.styles)
                raise ValueError(f"gqa-captions record {ex.question_id!r} has no {style!r} caption; "
                                 f"the shards hold: {', '.join(held)}")
            caption = ex.styles[style]
        yield _Pair(ex.image, caption, ex.image.uri, None)
    return pairs


_PAIRS: dict[str, Callable[[DataSource], Callable[[Any], Iterator[_Pair]]]] = {
    "imagefolder": _imagefolder_pairs, "winoground": _winoground_pairs, "gqa-captions": _gqa_pairs,
}


def _split_source(source: str) -> tuple[str, int | None, str]:
    """A loader's 'file:line' or 'file, row N' back into DataFormatError's parts."""
    head, sep, num = source.rpartition(", row ")
    if sep and num.isdigit():
        return head, int(num), "row"
    head, sep, num = source.rpartition(":")
    if sep and num.isdigit():
        return head, int(num), "line"
    return source, None, "line"


# ---------------------------------------------------------------- pixels

class _Decoder:
    """Decodes images to [size, size, 3] uint8, remembering the last few: GQA names one image
    in many records (a question each), and they tend to come together."""

    def __init__(self, size: int, keep: int = 64) -> None:
        self.size, self.keep = size, keep
        self.recent: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, ref: ImageRef) -> np.ndarray:
        key = ref.uri if ref.data is None else None  # inline images are not looked up again
        if key is not None and key in self.recent:
            self.recent.move_to_end(key)
            return self.recent[key]
        local = ref.local_path
        source = local if local is not None else io.BytesIO(ref.read_bytes())
        with Image.open(source) as img:
            pixels = fit_square(img, self.size)
        if key is not None:
            self.recent[key] = pixels
            if len(self.recent) > self.keep:
                self.recent.popitem(last=False)
        return pixels

    def clear(self) -> None:
        self.recent.clear()


def fit_square(img: Image.Image, size: int) -> np.ndarray:
    """RGB, short side resized to `size`, centre-cropped to size × size: uint8 [size, size, 3].

    Bicubic: Pillow widens the kernel by the reduction factor, so a large downscale is
    antialiased (it averages like area resampling), and unlike area (box) it stays smooth when
    a small image is scaled up. A JPEG is first decoded at a reduced DCT scale (`draft`,
    1/2 to 1/8, never below `size` on either side), so a 24-megapixel photo never sits in
    memory at full size.
    """
    img.draft("RGB", (size, size))  # JPEG only; a no-op for other formats
    img.load()
    img = ImageOps.exif_transpose(img)  # camera photos carry their rotation in EXIF
    img = img.convert("RGB")
    w, h = img.size
    if min(w, h) != size:
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
        w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    if (w, h) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return np.array(img, dtype=np.uint8)  # a writable copy owned by numpy: the PIL image can go


def _stack(arrays: list[np.ndarray | None], size: int) -> torch.Tensor:
    """[N, 3, size, size] uint8, releasing each image once copied: memory peaks near one copy
    of the data instead of two (a list plus its stacked tensor)."""
    out = torch.empty((len(arrays), 3, size, size), dtype=torch.uint8)
    for i, a in enumerate(arrays):
        out[i] = torch.from_numpy(a).permute(2, 0, 1)
        arrays[i] = None
    return out
