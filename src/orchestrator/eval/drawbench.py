"""DrawBench (Saharia et al. 2022): K images per prompt of the chosen categories, CLIP-R-Precision
per category, and a contact sheet per category for people to judge.

Paired noise: the K images of a prompt come from a generator seeded by (options.seed, the prompt's
position in the file), so every model meets the same noise for the same prompt and image index,
whatever categories are selected alongside it. R@1 ranks each image's prompt against 99 other
prompts of the whole file (clip_r_precision's protocol, its chunks and Wilson interval); the
headline `r_at_1` pools the selected categories, `r_at_1/<category>` is each one.

Sheets are PNG bytes in the result's `artifacts` ("drawbench-<category>.png"): one row per prompt
(its K images, left to right by image index) with the prompt written under the row. Whoever holds
the blob store stores them (results.store_artifacts) and records their keys in the suite's info.
"""
from __future__ import annotations

import io
import re
import textwrap
import time
from typing import Any, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from .clip_r_precision import CHUNKING, TIES, clip_r_precision

MIN_CELL = 96        # images are scaled up (nearest) to at least this side, so a sheet is readable
PAD = 2
CAPTION_LINES = 2    # lines of prompt text under each row (longer prompts end in "…")
LINE_HEIGHT = 13
FONT_SIZE = 11


def load_prompts(source: str, categories: Sequence[str] | None, store: Any = None) -> tuple[list[Any], list[Any]]:
    """(every prompt of the file, those of `categories`) from a DrawBench CSV: a path (file or a
    directory holding one), or a key / prefix in `store`. A category the user named that selects
    nothing is a ValueError naming the file and the category (the loader's check); None takes the
    categories of Lin & Srikanth as a default, of which those present are used."""
    from orchestrator.data.loaders.drawbench import SEED_PAPER_CATEGORIES, DrawBenchLoader
    from orchestrator.data.loaders.images import BlobRoot
    from orchestrator.storage.location import resolve_location

    loc = resolve_location(source, store=store)
    if loc.is_local:
        root, name = str(loc.path), None
    elif loc.store.exists(loc.prefix):  # a key naming the CSV itself
        parent, _, name = loc.prefix.rpartition("/")
        root = BlobRoot(loc.store, parent, uri=source)
    else:
        root, name = BlobRoot(loc.store, loc.prefix, uri=source), None
    every = list(DrawBenchLoader(root, file=name))
    chosen = list(DrawBenchLoader(root, file=name, categories=list(categories) if categories else None,
                                  default_categories=SEED_PAPER_CATEGORIES))
    return every, chosen


def noise_seed(seed: int, index: int) -> int:
    """The generator seed of the prompt at file position `index`: the same for every model."""
    return (seed * 1_000_003 + index) % (2 ** 63)


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _caption_lines(text: str, width_px: int, draw: ImageDraw.ImageDraw) -> list[str]:
    font = _font()
    chars = max(8, int(width_px / max(draw.textlength("n", font=font), 1)))
    lines = textwrap.wrap(" ".join(text.split()), chars) or [""]
    if len(lines) > CAPTION_LINES:
        lines = lines[:CAPTION_LINES]
        lines[-1] = lines[-1][:max(chars - 1, 1)].rstrip() + "…"
    return lines


def sheet_size(rows: int, per_prompt: int, image_side: int) -> tuple[int, int]:
    """(width, height) of a sheet of `rows` prompts with `per_prompt` images of side `image_side`."""
    cell = max(image_side, MIN_CELL)
    return per_prompt * (cell + PAD) + PAD, rows * (cell + PAD + CAPTION_LINES * LINE_HEIGHT + PAD) + PAD


def contact_sheet(images: torch.Tensor, prompts: Sequence[str]) -> Image.Image:
    """images [P, K, 3, H, W] in [0, 1] -> one picture: a row of K images per prompt, its text below."""
    from orchestrator.models.common.images import to_pil

    p, k, _, h, _ = images.shape
    if p != len(prompts):
        raise ValueError(f"{p} rows of images for {len(prompts)} prompts")
    cell = max(h, MIN_CELL)
    sheet = Image.new("RGB", sheet_size(p, k, h), "white")
    draw = ImageDraw.Draw(sheet)
    row_h = cell + PAD + CAPTION_LINES * LINE_HEIGHT + PAD
    for r, (row, text) in enumerate(zip(images, prompts)):
        top = PAD + r * row_h
        for c, im in enumerate(to_pil(row)):
            sheet.paste(im.resize((cell, cell), Image.NEAREST), (PAD + c * (cell + PAD), top))
        for i, line in enumerate(_caption_lines(text, sheet.width - 2 * PAD, draw)):
            draw.text((PAD, top + cell + PAD + i * LINE_HEIGHT), line, fill="black", font=_font())
    return sheet


def slug(category: str) -> str:
    """A category as a key part: 'Gary Marcus et al.' -> 'gary-marcus-et-al'."""
    return re.sub(r"[^a-z0-9]+", "-", category.lower()).strip("-") or "category"


