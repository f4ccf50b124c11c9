"""The blob store contract, run identically on the local backend and on Azure (Azurite).

Backend-specific tests at the end cover what only one side has: the local header file,
Azure block retries, lost commit responses, and an Azurite outage in the middle of a put.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.storage.blob import BlobClient

from orchestrator.storage import (
    BlobChangedError,
    BlobExistsError,
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    IntegrityError,
    InvalidKeyError,
    LocalBlobStore,
    RetryPolicy,
    StorageConfigError,
    StorageError,
    TransientStorageError,
    call_with_retry,
    open_store,
)
from orchestrator.storage.azure import AzureBlobStore, _translate
from orchestrator.storage.azurite import Azurite, AzuriteNotFound, find_azurite, free_port
from orchestrator.storage.base import StorageIOError, storage_io_error
from orchestrator.storage.local import HEADER_SIZE

BLOCK = 256 * 1024  # small blocks so a few MiB already means many of them
FAST_RETRY = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.1, max_total=10)
MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def azure_store(azurite: Azurite, prefix: str = "run/1", **kwargs: object) -> AzureBlobStore:
    kwargs.setdefault("block_size", BLOCK)
    kwargs.setdefault("retry", FAST_RETRY)
    return AzureBlobStore.from_env(f"t-{uuid.uuid4().hex[:12]}", prefix, env=azurite.env, **kwargs)


@pytest.fixture(params=["local", pytest.param("azure", marks=pytest.mark.azurite)])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs", block_size=BLOCK)
        return
    store = azure_store(request.getfixturevalue("azurite"))
    yield store
    try:
        store.container.delete_container()
    except Exception:  # noqa: BLE001 - best-effort cleanup; Azurite's data dir is temporary
        pass
    store.close()


def corrupt(store: BlobStore, key: str, offset: int = 10) -> None:
    """Flip one stored byte behind the store's back, keeping the recorded hash."""
    if isinstance(store, LocalBlobStore):
        with open(store.path_of(key), "r+b") as f:
            f.seek(HEADER_SIZE + offset)
            b = f.read(1)
            f.seek(HEADER_SIZE + offset)
            f.write(bytes([b[0] ^ 0xFF]))
    else:
        assert isinstance(store, AzureBlobStore)
        blob = store.container.get_blob_client(store.prefix + key)
        props = blob.get_blob_properties()
        raw = bytearray(blob.download_blob().readall())
        raw[offset] ^= 0xFF
        blob.upload_blob(bytes(raw), overwrite=True, metadata=props.metadata)


class SpyReader:
    """A file object that records the read sizes asked of it, and can fail or pause midway."""

    def __init__(self, data: bytes, *, fail_at: int | None = None) -> None:
        self._f = io.BytesIO(data)
        self.sizes: list[int] = []
        self.fail_at = fail_at

    def read(self, n: int = -1) -> bytes:
        self.sizes.append(n)
        if self.fail_at is not None and self._f.tell() >= self.fail_at:
            raise RuntimeError("source failed mid-put")
        return self._f.read(n)


# ---- the contract, on both backends ----------------------------------------------------

def test_roundtrip_bytes(blob_store: BlobStore) -> None:
    data = b"hello, diffusion"
    info = blob_store.put("ckpt/a.bin", data)
    assert info == BlobInfo("ckpt/a.bin", len(data), sha(data))
    assert blob_store.get("ckpt/a.bin") == data
    assert blob_store.info("ckpt/a.bin") == info
    assert blob_store.exists("ckpt/a.bin")
    assert not blob_store.exists("ckpt/b.bin")
    with pytest.raises(BlobNotFoundError):
        blob_store.get("ckpt/b.bin")
    with pytest.raises(BlobNotFoundError):
        blob_store.info("ckpt/b.bin")
    assert blob_store.put("empty", b"") == BlobInfo("empty", 0, sha(b""))
    assert blob_store.get("empty") == b""
    assert blob_store.put("ba", bytearray(b"xy")).size == 2
    assert blob_store.get("ba") == b"xy"


