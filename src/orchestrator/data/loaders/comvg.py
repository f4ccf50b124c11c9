"""ComVG (compositional Visual Genome): one sentence, a positive and a negative image.

The CSV (``compositional_visual_genome.csv``, or the one ``*.csv`` under the root) has columns
id, sentence, pos_triplet, neg_triplet, pos_image_id, neg_image_id, neg_value; `id` may be
missing or pandas' unnamed index column, in which case the row number stands in. Images are
Visual Genome's ``<image_id>.jpg``, looked up in ``images/``, ``vg_concept/``, ``VG_100K/`` and
``VG_100K_2/`` under the root. Categories filter on `neg_value` (subject, object, verb).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from .base import ImageChoice, Loader, as_int, read_csv
from .errors import DataFormatError
from .images import ImageRef

OFFICIAL_NAME = "compositional_visual_genome.csv"
IMAGE_DIRS = ("images", "vg_concept", "VG_100K", "VG_100K_2")
_COLUMNS = [("sentence",), ("pos_triplet",), ("neg_triplet",), ("pos_image_id",), ("neg_image_id",),
            ("neg_value",)]


@dataclass(frozen=True)
class ComVGExample:
    id: int
    sentence: str
    pos_triplet: str
    neg_triplet: str
    pos_image: ImageRef
    neg_image: ImageRef
    neg_value: str
    source: str

    def image_choice(self) -> ImageChoice:
        return ImageChoice(self.sentence, (self.pos_image, self.neg_image), 0)


class ComVGLoader(Loader[ComVGExample]):
    kind = "comvg"

    def __init__(self, root, *, file: str | None = None, image_dirs: Sequence[str] = IMAGE_DIRS,
                 **kw: Any) -> None:
        super().__init__(root, **kw)
        self.file = file
        self.image_dirs = tuple(image_dirs)

    def _category(self, ex: ComVGExample) -> Iterable[str]:
        return (ex.neg_value,)

    def _examples(self) -> Iterator[ComVGExample]:
        name = self.file or (OFFICIAL_NAME if self.root.is_file(OFFICIAL_NAME) else None)
        rel = self.find_file(("*.csv",), "comvg", name)
        file = self.where(rel)
        images = self.images(self.image_dirs)
        with self.root.open(rel) as f:
            _, rows = read_csv(f, file, _COLUMNS, self.bad, optional=[("id", "", "Unnamed: 0")])
            for number, row in enumerate(rows):
                v = row.values
                if not self.wants([v["neg_value"]]):
                    continue
                try:
                    sentence = v["sentence"].strip()
                    if not sentence:
                        raise DataFormatError(file, row.line, "empty sentence")
                    pos_id = as_int(v["pos_image_id"].strip(), file, row.line, "pos_image_id")
                    neg_id = as_int(v["neg_image_id"].strip(), file, row.line, "neg_image_id")
                    ex_id = as_int(v["id"].strip(), file, row.line, "id") if v.get("id", "").strip() else number
                    example = ComVGExample(
                        ex_id, sentence, v["pos_triplet"].strip(), v["neg_triplet"].strip(),
                        images.resolve(f"{pos_id}.jpg", file, row.line),
                        images.resolve(f"{neg_id}.jpg", file, row.line),
                        v["neg_value"].strip(), f"{file}:{row.line}")
                except DataFormatError as exc:
                    self.bad("missing image" if exc.message.startswith("image not found") else "bad row", exc)
                    continue
                yield example
