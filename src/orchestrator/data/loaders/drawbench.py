"""DrawBench prompts from its CSV (200 prompts, 11 categories).

Copies of the sheet differ: the prompt column is ``Prompts`` or ``Prompt``, some categories
carry stray whitespace ("Gary Marcus et al. "), prompts are quoted and span sentences or
lines, and some text is not ASCII. Categories are normalised (whitespace collapsed, trimmed);
the category filter matches case-insensitively. Lin & Srikanth ("Diffusion Models as Visual Reasoners")
evaluated "Counting" and "Positional".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from .base import Loader, normalise_space, read_csv
from .errors import DataFormatError

CATEGORIES = ("Colors", "Conflicting", "Counting", "DALL-E", "Descriptions", "Gary Marcus et al.",
              "Misspellings", "Positional", "Rare Words", "Reddit", "Text")
SEED_PAPER_CATEGORIES = ("Counting", "Positional")


@dataclass(frozen=True)
class DrawBenchPrompt:
    index: int  # position among the file's valid prompts (0-based), stable across filters
    prompt: str
    category: str
    source: str  # file:line


class DrawBenchLoader(Loader[DrawBenchPrompt]):
    kind = "drawbench"

    def __init__(self, root, *, file: str | None = None, **kw: Any) -> None:
        super().__init__(root, **kw)
        self.file = file

    def _category(self, ex: DrawBenchPrompt) -> Iterable[str]:
        return (ex.category,)

    def _csv(self) -> str:
        local = self.root.local_path("")
        if local is not None and local.is_file():  # root names the CSV itself
            return ""
        return self.find_file(("*.csv",), "drawbench", self.file)

    def _examples(self) -> Iterator[DrawBenchPrompt]:
        rel = self._csv()
        file = self.where(rel)
        prompts: list[DrawBenchPrompt] = []
        with self.root.open(rel) as f:
            _, rows = read_csv(f, file, [("Prompts", "Prompt"), ("Category",)], self.bad)
            for row in rows:
                prompt = row.values["Prompts"].strip()
                category = normalise_space(row.values["Category"])
                if not prompt:
                    self.bad("empty prompt", DataFormatError(file, row.line, "empty prompt"))
                    continue
                if not category:
                    self.bad("empty category", DataFormatError(file, row.line, "empty category"))
                    continue
                prompts.append(DrawBenchPrompt(len(prompts), prompt, category, f"{file}:{row.line}"))
        if self.categories:
            # A misspelt category would otherwise evaluate nothing and report success; a caller's
            # default (default_categories=) need only partly be there.
            present = {p.category.lower() for p in prompts}
            unknown = self.unmet_categories(c for c in self.categories if c.lower() in present)
            if unknown:
                have = sorted({p.category for p in prompts})
                what = "the default categor" if self.default_filter else "categor"
                raise ValueError(f"{file}: no prompts in {what}{'y' if len(unknown) == 1 else 'ies'} "
                                 f"{unknown}; the file has {have}")
        yield from prompts