def test_roundtrip_file_objects_and_files(blob_store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * BLOCK + 17)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    with open(src, "rb") as f:
        assert blob_store.put("f/obj", f).sha256 == sha(data)
    assert blob_store.put_file("f/file", src) == BlobInfo("f/file", len(data), sha(data))
    dest = tmp_path / "out" / "copy.bin"
    assert blob_store.get_file("f/file", dest) == BlobInfo("f/file", len(data), sha(data))
    assert dest.read_bytes() == data
    assert blob_store.get("f/obj") == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.bin"]  # no temp left over


def test_large_object_streams_in_blocks(blob_store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(20 * MiB + 12345)
    src = SpyReader(data)
    info = blob_store.put("big/obj", src)
    assert info == BlobInfo("big/obj", len(data), sha(data))
    assert max(src.sizes) <= BLOCK  # streamed, never asked for the whole thing

    sizes = [len(c) for c in blob_store.iter_chunks("big/obj")]
    assert sum(sizes) == len(data) and max(sizes) <= BLOCK and len(sizes) > 20

    with blob_store.open_read("big/obj") as r:
        head = r.read(1000)
        rest = r.read()
    assert head + rest == data

    dest = tmp_path / "big.bin"
    blob_store.get_file("big/obj", dest)
    assert sha(dest.read_bytes()) == sha(data)


def test_overwrite_and_create_only(blob_store: BlobStore) -> None:
    blob_store.put("k", b"v1")
    blob_store.put("k", b"v2")  # overwrite is the default
    assert blob_store.get("k") == b"v2"
    with pytest.raises(BlobExistsError):
        blob_store.put("k", b"v3", overwrite=False)
    big = os.urandom(3 * BLOCK)  # the multi-block path must refuse too
    with pytest.raises(BlobExistsError):
        blob_store.put("k", io.BytesIO(big), overwrite=False)
    assert blob_store.get("k") == b"v2"
    assert blob_store.put("new", big, overwrite=False).sha256 == sha(big)
    assert blob_store.get("new") == big
    assert blob_store.list() == ["k", "new"]


def test_failed_put_leaves_old_object_or_nothing(blob_store: BlobStore, tmp_path: Path) -> None:
    old = b"old" * 1000
    blob_store.put("k", old)
    new = os.urandom(5 * BLOCK)
    with pytest.raises(RuntimeError):
        blob_store.put("k", SpyReader(new, fail_at=3 * BLOCK))
    with pytest.raises(RuntimeError):
        blob_store.put("fresh", SpyReader(new, fail_at=3 * BLOCK))
    assert blob_store.get("k") == old
    assert not blob_store.exists("fresh")
    assert blob_store.list() == ["k"]
    if isinstance(blob_store, LocalBlobStore):  # and no temp file survives the failure
        assert [p.name for p in blob_store.root.rglob("*") if p.is_file()] == ["k"]


def test_list_by_prefix(blob_store: BlobStore) -> None:
    for key in ["a/1", "a/2", "ab", "b/c/d", "b/c/e", "z"]:
        blob_store.put(key, key.encode())
    assert blob_store.list() == ["a/1", "a/2", "ab", "b/c/d", "b/c/e", "z"]
    assert blob_store.list("a/") == ["a/1", "a/2"]
    assert blob_store.list("a") == ["a/1", "a/2", "ab"]
    assert blob_store.list("b/c/") == ["b/c/d", "b/c/e"]
    assert blob_store.list("b/c/d") == ["b/c/d"]
    assert blob_store.list("nope/") == []
    with pytest.raises(InvalidKeyError):
        blob_store.list("/a")
    with pytest.raises(InvalidKeyError):
        blob_store.list("../")


def test_delete(blob_store: BlobStore) -> None:
    blob_store.put("d/x", b"1")
    blob_store.put("d/y", b"2")
    blob_store.delete("d/x")
    assert not blob_store.exists("d/x")
    assert blob_store.list() == ["d/y"]
    with pytest.raises(BlobNotFoundError):
        blob_store.delete("d/x")
    blob_store.delete("d/x", missing_ok=True)
    blob_store.delete("d/y")
    assert blob_store.list() == []
    blob_store.put("d/x", b"again")  # the emptied "directory" is usable again
    assert blob_store.get("d/x") == b"again"


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/", "a/../b", "..", "a/./b", "a\\b",
                                 "a/.~tmp", "x\x00y", "s" * 256, "dir./x", "x."])
