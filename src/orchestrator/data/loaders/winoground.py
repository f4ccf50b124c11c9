"""Winoground in its two official layouts.

- ``examples.jsonl`` (one JSON object per line: id, caption_0, caption_1, image_0, image_1, tag,
  secondary_tag, num_main_preds, collapsed_tag) with images at ``images/<stem>.png``;
- the newer Hugging Face revision: ``data/test-*.parquet`` with the same columns, image_0 and
  image_1 as ``{bytes, path}`` structs (images carried inline). Reading it needs pyarrow.

Categories filter on `collapsed_tag` or `tag` (e.g. "Object", "Relation", "Both").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Literal

from .base import Loader, TextChoice, as_int, as_str
from .errors import DataFormatError, quote
from .images import ImageRef

FIELDS = ("id", "caption_0", "caption_1", "image_0", "image_1", "tag", "secondary_tag",
          "num_main_preds", "collapsed_tag")
_REQUIRED = ("id", "caption_0", "caption_1", "image_0", "image_1")


@dataclass(frozen=True)
class WinogroundExample:
    id: int
    caption_0: str
    caption_1: str
    image_0: ImageRef
    image_1: ImageRef
    tag: str
    secondary_tag: str
    num_main_preds: int
    collapsed_tag: str
    source: str  # file:line (or file, row N)

    def images(self):
        """Both images decoded (PIL, RGB)."""
        return self.image_0.open_image(), self.image_1.open_image()

    def text_choices(self) -> tuple[TextChoice, TextChoice]:
        """The text score's two questions: which caption fits image_0, and which fits image_1."""
        caps = (self.caption_0, self.caption_1)
        return TextChoice(self.image_0, caps, 0), TextChoice(self.image_1, caps, 1)


class WinogroundLoader(Loader[WinogroundExample]):
    kind = "winoground"

    def __init__(self, root, *, layout: Literal["jsonl", "parquet"] | None = None, **kw: Any) -> None:
        super().__init__(root, **kw)
        self.layout = layout

    def _category(self, ex: WinogroundExample) -> Iterable[str]:
        return (ex.collapsed_tag, ex.tag)

    def _examples(self) -> Iterator[WinogroundExample]:
        layout = self.layout or ("jsonl" if self.root.is_file("examples.jsonl") else
                                 "parquet" if self._parquet_files() else None)
        if layout == "jsonl":
            yield from self._from_jsonl("examples.jsonl")
        elif layout == "parquet":
            for rel in self._parquet_files():
                yield from self._from_parquet(rel)
        else:
            raise FileNotFoundError(f"winoground: neither examples.jsonl nor data/test-*.parquet under "
                                    f"{self.root.describe()}")

    def _parquet_files(self) -> list[str]:
        return [f for f in self.root.files("data") if f.endswith(".parquet")]

    # ---- examples.jsonl -------------------------------------------------------------
    def _from_jsonl(self, rel: str) -> Iterator[WinogroundExample]:
        file = self.where(rel)
        images = self.images(("images",))
        with self.root.open(rel) as f:
            for lineno, raw in enumerate(f, 1):
                text = raw.strip()
                if not text:
                    continue
                try:
                    row = json.loads(text)
                except (ValueError, UnicodeDecodeError) as exc:
                    self.bad("bad JSON line", DataFormatError(file, lineno, f"not a JSON object: {exc}"))
                    continue
                try:  # _example calls the lambda before it returns: lineno is this line's
                    yield self._example(row, file, lineno, "line",
                                        lambda stem: images.resolve(_png(stem), file, lineno))  # noqa: B023
                except DataFormatError as exc:
                    self.bad(_reason(exc), exc)

    # ---- data/test-*.parquet ----------------------------------------------------------
    def _from_parquet(self, rel: str) -> Iterator[WinogroundExample]:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("reading Winoground's parquet layout needs pyarrow (pip install pyarrow); "
                              "the examples.jsonl layout needs nothing extra") from None
        import pyarrow as pa

        file = self.where(rel)
        with self.root.open(rel) as f:
            try:
                pf = pq.ParquetFile(f)
            except (pa.ArrowException, OSError) as exc:  # truncated, not parquet, bad footer
                raise DataFormatError(file, None, f"not a readable parquet file: {exc}") from None
            missing = [c for c in _REQUIRED if c not in pf.schema_arrow.names]
            if missing:
                raise DataFormatError(file, None,
                                      f"missing column(s) {missing}; has {quote(','.join(pf.schema_arrow.names))}")
            row_no = 0
            for batch in _batches(pf, file):
                for row in batch.to_pylist():
                    row_no += 1
                    try:
                        yield self._example(row, file, row_no, "row",
                                            lambda img, r=row_no: _inline(img, file, r))
                    except DataFormatError as exc:
                        self.bad(_reason(exc), exc)

    # ---- shared -------------------------------------------------------------------------
    def _example(self, row: Any, file: str, line: int, unit: str, image) -> WinogroundExample:
        if not isinstance(row, dict):
            raise DataFormatError(file, line, f"expected a JSON object, got {type(row).__name__}", unit=unit)
        missing = [k for k in _REQUIRED if k not in row or row[k] is None]
        if missing:
            raise DataFormatError(file, line, f"missing field(s) {', '.join(missing)}", unit=unit)
        return WinogroundExample(
            id=as_int(row["id"], file, line, "id", unit),
            caption_0=as_str(row["caption_0"], file, line, "caption_0", unit),
            caption_1=as_str(row["caption_1"], file, line, "caption_1", unit),
            image_0=image(row["image_0"]), image_1=image(row["image_1"]),
            tag=str(row.get("tag") or ""), secondary_tag=str(row.get("secondary_tag") or ""),
            num_main_preds=as_int(row.get("num_main_preds", 1), file, line, "num_main_preds", unit),
            collapsed_tag=str(row.get("collapsed_tag") or ""),
            source=f"{file}:{line}" if unit == "line" else f"{file}, {unit} {line}",
        )


