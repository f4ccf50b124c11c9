"""Matching benchmarks as data: text choices (an image, candidate texts, the right one) and image
choices (a text, candidate images), what a matcher's few-shot objective trains on and the
matching suite scores.

Sources: the shapes world's Winoground pairs (`shapes-winoground`, generated: `n` scenes) and the
loaders of the real benchmarks that pose text choices (winoground, vl-checklist, refcocog, vqav2);
and the image choices of ComVG and of its shapes miniature (`shapes-comvg`, generated: `n` scenes);
`labelled_choices` gives each choice's category too.
Images stay references (decoded when a step needs them), so a benchmark's size costs no memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.manifest.schema import MATCHING_KINDS, DataSource

from .loaders.base import ImageChoice, TextChoice


@dataclass
class ChoiceData:
    choices: list[TextChoice | ImageChoice]
    source: str

    def __len__(self) -> int:
        return len(self.choices)


def _choices_of(example: Any) -> list[Any]:
    if hasattr(example, "text_choices"):
        return list(example.text_choices())
    if hasattr(example, "text_choice"):
        return [example.text_choice()]
    return [example.image_choice()]


def labelled_choices(src: DataSource, resolution: int, base_dir: Path | None = None,
                     store: Any = None) -> list[tuple[Any, str]]:
    """(choice, category) for each choice the source poses: text choices, or ComVG's image
    choices; the category is the loader's first (e.g. ComVG's neg_value), "" where it has none."""
    if src.kind not in MATCHING_KINDS:
        raise ValueError(f"data kind {src.kind!r} poses no image-text choices; kinds that do: "
                         f"{', '.join(MATCHING_KINDS)}")
    if src.kind == "shapes-winoground":
        from .loaders.winoground import shapes_pairs

        examples = shapes_pairs(src.n, src.seed, src.size or resolution)
        where, category = f"shapes-winoground (n={src.n}, seed={src.seed})", (lambda ex: ex.collapsed_tag or "")
    elif src.kind == "shapes-comvg":
        from .loaders.comvg import shapes_comvg_pairs

        examples = shapes_comvg_pairs(src.n, src.seed, src.size or resolution)
        where, category = f"shapes-comvg (n={src.n}, seed={src.seed})", (lambda ex: ex.neg_value)
    else:
        from .loaders import open_loader

        loader = open_loader(src, base_dir=base_dir)
        examples = loader.load()
        where = loader.root.describe()
        category = lambda ex: (loader.category_of(ex) or ("",))[0]  # noqa: E731
    examples = fewshot_part(examples, src)
    out = [(c, category(ex)) for ex in examples for c in _choices_of(ex)]
    if not out:
        raise ValueError(f"{where}: no image-text choices"
                         + (f" in its fewshot {src.fewshot} part" if src.fewshot else ""))
    return out


def fewshot_part(examples: list[Any], src: DataSource) -> list[Any]:
    """The source's part of a seeded few-shot split, by example (a Winoground pair's two questions
    stay together): "train" takes the first ceil(fraction·N) of a permutation seeded by `src.seed`,
    "heldout" the rest, so a trial's training and evaluation sources never share an example."""
    if src.fewshot is None:
        return examples
    import math
    import random

    order = list(range(len(examples)))
    random.Random(src.seed).shuffle(order)
    cut = max(1, math.ceil(src.fewshot_fraction * len(examples)))
    keep = sorted(order[:cut] if src.fewshot == "train" else order[cut:])
    return [examples[i] for i in keep]


def open_choices(src: DataSource, resolution: int, base_dir: Path | None = None, store: Any = None) -> ChoiceData:
    """The source's choices, what a matcher trains on; an error for a kind that poses none."""
    labelled = labelled_choices(src, resolution, base_dir, store)
    return ChoiceData([c for c, _ in labelled], src.kind)