def test_invalid_keys_are_refused(blob_store: BlobStore, key: str) -> None:
    for op in (lambda: blob_store.put(key, b"x"), lambda: blob_store.get(key),
               lambda: blob_store.exists(key), lambda: blob_store.delete(key),
               lambda: blob_store.info(key)):
        with pytest.raises(InvalidKeyError):
            op()
    assert blob_store.list() == []


@pytest.mark.parametrize("size", [100, 5 * BLOCK + 3], ids=["one-block", "multi-block"])
def test_corruption_is_detected(blob_store: BlobStore, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    blob_store.put("c/obj", data)
    corrupt(blob_store, "c/obj", offset=size - 7)
    with pytest.raises(IntegrityError) as err:
        blob_store.get("c/obj")
    msg = str(err.value)
    assert "c/obj" in msg and sha(data) in msg
    bad = bytearray(data)
    bad[size - 7] ^= 0xFF
    assert sha(bytes(bad)) in msg  # names the actual hash too

    with pytest.raises(IntegrityError):
        for _ in blob_store.iter_chunks("c/obj"):
            pass
    with pytest.raises(IntegrityError):
        blob_store.open_read("c/obj").read()

    dest = tmp_path / "dl" / "obj.bin"
    with pytest.raises(IntegrityError):
        blob_store.get_file("c/obj", dest)
    assert list(dest.parent.iterdir()) == []  # nothing half-written, no temp file
    dest.write_bytes(b"previous good copy")
    with pytest.raises(IntegrityError):
        blob_store.get_file("c/obj", dest)
    assert dest.read_bytes() == b"previous good copy"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["obj.bin"]


def test_concurrent_readers_during_overwrite_never_see_a_mix(blob_store: BlobStore) -> None:
    size = 2 * BLOCK  # two range reads on Azure, two chunks locally
    blob_store.put("hot", bytes([0]) * size)
    stop = threading.Event()
    seen: list[int] = []
    problems: list[BaseException] = []
    restarts_exhausted = 0

    def reader() -> None:
        nonlocal restarts_exhausted
        while not stop.is_set():
            try:
                data = blob_store.get("hot")
            except BlobChangedError:  # a clean refusal, never a mix
                restarts_exhausted += 1
                continue
            except BaseException as exc:  # noqa: BLE001 - reported below
                problems.append(exc)
                return
            if len(data) != size or len(set(data)) != 1:
                problems.append(AssertionError(f"mixed or partial read: {len(data)} bytes, {len(set(data))} values"))
                return
            seen.append(data[0])

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for v in range(1, 16):
            blob_store.put("hot", bytes([v]) * size)
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not problems, problems
    assert len(seen) >= 5 and len(seen) > restarts_exhausted  # readers made progress
    assert blob_store.get("hot") == bytes([15]) * size


def test_concurrent_writers_of_one_key_all_succeed_last_one_wins(blob_store: BlobStore) -> None:
    size = 4 * BLOCK
    errors: list[BaseException] = []

    def writer(v: int) -> None:
        for _ in range(4):
            try:
                blob_store.put("shared", bytes([v]) * size)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    final = blob_store.get("shared")
    assert len(final) == size and len(set(final)) == 1 and final[0] in (1, 2, 3)


def test_streaming_read_racing_an_overwrite_keeps_or_refuses_the_old_version(blob_store: BlobStore) -> None:
    old = bytes([1]) * (4 * BLOCK)
    blob_store.put("s", old)
    chunks = blob_store.iter_chunks("s")
    got = [next(chunks)]
    blob_store.put("s", bytes([2]) * (4 * BLOCK))
    if isinstance(blob_store, LocalBlobStore):
        got.extend(chunks)  # an open file pins the old version
        assert b"".join(got) == old
    else:
        with pytest.raises(BlobChangedError):  # reads are pinned to the ETag
            got.extend(chunks)
        assert set(b"".join(got)) == {1}


# ---- retry layer (no backend) ----------------------------------------------------------

class Flaky:
    def __init__(self, failures: int, exc: BaseException) -> None:
        self.failures, self.exc, self.attempts = failures, exc, 0

    def __call__(self) -> str:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.exc
        return "ok"


def test_retry_counts_attempts_and_bounds_backoff() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=0.3, max_total=100, jitter=0.5)
    sleeps: list[float] = []
    fn = Flaky(4, TransientStorageError("503"))
    assert call_with_retry(fn, policy, sleep=sleeps.append) == "ok"
    assert fn.attempts == 5 and len(sleeps) == 4
    for s, cap in zip(sleeps, [0.1, 0.2, 0.3, 0.3]):  # doubling, capped, jittered downwards
        assert cap * 0.5 <= s <= cap


