"""What every benchmark loader shares: options, the error policy, limits and file lookup.

A loader is an iterable of typed examples. Iterating reads the files again (loaders hold no
data between passes), applies the category filter and `n` (the first n examples in file
order: a prefix is streaming-friendly and stable when the file grows), and leaves the skips of
that pass in `loader.skips`.

Category filters come from the user (the manifest's `categories`) or are a default (the loader's
`default_categories`, or a caller's `default_categories=`). A category the user named that
matches nothing is an error; a default only when none of it matches, since a default names what
a benchmark usually has, not what this copy of it must have.

`role` says what the caller reads the data for ("train" or "eval", from whether the source is
the manifest's data.train or data.eval); a loader whose layout holds several splits picks one
by it. The caller sets it, never the manifest's options.
"""

from __future__ import annotations

import abc
import copy
import csv
import fnmatch
import io
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Iterable, Iterator, Literal, Sequence, TypeVar

from .errors import DataFormatError, ErrorPolicy, OnError, SkipReport, quote
from .images import DataRoot, ImageRef, ImageResolver, open_root

E = TypeVar("E")
Role = Literal["train", "eval"]
ROLES: tuple[str, ...] = ("train", "eval")


@dataclass(frozen=True)
class TextChoice:
    """Pick the text that matches the image: texts[answer] is right."""
    image: ImageRef
    texts: tuple[str, ...]
    answer: int = 0


@dataclass(frozen=True)
class ImageChoice:
    """Pick the image that matches the text: images[answer] is right."""
    text: str
    images: tuple[ImageRef, ...]
    answer: int = 0


def normalise_space(text: str) -> str:
    """Collapse runs of whitespace and trim ('Gary Marcus et al. ' -> 'Gary Marcus et al.')."""
    return " ".join(str(text).split())