class DrawBenchSuite:
    """CLIP-R-Precision per DrawBench category on K paired images per prompt, and a sheet each."""
    name = "drawbench"

    def __init__(self) -> None:
        self._prompts: tuple[list[Any], list[Any]] | None = None

    def _load(self, ctx: Any) -> tuple[list[Any], list[Any]]:
        if self._prompts is None:
            o = ctx.options
            self._prompts = load_prompts(o.drawbench, o.drawbench_categories, ctx.store)
        return self._prompts

    def requirements(self, ctx: Any) -> list[str]:
        o = ctx.options
        problems = ctx.generation_problems(self.name) + ctx.clip_problems(self.name)
        if not o.drawbench:
            return problems + [f"{self.name}: needs a DrawBench CSV (drawbench: a path or blob key)"]
        try:
            every, chosen = self._load(ctx)
        except (FileNotFoundError, ValueError) as exc:  # DataFormatError is a ValueError
            return problems + [f"{self.name}: {exc}"]
        distinct = len({p.prompt for p in every})
        if distinct <= o.r_precision_negatives:
            problems.append(f"{self.name}: {o.drawbench} has {distinct} distinct prompts; R-precision ranks each "
                            f"against {o.r_precision_negatives} others (r_precision_negatives)")
        by_cat: dict[str, int] = {}
        for p in chosen:
            by_cat[p.category] = by_cat.get(p.category, 0) + 1
        for cat, n in by_cat.items():
            if n * o.drawbench_per_prompt < o.r_precision_chunks:
                problems.append(f"{self.name}: category {cat!r} of {o.drawbench} gives {n} x "
                                f"{o.drawbench_per_prompt} images, fewer than the {o.r_precision_chunks} chunks "
                                f"R-precision is reported over")
        return problems

    def generate(self, ctx: Any, prompts: Sequence[Any]) -> torch.Tensor:
        """[P, K, 3, H, W]: K images per prompt, each prompt's noise seeded by its file position."""
        o, m = ctx.options, ctx.model()
        rows = []
        for p in prompts:
            gen = torch.Generator(ctx.device).manual_seed(noise_seed(o.seed, p.index))
            rows.append(m.variant.generate(m.model, [p.prompt] * o.drawbench_per_prompt, sampler=o.sampler,
                                           steps=o.steps, guidance_scale=o.guidance_scale, generator=gen,
                                           resolution=ctx.image_size, batch_size=o.drawbench_per_prompt))
        return torch.stack(rows)

    def run(self, ctx: Any):
        from .results import OUTCOMES, MetricValue, SuiteResult, bits

        started = time.perf_counter()
        o = ctx.options
        every, chosen = self._load(ctx)
        pool = list(dict.fromkeys(p.prompt for p in every))
        position = {t: i for i, t in enumerate(pool)}
        images = self.generate(ctx, chosen)
        k = o.drawbench_per_prompt
        enc = ctx.clip()
        categories = list(dict.fromkeys(p.category for p in chosen))

        def score(rows: list[int]):
            texts = [chosen[r].prompt for r in rows for _ in range(k)]
            flat = images[rows].reshape(len(rows) * k, *images.shape[2:])
            return clip_r_precision(enc, flat, texts, pool_texts=pool, own=[position[t] for t in texts],
                                    n_negatives=o.r_precision_negatives, chunks=o.r_precision_chunks, seed=o.seed)

        overall = score(list(range(len(chosen))))
        metrics = [MetricValue("r_at_1", overall.value, overall.n, *overall.ci, overall.std)]
        outcomes = {"r_at_1": bits(overall.outcomes)}
        artifacts: dict[str, bytes] = {}
        per_category: dict[str, Any] = {}
        for cat in categories:
            rows = [i for i, p in enumerate(chosen) if p.category == cat]
            res = score(rows)
            metrics.append(MetricValue(f"r_at_1/{cat}", res.value, res.n, *res.ci, res.std))
            outcomes[f"r_at_1/{cat}"] = bits(res.outcomes)
            per_category[cat] = {"prompts": len(rows), "hits": res.hits}
            buf = io.BytesIO()
            contact_sheet(images[rows], [chosen[r].prompt for r in rows]).save(buf, format="PNG")
            artifacts[f"drawbench-{slug(cat)}.png"] = buf.getvalue()
        info = {"clip": enc.name, "file": o.drawbench, "categories": per_category, "per_prompt": k,
                "candidates": overall.candidates, "chunking": CHUNKING, "ties": TIES, "pool": len(pool),
                "sampler": o.sampler, "steps": o.steps,
                "guidance_scale": o.guidance_scale, "seed": o.seed,
                "sheets": {cat: f"drawbench-{slug(cat)}.png" for cat in categories}, OUTCOMES: outcomes}
        return SuiteResult(self.name, metrics, info, time.perf_counter() - started, artifacts=artifacts)