def test_retry_jitter_spans_the_configured_range() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10, jitter=0.25)
    assert policy.delay(3, rng=lambda: 0.0) == 4.0
    assert policy.delay(3, rng=lambda: 1.0) == 3.0
    assert policy.delay(30, rng=lambda: 0.0) == 10.0


def test_retry_gives_up_after_max_attempts() -> None:
    fn = Flaky(100, ConnectionResetError("reset"))
    with pytest.raises(ConnectionResetError):
        call_with_retry(fn, RetryPolicy(max_attempts=4, base_delay=0.001), sleep=lambda s: None)
    assert fn.attempts == 4


def test_retry_stops_at_the_total_time_budget() -> None:
    now = [0.0]
    fn = Flaky(100, TimeoutError("slow"))
    policy = RetryPolicy(max_attempts=100, base_delay=0.4, max_delay=10, max_total=1.0, jitter=0)

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(TimeoutError):
        call_with_retry(fn, policy, sleep=sleep, clock=lambda: now[0])
    assert fn.attempts == 2 and now[0] == pytest.approx(0.4)  # 0.4 + 0.8 would pass 1.0 s


@pytest.mark.parametrize("exc", [BlobNotFoundError("k"), IntegrityError("bad"), BlobExistsError("k"),
                                 StorageError("auth"), ValueError("bug"), PermissionError("fs")])
def test_non_transient_errors_are_not_retried(exc: BaseException) -> None:
    fn = Flaky(1, exc)
    with pytest.raises(type(exc)):
        call_with_retry(fn, RetryPolicy(max_attempts=5), sleep=lambda s: None)
    assert fn.attempts == 1


@pytest.mark.parametrize("status,transient", [(500, True), (503, True), (429, True), (408, True),
                                              (404, False), (403, False), (409, False), (400, False)])
def test_azure_status_classification(status: int, transient: bool) -> None:
    exc = HttpResponseError(message=f"status {status}")
    exc.status_code = status
    assert isinstance(_translate(exc, "'k'", create_only=False), TransientStorageError) is transient
    assert isinstance(_translate(ServiceRequestError("refused"), "'k'", create_only=False), TransientStorageError)
    assert isinstance(_translate(ServiceResponseError("reset"), "'k'", create_only=False), TransientStorageError)


# ---- open_store ------------------------------------------------------------------------

def test_open_store_local_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = open_store(f"file://{tmp_path}/abs")
    assert isinstance(s, LocalBlobStore) and s.root == tmp_path / "abs"
    assert open_store("file://./rel/dir").root == tmp_path / "rel" / "dir"  # type: ignore[attr-defined]
    assert open_store("bare/dir").root == tmp_path / "bare" / "dir"  # type: ignore[attr-defined]
    assert open_store(str(tmp_path / "p")).root == tmp_path / "p"  # type: ignore[attr-defined]
    assert open_store(s.uri).root == s.root  # type: ignore[attr-defined]


def test_open_store_errors() -> None:
    with pytest.raises(StorageConfigError, match="'s3'"):
        open_store("s3://bucket/x")
    with pytest.raises(StorageConfigError) as err:
        open_store("az://container/x", env={})
    for var in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"):
        assert var in str(err.value)
    with pytest.raises(StorageConfigError, match="container"):
        open_store("az://Bad_Name/x", env={"AZURE_STORAGE_CONNECTION_STRING": "x"})