def shapes_pairs(n_scenes: int, seed: int, image_size: int = 32) -> list[WinogroundExample]:
    """The shapes world's Winoground pairs among scenes 0..n_scenes-1, in memory, as the loader
    gives them (images inline as PNG; ids as `orch data shapes` writes them): one more source of
    the same examples, so everything that scores Winoground scores these too."""
    import io

    from orchestrator.data.shapes import make_example, render

    def png(img) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    out = []
    for i in range(n_scenes):
        ex = make_example(seed, i, image_size)
        if ex.pair is None:
            continue
        where = f"shapes seed {seed} scene {i}"
        out.append(WinogroundExample(
            id=len(out), caption_0=ex.pair.caption_0, caption_1=ex.pair.caption_1,
            image_0=ImageRef(f"{where}/image_0.png", None, png(ex.image())),
            image_1=ImageRef(f"{where}/image_1.png", None, png(render(ex.pair.scene_1))),
            tag=ex.pair.tag, secondary_tag="", num_main_preds=1, collapsed_tag=ex.pair.collapsed_tag,
            source=where))
    return out


def _png(stem: Any) -> str:
    stem = str(stem)
    return stem if stem.lower().endswith(".png") else f"{stem}.png"


def _inline(img: Any, file: str, row: int) -> ImageRef:
    if isinstance(img, dict) and isinstance(img.get("bytes"), (bytes, bytearray)) and img["bytes"]:
        return ImageRef(str(img.get("path") or ""), None, bytes(img["bytes"]))
    raise DataFormatError(file, row, "image column is not a {bytes, path} struct with bytes", unit="row")


def _reason(exc: DataFormatError) -> str:
    m = exc.message
    if m.startswith("image not found"):
        return "missing image"
    if m.startswith("missing field"):
        return "missing field"
    return "bad record"


def _batches(pf, file: str):
    """The file's record batches; a corrupt page is an error naming the file and the rows read."""
    import pyarrow as pa

    it, read = pf.iter_batches(batch_size=64), 0
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise DataFormatError(file, None, f"corrupt parquet data after row {read}: {exc}") from None
        read += batch.num_rows
        yield batch
