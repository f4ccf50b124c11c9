"""Matching benchmarks as training data: text choices (an image, candidate texts, the right one),
what a matcher's few-shot objective trains on.

Sources: the shapes world's Winoground pairs (`shapes-winoground`, generated: `n` scenes) and the
loaders of the real benchmarks that pose text choices (winoground, vl-checklist, refcocog, vqav2).
Images stay references (decoded when a step needs them), so a benchmark's size costs no memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.manifest.schema import CHOICE_KINDS, DataSource

from .loaders.base import TextChoice


@dataclass
class ChoiceData:
    choices: list[TextChoice]
    source: str

    def __len__(self) -> int:
        return len(self.choices)


def _choices_of(example: Any) -> list[TextChoice]:
    if hasattr(example, "text_choices"):
        return list(example.text_choices())
    return [example.text_choice()]


def open_text_choices(src: DataSource, resolution: int, base_dir: Path | None = None, store: Any = None) -> ChoiceData:
    """The source's text choices; an error for a kind that poses none, or a source that gives none."""
    if src.kind not in CHOICE_KINDS:
        raise ValueError(f"data kind {src.kind!r} poses no text choices to train a matcher on; "
                         f"kinds that do: {', '.join(CHOICE_KINDS)}")
    if src.kind == "shapes-winoground":
        from .loaders.winoground import shapes_pairs

        examples = shapes_pairs(src.n, src.seed, src.size or resolution)
        where = f"shapes-winoground (n={src.n}, seed={src.seed})"
    else:
        from .loaders import open_loader

        loader = open_loader(src, base_dir=base_dir)
        examples = loader.load()
        where = loader.root.describe()
    choices = [c for ex in examples for c in _choices_of(ex)]
    if not choices:
        raise ValueError(f"{where}: no text choices to train on")
    return ChoiceData(choices, where)
