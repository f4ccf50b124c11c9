"""Datasets as content-addressed shards in the blob store: what the ShardPlanner hands out.

Layout under a prefix::

    index.json                 format, examples_per_shard, total, shards [{sha256, count, size, first}], meta
    shards/<sha256>.tar        one shard: records first .. first+count-1

Every shard but the last holds exactly `examples_per_shard` records. A shard is a plain tar
(``tar xf`` opens it) written deterministically (fixed mtime, owner and mode), so equal records
give equal bytes and the same name. Its members: ``shard.json`` ({format, first, count}),
``records.jsonl`` (each record's JSON fields, one line per record: reading costs about what
reading raw JSON lines does), then one member per bytes field, e.g. ``0000000042.image``
for record 42's ``image``. The index is written last: a dataset whose index exists is
complete. Reading checks each shard's bytes against its name and the index's hash, and its
record count and first position against the index.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

from orchestrator.storage import BlobStore, IntegrityError

FORMAT = "orch-shards/1"
SHARD_FORMAT = "orch-shard/1"
SHARD_HEAD = "shard.json"  # {format, first, count}
SHARD_RECORDS = "records.jsonl"  # one line of JSON fields per record
INDEX_NAME = "index.json"
SHARD_DIR = "shards"
DEFAULT_EXAMPLES_PER_SHARD = 1024
_FIELD = re.compile(r"^[A-Za-z0-9_]+$")
_MEMBER = re.compile(r"^(\d{10})\.([A-Za-z0-9_]+)$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ZERO_BLOCK = bytes(512)


class ShardIntegrityError(IntegrityError):
    """A shard or index does not match what the index recorded (count, hash, positions)."""


@dataclass(frozen=True)
class ShardInfo:
    sha256: str
    count: int
    size: int
    first: int  # dataset position of the shard's first record

    @property
    def name(self) -> str:
        return f"{SHARD_DIR}/{self.sha256}.tar"

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "count": self.count, "size": self.size, "first": self.first}


@dataclass(frozen=True)
class ShardIndex:
    examples_per_shard: int
    shards: tuple[ShardInfo, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def dataset_id(self) -> str:
        """sha256 over the shard hashes in order: names the dataset's content (not its meta)."""
        h = hashlib.sha256()
        for s in self.shards:
            h.update(bytes.fromhex(s.sha256))
        return h.hexdigest()

    def locate(self, position: int) -> tuple[int, int]:
        """(shard number, offset in it) of a dataset position (the ShardPlanner's example index)."""
        if not 0 <= position < self.total:
            raise IndexError(f"position {position} outside a dataset of {self.total}")
        # Fixed shard size: the shard is a division away, no search needed.
        return position // self.examples_per_shard, position % self.examples_per_shard

    def to_bytes(self) -> bytes:
        doc = {"format": FORMAT, "examples_per_shard": self.examples_per_shard, "total": self.total,
               "dataset_id": self.dataset_id, "shards": [s.to_json() for s in self.shards], "meta": self.meta}
        return (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, where: str = INDEX_NAME) -> "ShardIndex":
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ShardIntegrityError(f"{where}: not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ShardIntegrityError(f"{where}: not a shard index "
                                      f"(format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                                      f"expected {FORMAT!r})")
        try:
            per = int(doc["examples_per_shard"])
            shards = tuple(ShardInfo(str(s["sha256"]), int(s["count"]), int(s["size"]), int(s["first"]))
                           for s in doc["shards"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardIntegrityError(f"{where}: malformed index: {exc!r}") from None
        index = cls(per, shards, dict(doc.get("meta") or {}))
        index.validate(where)
        if doc.get("total") != index.total or doc.get("dataset_id") != index.dataset_id:
            raise ShardIntegrityError(f"{where}: total or dataset_id disagrees with the shard list")
        return index

    def validate(self, where: str = INDEX_NAME) -> None:
        if self.examples_per_shard < 1:
            raise ShardIntegrityError(f"{where}: examples_per_shard must be positive")
        first = 0
        for i, s in enumerate(self.shards):
            last = i == len(self.shards) - 1
            if not _HEX64.match(s.sha256):
                raise ShardIntegrityError(f"{where}: shard {i} has a bad sha256 {s.sha256!r}")
            if s.first != first or s.count < 1 or s.count > self.examples_per_shard or \
                    (not last and s.count != self.examples_per_shard):
                raise ShardIntegrityError(
                    f"{where}: shard {i} holds {s.count} record(s) from {s.first}; expected "
                    f"{'at most ' if last else ''}{self.examples_per_shard} from {first}")
            first += s.count


# ---------------------------------------------------------------- one shard

def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def encode_shard(records: Sequence[Mapping[str, Any]], first: int) -> bytes:
    """The shard's bytes: deterministic for equal records and positions."""
    lines: list[str] = []
    blobs: list[tuple[str, bytes]] = []
    for pos, rec in enumerate(records, first):
        if not isinstance(rec, Mapping):
            raise TypeError(f"record {pos} is a {type(rec).__name__}, not a mapping")
        plain: dict[str, Any] = {}
        for k, v in rec.items():
            if isinstance(v, (bytes, bytearray, memoryview)):
                if not _FIELD.match(str(k)):
                    raise ValueError(f"record {pos}: bytes field name {k!r} must match [A-Za-z0-9_]+")
                blobs.append((f"{pos:010d}.{k}", bytes(v)))
            else:
                plain[str(k)] = v
        try:
            lines.append(json.dumps(plain, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                                    allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"record {pos} is not JSON-serialisable: {exc}") from None
    head = {"format": SHARD_FORMAT, "first": first, "count": len(records)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _tar_member(tar, SHARD_HEAD, json.dumps(head, sort_keys=True).encode())
        _tar_member(tar, SHARD_RECORDS, "".join(line + "\n" for line in lines).encode("utf-8"))
        for name, data in blobs:
            _tar_member(tar, name, data)
    return buf.getvalue()


def _tar_files(data: bytes, where: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each member of a ustar archive held in memory.

    A direct header walk: tarfile's general machinery costs more per member than a small
    record's JSON does. Only regular files are expected; anything else is corruption.
    """
    pos, size = 0, len(data)
    while pos + 512 <= size:
        header = data[pos:pos + 512]
        if header == _ZERO_BLOCK:
            return
        try:
            checksum = int(header[148:156].rstrip(b" \0") or b"0", 8)
            length = int(header[124:136].rstrip(b" \0") or b"0", 8)
        except ValueError:
            raise ShardIntegrityError(f"{where}: bad tar header at byte {pos}") from None
        if checksum != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise ShardIntegrityError(f"{where}: bad tar header checksum at byte {pos}")
        if header[156:157] not in (b"0", b"\0"):
            raise ShardIntegrityError(f"{where}: tar member at byte {pos} is not a regular file")
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = f"{prefix.decode('utf-8', 'replace')}/{name}"
        start = pos + 512
        if start + length > size:
            raise ShardIntegrityError(f"{where}: tar member {name!r} is truncated")
        yield name, data[start:start + length]
        pos = start + (length + 511) // 512 * 512
    raise ShardIntegrityError(f"{where}: tar archive is truncated (no end-of-archive block)")


def decode_shard(data: bytes, info: ShardInfo | None = None, where: str = "shard") -> list[dict[str, Any]]:
    """Records of a shard; with `info`, checks hash, count and positions against it."""
    if info is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != info.sha256:
            raise ShardIntegrityError(f"{where}: sha256 {actual} does not match the index ({info.sha256})")
    members = _tar_files(data, where)
    try:
        (head_name, head_data), (rec_name, rec_data) = next(members), next(members)
    except StopIteration:
        raise ShardIntegrityError(f"{where}: fewer than two members") from None
    if (head_name, rec_name) != (SHARD_HEAD, SHARD_RECORDS):
        raise ShardIntegrityError(f"{where}: does not start with {SHARD_HEAD} and {SHARD_RECORDS}")
    try:
        head = json.loads(head_data)
        if head.get("format") != SHARD_FORMAT:
            raise ShardIntegrityError(f"{where}: shard format {head.get('format')!r}, expected {SHARD_FORMAT!r}")
        first = int(head["first"])
        lines = rec_data.decode("utf-8").split("\n")  # not splitlines(): JSON text may hold U+2028 raw
        if lines.pop() != "":
            raise ShardIntegrityError(f"{where}: {SHARD_RECORDS} does not end with a newline")
        records = [json.loads(line) for line in lines]
        if len(records) != int(head["count"]):
            raise ShardIntegrityError(f"{where}: {len(records)} record line(s), its header says {head['count']}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ShardIntegrityError(f"{where}: not a readable shard: {exc!r}") from None
    for name, body in members:
        match = _MEMBER.match(name)
        k = int(match.group(1)) - first if match else -1
        if not 0 <= k < len(records) or match.group(2) in records[k]:  # type: ignore[union-attr]
            raise ShardIntegrityError(f"{where}: unexpected member {name!r}")
        records[k][match.group(2)] = body  # type: ignore[union-attr]
    if info is not None and (first, len(records)) != (info.first, info.count):
        raise ShardIntegrityError(f"{where}: holds {len(records)} record(s) at positions "
                                  f"{_span(first, len(records))}; the index says {info.count} at "
                                  f"{_span(info.first, info.count)}")
    return records


def _span(first: int, count: int) -> str:
    return f"{first}..{first + count - 1}" if count else "none"


def _key(prefix: str, name: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def put_shard(store: BlobStore, prefix: str, records: Sequence[Mapping[str, Any]], first: int) -> ShardInfo:
    """Encode and store one shard; an identical shard already stored is not written again."""
    data = encode_shard(records, first)
    sha = hashlib.sha256(data).hexdigest()
    info = ShardInfo(sha, len(records), len(data), first)
    key = _key(prefix, info.name)
    if not (store.exists(key) and store.info(key).sha256 == sha):
        store.put(key, data)
    return info


def write_index(store: BlobStore, prefix: str, index: ShardIndex) -> None:
    index.validate()
    store.put(_key(prefix, INDEX_NAME), index.to_bytes())


# ---------------------------------------------------------------- writer and reader

class ShardWriter:
    """Collects records and stores them shard by shard; `close` writes the index (the commit).

        with ShardWriter(store, "datasets/x", examples_per_shard=1000) as w:
            for r in records:
                w.add(r)
        index = w.index
    """

    def __init__(self, store: BlobStore, prefix: str = "", examples_per_shard: int = DEFAULT_EXAMPLES_PER_SHARD,
                 meta: Mapping[str, Any] | None = None) -> None:
        if examples_per_shard < 1:
            raise ValueError("examples_per_shard must be positive")
        self.store = store
        self.prefix = prefix
        self.examples_per_shard = examples_per_shard
        self.meta = dict(meta or {})
        self.shards: list[ShardInfo] = []
        self._pending: list[Mapping[str, Any]] = []
        self._written = 0
        self.index: ShardIndex | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        self._pending.append(record)
        if len(self._pending) == self.examples_per_shard:
            self._flush()

    def add_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        for r in records:
            self.add(r)

    def _flush(self) -> None:
        if self._pending:
            self.shards.append(put_shard(self.store, self.prefix, self._pending, self._written))
            self._written += len(self._pending)
            self._pending = []

    def close(self) -> ShardIndex:
        if self.index is None:
            self._flush()
            self.index = ShardIndex(self.examples_per_shard, tuple(self.shards), self.meta)
            write_index(self.store, self.prefix, self.index)
        return self.index

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *rest: object) -> None:
        if exc_type is None:  # an interrupted dataset gets no index, so nobody reads it
            self.close()


def write_shards(records: Iterable[Mapping[str, Any]], store: BlobStore, prefix: str = "",
                 examples_per_shard: int = DEFAULT_EXAMPLES_PER_SHARD,
                 meta: Mapping[str, Any] | None = None) -> ShardIndex:
    with ShardWriter(store, prefix, examples_per_shard, meta) as w:
        w.add_many(records)
    return w.close()


class ShardReader:
    """A stored dataset: its index, and verified shards by position in the index."""

    def __init__(self, store: BlobStore, prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix
        key = _key(prefix, INDEX_NAME)
        self.index = ShardIndex.from_bytes(store.get(key), where=key)
        self._cache: dict[int, list[dict[str, Any]]] = {}  # insertion-ordered: oldest first

    def __len__(self) -> int:
        return self.index.total

    @property
    def meta(self) -> dict[str, Any]:
        return self.index.meta

    def key_of(self, shard: int | ShardInfo) -> str:
        info = self.index.shards[shard] if isinstance(shard, int) else shard
        return _key(self.prefix, info.name)

    def read_shard(self, shard: int | ShardInfo) -> list[dict[str, Any]]:
        info = self.index.shards[shard] if isinstance(shard, int) else shard
        key = self.key_of(info)
        return decode_shard(self.store.get(key), info, where=key)

    def iter_shards(self, shards: Iterable[int] | None = None) -> Iterator[tuple[ShardInfo, list[dict[str, Any]]]]:
        for i in (range(len(self.index.shards)) if shards is None else shards):
            yield self.index.shards[i], self.read_shard(i)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for _, records in self.iter_shards():
            yield from records

    def records_at(self, positions: Sequence[int], cache_shards: int = 4) -> list[dict[str, Any]]:
        """Records at dataset positions, in the order asked (a rank's slice of a batch). Each
        shard is fetched and verified once per call; the last `cache_shards` stay decoded."""
        out = []
        for pos in positions:
            shard, offset = self.index.locate(pos)
            records = self._cache.get(shard)
            if records is None:
                records = self.read_shard(shard)
                self._cache[shard] = records
                while len(self._cache) > cache_shards:
                    self._cache.pop(next(iter(self._cache)))
            out.append(records[offset])
        return out

    def verify(self) -> int:
        """Read every shard and check it; returns the number of records."""
        return sum(len(records) for _, records in self.iter_shards())
