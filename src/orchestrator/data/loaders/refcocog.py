"""RefCOCOg (Google split): ``refs(google).p`` + ``instances.json``, as a 10-way text choice.

``refs(google).p`` is a pickled list of refs {ref_id, ann_id, image_id, split, sentences:
[{sent, raw, tokens, sent_id}], category_id, file_name}; ``instances.json`` is COCO's
{images, annotations, categories}. Images are COCO's ``COCO_train2014_<12-digit id>.jpg``
under ``images/train2014/`` (or ``train2014/``, ``images/``).

One example per referring sentence: its image and 10 texts, the sentence first and 9 sentences
drawn from refs of *other* images, of any split (a sentence about another object of the same
image would describe this image too). The draw is seeded by (seed, sent_id), so an example does
not depend on filters, `n` or order. Categories filter on the COCO category name; `split` on the ref split.

The pickle is read with an unpickler that only builds plain containers: a refs file can name
no class or function to run.
"""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterable, Iterator, Sequence

from ..json_stream import iter_members
from .base import Loader, TextChoice, as_int
from .errors import DataFormatError, quote
from .images import ImageRef

IMAGE_DIRS = ("images/train2014", "train2014", "images", "")
N_CHOICES = 10
_SUBDIRS = ("", "refcocog")


@dataclass(frozen=True)
class RefCOCOgExample:
    ref_id: int
    sent_id: int
    ann_id: int
    image_id: int
    split: str
    category: str
    image: ImageRef
    texts: tuple[str, ...]  # texts[0] is the ref's sentence
    bbox: tuple[float, ...] | None
    source: str

    def text_choice(self) -> TextChoice:
        return TextChoice(self.image, self.texts, 0)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}: a refs file holds only plain data")


def load_refs(f: BinaryIO, file: str) -> list[Any]:
    try:
        refs = _PlainUnpickler(f, encoding="utf-8").load()
    except Exception as exc:  # a broken pickle raises many types; all mean the same here
        raise DataFormatError(file, None, f"not a readable refs pickle: {exc}") from None
    if not isinstance(refs, list):
        raise DataFormatError(file, None, f"expected a list of refs, got {type(refs).__name__}")
    return refs


class RefCOCOgLoader(Loader[RefCOCOgExample]):
    kind = "refcocog"

    def __init__(self, root, *, split: str | None = None, refs: str = "refs(google).p",
                 instances: str = "instances.json", image_dirs: Sequence[str] = IMAGE_DIRS,
                 **kw: Any) -> None:
        super().__init__(root, **kw)
        self.split = split
        self.refs_name = refs
        self.instances_name = instances
        self.image_dirs = tuple(image_dirs)

    def _category(self, ex: RefCOCOgExample) -> Iterable[str]:
        return (ex.category,)

    def _examples(self) -> Iterator[RefCOCOgExample]:
        refs_rel = self.find_file((), "refcocog refs", self.refs_name, subdirs=_SUBDIRS)
        inst_rel = self.find_file((), "refcocog instances", self.instances_name, subdirs=_SUBDIRS)
        refs_file, inst_file = self.where(refs_rel), self.where(inst_rel)
        with self.root.open(refs_rel) as f:
            raw_refs = load_refs(f, refs_file)

        refs = []
        for i, r in enumerate(raw_refs, 1):
            try:
                refs.append(_check_ref(r, refs_file, i))
            except DataFormatError as exc:
                self.bad("bad ref", exc)
        # The negatives' pool: every sentence of every ref, with its image (so neither the
        # split nor the category filter changes an example).
        pool = [(r["image_id"], s) for r in refs for _, s in r["sentences"]]
        if self.split is not None:
            splits = sorted({str(r["split"]) for r in refs})
            refs = [r for r in refs if r["split"] == self.split]
            if not refs:  # e.g. "validation" for "val": an error listing the splits, not 0 examples
                raise ValueError(f"{refs_file}: no refs in split {self.split!r}; the splits there are: "
                                 f"{', '.join(splits) or 'none'}")
        images, anns, cats = self._instances(inst_rel, inst_file, {r["ann_id"] for r in refs})
        resolver = self.images(self.image_dirs)
        for r in refs:
            where = f"{refs_file}, item {r['item']}"
            try:
                if r["image_id"] not in images:
                    raise DataFormatError(refs_file, r["item"], f"image {r['image_id']} is not in {inst_file}",
                                          unit="item")
                category = cats.get(r["category_id"], str(r["category_id"]))
                if not self.wants([category]):
                    continue
                image = resolver.resolve(images[r["image_id"]], refs_file, r["item"], unit="item")
            except DataFormatError as exc:
                self.bad("missing image" if exc.message.startswith("image not found") else "bad ref", exc)
                continue
            bbox = anns.get(r["ann_id"])
            for sent_id, text in r["sentences"]:
                negatives = self._negatives(pool, r["image_id"], text, sent_id, refs_file, r["item"])
                yield RefCOCOgExample(r["ref_id"], sent_id, r["ann_id"], r["image_id"], r["split"], category,
                                      image, (text, *negatives), bbox, where)

    def _negatives(self, pool: list[tuple[int, str]], image_id: int, text: str, sent_id: int,
                   file: str, item: int) -> list[str]:
        rng = random.Random(f"{self.seed}:{sent_id}")
        chosen: list[str] = []
        for _ in range(200 * N_CHOICES):
            other_image, candidate = pool[rng.randrange(len(pool))]
            if other_image != image_id and candidate != text and candidate not in chosen:
                chosen.append(candidate)
                if len(chosen) == N_CHOICES - 1:
                    return chosen
        raise DataFormatError(file, item, f"too few sentences from other images to draw "
                                          f"{N_CHOICES - 1} negatives", unit="item")

    def _instances(self, rel: str, file: str, wanted_anns: set[int]
                   ) -> tuple[dict[int, str], dict[int, tuple[float, ...]], dict[int, str]]:
        """images id -> file name, annotation id -> bbox (only the refs' ones), category names.

        Streamed: COCO instance files are large and only a little of them is needed."""
        images: dict[int, str] = {}
        anns: dict[int, tuple[float, ...]] = {}
        cats: dict[int, str] = {}
        seen = set()
        with self.root.open(rel) as f:
            for m in iter_members(f, name=file, expand=("images", "annotations", "categories")):
                seen.add(m.key)
                if m.key not in ("images", "annotations", "categories"):
                    continue
                try:
                    _instance(m, file, images, anns, cats, wanted_anns)
                except DataFormatError as exc:
                    raise exc.in_entry(m.entry) from None
        missing = {"images", "categories"} - seen
        if missing:
            raise DataFormatError(file, None, f"not a COCO instances file: no {', '.join(sorted(missing))}")
        return images, anns, cats