class Loader(abc.ABC, Generic[E]):
    """Base of the benchmark loaders. Subclasses implement `_examples` and `_category`."""

    kind: ClassVar[str]
    blob_root: ClassVar[bool] = False  # root is a blob store written by `orch data` (not plain files)
    # The filter used when the user names no categories (e.g. GQA's seed question types).
    default_categories: ClassVar[tuple[str, ...]] = ()

    def __init__(self, root: str | os.PathLike[str] | DataRoot, *, on_error: OnError = "raise",
                 categories: Sequence[str] | None = None, n: int | None = None, seed: int = 0,
                 check_images: bool = True, base_dir: str | os.PathLike[str] | None = None,
                 default_categories: Sequence[str] | None = None, role: Role | None = None) -> None:
        if n is not None and n < 1:
            raise ValueError(f"n must be positive, not {n}")
        if role is not None and role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        self.root = open_root(root, base_dir, blob=self.blob_root)
        self.base_dir = base_dir  # where relative paths in options (e.g. an images folder) resolve
        self.on_error: OnError = on_error
        self.role: Role | None = role
        given = [normalise_space(c) for c in categories] if categories else None
        default = [normalise_space(c) for c in (default_categories or self.default_categories)]
        self.categories = given or default or None
        self.default_filter = given is None and bool(default)  # held to the default's rule
        self.n = n
        self.seed = seed
        self.check_images = check_images
        self.skips = SkipReport()
        self._policy = ErrorPolicy(on_error, self.skips)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root.describe()!r})"

    # ---- subclass hooks -------------------------------------------------------------
    @abc.abstractmethod
    def _examples(self) -> Iterator[E]:
        """Every valid example in file order (bad ones go through self.bad)."""

    def _category(self, example: E) -> Iterable[str]:
        """The values the category filter matches against (empty: no categories)."""
        return ()

    # ---- iteration ------------------------------------------------------------------
    def __iter__(self) -> Iterator[E]:
        self.skips = SkipReport()
        self._policy = ErrorPolicy(self.on_error, self.skips)
        count, complete = 0, True
        matched: set[str] = set()  # wanted categories some yielded example had
        examples = self._examples()
        try:
            for ex in examples:
                values = list(self._category(ex))
                if not self.wants(values):
                    continue
                matched.update(c for c in self.categories or () if self._matches(c, values))
                yield ex
                count += 1
                if self.n is not None and count >= self.n:
                    complete = False
                    break
        finally:
            close = getattr(examples, "close", None)
            if close is not None:
                close()  # releases open files now, not at garbage collection
        where = f"{self.kind} loader ({self.root.describe()})"
        self._policy.finish(where)
        unmatched = self.unmet_categories(matched)
        if unmatched and complete:
            self._refuse_absent(where, unmatched, count)

    def _matches(self, category: str, values: Iterable[str]) -> bool:
        """`wants` for one category alone (each loader's own matching rule)."""
        saved, self.categories = self.categories, [category]
        try:
            return self.wants(values)
        finally:
            self.categories = saved

    def _refuse_absent(self, where: str, unmatched: list[str], selected: int) -> None:
        """A category the data does not have (a typo, another benchmark's tag) is an error listing
        the values it has, not a silently smaller — or empty — evaluation. One more pass, over the
        annotations only; a category the data has but whose records were all skipped is no error."""
        lister = copy.copy(self)
        lister.categories, lister.n, lister.check_images, lister.on_error = None, None, False, "skip"
        present: dict[str, str] = {}
        found: set[str] = set()
        for ex in lister:
            values = list(lister._category(ex))
            for v in lister.category_of(ex):
                present.setdefault(v.lower(), v)
            found.update(c for c in unmatched if self._matches(c, values))
        absent = self.unmet_categories(found, unmatched)
        if absent:
            names = sorted(present.values(), key=str.lower)
            shown = ", ".join(names[:50]) + (f", ... ({len(names)} in all)" if len(names) > 50 else "")
            what = "the default categories" if self.default_filter else "categories"
            hint = "; name the ones to use with `categories`" if self.default_filter else ""
            raise ValueError(f"{where}: {what} {absent} match nothing"
                             f"{'' if selected else ' (no examples selected)'}; the data has: "
                             f"{shown or 'no category values'}{hint}")

    def matched_categories(self, example: E) -> list[str]:
        """The filter's categories this example matches, each by the loader's own rule."""
        values = list(self._category(example))
        return [c for c in self.categories or () if self._matches(c, values)]

    def unmet_categories(self, matched: Iterable[str], wanted: Sequence[str] | None = None) -> list[str]:
        """Of `wanted` (default: the whole filter), the categories whose absence is an error, given
        those that `matched`: each one the user named that matched nothing; of a default filter,
        all of it when none matched, else none (a GQA file without existence questions still
        has relation and position ones)."""
        wanted = list(self.categories or ()) if wanted is None else list(wanted)
        hit = {c.lower() for c in matched}
        missing = [c for c in wanted if c.lower() not in hit]
        if self.default_filter and len(missing) < len(wanted):
            return []
        return missing

    def category_of(self, example: E) -> tuple[str, ...]:
        """The values the category filter matches this example on (whitespace collapsed, case
        kept; `wants` compares them case-insensitively). Lets a caller list what is there."""
        return tuple(v for v in (normalise_space(c) for c in self._category(example)) if v)

    def wants(self, categories: Iterable[str]) -> bool:
        """Whether the category filter keeps a record with these category values (lets a
        loader drop unwanted records before doing work such as image checks)."""
        if not self.categories:
            return True
        wanted = {c.lower() for c in self.categories}
        return bool(wanted & {normalise_space(c).lower() for c in categories})

    def load(self) -> list[E]:
        return list(self)

    def bad(self, reason: str, error: DataFormatError) -> None:
        """A malformed record: raise (on_error: raise) or count it (on_error: skip)."""
        self._policy(reason, error)

    # ---- helpers --------------------------------------------------------------------
    def images(self, dirs: Sequence[str] = ("",)) -> ImageResolver:
        return ImageResolver(self.root, dirs, check=self.check_images)

    def find_file(self, patterns: Sequence[str], what: str, name: str | None = None,
                  subdirs: Sequence[str] = ("",)) -> str:
        """The one file under the root matching `patterns` (or named `name`), as a relative path.

        Several matches are an error naming them: guessing between e.g. two splits would
        silently evaluate on the wrong one.
        """
        if name:
            for d in subdirs:
                rel = f"{d}/{name}" if d else name
                if self.root.is_file(rel):
                    return rel
            raise FileNotFoundError(f"{what}: {name!r} not found under {self.root.describe()}")
        for d in subdirs:
            found = [f for f in self.root.files(d)
                     if any(fnmatch.fnmatch(f.rsplit("/", 1)[-1], p) for p in patterns)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise FileNotFoundError(
                    f"{what}: several candidates under {self.root.describe(d)}: "
                    f"{', '.join(f.rsplit('/', 1)[-1] for f in found)}; name the one to use")
        raise FileNotFoundError(f"{what}: no file matching {' or '.join(patterns)} under {self.root.describe()}")

    def where(self, rel: str) -> str:
        return self.root.describe(rel)


# ---------------------------------------------------------------- CSV rows with line numbers

@dataclass(frozen=True)
class CsvRow:
    line: int  # the line the record starts on (quoted fields may span lines)
    values: dict[str, str]


def read_csv(stream: io.BufferedIOBase | Any, file: str, required: Sequence[Sequence[str]],
             on_bad, optional: Sequence[Sequence[str]] = (), *,
             encoding_errors: str = "strict") -> tuple[dict[str, str], Iterator[CsvRow]]:
    """Open a CSV (UTF-8, BOM tolerated) and check its header.

    encoding_errors="surrogateescape" keeps reading past bytes that are not UTF-8 (they come
    back as lone surrogates, see `has_undecodable`), so the caller can report the one bad row
    by its line instead of the whole file failing at the decoder's chunk boundary.

    `required` lists alternatives per column, e.g. ``[("Prompts", "Prompt"), ("Category",)]``;
    header names are matched after trimming whitespace, case-insensitively. Returns the
    mapping canonical name -> header name found, and the rows keyed by canonical name. A row
    with fewer fields than the header goes to `on_bad(reason, DataFormatError)`.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="", errors=encoding_errors)
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise DataFormatError(file, 1, "empty file: expected a header row") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataFormatError(file, 1, f"unreadable header: {exc}") from None
    norm = {h.strip().lower(): i for i, h in enumerate(header)}
    columns: dict[str, int] = {}
    for alts in list(required) + list(optional):
        for a in alts:
            if a.strip().lower() in norm:
                columns[alts[0]] = norm[a.strip().lower()]
                break
        else:
            if alts in required:
                names = " or ".join(repr(a) for a in alts)
                raise DataFormatError(file, 1, f"missing column {names}; the header has {quote(','.join(header))}")
    found = {canon: header[i] for canon, i in columns.items()}

    def rows() -> Iterator[CsvRow]:
        last = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataFormatError(file, last + 1, f"unreadable CSV: {exc}") from None
            start, last = last + 1, reader.line_num
            if not row or all(not v.strip() for v in row):
                continue  # blank lines are not records
            if len(row) <= max(columns.values()):
                on_bad("short row", DataFormatError(
                    file, start, f"row has {len(row)} field(s); the header has {len(header)}"))
                continue
            if len(row) > len(header) and any(v.strip() for v in row[len(header):]):
                on_bad("long row", DataFormatError(
                    file, start, f"row has {len(row)} fields; the header has {len(header)} "
                                 f"(an unquoted comma?)"))
                continue
            yield CsvRow(start, {canon: row[i] for canon, i in columns.items()})

    return found, rows()


def has_undecodable(text: str) -> bool:
    """Whether text read with errors="surrogateescape" held bytes that are not UTF-8."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def coco_name(split: str, image_id: int | str) -> str:
    """COCO's file name for an image id: COCO_train2014_000000123456.jpg."""
    return f"COCO_{split}_{int(image_id):012d}.jpg"


def as_int(value: Any, file: str, line: int | None, field: str, unit: str = "line") -> int:
    """An integer field; "2345.0" (as pandas writes ids into CSVs with gaps) counts as 2345."""
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str) and "." in value:
            value = float(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise DataFormatError(file, line, f"{field} must be an integer, not {quote(value)}", unit=unit) from None


def as_str(value: Any, file: str, line: int | None, field: str, unit: str = "line") -> str:
    if not isinstance(value, str):
        raise DataFormatError(file, line, f"{field} must be a string, not {quote(value)}", unit=unit)
    return value
