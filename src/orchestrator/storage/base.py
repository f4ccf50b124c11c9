"""The blob store contract shared by every backend.

Backends implement a handful of primitives (`_write`, `_read_chunks`, `info`, `exists`,
`list`, `delete`); everything a caller sees on top of them (`put` in its forms, `get`,
streaming reads, `get_file`) lives here once, so integrity checking and atomic local
materialisation behave the same on every backend.
"""

from __future__ import annotations

import abc
import errno as errno_mod
import hashlib
import io
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar, Union

from orchestrator.storage.keys import validate_key
from orchestrator.telemetry import current as telemetry

DEFAULT_BLOCK_SIZE = 8 * 1024 * 1024
CHANGED_RESTARTS = 5  # whole-object reads restarted after losing a race with an overwrite

T = TypeVar("T")

Data = Union[bytes, bytearray, memoryview, BinaryIO]


class StorageError(Exception):
    """Base class of every blob store error.

    `store` (the store's URI) and `key` say where, and `cause` (a short phrase) why, whenever
    the raiser knows them; the message itself is one line that names all three, so a CLI can
    print `str(exc)` as is.
    """

    def __init__(self, message: str = "", *, store: str | None = None, key: str | None = None,
                 cause: str | None = None) -> None:
        super().__init__(message)
        self.store, self.key, self.cause = store, key, cause

    def __reduce__(self):  # keep the fields across pickling (Ray ships exceptions between processes)
        return _rebuild_error, (type(self), self.args, dict(self.__dict__))


def _rebuild_error(cls: type, args: tuple, fields: dict) -> StorageError:
    exc = cls(*args)
    exc.__dict__.update(fields)
    return exc


class StorageIOError(StorageError, OSError):
    """The store's medium refused an operation: full (ENOSPC), over quota (EDQUOT), permission
    denied (EACCES/EPERM), read-only (EROFS), a file size limit (EFBIG), an I/O error.

    Also an OSError with the original errno (and `strerror` the cause alone), so code that sorts
    OS errors by errno, as the preflight does to tell "full" from "not writable", keeps working;
    `str()` is the one-line message naming store, key and cause.
    """

    def __init__(self, message: str, *, store: str | None = None, key: str | None = None,
                 cause: str | None = None, errno: int | None = None, filename: str | None = None) -> None:
        if filename is None:
            OSError.__init__(self, errno, cause or message)
        else:
            OSError.__init__(self, errno, cause or message, filename)
        self.message, self.store, self.key, self.cause = message, store, key, cause

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return _rebuild_io_error, (type(self), self.message, self.store, self.key, self.cause, self.errno,
                                   self.filename)


def _rebuild_io_error(cls: type, message: str, store: str | None, key: str | None, cause: str | None,
                      errno: int | None, filename: str | None) -> StorageIOError:
    return cls(message, store=store, key=key, cause=cause, errno=errno, filename=filename)


# Plain words for the errors a store's medium reports most; the errno's name follows in brackets.
_OS_CAUSES = {
    errno_mod.ENOSPC: "no space left on the device",
    errno_mod.EDQUOT: "the disk quota is exceeded",
    errno_mod.EACCES: "permission denied",
    errno_mod.EPERM: "operation not permitted",
    errno_mod.EROFS: "the file system is read-only",
    errno_mod.EFBIG: "the file would exceed the size limit",
    errno_mod.EIO: "an I/O error on the device",
}


def os_cause(exc: OSError) -> str:
    """'no space left on the device (ENOSPC)': what an OSError means, in one short phrase."""
    name = errno_mod.errorcode.get(exc.errno or 0)
    words = _OS_CAUSES.get(exc.errno or 0) or exc.strerror or str(exc) or type(exc).__name__
    return f"{words} ({name})" if name else words


