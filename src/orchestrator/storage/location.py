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
import os
import re
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


SCHEMES = ("az", "file")  # the only URI schemes a location may have
# A scheme is only ever at the start (RFC 3986's letters); `a/b://c` is a local path whose `//` is a
# separator, which is how the operating system opens it.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Azure's container names: 3-63 of a-z, 0-9 and single hyphens, starting and ending alphanumeric.
_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
MAX_PATH_BYTES = 4095      # PATH_MAX less its NUL: longer is refused before the OS is asked
MAX_COMPONENT_BYTES = 255  # NAME_MAX


class LocationError(ValueError):
    """A location that cannot mean anything here (unknown scheme, bad container, NUL, too long)."""


class OutsideRootsError(LocationError):
    """A local location that resolves outside the roots it is confined to."""


@dataclass(frozen=True)
class ParsedLocation:
    """What a written location means, before anything is opened: a local path (not yet made
    absolute or resolved) or an Azure container and prefix."""
    raw: str
    scheme: str                  # "az", "file" or "" (a bare path)
    path: Path | None = None     # local: the path as written, file:// removed
    container: str = ""          # az: the container (the store)
    prefix: str = ""             # az: the prefix or key inside it

    @property
    def remote(self) -> bool:
        return self.scheme == "az"

    @property
    def uri(self) -> str:
        """az: the canonical URI (no trailing or doubled slashes)."""
        return f"az://{self.container}/{self.prefix}" if self.prefix else f"az://{self.container}"


def parse_location(value: str) -> ParsedLocation:
    """The one reading of a location: `az://container/prefix`, `file://PATH` or a bare path.
    Any other scheme, a NUL or control character, or a path the OS would refuse as too long is a
    LocationError (bad input), never an OSError later."""
    from .keys import InvalidKeyError, validate_prefix

    if not isinstance(value, str) or not value:
        raise LocationError("a location must be a non-empty string")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise LocationError(f"{_shown(value)} contains a control character")
    m = _SCHEME.match(value)
    scheme = m.group(1) if m else ""
    if scheme and scheme not in SCHEMES:
        raise LocationError(f"{_shown(value)}: unsupported scheme {scheme!r} (az://container/prefix, file://PATH "
                            f"or a plain path)")
    if scheme == "az":
        container, _, rest = value[len("az://"):].partition("/")
        if not _CONTAINER.match(container):
            raise LocationError(f"{_shown(value)}: {container!r} is not an Azure container name (3-63 of a-z, "
                                f"0-9 and single hyphens)")
        rest = rest.strip("/")
        try:
            validate_prefix(rest)
        except InvalidKeyError as exc:
            raise LocationError(f"{_shown(value)}: {exc}") from None
        if ".." in rest.split("/"):
            raise LocationError(f"{_shown(value)}: '..' in a blob prefix")
        return ParsedLocation(value, "az", container=container, prefix=rest)
    text = value[len("file://"):] if scheme == "file" else value
    if not text:
        raise LocationError(f"{_shown(value)}: no path after file://")
    encoded = os.fsencode(text)
    if len(encoded) > MAX_PATH_BYTES or any(len(part) > MAX_COMPONENT_BYTES for part in encoded.split(b"/")):
        raise LocationError(f"{_shown(value)}: path too long (at most {MAX_PATH_BYTES} bytes, "
                            f"{MAX_COMPONENT_BYTES} per name)")
    return ParsedLocation(value, scheme, path=Path(text).expanduser())


def _shown(value: str) -> str:
    """A location as an error quotes it: escaped, and cut short (a 5,000-character path is not echoed)."""
    return repr(value if len(value) <= 80 else value[:60] + "..." + value[-12:])


def strip_file_scheme(value: str) -> str:
    return value[len("file://"):] if value.startswith("file://") else value


def is_remote(uri: str) -> bool:
    """A URI of a remote store (az://), as opposed to a local path or file:// URI; LocationError
    for a location that is neither (an unknown scheme)."""
    return parse_location(uri).remote


def local_path(value: str, base_dir: Path | None) -> Path:
    """A path or file:// URI as a local path, relative ones against `base_dir` (a manifest's
    directory: a manifest means the same whichever directory it is run from)."""
    parsed = parse_location(value)
    if parsed.remote:
        raise LocationError(f"{_shown(value)} is a remote location, not a local path")
    p = parsed.path
    return base_dir / p if not p.is_absolute() and base_dir is not None else p


def confine(value: str, *, base_dir: Path | None, roots: list[Path]) -> str:
    """The one confinement of a location a client names: parsed as everything here parses it,
    made absolute against `base_dir` as the workers do, symlinks and `..` resolved without
    opening anything, and refused unless inside one of `roots` (OutsideRootsError; any other
    LocationError for what cannot be a location). Returns what the workers are to open: the
    resolved absolute path, or the canonical az:// URI (the storage account's business)."""
    parsed = parse_location(value)
    if parsed.remote:
        return parsed.uri
    resolved = Path(os.path.realpath(local_path(value, base_dir)))
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    if not any(resolved == r or resolved.is_relative_to(r) for r in real_roots):
        shown = ", ".join(str(r) for r in roots)
        raise OutsideRootsError(f"{_shown(value)} is outside the head's allowed roots ({shown})")
    if len(os.fsencode(str(resolved))) > MAX_PATH_BYTES:
        raise LocationError(f"{_shown(value)}: path too long once resolved")
    return str(resolved)


def resolve_location(value: str, *, base_dir: Path | None = None, store: BlobStore | None = None) -> Location:
    """Turn what the user wrote into a Location (see the module docstring for the rules)."""
    parsed = parse_location(value)
    if parsed.remote:
        from . import open_store

        # The container is the store; the rest is a prefix (a directory) or a key (a file) in it.
        return Location(value, store=open_store(f"az://{parsed.container}"), prefix=parsed.prefix)
    local = local_path(value, base_dir)
    if local.exists() or parsed.scheme == "file" or store is None:
        if not local.exists():
            where = " (and no blob store was given to look it up in)" if store is None else ""
            raise FileNotFoundError(f"{value}: no such file or directory: {local}{where}")
        return Location(value, path=local.resolve())
    return Location(value, store=store, prefix=value.strip("/"))


def open_blob_store(uri: str, base_dir: Path | None = None) -> BlobStore:
    """A manifest's `storage.blobs`: az:// as written, local paths against the manifest's directory."""
    from . import open_store

    return open_store(parse_location(uri).uri if is_remote(uri) else str(local_path(uri, base_dir)))


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
