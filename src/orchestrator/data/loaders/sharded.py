"""Loaders over datasets the project wrote itself as shards (`data.shards`): kind ``shards``
(any records) and kind ``gqa-captions`` (the GQA-Captions builder's output).

The root is the blob store (URI or path) holding ``index.json``; every shard read is verified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from ..shards import ShardReader
from .base import Loader
from .errors import DataFormatError
from .images import BlobRoot, ImageRef, ImageResolver, open_root


class ShardsLoader(Loader[dict[str, Any]]):
    """Records as dicts, in dataset order. Categories filter on a record's "category" field."""

    kind = "shards"
    blob_root = True

    def reader(self) -> ShardReader:
        if not isinstance(self.root, BlobRoot):
            raise TypeError(f"{self.kind}: root must be a blob store, not {self.root!r}")
        return ShardReader(self.root.store, self.root.prefix)

    def _category(self, ex: dict[str, Any]) -> Iterable[str]:
        c = ex.get("category")
        return (str(c),) if c is not None else ()

    def _examples(self) -> Iterator[dict[str, Any]]:
        yield from self.reader()


@dataclass(frozen=True)
class GQACaptionRecord:
    question_id: str
    image_id: str
    image: ImageRef
    caption: str
    question: str
    answer: str | None
    question_type: str
    scene_graph_id: str
    # Further caption styles a build may carry as ``caption_<style>`` fields (the builder
    # writes one focused `caption` today); empty when there are none.
    styles: Mapping[str, str] = field(default_factory=dict, compare=False)


class GQACaptionsLoader(Loader[GQACaptionRecord]):
    """The builder's records with images resolved against `images` (a GQA images folder or
    blob URI; a relative path resolves against base_dir, the manifest's folder; default: the
    images root the build recorded). Categories filter on question_type."""

    kind = "gqa-captions"
    blob_root = True

    def __init__(self, root, *, images: str | None = None, **kw: Any) -> None:
        super().__init__(root, **kw)
        self.images_root = images

    def _category(self, ex: GQACaptionRecord) -> Iterable[str]:
        return (ex.question_type,)

    def _examples(self) -> Iterator[GQACaptionRecord]:
        if not isinstance(self.root, BlobRoot):
            raise TypeError(f"{self.kind}: root must be a blob store, not {self.root!r}")
        reader = ShardReader(self.root.store, self.root.prefix)
        where = self.root.describe("index.json")
        images_root = self.images_root or reader.meta.get("images_root")
        if images_root is None and self.check_images:
            raise ValueError(f"{where}: the build recorded no images folder; pass images=<GQA images dir> "
                             f"(or check_images=False to use bare image names)")
        # Only the option is the manifest's to resolve; a recorded root is used as the build named it.
        base = self.base_dir if self.images_root else None
        resolver = ImageResolver(open_root(images_root, base), ("",), self.check_images) if images_root else None
        for info, records in reader.iter_shards():
            for pos, r in enumerate(records, info.first):
                try:
                    if not self.wants([str(r.get("question_type"))]):
                        continue
                    name = str(r["image"])
                    image = resolver.resolve(name, where, pos + 1, unit="record") if resolver else ImageRef(name)
                    yield GQACaptionRecord(str(r["question_id"]), str(r["image_id"]), image, str(r["caption"]),
                                           str(r["question"]), r.get("answer"), str(r["question_type"]),
                                           str(r["scene_graph_id"]),
                                           {k[len("caption_"):]: str(v) for k, v in r.items()
                                            if k.startswith("caption_") and v is not None})
                except KeyError as exc:
                    self.bad("bad record", DataFormatError(where, pos + 1, f"record lacks {exc}", unit="record"))
                except DataFormatError as exc:
                    self.bad("missing image" if exc.message.startswith("image not found") else "bad record", exc)