@pytest.mark.azurite
def test_open_store_azure_from_environment(azurite_env: dict[str, str], azurite: Azurite) -> None:
    container = f"t-{uuid.uuid4().hex[:12]}"
    store = open_store(f"az://{container}/exp/7", block_size=BLOCK)
    assert isinstance(store, AzureBlobStore)
    store.put("ckpt/1", b"one")
    # The same container through account + key + endpoint, without the prefix.
    env = {"AZURE_STORAGE_ACCOUNT": "devstoreaccount1",
           "AZURE_STORAGE_KEY": azurite.connection_string.split("AccountKey=")[1].split(";")[0],
           "AZURE_STORAGE_BLOB_ENDPOINT": azurite.endpoint}
    root = open_store(f"az://{container}", env=env)
    assert root.list() == ["exp/7/ckpt/1"]
    assert root.get("exp/7/ckpt/1") == b"one"
    assert store.list() == ["ckpt/1"]


def test_missing_azurite_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURITE_BLOB_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AzuriteNotFound, match="make install"):
        find_azurite(tmp_path)


# ---- local backend specifics -----------------------------------------------------------

def test_local_layout_hides_temp_files_and_keeps_hash_with_bytes(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "s")
    store.put("a/b", b"payload")
    raw = store.path_of("a/b").read_bytes()
    assert raw[HEADER_SIZE:] == b"payload" and bytes.fromhex(sha(b"payload")) in raw[:HEADER_SIZE]
    (store.root / "a" / ".~b.deadbeef.tmp").write_bytes(b"crash leftover")
    assert store.list() == ["a/b"]
    (store.root / "plain").write_bytes(b"not written by the store")
    with pytest.raises(IntegrityError, match="plain"):
        store.get("plain")
    with pytest.raises(StorageError, match="a/b"):
        store.put("a/b/c", b"a key cannot also be a directory on disk")


# ---- the medium refusing a write: real ENOSPC / EFBIG / EROFS, named store, key and cause ----

def mount_namespace_ok() -> bool:
    """Whether this machine lets a test mount a tmpfs in a private mount namespace (root, or
    unprivileged user namespaces); without it the ENOSPC/EROFS tests cannot make a real one."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run([*UNSHARE, "sh", "-c", "mount -t tmpfs -o size=16k orchprobe /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


UNSHARE = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
needs_mounts = pytest.mark.skipif(not mount_namespace_ok(), reason="cannot mount a tmpfs in a private "
                                  "mount namespace here (needs root or unprivileged user namespaces)")

# Runs in the child: stores one small object, then a big one, and reports what it saw as JSON.
PUT_TOO_MUCH = """
import json, os, sys
from orchestrator.storage import LocalBlobStore, StorageError
from orchestrator.storage.location import check_writable
root = sys.argv[1]
store = LocalBlobStore(root)
out = {}
if sys.argv[2] == "write":
    store.put("ckpt/step-1.pt", b"small and earlier")
try:
    store.put("ckpt/step-2.pt", os.urandom(int(sys.argv[3])))
except StorageError as exc:
    out.update(type=type(exc).__name__, text=str(exc), store=exc.store, key=exc.key, cause=exc.cause,
               errno=exc.errno, oserror=isinstance(exc, OSError))
try:
    check_writable(store, root)
except Exception as exc:
    out["preflight"] = type(exc).__name__ + ": " + str(exc)