def _instance(m, file: str, images: dict, anns: dict, cats: dict, wanted_anns) -> None:
    """One item of instances.json's images / annotations / categories into its table."""
    v = m.value
    if not isinstance(v, dict) or "id" not in v:
        raise DataFormatError(file, m.line, f"{m.key} item without an id")
    if m.key == "images":
        if "file_name" not in v:
            raise DataFormatError(file, m.line, f"image {quote(v['id'])} has no file_name")
        images[as_int(v["id"], file, m.line, "image id")] = str(v["file_name"])
    elif m.key == "annotations":
        aid = as_int(v["id"], file, m.line, "annotation id")
        if aid in wanted_anns and isinstance(v.get("bbox"), list):
            anns[aid] = tuple(float(x) for x in v["bbox"])
    else:
        cats[as_int(v["id"], file, m.line, "category id")] = str(v.get("name", v["id"]))


def _check_ref(r: Any, file: str, item: int) -> dict[str, Any]:
    if not isinstance(r, dict):
        raise DataFormatError(file, item, f"ref is a {type(r).__name__}, not a dict", unit="item")
    missing = [k for k in ("ref_id", "ann_id", "image_id", "split", "sentences", "category_id") if k not in r]
    if missing:
        raise DataFormatError(file, item, f"ref lacks {', '.join(missing)}", unit="item")
    sents = r["sentences"]
    if not isinstance(sents, list) or not sents:
        raise DataFormatError(file, item, "ref has no sentences", unit="item")
    sentences = []
    for k, s in enumerate(sents):
        if not isinstance(s, dict) or not (s.get("raw") or s.get("sent")):
            raise DataFormatError(file, item, f"sentence {k} has neither raw nor sent text", unit="item")
        sid = s.get("sent_id", r["ref_id"] * 100 + k)
        sentences.append((as_int(sid, file, item, "sent_id", "item"), str(s.get("raw") or s.get("sent")).strip()))
    return {"item": item, "ref_id": as_int(r["ref_id"], file, item, "ref_id", "item"),
            "ann_id": as_int(r["ann_id"], file, item, "ann_id", "item"),
            "image_id": as_int(r["image_id"], file, item, "image_id", "item"),
            "split": str(r["split"]), "category_id": as_int(r["category_id"], file, item, "category_id", "item"),
            "sentences": sentences}
