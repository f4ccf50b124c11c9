"""Filesystem backend.

Layout: the object for key `a/b/c` is the file `<root>/a/b/c`. Each file starts with a
fixed 64-byte header (magic, size, sha256) followed by the raw bytes. Keeping the hash in
the same file as the bytes is what makes them switch together: a put writes header+data
to a temp file in the destination directory, fsyncs it and renames it into place, so a
reader (who holds an open file, i.e. one inode) can never pair new bytes with an old hash,
and a crash leaves the old file or nothing. Temp files use the reserved `.~` prefix, which
keys cannot contain, so `list` never shows them.

A writer killed mid-put (SIGKILL, a lost node) leaves its temp file behind. `sweep_orphans`,
run when a run starts, removes temp files that are both older than a grace period and not
locked: every writer holds an exclusive flock on its temp file from creation to publication, and
the kernel drops that lock when the writer dies, so a live writer's file is never taken, however
slow; the age keeps the moment between create and lock (and filesystems without flock) safe.
Errors of the medium (ENOSPC, EDQUOT, EACCES, EROFS, ...) surface as StorageIOError, naming the
store, the key and the cause.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from orchestrator.storage.base import (
    DEFAULT_BLOCK_SIZE,
    BlobExistsError,
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    IntegrityError,
    OverlappedSha256,
    StorageError,
    storage_io_error,
)
from orchestrator.storage.keys import RESERVED_SEGMENT_PREFIX, validate_key, validate_prefix

MAGIC = b"ORCHBLB1"
HEADER_SIZE = 64
_HEADER = struct.Struct(">8sQ32s")  # magic, size, sha256 digest; zero-padded to HEADER_SIZE
TEMP_SUFFIX = ".tmp"
# A temp file younger than this is never swept, locked or not (see the module docstring).
TEMP_GRACE_S = 300.0


class LocalBlobStore(BlobStore):
    backend = "file"

    def __init__(self, root: str | os.PathLike[str], *, block_size: int = DEFAULT_BLOCK_SIZE,
                 fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.block_size = block_size
        self.fsync = fsync  # off only for throwaway data (tests, caches you can rebuild)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def path_of(self, key: str) -> Path:
        """The file that holds `key` (header + bytes); for tests and diagnostics."""
        return self.root.joinpath(*validate_key(key).split("/"))

    # ---- writes -------------------------------------------------------------------
    def _write(self, key: str, stream: BinaryIO, overwrite: bool) -> BlobInfo:
        with self._medium("write", key):
            return self._write_temp_and_publish(key, stream, overwrite)

    def _write_temp_and_publish(self, key: str, stream: BinaryIO, overwrite: bool) -> BlobInfo:
        final = self.path_of(key)
        fd, tmp = self._create_temp(key, final)
        h = OverlappedSha256()
        try:
            size = 0
            # The file stays open, and so locked against sweep_orphans, until it is published.
            with os.fdopen(fd, "wb") as f:
                f.write(bytes(HEADER_SIZE))  # placeholder: the hash is known only at the end
                while chunk := stream.read(self.block_size):
                    h.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
                digest = h.hexdigest()
                f.seek(0)
                f.write(_HEADER.pack(MAGIC, size, bytes.fromhex(digest)))
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
                self._publish(key, tmp, final, overwrite)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        finally:
            h.close()
        if self.fsync:
            _fsync_dir(final.parent)
        return BlobInfo(key, size, digest)

    def _create_temp(self, key: str, final: Path) -> tuple[int, Path]:
        tmp = final.with_name(f"{RESERVED_SEGMENT_PREFIX}{final.name[:200]}.{uuid.uuid4().hex[:16]}{TEMP_SUFFIX}")
        for _ in range(10):  # a concurrent delete may prune the directory between the two steps
            self._make_parents(key, final.parent)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh name: never contended
            except OSError:
                pass  # a filesystem without flock: the sweep's grace period alone protects the file
            return fd, tmp
        raise StorageError(f"could not create a temp file for {key!r} in {final.parent}", store=self.uri, key=key)

    @contextmanager
    def _medium(self, op: str, key: str | None) -> Iterator[None]:
        """OSErrors of the filesystem as StorageIOError naming this store, the key and the cause."""
        try:
            yield
        except StorageError:
            raise
        except OSError as exc:
            raise self._io_error(exc, op, key) from exc

    def _io_error(self, exc: OSError, op: str, key: str | None) -> StorageError:
        named = exc.filename if isinstance(exc.filename, str) else None
        if named and key and (os.path.basename(named).startswith(RESERVED_SEGMENT_PREFIX)
                              or named == str(self.path_of(key))):
            named = None  # our temp file (removed already) or the key's own file: the key says where
        return storage_io_error(exc, op=op, store=self.uri, key=key, path=named)

    def sweep_orphans(self, older_than_s: float | None = None) -> int:
        """Remove temp files that killed writers left: older than `older_than_s` (default
        TEMP_GRACE_S) and not locked by a live writer. Returns how many were removed."""
        grace = TEMP_GRACE_S if older_than_s is None else older_than_s
        cutoff = time.time() - grace
        removed = 0
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if name.startswith(RESERVED_SEGMENT_PREFIX) and name.endswith(TEMP_SUFFIX) \
                        and _remove_if_orphaned(Path(dirpath) / name, cutoff):
                    removed += 1
                    self._prune_empty(Path(dirpath))
        return removed

    def _prune_empty(self, directory: Path) -> None:
        # As delete does: the directories a killed put created for its temp file alone go too.
        while directory != self.root:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent
    def _make_parents(self, key: str, parent: Path) -> None:
        missing = []
        p = parent
        while p != self.root and not p.is_dir():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                if not d.is_dir():
                    raise StorageError(
                        f"cannot store {key!r}: {d.relative_to(self.root).as_posix()!r} is an "
                        f"object, and the local backend cannot also make it a directory") from None
            except NotADirectoryError:
                raise StorageError(f"cannot store {key!r}: a parent of it is an object") from None
            if self.fsync:
                _fsync_dir(d.parent)  # make the new directory entry itself durable

    def _publish(self, key: str, tmp: Path, final: Path, overwrite: bool) -> None:
        try:
            if overwrite:
                os.replace(tmp, final)
            else:
                # link() fails if the name exists: an atomic create-only rename.
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    raise BlobExistsError(f"blob {key!r} already exists") from None
                _unlink_quietly(tmp)
        except IsADirectoryError:
            raise StorageError(f"cannot store {key!r}: keys below it exist (it is a directory)") from None

    # ---- reads --------------------------------------------------------------------
    def _read_chunks(self, key: str, chunk_size: int, strict: bool = False) -> tuple[BlobInfo, Iterator[bytes]]:
        f = self._open(key)  # one open file is one version: already strict
        try:
            expected = _read_header(key, f)
        except BaseException:
            f.close()
            raise
        return expected, _file_chunks(f, chunk_size)

    def info(self, key: str) -> BlobInfo:
        with self._open(key) as f:
            return _read_header(key, f)

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def _open(self, key: str) -> BinaryIO:
        try:
            return open(self.path_of(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFoundError(f"blob {key!r} not found in {self.root}", store=self.uri, key=key) from None
        except OSError as exc:
            raise self._io_error(exc, "read", key) from exc

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        start = self.root.joinpath(*prefix.split("/")[:-1])  # deepest directory the prefix names
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(RESERVED_SEGMENT_PREFIX)]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            base = "" if rel == "." else rel + "/"
            for name in filenames:
                key = base + name
                if not name.startswith(RESERVED_SEGMENT_PREFIX) and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    # ---- delete -------------------------------------------------------------------
    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        path = self.path_of(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            if missing_ok:
                return
            raise BlobNotFoundError(f"blob {key!r} not found in {self.root}", store=self.uri, key=key) from None
        except OSError as exc:
            raise self._io_error(exc, "delete", key) from exc
        # Prune directories the delete emptied, so list() and the tree stay tidy.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


def _read_header(key: str, f: BinaryIO) -> BlobInfo:
    raw = f.read(HEADER_SIZE)
    if len(raw) < HEADER_SIZE or not raw.startswith(MAGIC):
        raise IntegrityError(f"integrity check failed for {key!r}: missing or corrupt blob header "
                             f"(expected sha256 unknown, actual file is not a blob object)")
    _, size, digest = _HEADER.unpack_from(raw)
    return BlobInfo(key, size, digest.hex())


def _file_chunks(f: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with f:
        while chunk := f.read(chunk_size):
            yield chunk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_if_orphaned(path: Path, cutoff: float) -> bool:
    """Remove `path` (a temp file) if it was last written before `cutoff` and no live writer
    holds its lock; True if it was removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # published or removed meanwhile
    try:
        if os.fstat(fd).st_mtime >= cutoff:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer (a slow upload): its file
        except OSError:
            pass  # no flock on this filesystem: the age alone decides
        try:
            os.unlink(path)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
