"""Where a benchmark's files live, and image references resolved against it.

A root is a local directory or a prefix in a blob store (``az://container/prefix``, or any
`BlobStore` handed in). Loaders read their annotation files through it and turn the image
names those files contain into `ImageRef`s, checking that each image exists, so a missing
image is reported where it is named (file + line), not when a model first touches it.
"""

from __future__ import annotations

import abc
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

from orchestrator.storage import BlobStore, open_store
from orchestrator.storage.location import is_remote, local_path

from .errors import DataFormatError


class DataRoot(abc.ABC):
    """Read-only view of a directory of benchmark files. Paths are '/'-separated, relative."""

    @abc.abstractmethod
    def open(self, rel: str) -> BinaryIO: ...

    @abc.abstractmethod
    def is_file(self, rel: str) -> bool: ...

    @abc.abstractmethod
    def files(self, rel_dir: str = "", recursive: bool = False) -> list[str]:
        """Sorted relative paths of the files under `rel_dir` (its direct children unless recursive)."""

    @abc.abstractmethod
    def describe(self, rel: str = "") -> str:
        """A path or URI for messages."""

    def local_path(self, rel: str) -> Path | None:
        """The file's local path where there is one (lets big files be read with seeks)."""
        return None

    def read_bytes(self, rel: str) -> bytes:
        with self.open(rel) as f:
            return f.read()

    def child(self, rel_dir: str) -> "DataRoot":
        return _SubRoot(self, rel_dir.strip("/"))


class LocalRoot(DataRoot):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"LocalRoot({str(self.path)!r})"

    def _p(self, rel: str) -> Path:
        return self.path.joinpath(*[p for p in rel.split("/") if p]) if rel else self.path

    def open(self, rel: str) -> BinaryIO:
        try:
            return open(self._p(rel), "rb")
        except FileNotFoundError:
            raise FileNotFoundError(f"{self._p(rel)} not found") from None

    def is_file(self, rel: str) -> bool:
        return self._p(rel).is_file()

    def files(self, rel_dir: str = "", recursive: bool = False) -> list[str]:
        base = self._p(rel_dir)
        if not base.is_dir():
            return []
        found = base.rglob("*") if recursive else base.iterdir()
        prefix = f"{rel_dir.strip('/')}/" if rel_dir.strip("/") else ""
        return sorted(prefix + p.relative_to(base).as_posix() for p in found if p.is_file())

    def describe(self, rel: str = "") -> str:
        return str(self._p(rel))

    def local_path(self, rel: str) -> Path | None:
        return self._p(rel)


class BlobRoot(DataRoot):
    """Files under `prefix` in a blob store; reads are sha256-verified by the store."""

    def __init__(self, store: BlobStore, prefix: str = "", uri: str | None = None) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.uri = uri or repr(store)
        self._listing: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"BlobRoot({self.describe()!r})"

    def _key(self, rel: str) -> str:
        rel = rel.strip("/")
        return f"{self.prefix}/{rel}" if self.prefix and rel else (self.prefix or rel)

    def open(self, rel: str) -> BinaryIO:
        if not self.store.exists(self._key(rel)):
            raise FileNotFoundError(f"{self.describe(rel)} not found")
        return self.store.open_read(self._key(rel))

    def is_file(self, rel: str) -> bool:
        # One listing per directory instead of one request per image: benchmarks name
        # thousands of images in a handful of directories.
        d, _, _ = rel.strip("/").rpartition("/")
        if d not in self._listing:
            self._listing[d] = set(self.files(d, recursive=False))
        return rel.strip("/") in self._listing[d]

    def files(self, rel_dir: str = "", recursive: bool = False) -> list[str]:
        base = self._key(rel_dir)
        prefix = f"{base}/" if base else ""
        start = len(f"{self.prefix}/") if self.prefix else 0
        out = []
        for key in self.store.list(prefix):
            rest = key[len(prefix):]
            if recursive or "/" not in rest:
                out.append(key[start:])
        return sorted(out)

    def describe(self, rel: str = "") -> str:
        base = self.uri.rstrip("/")
        return f"{base}/{rel.strip('/')}" if rel else base

    def read_bytes(self, rel: str) -> bytes:
        return self.store.get(self._key(rel))


