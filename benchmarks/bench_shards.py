"""Shard write/read throughput (records/s) against writing and reading the raw records directly.

    python benchmarks/bench_shards.py [--records 200000] [--per-shard 4096] [--image-bytes N]

Records look like GQA-Captions' (ids, a caption of ~60 words, question, answer); with
--image-bytes N each also carries N bytes of image data (by default two runs: none, and 4096
bytes for a quarter as many records). The reference is a JSON-lines file on
the same disk (bytes fields as hex, since JSON has no bytes): written with one json.dumps per
record + fsync, read with one json.loads per line. Shards go to a local blob store (sha256 on
write, fsync, atomic rename) and are read back through ShardReader, which checks every shard's
hash, count and positions against the index. Everything lives in a temporary directory that is
removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from orchestrator.data.shards import ShardReader, write_shards
from orchestrator.storage import LocalBlobStore

WORDS = ("the", "man", "is", "to", "left", "of", "a", "wooden", "table", "red", "cup", "on", "there", "white",
         "shirt", "near", "window", "tall", "tree", "behind")


def make_records(n: int, image_bytes: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    blob = os.urandom(image_bytes) if image_bytes else b""
    out = []
    for i in range(n):
        rec = {"question_id": str(1000000 + i), "image_id": str(2300000 + i // 10), "image": f"{2300000 + i // 10}.jpg",
               "caption": " ".join(rng.choice(WORDS) for _ in range(60)) + ".",
               "question": "Is the cup to the left of the table?", "answer": rng.choice(("yes", "no")),
               "question_type": rng.choice(("relation", "position", "existence")),
               "scene_graph_id": str(2300000 + i // 10)}
        if image_bytes:
            rec["pixels"] = blob
        out.append(rec)
    return out


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({k: v.hex() if isinstance(v, bytes) else v for k, v in r.items()}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> int:
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            json.loads(line)
            n += 1
    return n


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--per-shard", type=int, default=4096)
    ap.add_argument("--image-bytes", type=int, default=None,
                    help="bytes of image data per record (default: one run without, one with 4096 "
                         "for a quarter as many records)")
    args = ap.parse_args(argv)
    if args.image_bytes is None:
        cases = [(args.records, 0), (max(1, args.records // 4), 4096)]
    else:
        cases = [(args.records, args.image_bytes)]
    for i, (n, image_bytes) in enumerate(cases):
        if i:
            print()
        run(n, image_bytes, args.per_shard)


def run(n: int, image_bytes: int, per_shard: int) -> None:
    records = make_records(n, image_bytes)
    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        work = Path(tmp)
        raw = work / "records.jsonl"
        t_raw_w, _ = timed(lambda: write_jsonl(raw, records))
        t_raw_r, n_raw = timed(lambda: read_jsonl(raw))
        store = LocalBlobStore(work / "blobs")
        t_sh_w, index = timed(lambda: write_shards(records, store, "ds", examples_per_shard=per_shard))
        t_sh_r, n_sh = timed(lambda: sum(1 for _ in ShardReader(store, "ds")))
        raw_mb = raw.stat().st_size / 2**20
        shard_mb = sum(s.size for s in index.shards) / 2**20  # type: ignore[union-attr]
    if n_raw != n or n_sh != n:
        raise SystemExit(f"read back {n_raw} raw / {n_sh} sharded records, expected {n}")
    print(f"{n:,} records ({image_bytes} image bytes each), {len(index.shards)} shards of "  # type: ignore[union-attr]
          f"{per_shard}; jsonl {raw_mb:,.0f} MiB, shards {shard_mb:,.0f} MiB")
    print(f"{'':14}{'write rec/s':>14}{'read rec/s':>14}")
    print(f"{'raw jsonl':14}{n / t_raw_w:>14,.0f}{n / t_raw_r:>14,.0f}")
    print(f"{'shards':14}{n / t_sh_w:>14,.0f}{n / t_sh_r:>14,.0f}")
    print(f"shards vs raw: write {t_raw_w / t_sh_w:.2f}x, read {t_raw_r / t_sh_r:.2f}x "
          f"(shards hash, verify and fsync; raw does neither check)")


if __name__ == "__main__":
    main()