out["temps"] = sorted(n for _, _, names in os.walk(root) for n in names if n.startswith(".~"))
out["earlier"] = store.get("ckpt/step-1.pt").decode() if store.exists("ckpt/step-1.pt") else None
print(json.dumps(out))
"""


def run_put(args: list[str], setup: str = "", **kw) -> dict:
    """PUT_TOO_MUCH in a subprocess (inside `setup`, a shell line run first in a private mount namespace)."""
    cmd = [sys.executable, "-c", PUT_TOO_MUCH, *args]
    if setup:
        cmd = [*UNSHARE, "sh", "-c", setup + ' && exec "$@"', "sh", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.faults
@needs_mounts
def test_a_full_disk_is_a_storage_error_naming_store_key_and_enospc(tmp_path: Path) -> None:
    root = tmp_path / "full"
    root.mkdir()
    seen = run_put([str(root), "write", str(256 * 1024)], f"mount -t tmpfs -o size=64k orchfull {root}")
    assert seen["type"] == "StorageIOError" and seen["oserror"] and seen["errno"] == errno.ENOSPC
    assert seen["store"] == root.as_uri() and seen["key"] == "ckpt/step-2.pt" and "ENOSPC" in seen["cause"]
    assert seen["text"] == (f"cannot write to the blob store {root.as_uri()}: no space left on the device (ENOSPC); "
                            f"key 'ckpt/step-2.pt'")
    assert seen["temps"] == []  # the failed put removed its temp file
    assert seen["earlier"] == "small and earlier"  # what was stored before is intact and verifies


@pytest.mark.faults
@needs_mounts
def test_a_read_only_store_is_a_storage_error_and_the_preflight_says_not_writable(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    (root / "ckpt").mkdir(parents=True)
    LocalBlobStore(root).put("ckpt/step-1.pt", b"small and earlier")
    seen = run_put([str(root), "read", "10"], f"mount --bind {root} {root} && mount -o remount,ro,bind {root}")
    assert seen["errno"] == errno.EROFS and seen["key"] == "ckpt/step-2.pt" and seen["store"] == root.as_uri()
    assert "the file system is read-only (EROFS)" in seen["text"] and "'ckpt/step-2.pt'" in seen["text"]
    assert seen["preflight"].startswith("StorageLocationError: the blob store") and "EROFS" in seen["preflight"]
    assert seen["earlier"] == "small and earlier"


@pytest.mark.faults
def test_a_file_size_limit_is_a_storage_error_naming_store_and_key(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel refuse the write with EFBIG (SIGXFSZ ignored): real on any Linux."""
    import resource

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    root = tmp_path / "limited"
    seen = run_put([str(root), "write", str(256 * 1024)], preexec_fn=limit)
    assert seen["errno"] == errno.EFBIG and seen["key"] == "ckpt/step-2.pt" and seen["store"] == root.as_uri()
    assert seen["text"].startswith(f"cannot write to the blob store {root.as_uri()}: ") and "EFBIG" in seen["text"]
    assert seen["temps"] == [] and seen["earlier"] == "small and earlier"


def test_storage_errors_keep_store_key_and_cause_across_pickling() -> None:
    exc = storage_io_error(OSError(errno.EDQUOT, "Disk quota exceeded"), op="write", store="file:///s", key="a/b")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is StorageIOError and isinstance(back, OSError) and back.errno == errno.EDQUOT
    assert (back.store, back.key, back.cause) == ("file:///s", "a/b", "the disk quota is exceeded (EDQUOT)")
    assert str(back) == str(exc) == ("cannot write to the blob store file:///s: the disk quota is exceeded "
                                     "(EDQUOT); key 'a/b'")
    plain = pickle.loads(pickle.dumps(BlobNotFoundError("blob 'k' not found", store="file:///s", key="k")))
    assert isinstance(plain, KeyError)
    assert (plain.store, plain.key, str(plain)) == ("file:///s", "k", "blob 'k' not found")


# ---- temp files a killed writer left: swept when stale and unlocked ----------------------

