"""Azure Blob backend (also Azurite).

Writes stage blocks (each retried on its own, several in flight) and publish them with
one `commit_block_list`, which is what makes a put atomic: until the commit, readers see
the old blob or none. The sha256 and size travel in the blob metadata set by that same
commit; objects that fit in one block go up in a single Put Blob, equally atomic.
Reads are ranged GETs pinned to the first response's ETag (If-Match), so a read never
mixes two versions; whichever way a read goes wrong, the sha256 check catches it.
The SDK's own retry is switched off: every retry decision is made by
`orchestrator.storage.retry`, on errors translated here into our exception classes.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import BinaryIO, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, BlobClient, BlobProperties, BlobServiceClient, ContainerClient

from orchestrator.storage.base import (
    DEFAULT_BLOCK_SIZE,
    BlobChangedError,
    BlobExistsError,
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    IntegrityError,
    StorageConfigError,
    StorageError,
    TransientStorageError,
    read_full,
)
from orchestrator.storage.keys import validate_key, validate_prefix
from orchestrator.storage.retry import RetryPolicy, call_with_retry, outage_policy

T = TypeVar("T")

ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ENV_ACCOUNT = "AZURE_STORAGE_ACCOUNT"
ENV_KEY = "AZURE_STORAGE_KEY"
ENV_ENDPOINT = "AZURE_STORAGE_BLOB_ENDPOINT"

_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
MAX_BLOCKS = 50_000  # Azure's limit of committed blocks per blob
UPLOAD_RESTARTS = 6  # whole-object re-uploads after a concurrent commit discarded our blocks


class BlocksDiscardedError(StorageError):
    """Our staged blocks vanished before the commit (a concurrent commit to the same key)."""


def service_client_from_env(env: Mapping[str, str] | None = None, *, connection_timeout: float = 10.0,
                            read_timeout: float = 60.0) -> BlobServiceClient:
    """A BlobServiceClient from the AZURE_STORAGE_* variables, with SDK retries off."""
    env = os.environ if env is None else env
    # retry_total=0: the SDK must not retry behind our back (see module docstring).
    opts = {"retry_total": 0, "connection_timeout": connection_timeout, "read_timeout": read_timeout}
    if env.get(ENV_CONNECTION_STRING):
        try:
            return BlobServiceClient.from_connection_string(env[ENV_CONNECTION_STRING], **opts)
        except ValueError as exc:
            raise StorageConfigError(f"{ENV_CONNECTION_STRING} is not a valid connection string: {exc}") from None
    account, key = env.get(ENV_ACCOUNT), env.get(ENV_KEY)
    if account and key:
        endpoint = env.get(ENV_ENDPOINT) or f"https://{account}.blob.core.windows.net"
        return BlobServiceClient(endpoint, credential={"account_name": account, "account_key": key}, **opts)
    raise StorageConfigError(
        f"no Azure credentials: set {ENV_CONNECTION_STRING}, or {ENV_ACCOUNT} and {ENV_KEY} "
        f"(optionally {ENV_ENDPOINT}, e.g. an Azurite URL)")


def check_container_name(name: str) -> None:
    # Azure's rule: 3-63 chars of lowercase letters, digits and single inner hyphens.
    ok = (3 <= len(name) <= 63 and name.isascii() and name[0].isalnum() and name[-1].isalnum()
          and "--" not in name and all(c.islower() or c.isdigit() or c == "-" for c in name))
    if not ok:
        raise StorageConfigError(
            f"bad Azure container name {name!r}: 3-63 lowercase letters, digits and single hyphens")


class AzureBlobStore(BlobStore):
    backend = "azure"
    recheck_on_mismatch = True  # the fast read path can be torn on Azurite, see _read_chunks

    def __init__(self, container: ContainerClient, prefix: str = "", *,
                 block_size: int = DEFAULT_BLOCK_SIZE, max_concurrency: int = 4,
                 retry: RetryPolicy | None = None, create_container: bool = True) -> None:
        if not 1 <= block_size <= 4000 * 1024 * 1024:
            raise ValueError(f"block_size must be 1 B..4000 MiB, not {block_size}")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.container = container
        self.prefix = prefix + "/" if prefix else ""
        self.block_size = block_size
        self.max_concurrency = max(1, max_concurrency)
        self.retry = retry if retry is not None else outage_policy()
        self._container_ready = not create_container
        self._container_lock = threading.Lock()

    @classmethod
    def from_env(cls, container: str, prefix: str = "", *, env: Mapping[str, str] | None = None,
                 connection_timeout: float = 10.0, read_timeout: float = 60.0,
                 **kwargs: object) -> "AzureBlobStore":
        check_container_name(container)
        service = service_client_from_env(env, connection_timeout=connection_timeout, read_timeout=read_timeout)
        return cls(service.get_container_client(container), prefix, **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"AzureBlobStore({self.uri!r})"

    @property
    def uri(self) -> str:
        return f"az://{self.container.container_name}/{self.prefix}".rstrip("/")

    def close(self) -> None:
        self.container.close()

    # ---- plumbing -----------------------------------------------------------------
    def _blob(self, key: str) -> BlobClient:
        return self.container.get_blob_client(self.prefix + validate_key(key))

    def _call(self, what: str, key: str, fn: Callable[[], T], *, create_only: bool = False) -> T:
        def attempt() -> T:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - translated, then re-raised
                raise _translate(exc, self._describe(key), create_only=create_only,
                                 store=self.uri, key=key or None) from exc
        return call_with_retry(attempt, self.retry, what=f"{what} {self._describe(key)}")

    def _describe(self, key: str) -> str:
        return f"'{key}' in {self.uri}" if key else self.uri

    def _ensure_container(self) -> None:
        if self._container_ready:
            return
        with self._container_lock:
            if not self._container_ready:
                def create() -> None:
                    try:
                        self.container.create_container()
                    except ResourceExistsError:
                        pass
                self._call("create container", "", create)
                self._container_ready = True

    # ---- writes -------------------------------------------------------------------
    def _write(self, key: str, stream: BinaryIO, overwrite: bool) -> BlobInfo:
        self._ensure_container()
        blob = self._blob(key)
        start = stream.tell() if _seekable(stream) else None
        for attempt in range(1, UPLOAD_RESTARTS + 1):
            try:
                return self._upload(blob, key, stream, overwrite)
            except BlocksDiscardedError:
                # A concurrent commit to the same key discards our staged blocks (Azure keeps
                # one uncommitted set per blob). Last writer should still win: start over if
                # the source can be rewound.
                if start is None or attempt == UPLOAD_RESTARTS:
                    raise
                time.sleep(self.retry.delay(attempt))  # jitter desynchronises the writers
                stream.seek(start)
        raise AssertionError("unreachable")

    def _upload(self, blob: BlobClient, key: str, stream: BinaryIO, overwrite: bool) -> BlobInfo:
        upload_id = uuid.uuid4().hex
        first = read_full(stream, self.block_size)
        second = read_full(stream, self.block_size) if len(first) == self.block_size else b""
        if not second:
            # Fits in one block: a single Put Blob is just as atomic and half the round trips.
            info = BlobInfo(key, len(first), hashlib.sha256(first).hexdigest())
            meta = _metadata(info, upload_id)
            # overwrite=False makes the SDK send If-None-Match: * itself.
            self._commit(blob, key, upload_id, overwrite, lambda cond: blob.upload_blob(
                first, length=len(first), metadata=meta, overwrite=overwrite, max_concurrency=1))
            return info
        info, block_ids = self._stage_all(blob, key, upload_id, _blocks(first, second, stream, self.block_size))
        meta = _metadata(info, upload_id)
        blocks = [BlobBlock(block_id=b) for b in block_ids]
        self._commit(blob, key, upload_id, overwrite,
                     lambda cond: blob.commit_block_list(blocks, metadata=meta, **cond))
        return info

    def _stage_all(self, blob: BlobClient, key: str, upload_id: str,
                   blocks: Iterator[bytes]) -> tuple[BlobInfo, list[str]]:
        h = hashlib.sha256()
        size = 0
        ids: list[str] = []
        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="blob-stage")
        pending: set[Future[None]] = set()
        try:
            for i, data in enumerate(blocks):
                if i == MAX_BLOCKS:
                    raise StorageError(f"{self._describe(key)} needs more than {MAX_BLOCKS} blocks: "
                                       f"use a block_size above {self.block_size} bytes", store=self.uri, key=key)
                h.update(data)
                size += len(data)
                # Unique per upload, so a concurrent writer's blocks are never confused with
                # ours; same length for all blocks as Azure requires (the SDK base64s it).
                block_id = f"{upload_id}-{i:08d}"
                ids.append(block_id)
                pending.add(pool.submit(self._call, f"stage block {i} of", key,
                                        lambda b=block_id, d=data: blob.stage_block(b, d, length=len(d))))
                if len(pending) >= self.max_concurrency:  # bound memory: block_size * max_concurrency
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        f.result()
            for f in pending:
                f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return BlobInfo(key, size, h.hexdigest()), ids

    def _commit(self, blob: BlobClient, key: str, upload_id: str, overwrite: bool,
                commit: Callable[[dict[str, object]], object]) -> None:
        # If-None-Match: *
        cond: dict[str, object] = {} if overwrite else {"match_condition": MatchConditions.IfMissing}
        try:
            self._call("commit", key, lambda: commit(cond), create_only=not overwrite)
        except BlobExistsError:
            # A retried create-only commit may find the blob its own first attempt wrote
            # (the response was lost): that is success, not a conflict.
            props = self._call("check", key, blob.get_blob_properties)
            if (props.metadata or {}).get("upload") != upload_id:
                raise

    # ---- reads --------------------------------------------------------------------
    def _read_chunks(self, key: str, chunk_size: int, strict: bool = False) -> tuple[BlobInfo, Iterator[bytes]]:
        blob = self._blob(key)
        if strict:
            # Azurite answers a GET that races a commit with the new version's headers over
            # the old version's bytes (it mutates the blob record in place mid-response), so
            # the fast path can be torn there. This path takes the version from a HEAD, pins
            # every range to its ETag, and checks the ETag again at the end.
            props = self._call("read", key, blob.get_blob_properties)
            data, total = b"", props.size
        else:
            props, data, total = self._call("read", key, lambda: self._first_range(blob, chunk_size))
        expected = _info_from_metadata(key, props.metadata, self._describe(key))
        etag = props.etag

        def fetch(offset: int) -> bytes:
            n = min(chunk_size, total - offset)

            def get_range() -> bytes:
                part = blob.download_blob(offset=offset, length=n, etag=etag,
                                          match_condition=MatchConditions.IfNotModified,
                                          max_concurrency=1).readall()
                if len(part) != n:  # the ETag pins the version, so this is a cut connection
                    raise TransientStorageError(f"short read at {offset} of {self._describe(key)}")
                return part
            return self._call("read", key, get_range)

        def chunks() -> Iterator[bytes]:
            if data:
                yield data
            offsets = iter(range(len(data), total, chunk_size))
            # Read ahead up to max_concurrency ranges in parallel (one connection is slow on
            # real Azure), yielding in order; memory stays within max_concurrency chunks.
            pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="blob-read")
            try:
                window = deque(pool.submit(fetch, o) for o in itertools.islice(offsets, self.max_concurrency))
                while window:
                    part = window.popleft().result()
                    for o in itertools.islice(offsets, 1):
                        window.append(pool.submit(fetch, o))
                    yield part
            finally:
                # An abandoned read must not wait for fetches still retrying in the pool.
                pool.shutdown(wait=False, cancel_futures=True)
            if strict and self._call("read", key, blob.get_blob_properties).etag != etag:
                raise BlobChangedError(f"blob {self._describe(key)} was replaced during the read")

        return expected, chunks()

    @staticmethod
    def _first_range(blob: BlobClient, chunk_size: int) -> tuple[BlobProperties, bytes, int]:
        # One GET gives the version (ETag), its metadata and the first chunk.
        try:
            dl = blob.download_blob(offset=0, length=chunk_size, max_concurrency=1)
            data = dl.readall()
            return dl.properties, data, int(dl.properties.content_range.rsplit("/", 1)[1])
        except HttpResponseError as exc:
            if exc.status_code != 416:  # a ranged GET of an empty blob is "invalid range"
                raise
            props = blob.get_blob_properties()
            return props, b"", props.size

    def info(self, key: str) -> BlobInfo:
        props = self._call("info", key, self._blob(key).get_blob_properties)
        return _info_from_metadata(key, props.metadata, self._describe(key))

    def exists(self, key: str) -> bool:
        return self._call("exists", key, self._blob(key).exists)

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        cut = len(self.prefix)

        def names() -> list[str]:
            try:
                return [n[cut:] for n in self.container.list_blob_names(name_starts_with=self.prefix + prefix)]
            except ResourceNotFoundError:  # no container yet: nothing stored
                return []
        return sorted(self._call("list", prefix, names))

    # ---- delete -------------------------------------------------------------------
    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        blob = self._blob(key)
        attempts = 0

        def delete() -> None:
            nonlocal attempts
            attempts += 1
            try:
                blob.delete_blob()
            except ResourceNotFoundError:
                # After a retry, 404 may mean our own earlier attempt succeeded.
                if not (missing_ok or attempts > 1):
                    raise
        self._call("delete", key, delete)


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _blocks(first: bytes, second: bytes, stream: BinaryIO, block_size: int) -> Iterator[bytes]:
    yield first
    yield second
    while block := read_full(stream, block_size):
        yield block


def _metadata(info: BlobInfo, upload_id: str) -> dict[str, str]:
    return {"sha256": info.sha256, "size": str(info.size), "upload": upload_id}


def _info_from_metadata(key: str, metadata: Mapping[str, str] | None, where: str) -> BlobInfo:
    meta = {k.lower(): v for k, v in (metadata or {}).items()}
    try:
        return BlobInfo(key, int(meta["size"]), meta["sha256"].lower())
    except (KeyError, ValueError):
        raise IntegrityError(
            f"integrity check failed for {where}: the blob has no valid sha256/size metadata "
            f"(expected sha256 unknown, actual not computed); it was not written by this store") from None


def _translate(exc: Exception, where: str, *, create_only: bool, store: str | None = None,
               key: str | None = None) -> Exception:
    """Map an SDK exception to ours, naming the store and key in one line; TransientStorageError
    marks what is worth retrying."""
    if isinstance(exc, StorageError) and exc.store is None:  # raised by our own code inside the call
        exc.store, exc.key = store, key
    if isinstance(exc, (StorageError, ValueError, TypeError)):
        return exc
    out = _translated(exc, where, create_only)
    if isinstance(out, StorageError):
        out.store, out.key = store, key
        out.cause = out.cause or _cause(exc)
    return out


def _cause(exc: Exception) -> str:
    status, code = getattr(exc, "status_code", None), getattr(exc, "error_code", None)
    said = _one_line(getattr(exc, "message", None) or str(exc))
    head = " ".join(str(x) for x in (status, code) if x)
    return f"Azure answered {head}: {said}" if head else said


def _one_line(text: object) -> str:
    """The first line of an SDK message: Azure's go on with RequestId, Time and the XML body."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _translated(exc: Exception, where: str, create_only: bool) -> Exception:
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, IncompleteReadError)):
        return TransientStorageError(f"connection to Azure failed for {where}: {_one_line(exc)}")
    if isinstance(exc, ResourceNotFoundError):
        code = getattr(exc, "error_code", None)
        if code == "ContainerNotFound":
            return BlobNotFoundError(f"{where}: container does not exist")
        return BlobNotFoundError(f"blob {where} not found")
    if isinstance(exc, ResourceExistsError) and create_only:
        return BlobExistsError(f"blob {where} already exists")
    if isinstance(exc, ResourceModifiedError):  # 412: a precondition failed
        if create_only:
            return BlobExistsError(f"blob {where} already exists")
        if str(getattr(exc, "error_code", None) or "").startswith("Lease"):  # not a race: a lease holds it
            return StorageError(f"Azure refused {where}: {_cause(exc)}")
        return BlobChangedError(f"blob {where} was replaced during the read")
    if isinstance(exc, ClientAuthenticationError):
        return StorageError(f"Azure refused the credentials for {where} "
                            f"(check {ENV_CONNECTION_STRING} / {ENV_ACCOUNT} / {ENV_KEY}): {_one_line(exc.message)}")
    if isinstance(exc, HttpResponseError) and getattr(exc, "error_code", None) == "InvalidBlockList":
        return BlocksDiscardedError(f"staged blocks of {where} were discarded before the commit "
                                    f"(a concurrent put to the same key committed first)")
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        inner = getattr(exc, "inner_exception", None)
        if status is None and isinstance(inner, (ServiceResponseError, IncompleteReadError, ConnectionError)):
            # The SDK's body reader wraps a dropped connection in a status-less error.
            return TransientStorageError(f"connection to Azure failed for {where}: {_one_line(inner)}")
        if status in _TRANSIENT_STATUS:
            return TransientStorageError(f"Azure answered {status} for {where}: {_one_line(exc.message)}")
        # 403 (no permission, account disabled), 409 (a state that refuses it), a quota: as Azure says it.
        return StorageError(f"Azure answered {status} ({getattr(exc, 'error_code', None)}) for {where}: "
                            f"{_one_line(exc.message)}")
    return exc
