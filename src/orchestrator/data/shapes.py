"""The shapes world: procedural scenes, their GQA-format scene graphs, captions and Winoground pairs.

Example ``i`` of a dataset with seed ``s`` is drawn from ``numpy.random.default_rng([s, i])``, so it
does not depend on how many examples are generated. Objects never overlap and keep a gap, and are
drawn with PIL's ImageDraw (no anti-aliasing) in pure palette colours, so the detector can
threshold them and every relation is well defined. Boxes are (x, y, w, h) in pixels with
``x .. x+w-1`` the covered columns; the drawn pixels span exactly the box.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from . import spatial_rule
from .captions import (
    WEB_RELATIONS,
    SpatialFact,
    counting_caption,
    described_caption,
    generic_caption,
    spatial_caption,
    statement_truth,
    web_caption,
)
from .scene_graph import Relation, SceneGraph, SGObject, dumps_scene_graphs
from .worlds import DEFAULT_WORLD, get_world

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0), "green": (0, 170, 0), "blue": (0, 0, 255), "yellow": (255, 215, 0),
}
BACKGROUND = (255, 255, 255)
SIZES = ("small", "large")
SIZE_FRACTION = {"small": 0.25, "large": 0.375}  # side length as a fraction of the image side
IMAGE_SIZES = (32, 64)
FORMAT = "shapes-world/3"  # 2: captions.jsonl gained "described"; 3: "web"


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str  # "small" | "large"
    x: int
    y: int
    w: int
    h: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)


@dataclass(frozen=True)
class Scene:
    image_size: int
    objects: tuple[ShapeObject, ...]

    def scene_graph(self, image_id: str | None = None) -> SceneGraph:
        """GQA-format graph; object ids are "0", "1", ... in sampling order; relations by GenEval's rule."""
        objs: dict[str, SGObject] = {}
        for i, a in enumerate(self.objects):
            rels = []
            for j, b in enumerate(self.objects):
                if i != j:
                    found = spatial_rule.relation(a.box, b.box)
                    rels += [Relation(spatial_rule.GENEVAL_TO_GQA[r], str(j))
                             for r in spatial_rule.GENEVAL_RELATIONS if r in found]
            objs[str(i)] = SGObject(a.shape, a.x, a.y, a.w, a.h, [a.colour, a.size], rels)
        return SceneGraph(self.image_size, self.image_size, objs, image_id=image_id)


def side_pixels(size: str, image_size: int) -> int:
    return int(round(SIZE_FRACTION[size] * image_size))


def gap_pixels(image_size: int) -> int:
    """Minimum empty space between two objects' boxes (2 px at 32, 4 px at 64)."""
    return max(2, image_size // 16)


BORDER = 1  # empty pixels kept along the image edge


def _separated(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax + aw + gap <= bx or bx + bw + gap <= ax or ay + ah + gap <= by or by + bh + gap <= ay


def is_valid(scene: Scene) -> bool:
    """Inside the frame (with the border) and pairwise separated by the gap."""
    s, gap = scene.image_size, gap_pixels(scene.image_size)
    objs = scene.objects
    inside = all(o.x >= BORDER and o.y >= BORDER and o.x + o.w <= s - BORDER and o.y + o.h <= s - BORDER
                 for o in objs)
    return inside and all(_separated(objs[i].box, objs[j].box, gap)
                          for i in range(len(objs)) for j in range(i + 1, len(objs)))


def _sample_specs(rng: np.random.Generator, n: int, repeat_prob: float,
                  distinct: bool = False) -> list[tuple[str, str, str]]:
    def draw() -> list[tuple[str, str, str]]:
        return [(SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))],
                 SIZES[rng.integers(len(SIZES))]) for _ in range(n)]

    specs = draw()
    while distinct and len({(shape, colour) for shape, colour, _ in specs}) < n:
        specs = draw()
    # Repeats (same shape and colour) give counting captions something to count.
    if n >= 2 and rng.random() < repeat_prob:
        specs[1] = (specs[0][0], specs[0][1], specs[1][2])
    return specs