def test_sweep_removes_stale_temp_files_and_keeps_fresh_and_live_ones(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "s")
    store.put("run/checkpoints/step-00000002.pt", b"landed")
    ckpt = store.root / "run" / "checkpoints"
    # What a put killed right after creating its temp file leaves (0 bytes), as the backend names it.
    stale = ckpt / ".~step-00000004.pt.0123456789abcdef.tmp"
    stale.touch()
    old = time.time() - 3600
    os.utime(stale, (old, old))
    orphan_dir = store.root / "other" / "deep"  # a directory made only for a killed put's temp file
    orphan_dir.mkdir(parents=True)
    (orphan_dir / ".~x.fedcba9876543210.tmp").touch()
    os.utime(orphan_dir / ".~x.fedcba9876543210.tmp", (old, old))
    fresh = ckpt / ".~step-00000006.pt.00112233445566ff.tmp"  # a concurrent writer's, just created
    fresh.touch()

    # A live writer whose source stalls for longer than the grace period: its temp file is old,
    # but it holds the lock, so it is kept and its put completes.
    release, started = threading.Event(), threading.Event()

    class Stalling(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # type: ignore[override]
            if not started.is_set():
                started.set()
                release.wait(10)
                b[:4] = b"late"
                return 4
            return 0

    result: list = []
    writer = threading.Thread(target=lambda: result.append(store.put("run/slow", io.BufferedReader(Stalling()))))
    writer.start()
    assert started.wait(10)
    [live] = [p for p in (store.root / "run").iterdir() if p.name.startswith(".~slow")]
    os.utime(live, (old, old))

    assert store.sweep_orphans() == 2
    assert not stale.exists() and fresh.exists() and live.exists()
    assert not (store.root / "other").exists()  # its emptied directories went with it
    release.set()
    writer.join(10)
    assert result and store.get("run/slow") == b"late" and store.get("run/checkpoints/step-00000002.pt") == b"landed"
    assert store.sweep_orphans(older_than_s=0) == 1 and not fresh.exists()  # an unlocked one, once it is old


# ---- Azure backend specifics -----------------------------------------------------------

@pytest.mark.azurite
def test_azure_failed_block_is_retried_alone(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    store = azure_store(azurite, max_concurrency=1)
    calls: list[str] = []
    original = BlobClient.stage_block

    def flaky(self: BlobClient, block_id: str, data: bytes, *args: object, **kwargs: object) -> object:
        calls.append(block_id)
        if block_id.endswith("-00000002") and calls.count(block_id) == 1:
            raise ServiceResponseError("injected connection reset")
        return original(self, block_id, data, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "stage_block", flaky)
    data = os.urandom(6 * BLOCK)
    store.put("k", data)
    assert len(calls) == 7 and len(set(calls)) == 6  # six blocks, only the third sent twice
    assert store.get("k") == data


@pytest.mark.azurite
def test_azure_create_only_commit_whose_response_was_lost(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    store = azure_store(azurite)
    original = BlobClient.commit_block_list
    commits = []

    def lossy(self: BlobClient, *args: object, **kwargs: object) -> object:
        result = original(self, *args, **kwargs)
        commits.append(1)
        if len(commits) == 1:
            raise ServiceResponseError("response lost after the commit happened")
        return result

    monkeypatch.setattr(BlobClient, "commit_block_list", lossy)
    data = os.urandom(3 * BLOCK)
    assert store.put("once", data, overwrite=False).sha256 == sha(data)  # our own blob: not a conflict
    with pytest.raises(BlobExistsError):
        store.put("once", os.urandom(3 * BLOCK), overwrite=False)  # someone else's: a conflict
    assert store.get("once") == data


@pytest.mark.azurite
def test_azure_restarts_an_upload_whose_blocks_a_concurrent_commit_discarded(
        azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    store = azure_store(azurite)
    original = BlobClient.commit_block_list
    commits = []

    def discarding(self: BlobClient, *args: object, **kwargs: object) -> object:
        commits.append(1)
        if len(commits) % 2 == 1:  # every other commit finds its blocks gone
            exc = HttpResponseError(message="The specified block list is invalid.")
            exc.status_code, exc.error_code = 400, "InvalidBlockList"
            raise exc
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "commit_block_list", discarding)
    data = os.urandom(3 * BLOCK)
    assert store.put("k", data).sha256 == sha(data)  # bytes can be re-read: uploaded again
    assert len(commits) == 2 and store.get("k") == data

    class Pipe:  # not seekable: cannot start over, so it says so
        def __init__(self) -> None:
            self.f = io.BytesIO(data)

        def read(self, n: int) -> bytes:
            return self.f.read(n)

    with pytest.raises(StorageError, match="concurrent put"):
        store.put("k2", Pipe())
    assert not store.exists("k2")


@pytest.mark.azurite
def test_azure_torn_fast_read_is_rechecked_strictly(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    # Azurite can answer a GET racing a commit with new headers over old bytes; simulate
    # that once and check get() re-reads carefully instead of reporting corruption.
    store = azure_store(azurite)
    data = os.urandom(3 * BLOCK)
    store.put("k", data)
    original = AzureBlobStore._first_range
    calls = []

    def torn(blob: BlobClient, chunk_size: int):  # type: ignore[no-untyped-def]
        props, first, total = original(blob, chunk_size)
        calls.append(1)
        return props, (b"\x00" + first[1:]) if len(calls) == 1 else first, total

    monkeypatch.setattr(AzureBlobStore, "_first_range", staticmethod(torn))
    assert store.get("k") == data
    assert len(calls) == 1  # the re-read took the strict path (HEAD + pinned ranges)
    corrupt(store, "k")
    with pytest.raises(IntegrityError):  # real corruption survives the re-check
        store.get("k")


@pytest.mark.azurite
def test_azure_sdk_retries_are_off_and_ours_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    env = {"AZURE_STORAGE_ACCOUNT": "devstoreaccount1", "AZURE_STORAGE_KEY": "a2V5",
           "AZURE_STORAGE_BLOB_ENDPOINT": f"http://127.0.0.1:{free_port()}/devstoreaccount1"}
    store = AzureBlobStore.from_env("nobody", env=env, retry=RetryPolicy(max_attempts=3, base_delay=0.01))
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="orchestrator.storage.retry"):
        with pytest.raises(TransientStorageError, match="nobody"):
            store.get("k")
    assert time.monotonic() - start < 3
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 2


@pytest.mark.azurite
def test_azure_put_and_get_survive_an_azurite_outage(azurite: Azurite, caplog: pytest.LogCaptureFixture) -> None:
    patient = RetryPolicy(max_attempts=200, base_delay=0.05, max_delay=0.5, max_total=60)
    store = azure_store(azurite, max_concurrency=2, retry=patient, connection_timeout=2, read_timeout=10)
    data = os.urandom(32 * BLOCK)
    halfway, outage = threading.Event(), threading.Event()

    class Source:  # pauses at a quarter so the outage surely lands mid-upload
        def __init__(self) -> None:
            self.f = io.BytesIO(data)

        def read(self, n: int) -> bytes:
            if self.f.tell() >= len(data) // 4 and not halfway.is_set():
                halfway.set()
                outage.wait(30)
            return self.f.read(n)

    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(_capture(lambda: store.put("ckpt/big", Source()))))
    with caplog.at_level("WARNING", logger="orchestrator.storage.retry"):
        t.start()
        assert halfway.wait(30)
        azurite.stop()
        outage.set()
        time.sleep(1.5)
        azurite.start()
        t.join(60)
        assert result and result[0] == BlobInfo("ckpt/big", len(data), sha(data)), result
        assert any("retrying" in r.getMessage() for r in caplog.records)  # the outage was felt

        # A read that starts during an outage waits it out too.
        azurite.stop()
        got: list[object] = []
        r = threading.Thread(target=lambda: got.append(_capture(lambda: store.get("ckpt/big"))))
        r.start()
        time.sleep(1.0)
        azurite.start()
        r.join(60)
    assert got and got[0] == data


def _capture(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        return exc


@pytest.mark.azurite
def test_azure_refusal_is_one_line_naming_store_key_and_status(azurite: Azurite) -> None:
    """A 403 as Azure (here Azurite) sends it, for a read-only SAS asked to write: a StorageError
    whose one-line message names the store, the key and Azure's status and code (no RequestId/XML)."""
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

    writable = azure_store(azurite)
    writable.put("ckpt/step-1.pt", b"earlier")
    name = writable.container.container_name
    key = azurite.connection_string.split("AccountKey=")[1].split(";")[0]
    sas = generate_container_sas("devstoreaccount1", name, account_key=key,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    client = ContainerClient.from_container_url(f"{azurite.endpoint}/{name}", credential=sas, retry_total=0)
    store = AzureBlobStore(client, "run/1", block_size=BLOCK, retry=FAST_RETRY, create_container=False)
    assert store.get("ckpt/step-1.pt") == b"earlier"
    for data in (b"small", os.urandom(3 * BLOCK)):  # one Put Blob, and staged blocks
        with pytest.raises(StorageError) as caught:
            store.put("ckpt/step-2.pt", data)
        exc = caught.value
        assert (exc.store, exc.key) == (store.uri, "ckpt/step-2.pt")
        assert exc.cause.startswith("Azure answered 403 ") and "\n" not in str(exc)
        assert "'ckpt/step-2.pt' in az://" in str(exc) and "403" in str(exc) and "RequestId" not in str(exc)
