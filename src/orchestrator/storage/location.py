"""Where a directory of files (a model, a dataset) lives, and copying such directories in and out.

A location is written one way everywhere (manifests, `orch eval --checkpoint`, `orch sample`):
- `az://container/prefix`: a prefix in Azure Blob (credentials from the environment);
- a path or `file://` URI naming an existing local directory or file (relative paths against
  `base_dir`, the manifest's directory);
- otherwise a key or prefix in the store given alongside (the manifest's `storage.blobs`).

Local directories are plain files (what diffusers and transformers write), not a blob store: a
local blob store keeps a header in every object, so the two are never confused.
"""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .base import BlobStore

INDEX_FILES = ("model_index.json", "config.json")  # a model directory's index, written last


@dataclass(frozen=True)
class Location:
    """A local path, or a prefix (or key) in a blob store; `raw` is what the user wrote."""
    raw: str
    path: Path | None = None
    store: BlobStore | None = None
    prefix: str = ""

    @property
    def is_local(self) -> bool:
        return self.path is not None

    def describe(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"{self.prefix!r} in {self.store!r}" if self.prefix else repr(self.store)

    def child(self, rel: str) -> str:
        return f"{self.prefix.rstrip('/')}/{rel}" if self.prefix.strip("/") else rel

    def has(self, rel: str) -> bool:
        """Whether the file `rel` under this location exists."""
        if self.path is not None:
            return (self.path / rel).is_file()
        return self.store.exists(self.child(rel))

    def read_bytes(self, rel: str | None = None) -> bytes:
        """The location itself (rel None: a file) or a file under it, verified when from a store."""
        if self.path is not None:
            return (self.path / rel if rel else self.path).read_bytes()
        return self.store.get(self.child(rel) if rel else self.prefix)

    @contextlib.contextmanager
    def local_dir(self) -> Iterator[Path]:
        """The directory as local files: the path itself, or a temporary download of the prefix."""
        if self.path is not None:
            yield self.path
            return
        with tempfile.TemporaryDirectory(prefix="orch-dir-") as tmp:
            yield get_dir(self.store, self.prefix, tmp)


def strip_file_scheme(value: str) -> str:
    return value[len("file://"):] if value.startswith("file://") else value


def is_remote(uri: str) -> bool:
    """A URI of a remote store (az://), as opposed to a local path or file:// URI."""
    return "://" in uri and not uri.startswith("file://")


def local_path(value: str, base_dir: Path | None) -> Path:
    """A path or file:// URI as a local path, relative ones against `base_dir` (a manifest's
    directory: a manifest means the same whichever directory it is run from)."""
    p = Path(strip_file_scheme(value)).expanduser()
    return base_dir / p if not p.is_absolute() and base_dir is not None else p


def resolve_location(value: str, *, base_dir: Path | None = None, store: BlobStore | None = None) -> Location:
    """Turn what the user wrote into a Location (see the module docstring for the rules)."""
    if value.startswith("az://"):
        from . import open_store

        # The container is the store; the rest is a prefix (a directory) or a key (a file) in it.
        container, _, rest = value[len("az://"):].partition("/")
        return Location(value, store=open_store(f"az://{container}"), prefix=rest.strip("/"))
    local = local_path(value, base_dir)
    if local.exists() or value.startswith("file://") or store is None:
        if not local.exists():
            where = " (and no blob store was given to look it up in)" if store is None else ""
            raise FileNotFoundError(f"{value}: no such file or directory: {local}{where}")
        return Location(value, path=local.resolve())
    return Location(value, store=store, prefix=value.strip("/"))


def open_blob_store(uri: str, base_dir: Path | None = None) -> BlobStore:
    """A manifest's `storage.blobs`: az:// as written, local paths against the manifest's directory."""
    from . import open_store

    return open_store(uri if is_remote(uri) else str(local_path(uri, base_dir)))


def check_writable(store: BlobStore, where: str) -> None:
    """Write and delete a small object, so a store that cannot take a checkpoint says so before
    anything runs: StorageLocationError (bad input: not a folder, not writable) or StorageError
    (the disk is full, the service unreachable: try again later)."""
    import errno
    import uuid

    from .base import StorageError

    key = f".orch-probe/{uuid.uuid4().hex}"
    try:
        store.put(key, b"probe")
        store.delete(key, missing_ok=True)
    except OSError as exc:
        path = exc.filename or where
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(f"the blob store {where} is full ({path}): {exc.strerror}") from exc
        raise StorageLocationError(f"the blob store {where} is not writable ({path}): {exc.strerror or exc}") \
            from exc


class StorageLocationError(ValueError):
    """A blob store location that cannot be used as given (bad input, exit 2)."""


def check_blob_store(uri: str) -> BlobStore:
    """Open the store `uri` names and prove it takes a write (see check_writable)."""
    from . import open_store
    from .retry import PREFLIGHT

    try:
        store = open_store(uri, **({"retry": PREFLIGHT} if is_remote(uri) else {}))
    except OSError as exc:  # e.g. a file where the store's folder should be
        raise StorageLocationError(f"the blob store {uri} cannot be created at {exc.filename or uri}: "
                                   f"{exc.strerror or exc}") from exc
    check_writable(store, uri)
    return store


def put_dir(store: BlobStore, local_dir: str | Path, prefix: str) -> list[str]:
    """Copy every file under `local_dir` to `prefix/<relative path>`. Index files go last, so a
    reader that finds one knows the rest of the directory is there."""
    root = Path(local_dir)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(root).as_posix() in INDEX_FILES)
    keys = []
    for p in files:
        key = f"{prefix.rstrip('/')}/{p.relative_to(root).as_posix()}" if prefix.strip("/") else \
            p.relative_to(root).as_posix()
        store.put_file(key, p)
        keys.append(key)
    return keys


def get_dir(store: BlobStore, prefix: str, local_dir: str | Path) -> Path:
    """Copy every object under `prefix/` into `local_dir` (each verified by its sha256)."""
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    keys = store.list(prefix)
    if not keys:
        raise FileNotFoundError(f"nothing under blob prefix {prefix!r} in {store!r}")
    for key in keys:
        store.get_file(key, Path(local_dir) / key[len(prefix):])
    return Path(local_dir)
