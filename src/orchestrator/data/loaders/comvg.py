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


NEG_VALUES = ("subject", "object", "predicate")


def shapes_comvg_pairs(n_scenes: int, seed: int, image_size: int = 32) -> list[ComVGExample]:
    """ComVG in the shapes world (kind `shapes-comvg`): for each scene among 0..n_scenes-1 with a
    spatial fact, the sentence "<subject> <relation> <object>" (the spatial caption's core), the
    scene as the positive image, and a negative image that changes one part of it: `neg_value`
    subject or object (that object's shape changed, colour, size and place kept) or predicate (the
    two objects' places exchanged, so the relation turns). The kind tried first cycles with the
    scene (subject, object, predicate, ...), then the others in that order; a negative is kept only
    when the sentence holds for every fitting pair of objects in the positive and for none in the
    negative. Deterministic in (seed, scene); images inline as PNG, ids as shapes_pairs gives them."""
    from dataclasses import replace

    import numpy as np

    from orchestrator.data.captions import bare_phrase, statement_truth
    from orchestrator.data.shapes import _png_bytes, make_example, render

    out = []
    for i in range(n_scenes):
        ex = make_example(seed, i, image_size)
        fact = ex.spatial_fact
        if fact is None:
            continue
        a, rel, b = fact.subject_desc, fact.relation, fact.object_desc
        held, total = statement_truth(ex.scene_graph, a, rel, b)
        if total == 0 or held != total:
            continue
        rng = np.random.default_rng([seed, i, 1])
        first = i % len(NEG_VALUES)
        for neg_value in NEG_VALUES[first:] + NEG_VALUES[:first]:
            negative = _shapes_negative(ex.scene, fact, neg_value, rng)
            if negative is not None and statement_truth(negative.scene_graph(), a, rel, b)[0] == 0:
                break
        else:
            continue
        where = f"shapes seed {seed} scene {i}"
        triplet = lambda s, r, o: f"{bare_phrase(*s)},{r},{bare_phrase(*o)}"  # noqa: E731
        k = int(fact.subject if neg_value == "subject" else fact.object)
        changed = (negative.objects[k].shape, a[1] if neg_value == "subject" else b[1])
        neg_triplet = {"subject": triplet(changed, rel, b), "object": triplet(a, rel, changed),
                       "predicate": triplet(a, f"not {rel}", b)}[neg_value]
        out.append(ComVGExample(
            len(out), replace(fact, rest="").text(), triplet(a, rel, b), neg_triplet,
            ImageRef(f"{where}/pos.png", None, _png_bytes(ex.image())),
            ImageRef(f"{where}/neg_{neg_value}.png", None, _png_bytes(render(negative))),
            neg_value, where))
    return out


def _shapes_negative(scene: Any, fact: Any, neg_value: str, rng: Any) -> Any:
    """The scene with its subject's or object's shape changed (drawn by `rng` among the others),
    or with the two exchanged (predicate); None when the exchange would not fit."""
    from dataclasses import replace

    from orchestrator.data.shapes import SHAPES, Scene, swap_positions

    i, j = int(fact.subject), int(fact.object)
    if neg_value == "predicate":
        return swap_positions(scene, i, j)
    k = i if neg_value == "subject" else j
    others = [s for s in SHAPES if s != scene.objects[k].shape]
    objects = list(scene.objects)
    objects[k] = replace(objects[k], shape=others[int(rng.integers(len(others)))])
    return Scene(scene.image_size, tuple(objects))
