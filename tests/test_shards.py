"""Shard datasets: fixed examples per shard, content-addressed names, deterministic bytes, an
index with counts and hashes, and reads that catch every kind of corruption."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from orchestrator.data.loaders import open_loader
from orchestrator.data.shards import (
    INDEX_NAME,
    ShardIndex,
    ShardInfo,
    ShardIntegrityError,
    ShardReader,
    ShardWriter,
    decode_shard,
    encode_shard,
    write_shards,
)
from orchestrator.manifest.schema import DataSource
from orchestrator.storage import IntegrityError, LocalBlobStore


def records(n: int, start: int = 0) -> list[dict]:
    return [{"id": i, "caption": f"a red circle left of square {i} — ✓\u2028",
             "category": "even" if i % 2 == 0 else "odd", "tags": ["a", i]} for i in range(start, start + n)]


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs", fsync=False)


def test_round_trip_with_fixed_examples_per_shard(store: LocalBlobStore) -> None:
    recs = records(2500)
    index = write_shards(recs, store, "ds/captions", examples_per_shard=1000, meta={"source": "test"})
    assert [s.count for s in index.shards] == [1000, 1000, 500] and [s.first for s in index.shards] == [0, 1000, 2000]
    for s in index.shards:
        data = store.get(f"ds/captions/{s.name}")
        assert s.name == f"shards/{hashlib.sha256(data).hexdigest()}.tar" and s.size == len(data)
    reader = ShardReader(store, "ds/captions")
    assert len(reader) == 2500 and reader.meta == {"source": "test"}
    assert list(reader) == json.loads(json.dumps(recs))  # tuples/lists as JSON gives them back
    assert reader.read_shard(2)[0]["id"] == 2000
    assert index.locate(1999) == (1, 999) and [r["id"] for r in reader.records_at([2499, 3, 1000, 4])] == \
        [2499, 3, 1000, 4]
    with pytest.raises(IndexError):
        index.locate(2500)
    assert reader.verify() == 2500
    doc = json.loads(store.get("ds/captions/index.json"))
    assert doc["total"] == 2500 and doc["examples_per_shard"] == 1000
    assert [s["sha256"] for s in doc["shards"]] == [s.sha256 for s in index.shards]


def test_shards_are_deterministic_plain_tars_with_bytes_fields(tmp_path: Path, store: LocalBlobStore) -> None:
    recs = [{"caption": "x", "image": b"\x89PNG fake", "latent": bytes(range(256))}, {"caption": "y", "image": b""}]
    data = encode_shard(recs, first=40)
    assert data == encode_shard(recs, first=40) and data != encode_shard(recs, first=41)
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert names == ["shard.json", "records.jsonl", "0000000040.image", "0000000040.latent", "0000000041.image"]
    assert decode_shard(data) == recs
    a = write_shards(records(30), store, "a", examples_per_shard=8)
    other = LocalBlobStore(tmp_path / "other", fsync=False)
    b = write_shards(records(30), other, "somewhere/else", examples_per_shard=8)
    assert a.to_bytes() == b.to_bytes() and a.dataset_id == b.dataset_id
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        encode_shard([{"x": object()}], 0)


def test_damaged_shard_bytes_are_rejected_without_an_index() -> None:
    data = encode_shard(records(5), first=0)
    with pytest.raises(ShardIntegrityError, match="truncated"):
        decode_shard(data[:1500])
    bad = bytearray(data)
    bad[10] ^= 0x01  # inside the first member's name
    with pytest.raises(ShardIntegrityError, match="checksum"):
        decode_shard(bytes(bad))
    with pytest.raises(ShardIntegrityError, match="fewer than two members"):
        decode_shard(bytes(10240))


def test_an_interrupted_writer_leaves_no_index(store: LocalBlobStore) -> None:
    with pytest.raises(RuntimeError):
        with ShardWriter(store, "ds", examples_per_shard=4) as w:
            w.add_many(records(9))
            raise RuntimeError("interrupted")
    assert not store.exists(f"ds/{INDEX_NAME}") and len(store.list("ds/shards/")) == 2
    with pytest.raises(KeyError):
        ShardReader(store, "ds")


def test_corrupt_bytes_on_disk_are_caught(store: LocalBlobStore) -> None:
    index = write_shards(records(20), store, "ds", examples_per_shard=8)
    path = store.path_of(f"ds/{index.shards[1].name}")
    raw = bytearray(path.read_bytes())
    raw[-2000] ^= 0xFF  # inside the tar's payload area
    path.write_bytes(bytes(raw))
    reader = ShardReader(store, "ds")
    assert len(reader.read_shard(0)) == 8
    with pytest.raises(IntegrityError):
        reader.read_shard(1)


def test_a_replaced_shard_is_caught_against_the_index(store: LocalBlobStore) -> None:
    index = write_shards(records(20), store, "ds", examples_per_shard=8)
    key = f"ds/{index.shards[0].name}"
    # A well-formed object whose store header is consistent, but not the bytes the index names.
    store.put(key, encode_shard(records(8, start=100), first=0))
    with pytest.raises(ShardIntegrityError, match="does not match the index"):
        ShardReader(store, "ds").read_shard(0)


def test_a_tampered_index_is_caught(store: LocalBlobStore) -> None:
    index = write_shards(records(20), store, "ds", examples_per_shard=8)
    doc = json.loads(store.get("ds/index.json"))
    doc["shards"][0]["count"] = 7
    store.put("ds/index.json", json.dumps(doc).encode())
    with pytest.raises(ShardIntegrityError, match="shard 0 holds 7 record"):
        ShardReader(store, "ds")
    # Counts that add up but lie about a shard's content: caught when the shard is read.
    s0, s1, s2 = index.shards
    swapped = ShardIndex(8, (ShardInfo(s1.sha256, 8, s1.size, 0), ShardInfo(s0.sha256, 8, s0.size, 8), s2), {})
    store.put("ds/index.json", swapped.to_bytes())
    with pytest.raises(ShardIntegrityError, match="positions 8..15; the index says 8 at 0..7"):
        ShardReader(store, "ds").read_shard(0)
    store.put("ds/index.json", b"{not json")
    with pytest.raises(ShardIntegrityError, match="ds/index.json: not JSON"):
        ShardReader(store, "ds")


def test_shards_loader_from_a_manifest_data_source(tmp_path: Path, store: LocalBlobStore) -> None:
    write_shards(records(10), store, "", examples_per_shard=4)
    src = DataSource.model_validate({"kind": "shards", "root": "blobs", "categories": ["odd"], "n": 3},
                                    context={"base_dir": tmp_path})
    got = open_loader(src, base_dir=tmp_path).load()
    assert [r["id"] for r in got] == [1, 3, 5]