def storage_io_error(exc: OSError, *, op: str, store: str, key: str | None,
                     path: str | os.PathLike[str] | None = None) -> StorageIOError:
    """An OSError from a store operation as a StorageIOError naming the store, the key and why:
    "cannot write to the blob store file:///runs: no space left on the device (ENOSPC); key 'ckpt/step-2.pt'".
    Store and cause come first: a results table cuts long errors at the end. `path` (the file the
    error names, if not the object's own) is added when it says more."""
    cause = os_cause(exc)
    where = {"write": "to", "read": "from", "download": "from"}.get(op, "in")
    message = f"cannot {op} {where} the blob store {store}: {cause}"
    if key:
        message += f"; key {key!r}"
    if path:
        message += f" (at {os.fspath(path)})"
    return StorageIOError(message, store=store, key=key, cause=cause, errno=exc.errno,
                          filename=os.fspath(path) if path else None)


class StorageConfigError(StorageError, ValueError):
    """A store URI or its credentials are unusable."""


class BlobNotFoundError(StorageError, KeyError):
    """The key names no object."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "blob not found"


class BlobExistsError(StorageError):
    """A create-only put found an object already under the key."""


class IntegrityError(StorageError):
    """Stored bytes do not match the sha256/size recorded with them."""


class BlobChangedError(StorageError):
    """The object was replaced while a streaming read was under way."""


class TransientStorageError(StorageError):
    """A fault worth retrying: connection refused/reset, timeout, throttling, 5xx."""


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    sha256: str  # lowercase hex


class BlobStore(abc.ABC):
    """Atomic, integrity-checked object storage addressed by '/'-separated keys."""

    block_size: int = DEFAULT_BLOCK_SIZE
    backend: str = "blob"  # the metrics' `backend` label: file | azure
    # Whether a whole-object read that fails verification is worth one careful re-read
    # (strict=True) before it is reported as corruption; see AzureBlobStore.
    recheck_on_mismatch: bool = False

    # ---- backend primitives -------------------------------------------------------
    @abc.abstractmethod
    def _write(self, key: str, stream: BinaryIO, overwrite: bool) -> BlobInfo:
        """Store everything readable from `stream` under `key`, atomically."""

    @abc.abstractmethod
    def _read_chunks(self, key: str, chunk_size: int, strict: bool = False) -> tuple[BlobInfo, Iterator[bytes]]:
        """Expected info of one consistent version, and an iterator over its raw bytes.

        strict=True asks for the slower path that proves the bytes and the info belong to
        one version, where a backend has a faster path that can be torn.
        """

    @abc.abstractmethod
    def info(self, key: str) -> BlobInfo:
        """Size and recorded sha256 of the object (does not read its bytes)."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys of real objects whose key starts with `prefix`."""

    @abc.abstractmethod
    def delete(self, key: str, *, missing_ok: bool = False) -> None: ...

    @property
    def uri(self) -> str:
        """Where the store is, as `open_store` takes it (what error messages name)."""
        return repr(self)

    def sweep_orphans(self, older_than_s: float | None = None) -> int:
        """Remove what writers killed mid-put left behind; how many were removed.

        Nothing to do by default: a put that dies before its commit leaves nothing a backend
        must clean (Azure drops uncommitted blocks by itself after a week). See
        LocalBlobStore.sweep_orphans for the local backend's temp files."""
        return 0

    # ---- shared API ---------------------------------------------------------------
    def put(self, key: str, data: Data, *, overwrite: bool = True) -> BlobInfo:
        """Store bytes or a binary file object (read in chunks) atomically.

        With overwrite=False the put is create-only and raises BlobExistsError if the key
        is taken.
        """
        validate_key(key)
        if isinstance(data, (bytes, bytearray, memoryview)):
            stream: BinaryIO = io.BytesIO(data)
        elif hasattr(data, "read"):
            stream = data
        else:
            raise TypeError(f"put() needs bytes or a binary file object, not {type(data).__name__}")
        info = self._write(key, stream, overwrite)
        telemetry().blob_transfer(backend=self.backend, op="put", nbytes=info.size)
        return info

    def put_file(self, key: str, path: str | os.PathLike[str], *, overwrite: bool = True) -> BlobInfo:
        with open(path, "rb") as f:
            return self.put(key, f, overwrite=overwrite)

    def iter_chunks(self, key: str, chunk_size: int | None = None) -> Iterator[bytes]:
        """Stream the object; IntegrityError is raised after the last chunk if it is corrupt.

        Callers must consume the iterator to the end before trusting what they received.
        """
        return self._open_verified(key, chunk_size)[1]

    def open_read(self, key: str, chunk_size: int | None = None) -> BinaryIO:
        """A read-only file object over the object; verifies when it reaches the end."""
        raw = _ChunkReader(self.iter_chunks(key, chunk_size))
        return io.BufferedReader(raw, buffer_size=1 << 20)  # type: ignore[return-value]

    def get(self, key: str) -> bytes:
        return self._restarting(lambda strict: b"".join(self._open_verified(key, None, strict)[1]))

    def get_file(self, key: str, dest_path: str | os.PathLike[str]) -> BlobInfo:
        """Download to a temp file beside `dest_path`, verify, fsync, then rename over it.

        On any failure the temp file is removed and an existing `dest_path` is untouched.
        """
        dest = Path(dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)

        def download(strict: bool) -> BlobInfo:
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.part")
            try:
                expected, chunks = self._open_verified(key, None, strict)
                with open(tmp, "xb") as f:
                    for chunk in chunks:
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, dest)
            except BaseException as exc:
                tmp.unlink(missing_ok=True)
                if isinstance(exc, OSError) and not isinstance(exc, StorageError):
                    raise storage_io_error(exc, op="download", store=self.uri, key=key, path=dest) from exc
                raise
            return expected

        return self._restarting(download)

    def _restarting(self, read: Callable[[bool], T]) -> T:
        # A whole-object read that lost a race with an overwrite starts again on the new
        # version: the caller has seen nothing of the old one yet. A failed verification
        # gets one strict re-read where the backend's fast path can be torn by a race.
        strict = False
        changes = 0
        while True:
            try:
                return read(strict)
            except BlobChangedError:
                changes += 1
                if changes >= CHANGED_RESTARTS:
                    raise
            except IntegrityError:
                if strict or not self.recheck_on_mismatch:
                    raise
                strict = True

    def _open_verified(self, key: str, chunk_size: int | None,
                       strict: bool = False) -> tuple[BlobInfo, Iterator[bytes]]:
        validate_key(key)
        expected, chunks = self._read_chunks(key, chunk_size or self.block_size, strict)
        return expected, _verified(expected, chunks, self.backend)

    def close(self) -> None:  # noqa: B027 - a default, not abstract: a store with nothing to release keeps it
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> "BlobStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_full(stream: BinaryIO, size: int) -> bytes:
    """Read up to `size` bytes, looping over short reads (pipes, sockets, raw files)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class OverlappedSha256:
    """sha256 that hashes chunk i on a helper thread while the caller reads/writes chunk i+1.

    hashlib releases the GIL on large buffers, so for multi-chunk objects hashing stops
    adding to I/O time. The first chunk is hashed inline: small objects start no thread.
    Chunks must not be mutated after update(); bytes never are.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self._chunks = 0

    def update(self, chunk: bytes) -> None:
        self._wait()
        self._chunks += 1
        if self._chunks == 1 or len(chunk) < 64 * 1024:
            self._h.update(chunk)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="sha256")
        self._pending = self._pool.submit(self._h.update, chunk)

    def hexdigest(self) -> str:
        self._wait()
        return self._h.hexdigest()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()


def _verified(expected: BlobInfo, chunks: Iterator[bytes], backend: str) -> Iterator[bytes]:
    h = OverlappedSha256()
    size = 0
    try:
        for chunk in chunks:
            size += len(chunk)
            h.update(chunk)
            yield chunk
        actual = h.hexdigest()
    finally:
        h.close()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    telemetry().blob_transfer(backend=backend, op="read", nbytes=size)
    if size != expected.size or actual != expected.sha256:
        telemetry().blob_integrity_error()
        raise IntegrityError(
            f"integrity check failed for {expected.key!r}: expected sha256 {expected.sha256} "
            f"({expected.size} bytes), actual sha256 {actual} ({size} bytes)"
        )


class _ChunkReader(io.RawIOBase):
    """Adapts a chunk iterator to the raw file protocol (for io.BufferedReader)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        super().close()