def sample_scene(rng: np.random.Generator, image_size: int = 32, min_objects: int = 1,
                 max_objects: int = 3, repeat_prob: float = 0.25, distinct: bool = False) -> Scene:
    """Draw 1-3 non-overlapping objects by rejection sampling (deterministic given `rng`);
    `distinct`: no two of the same shape and colour."""
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError("need 1 <= min_objects <= max_objects")
    n = int(rng.integers(min_objects, max_objects + 1))
    gap = gap_pixels(image_size)
    for _ in range(100):
        placed: list[ShapeObject] = []
        for shape, colour, size in _sample_specs(rng, n, repeat_prob, distinct):
            side = side_pixels(size, image_size)
            hi = image_size - BORDER - side + 1
            for _ in range(50):
                x, y = int(rng.integers(BORDER, hi)), int(rng.integers(BORDER, hi))
                if all(_separated((x, y, side, side), p.box, gap) for p in placed):
                    placed.append(ShapeObject(shape, colour, size, x, y, side, side))
                    break
            else:
                break
        if len(placed) == n:
            return Scene(image_size, tuple(placed))
    raise RuntimeError(f"could not place {n} objects in a {image_size}px image")


def render(scene: Scene) -> Image.Image:
    """RGB image; ImageDraw does not anti-alias, so every pixel is a palette colour or background."""
    img = Image.new("RGB", (scene.image_size, scene.image_size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        x1, y1 = o.x + o.w - 1, o.y + o.h - 1
        fill = COLOURS[o.colour]
        if o.shape == "square":
            draw.rectangle([o.x, o.y, x1, y1], fill=fill)
        elif o.shape == "circle":
            draw.ellipse([o.x, o.y, x1, y1], fill=fill)
        elif o.shape == "triangle":  # apex up, base on the bottom row
            draw.polygon([(o.x, y1), (x1, y1), (o.x + (o.w - 1) / 2, o.y)], fill=fill)
        else:
            raise ValueError(f"unknown shape {o.shape!r}")
    return img


def swap_positions(scene: Scene, i: int, j: int) -> Scene | None:
    """Exchange the centres of objects i and j; None if the result would overlap or leave the frame."""
    a, b = scene.objects[i], scene.objects[j]
    objs = list(scene.objects)
    objs[i] = replace(a, x=b.x + (b.w - a.w) // 2, y=b.y + (b.h - a.h) // 2)
    objs[j] = replace(b, x=a.x + (a.w - b.w) // 2, y=a.y + (a.h - b.h) // 2)
    swapped = Scene(scene.image_size, tuple(objs))
    return swapped if is_valid(swapped) else None


@dataclass(frozen=True)
class WinogroundPair:
    caption_0: str
    caption_1: str
    scene_1: Scene
    tag: str
    collapsed_tag: str


@dataclass(frozen=True)
class ShapesExample:
    image_id: str
    scene: Scene
    scene_graph: SceneGraph
    generic: str
    spatial: str
    counting: str
    described: str
    web: str
    spatial_fact: SpatialFact | None
    pair: WinogroundPair | None

    def image(self) -> Image.Image:
        return render(self.scene)

    def captions_record(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "generic": self.generic, "spatial": self.spatial,
                "counting": self.counting, "described": self.described,
                "web": self.web, "spatial_fact": self.spatial_fact.to_json() if self.spatial_fact else None}


def _winoground_pair(scene: Scene, fact: SpatialFact | None) -> WinogroundPair | None:
    """caption_1 swaps the two objects' roles; image_1 exchanges their positions.

    Kept only when the swapped image is valid and the captions split cleanly: in image_0
    caption_0 holds for every pair of objects its descriptions fit and caption_1 for none,
    and the other way round in image_1.
    """
    if fact is None:
        return None
    i, j = int(fact.subject), int(fact.object)
    swapped = swap_positions(scene, i, j)
    if swapped is None:
        return None
    a, rel, b = fact.subject_desc, fact.relation, fact.object_desc
    for sg, yes, no in ((scene.scene_graph(), (a, b), (b, a)), (swapped.scene_graph(), (b, a), (a, b))):
        held, total = statement_truth(sg, yes[0], rel, yes[1])
        if held != total or statement_truth(sg, no[0], rel, no[1])[0] != 0:
            return None
    oa, ob = scene.objects[i], scene.objects[j]
    # Winoground's tags: swapped nouns are "Noun"/Object; swapped adjectives count as Relation.
    if oa.shape != ob.shape:
        tag, collapsed = "Noun", "Object"
    elif oa.colour != ob.colour:
        tag, collapsed = "Adjective-Color", "Relation"
    else:
        tag, collapsed = "Adjective-Size", "Relation"
    return WinogroundPair(fact.text(), fact.text(swapped=True), swapped, tag, collapsed)


def image_id_for(index: int) -> str:
    return f"{index:06d}"


def make_example(seed: int, index: int, image_size: int = 32, world: str = DEFAULT_WORLD) -> ShapesExample:
    """Example `index` of the dataset with `seed` in a named world (worlds.WORLDS); independent of
    the dataset's length."""
    w = get_world(world)
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng, image_size, w.min_objects, w.max_objects, w.repeat_prob, w.distinct)
    image_id = image_id_for(index)
    sg = scene.scene_graph(image_id)
    spatial, fact = spatial_caption(sg)
    web = web_caption(sg, int(rng.integers(len(WEB_RELATIONS))))  # drawn after the scene, so scenes are unchanged
    return ShapesExample(image_id, scene, sg, generic_caption(sg), spatial, counting_caption(sg),
                         described_caption(sg), web, fact,
                         _winoground_pair(scene, fact))


# ---------------------------------------------------------------- writer

def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)  # no metadata: byte-stable
    return buf.getvalue()


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _write(root: Path, rel: str, data: bytes, hashes: dict[str, str]) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    hashes[rel] = hashlib.sha256(data).hexdigest()


def _build(root: Path, n: int, seed: int, size: int, world: str) -> bytes:
    hashes: dict[str, str] = {}
    graphs: list[SceneGraph] = []
    captions: list[dict[str, Any]] = []
    wino: list[dict[str, Any]] = []
    for index in range(n):
        ex = make_example(seed, index, size, world)
        _write(root, f"images/{ex.image_id}.png", _png_bytes(ex.image()), hashes)
        graphs.append(ex.scene_graph)
        captions.append(ex.captions_record())
        if ex.pair is not None:
            k = len(wino)
            stems = (f"ex_{k}_img_0", f"ex_{k}_img_1")
            _write(root, f"winoground/images/{stems[0]}.png", _png_bytes(ex.image()), hashes)
            _write(root, f"winoground/images/{stems[1]}.png", _png_bytes(render(ex.pair.scene_1)), hashes)
            wino.append({"id": k, "image_0": stems[0], "image_1": stems[1],
                         "caption_0": ex.pair.caption_0, "caption_1": ex.pair.caption_1,
                         "tag": ex.pair.tag, "secondary_tag": "", "num_main_preds": 1,
                         "collapsed_tag": ex.pair.collapsed_tag})
    _write(root, "scene_graphs.json", dumps_scene_graphs(graphs).encode("utf-8"), hashes)
    _write(root, "captions.jsonl", _jsonl(captions), hashes)
    _write(root, "winoground/examples.jsonl", _jsonl(wino), hashes)
    summary = {"format": FORMAT, "n": n, "seed": seed, "image_size": size, "world": world, "images": n,
               "winoground_examples": len(wino), "files": dict(sorted(hashes.items()))}
    data = json.dumps(summary, indent=1, sort_keys=True).encode("utf-8") + b"\n"
    (root / "summary.json").write_bytes(data)
    return data


def _params(summary: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(summary.get(k) for k in ("format", "n", "seed", "image_size", "world"))


def _existing_summary(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_shapes_dataset(out_dir: str | Path, n: int, seed: int, size: int = 32,
                         overwrite: bool = False, world: str = DEFAULT_WORLD) -> dict[str, Any]:
    """Write the dataset atomically and return its summary (the content of ``summary.json`` + path).

    Layout: ``images/<id>.png``, ``scene_graphs.json`` (GQA format keyed by image id),
    ``captions.jsonl``, ``winoground/examples.jsonl`` + ``winoground/images/<stem>.png``,
    ``summary.json`` (parameters and the sha256 of every file).
    Built in a temporary directory beside `out_dir`, then renamed into place, so a reader never
    sees a partial dataset. An existing identical dataset is left as is; a non-empty directory
    holding anything else raises FileExistsError unless `overwrite`.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size not in IMAGE_SIZES:
        raise ValueError(f"size must be one of {IMAGE_SIZES}, got {size}")
    get_world(world)  # an unknown name fails before anything is written
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    occupied = out.is_dir() and any(out.iterdir())
    if occupied and not overwrite:
        old = _existing_summary(out)
        if old is None or _params(old) != (FORMAT, n, seed, size, world):
            raise FileExistsError(f"{out} is not empty and holds a different dataset; pass overwrite=True")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        data = _build(tmp, n, seed, size, world)
        if occupied:
            if (out / "summary.json").is_file() and (out / "summary.json").read_bytes() == data:
                shutil.rmtree(tmp)  # identical dataset already in place
            elif not overwrite:
                raise FileExistsError(f"{out} holds a different dataset; pass overwrite=True")
            else:
                trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
                os.rename(out, trash / "old")
                os.rename(tmp, out)
                shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out)  # onto a missing or empty directory: atomic on POSIX
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = json.loads(data)
    summary["path"] = str(out)
    return summary