class _SubRoot(DataRoot):
    def __init__(self, parent: DataRoot, rel_dir: str) -> None:
        self.parent = parent
        self.rel_dir = rel_dir

    def __repr__(self) -> str:
        return f"{self.parent!r}/{self.rel_dir}"

    def _r(self, rel: str) -> str:
        rel = rel.strip("/")
        return f"{self.rel_dir}/{rel}" if self.rel_dir and rel else (self.rel_dir or rel)

    def open(self, rel: str) -> BinaryIO:
        return self.parent.open(self._r(rel))

    def is_file(self, rel: str) -> bool:
        return self.parent.is_file(self._r(rel))

    def files(self, rel_dir: str = "", recursive: bool = False) -> list[str]:
        cut = len(self.rel_dir) + 1 if self.rel_dir else 0
        return [f[cut:] for f in self.parent.files(self._r(rel_dir), recursive)]

    def describe(self, rel: str = "") -> str:
        return self.parent.describe(self._r(rel))

    def local_path(self, rel: str) -> Path | None:
        return self.parent.local_path(self._r(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.parent.read_bytes(self._r(rel))


def open_root(root: str | os.PathLike[str] | DataRoot, base_dir: str | os.PathLike[str] | None = None,
              *, blob: bool = False) -> DataRoot:
    """A root from a manifest value: a local directory (relative ones against `base_dir`),
    ``file://DIR``, or a blob URI (``az://container/prefix``).

    blob=True reads a local path as a blob store (the layout `orch data` writes: files with
    integrity headers) instead of a plain directory.
    """
    if isinstance(root, DataRoot):
        return root
    text = str(root)
    if is_remote(text):
        return BlobRoot(open_store(text), "", uri=text)
    path = local_path(text, Path(base_dir) if base_dir is not None else None)
    if blob:
        return BlobRoot(open_store(str(path)), "", uri=str(path))
    return LocalRoot(path)


@dataclass(frozen=True, eq=False)
class ImageRef:
    """An image a benchmark names: a file under a root, or bytes carried inline (parquet).

    `rel` is the path under `root` (or the original name, for inline images). Equal when
    they point at the same place.
    """

    rel: str
    root: DataRoot | None = None
    data: bytes | None = None

    @property
    def uri(self) -> str:
        if self.root is None:
            return self.rel
        return self.root.describe(self.rel)

    def __str__(self) -> str:
        return self.uri if self.data is None else f"<inline {self.rel or 'image'}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageRef) and (self.uri, self.data) == (other.uri, other.data)

    def __hash__(self) -> int:
        return hash((self.uri, self.data))

    def exists(self) -> bool:
        return self.data is not None or (self.root is not None and self.root.is_file(self.rel))

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.root is None:
            raise FileNotFoundError(f"image {self.rel!r} has no root to be read from")
        return self.root.read_bytes(self.rel)

    def open_image(self, mode: str | None = "RGB"):
        """The decoded PIL image (converted to `mode` unless None)."""
        from PIL import Image

        img = Image.open(io.BytesIO(self.read_bytes()))
        img.load()
        return img.convert(mode) if mode else img

    @property
    def local_path(self) -> Path | None:
        return self.root.local_path(self.rel) if self.root is not None and self.data is None else None

    def to_json(self) -> str:
        return self.uri


class ImageResolver:
    """Turns image names from an annotation file into checked `ImageRef`s.

    `dirs` are tried in order under the root (benchmarks ship images in differently named
    folders: ``images/``, ``VG_100K/``, ``train2014/``); the first that holds the file wins.
    With check=False the first directory is assumed and nothing is touched.
    """

    def __init__(self, root: DataRoot, dirs: Sequence[str] = ("",), check: bool = True) -> None:
        self.root = root
        self.dirs = [d.strip("/") for d in dirs] or [""]
        self.check = check

    def resolve(self, name: str, file: str, line: int | None, *, unit: str = "line") -> ImageRef:
        name = name.strip().lstrip("/")
        if not name or ".." in name.split("/"):
            raise DataFormatError(file, line, f"bad image name {name!r}", unit=unit)
        candidates = [f"{d}/{name}" if d else name for d in self.dirs]
        if not self.check:
            return ImageRef(candidates[0], self.root)
        for rel in candidates:
            if self.root.is_file(rel):
                return ImageRef(rel, self.root)
        tried = ", ".join(self.root.describe(c) for c in candidates)
        raise DataFormatError(file, line, f"image not found: {tried}", unit=unit)
