"""Hugging Face's imagefolder layout: images plus one metadata file naming them.

    root/metadata.jsonl    {"file_name": "cats/001.jpg", "text": "a cat on a mat"} per line
    root/metadata.csv      or the same as CSV: file_name,text
    root/cats/001.jpg ...  file_name is relative to the metadata file (subfolders allowed)

or Hugging Face's split layout, one such folder per split:

    root/train/metadata.jsonl   root/test/metadata.jsonl   (root/validation/...)

Which metadata file is read:
- ``options.split`` names a split folder (``val``), or a Hugging Face split name that one
  folder's name stands for (``validation`` finds ``val/``);
- otherwise the root's own metadata file, when it has one: it wins over split folders (as
  it always has here, so a root that trains today trains on the same records; Hugging Face
  would read the split folders instead), for training and evaluation alike;
- otherwise the split folder for the caller's role, by Hugging Face's folder keywords (those of
  `datasets`' data-files patterns): training reads ``train`` (or ``training``), evaluation
  ``test`` (``testing``, ``eval``, ``evaluation``) and, without one, ``validation`` (``valid``,
  ``val``, ``dev``). A role whose split is missing is an error naming the root, the split looked
  for and the split folders there; no role (a caller that did not say) must name the split.

Options (manifest ``data.*.options``):
- ``caption_column``: the column holding the caption (default ``text``, as in Hugging Face's
  text-to-image examples);
- ``category_column``: a metadata column that ``categories`` filters on; without it a
  ``categories`` filter is refused (there is nothing it could match);
- ``split``: as above.

Exactly one metadata file must be there: with both, which one wins would be a guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from .base import Loader, has_undecodable, normalise_space, read_csv
from .errors import DataFormatError, quote
from .images import ImageRef

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
# Hugging Face's split names and the folder names that stand for each (datasets' data-files
# keywords), and the splits each role reads, in order of preference.
SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
ROLE_SPLITS: dict[str, tuple[str, ...]] = {"train": ("train",), "eval": ("test", "validation")}
_DOING = {"train": "training", "eval": "evaluation"}


@dataclass(frozen=True)
class ImageTextExample:
    image: ImageRef
    caption: str
    category: str | None
    file: str  # the metadata file and the record's line, for messages about this example
    line: int


class ImageFolderLoader(Loader[ImageTextExample]):
    kind = "imagefolder"

    def __init__(self, root, *, caption_column: str = "text", category_column: str | None = None,
                 split: str | None = None, **kw: Any) -> None:
        super().__init__(root, **kw)
        if not str(caption_column).strip():
            raise ValueError("imagefolder: caption_column must name a metadata column")
        if self.categories and not category_column:
            raise ValueError(f"imagefolder ({self.root.describe()}): categories need "
                             f"options.category_column, the metadata column to filter on")
        self.caption_column = str(caption_column).strip()
        self.category_column = str(category_column).strip() if category_column else None
        self.split = str(split).strip("/") if split else ""

    def _category(self, ex: ImageTextExample) -> Iterable[str]:
        return (ex.category,) if ex.category is not None else ()

    # ---- which metadata file ------------------------------------------------------------
    def metadata_file(self) -> str:
        """The relative path of the one metadata file (under the chosen split folder, if any)."""
        d = self.split_folder()
        found = self._metadata_in(d)
        if len(found) == 1:
            return found[0]
        if found:
            raise ValueError(f"imagefolder: both metadata.jsonl and metadata.csv under "
                             f"{self.root.describe(d)}; keep one")
        raise FileNotFoundError(f"imagefolder: no metadata.jsonl or metadata.csv under {self.root.describe(d)}")

    def split_folder(self) -> str:
        """The folder whose metadata file is read: "" for the root itself (see the module doc)."""
        if self.split:
            return self._named_split(self.split)
        if self._metadata_in(""):
            return ""
        present = self._split_folders()
        if not present:
            raise FileNotFoundError(f"imagefolder: no metadata.jsonl or metadata.csv under "
                                    f"{self.root.describe()}, nor a split folder holding one")
        if self.role is None:
            raise FileNotFoundError(f"imagefolder: no metadata file under {self.root.describe()}; its split "
                                    f"folders: {', '.join(present)} (choose one with options.split)")
        for split in ROLE_SPLITS[self.role]:
            chosen = self._folder_for(split, present)
            if chosen is not None:
                return chosen
        looked = " or ".join(ROLE_SPLITS[self.role])
        names = ", ".join(n for s in ROLE_SPLITS[self.role] for n in SPLIT_FOLDERS[s])
        raise FileNotFoundError(
            f"imagefolder: {_DOING[self.role]} reads the {looked} split, but {self.root.describe()} has no folder "
            f"for it (looked for {names}, holding a metadata file); its split folders: {', '.join(present)} "
            f"(choose one with options.split)")

    def _named_split(self, name: str) -> str:
        """options.split: a folder with a metadata file, or a split name one folder stands for."""
        if self._metadata_in(name):
            return name
        present = self._split_folders()
        split = next((s for s, folders in SPLIT_FOLDERS.items() if name.lower() in folders), None)
        chosen = self._folder_for(split, present) if split else None
        if chosen is not None:
            return chosen
        raise FileNotFoundError(f"imagefolder: split {name!r} not found under {self.root.describe()} (no "
                                f"metadata.jsonl or metadata.csv under {self.root.describe(name)}); "
                                f"its split folders: {', '.join(present) or 'none'}")

    def _folder_for(self, split: str, present: list[str]) -> str | None:
        """The one present folder that stands for `split`; several are an error (which is a guess)."""
        folders = [f for f in present if f in SPLIT_FOLDERS[split]]
        if len(folders) > 1:
            raise ValueError(f"imagefolder: several folders under {self.root.describe()} hold the {split} split: "
                             f"{', '.join(folders)}; name one with options.split")
        return folders[0] if folders else None

    def _metadata_in(self, d: str) -> list[str]:
        return [f"{d}/{m}" if d else m for m in METADATA_FILES if self.root.is_file(f"{d}/{m}" if d else m)]

    def _split_folders(self) -> list[str]:
        """Direct subfolders of the root holding a metadata file (one recursive listing)."""
        found = set()
        for f in self.root.files("", recursive=True):
            parts = f.split("/")
            if len(parts) == 2 and parts[1] in METADATA_FILES:
                found.add(parts[0])
        return sorted(found)

    # ---- records ------------------------------------------------------------------------
    def _examples(self) -> Iterator[ImageTextExample]:
        rel = self.metadata_file()
        file = self.where(rel)
        images = self.images((rel.rpartition("/")[0],))  # file_name is relative to the metadata file
        rows = self._jsonl(rel, file) if rel.endswith(".jsonl") else self._csv(rel, file)
        for line, record in rows:
            try:
                ex = self._example(record, file, line, images)
            except DataFormatError as exc:
                self.bad(_reason(exc), exc)
                continue
            if ex is not None:
                yield ex

    def _jsonl(self, rel: str, file: str) -> Iterator[tuple[int, dict[str, Any]]]:
        with self.root.open(rel) as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8-sig")  # strictly: a bad byte is this line's error
                except UnicodeDecodeError as exc:
                    self.bad("not UTF-8", DataFormatError(file, lineno, f"not UTF-8: {exc}"))
                    continue
                try:
                    record = json.loads(text)
                except ValueError as exc:
                    self.bad("bad JSON line", DataFormatError(file, lineno, f"not a JSON object: {exc}"))
                    continue
                if not isinstance(record, dict):
                    self.bad("bad JSON line", DataFormatError(
                        file, lineno, f"expected a JSON object, got {type(record).__name__}"))
                    continue
                yield lineno, record

    def _csv(self, rel: str, file: str) -> Iterator[tuple[int, dict[str, Any]]]:
        optional = [(self.category_column,)] if self.category_column else []
        with self.root.open(rel) as f:
            # A missing file_name or caption column fails the whole file (line 1), not each row.
            _, rows = read_csv(f, file, [("file_name",), (self.caption_column,)], self.bad, optional,
                               encoding_errors="surrogateescape")
            for row in rows:
                if any(has_undecodable(v) for v in row.values.values()):
                    self.bad("not UTF-8", DataFormatError(file, row.line, "not UTF-8"))
                    continue
                yield row.line, row.values

    def _example(self, record: dict[str, Any], file: str, line: int, images) -> ImageTextExample | None:
        category = None
        if self.category_column:
            value = record.get(self.category_column)
            category = normalise_space(value) if value is not None else None
            # Filter before the image check: unwanted records cost no file lookups.
            if not self.wants((category,) if category else ()):
                return None
        name = record.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise DataFormatError(file, line, f"missing or empty file_name (got {quote(name)})")
        caption = record.get(self.caption_column)
        if caption is None or (isinstance(caption, str) and not caption.strip()):
            raise DataFormatError(file, line, f"missing or empty caption column {self.caption_column!r}")
        if not isinstance(caption, str):
            raise DataFormatError(file, line, f"caption {self.caption_column!r} must be a string, not {quote(caption)}")
        image = images.resolve(name, file, line)
        return ImageTextExample(image, normalise_space(caption), category, file, line)


def _reason(exc: DataFormatError) -> str:
    m = exc.message
    if m.startswith("image not found"):
        return "missing image"
    if m.startswith("missing or empty caption") or m.startswith("caption"):
        return "bad caption"
    return "bad record"
