"""The judged sample grid: each generated image with its prompt and the spatial judge's verdict.

A plain grid of 32x32 samples says little: a reader cannot tell which prompt an image answered or
whether the judge counted it right. This sheet draws, for each of the first K images (in held-out
prompt order, so the base and every trial judged with the same options line up cell for cell,
same prompt, same noise):

- the image, upscaled by nearest neighbour to at least `min_px` (96 or more) pixels a side, in a
  frame coloured by the verdict (green: relation right, red: wrong, grey: not judged);
- under it the prompt (wrapped), then each named object and whether the judge found it
  ("red circle ✓", "blue square ✗"), then the relation: "relation: right", "relation: wrong" or
  "relation: n/a (object missing)".

The verdicts are `spatial.judge`'s, the function the `spatial` suite scores with, so the sheet
agrees with the table image by image. `caption_lines` returns a cell's text without drawing it
(tests read it there rather than from pixels). Rendering is deterministic: PIL's bundled font, no
timestamp or other metadata in the PNG, so the same images and prompts give the same bytes.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from orchestrator.data.shapes import SIZE_FRACTION
from orchestrator.manifest.schema import SPATIAL_RULES

from .spatial import Desc, Judgement, SpatialPrompt, judge

FOUND, MISSING = "✓", "✗"
RIGHT, WRONG = "relation: right", "relation: wrong"
NA_MISSING, NA_SHARED = "relation: n/a (object missing)", "relation: n/a (one object fits both)"

FONT_SIZE = 11
PAD = 4       # gutter between cells and around the sheet
FRAME = 2     # width of the verdict-coloured frame around each image
GREEN, RED, GREY, INK = (0, 130, 0), (200, 0, 0), (120, 120, 120), (0, 0, 0)


def phrase(desc: Desc) -> str:
    """An object as the verdict names it, without article: size, colour, shape ("small red circle"),
    whatever order the description holds its attributes in."""
    name, attrs = desc
    return " ".join([*(a for a in attrs if a in SIZE_FRACTION), *(a for a in attrs if a not in SIZE_FRACTION), name])


def relation_verdict(j: Judgement) -> str:
    """Right or wrong when both objects were found as distinct detections; otherwise why not judged."""
    if j.both_present:
        return RIGHT if j.correct else WRONG
    # Both descriptions fit something, but only the same single detection (e.g. "a red circle
    # left of a red circle" with one red circle drawn): the relation has no pair to hold between.
    return NA_SHARED if j.subject_found and j.object_found else NA_MISSING


def caption_lines(prompt: SpatialPrompt, j: Judgement) -> list[str]:
    """A cell's text, one logical line each: the prompt, each object with ✓ (found) or ✗ (not),
    and the relation verdict."""
    return [prompt.text,
            f"{phrase(prompt.subject)} {FOUND if j.subject_found else MISSING}",
            f"{phrase(prompt.object)} {FOUND if j.object_found else MISSING}",
            relation_verdict(j)]


def _colour(line: str, index: int) -> tuple[int, int, int]:
    if index == 0:
        return INK
    if line.endswith(FOUND) or line == RIGHT:
        return GREEN
    if line.endswith(MISSING) or line == WRONG:
        return RED
    return GREY


def _frame_colour(j: Judgement) -> tuple[int, int, int]:
    return (GREEN if j.correct else RED) if j.both_present else GREY


# ------------------------------------------------------------------------------ text drawing
# PIL's bundled font has no ✓ / ✗ glyphs, so the marks are drawn as strokes, one em-ish wide.

def _font() -> Any:
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except (TypeError, OSError):  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _mark_width() -> int:
    return round(FONT_SIZE * 0.8)


def _width(font: Any, text: str) -> float:
    marks = text.count(FOUND) + text.count(MISSING)
    plain = text.replace(FOUND, "").replace(MISSING, "")
    return font.getlength(plain) + marks * _mark_width()


def _wrap(font: Any, text: str, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels; a word longer than the width gets a line of its own."""
    lines: list[str] = []
    for word in text.split():
        if lines and _width(font, f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _draw_mark(draw: ImageDraw.ImageDraw, x: float, y: int, mark: str, fill: tuple[int, int, int]) -> None:
    s = _mark_width() - 2
    top, left = y + (FONT_SIZE - s) // 2 + 1, int(x) + 1
    if mark == FOUND:
        draw.line([(left, top + s * 0.55), (left + s * 0.4, top + s), (left + s, top)], fill=fill, width=2)
    else:
        draw.line([(left, top), (left + s, top + s)], fill=fill, width=2)
        draw.line([(left, top + s), (left + s, top)], fill=fill, width=2)


def _draw_text(draw: ImageDraw.ImageDraw, font: Any, x: int, y: int, text: str, fill: tuple[int, int, int]) -> None:
    pos: float = x
    run = ""
    for ch in text + "\0":
        if ch in (FOUND, MISSING, "\0"):
            if run:
                draw.text((pos, y), run, font=font, fill=fill)
                pos += font.getlength(run)
                run = ""
            if ch != "\0":
                _draw_mark(draw, pos, y, ch, fill)
                pos += _mark_width()
        else:
            run += ch


# ------------------------------------------------------------------------------ the sheet

def _as_pil(images: Any) -> list[Image.Image]:
    """A generator's [N, 3, H, W] tensor in [0, 1], or a sequence of PIL images / HxWx3 uint8 arrays."""
    if hasattr(images, "permute"):
        from orchestrator.models.common.images import to_pil

        return to_pil(images.detach().cpu())
    return [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]


def judged_sheet(images: Any, prompts: Sequence[SpatialPrompt], *, judgements: Sequence[Judgement] | None = None,
                 limit: int | None = 32, cols: int = 8, min_px: int = 128, title: str | None = None,
                 rule: str = SPATIAL_RULES[0]) -> Image.Image:
    """The first `limit` images (all when None) with their prompts (same order) judged: each image
    upscaled by an integer factor (nearest) to at least `min_px` a side, its caption lines under it.
    `judgements` (one per image, as `spatial.judge` returns them) skips the detector; by default
    each image is judged here by `rule` (spatial.judge's). `title`, if given, heads the sheet with a
    count of the verdicts shown."""
    pics = _as_pil(images)
    if len(pics) != len(prompts):
        raise ValueError(f"{len(pics)} images for {len(prompts)} prompts")
    if judgements is not None and len(judgements) != len(pics):
        raise ValueError(f"{len(judgements)} judgements for {len(pics)} images")
    k = len(pics) if limit is None else min(limit, len(pics))
    if k == 0:
        raise ValueError("no images to draw")
    pics, prompts = pics[:k], list(prompts[:k])
    verdicts = list(judgements[:k]) if judgements is not None else [judge(im, p, rule) for im, p in zip(pics, prompts)]

    side = max(max(im.size) for im in pics)
    scale = max(1, math.ceil(min_px / side))
    cell_w = side * scale + 2 * FRAME
    font = _font()
    line_h = FONT_SIZE + 3
    # (colour, wrapped parts) per logical caption line, per cell
    texts = [[(_colour(line, i), _wrap(font, line, cell_w)) for i, line in enumerate(caption_lines(p, j))]
             for p, j in zip(prompts, verdicts)]
    text_lines = max(sum(len(w) for _, w in t) for t in texts)  # one height for every row
    cell_h = cell_w + 2 + text_lines * line_h
    cols = max(1, min(cols, k))
    rows = math.ceil(k / cols)
    sheet_w = cols * (cell_w + PAD) + PAD
    head: list[tuple[tuple[int, int, int], str]] = []
    if title:
        n_right = sum(j.both_present and j.correct for j in verdicts)
        n_wrong = sum(j.both_present and not j.correct for j in verdicts)
        summary = (f"first {k} held-out prompts: relation right {n_right}, wrong {n_wrong}, "
                   f"n/a {k - n_right - n_wrong}")
        head = [(INK, part) for part in _wrap(font, title, sheet_w - 2 * PAD)]
        head += [(GREY, part) for part in _wrap(font, summary, sheet_w - 2 * PAD)]
    head_h = len(head) * line_h + (PAD if head else 0)
    sheet = Image.new("RGB", (sheet_w, head_h + rows * (cell_h + PAD) + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (fill, part) in enumerate(head):
        _draw_text(draw, font, PAD, PAD + n * line_h, part, fill)
    for c, (im, j, lines) in enumerate(zip(pics, verdicts, texts)):
        r, col = divmod(c, cols)
        x, y = PAD + col * (cell_w + PAD), head_h + PAD + r * (cell_h + PAD)
        draw.rectangle([x, y, x + cell_w - 1, y + cell_w - 1], fill=_frame_colour(j))
        big = im.convert("RGB").resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
        sheet.paste(big, (x + FRAME, y + FRAME))
        ty = y + cell_w + 2
        for fill, wrapped in lines:
            for part in wrapped:
                _draw_text(draw, font, x, ty, part, fill)
                ty += line_h
    return sheet
