"""GQA scene-graph streaming: records/s and peak RSS of `json_stream` against `json.load`.

    python benchmarks/bench_gqa_stream.py            # 1024 MB file (ORCH_BENCH_GQA_MB to change)
    ORCH_BENCH_GQA_MB=200 python benchmarks/bench_gqa_stream.py

Writes a file in GQA's ``*_sceneGraphs.json`` layout (one JSON object on one line, graphs of
10-30 objects with attributes and relations, about 10 KB each like the real train file) into a
temporary directory, then reads it twice, each reader in its own child process so each peak RSS
(from ``os.wait4``'s rusage) is its own: streaming with ``iter_members`` and ``json.load`` (with
the garbage collector off, its best case). Both parse every graph and count its objects.
Prints records/s, MiB/s, peak RSS and the ratios.
The temporary directory is removed at the end.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1024 * 1024
NAMES = ("man", "woman", "shirt", "table", "cup", "window", "tree", "car", "dog", "grass", "building", "sky",
         "chair", "plate", "wall", "sign", "pole", "jeans", "hat", "bus", "glass", "leaves", "street", "fence")
ATTRS = ("white", "black", "red", "blue", "green", "wooden", "metal", "large", "small", "standing", "tall",
         "brown", "silver", "striped", "empty", "young", "parked", "open")
RELATIONS = ("to the left of", "to the right of", "on", "near", "wearing", "holding", "behind",
             "in front of", "above", "below", "on top of", "next to", "sitting on", "of")


def random_graph(rng: random.Random, first_id: int) -> dict:
    n = rng.randint(10, 30)
    ids = [str(first_id + k) for k in range(n)]
    objects = {}
    for oid in ids:
        rels = [{"name": rng.choice(RELATIONS), "object": rng.choice(ids)} for _ in range(rng.randint(0, 8))]
        objects[oid] = {"name": rng.choice(NAMES), "h": rng.randint(5, 300), "relations": rels,
                        "w": rng.randint(5, 400), "attributes": rng.sample(ATTRS, rng.randint(0, 3)),
                        "y": rng.randint(0, 300), "x": rng.randint(0, 400)}
    graph = {"width": 500, "height": rng.choice((333, 375, 500)), "objects": objects}
    if rng.random() < 0.3:
        graph["location"] = rng.choice(("kitchen", "street", "beach", "park"))
    return graph


def write_gqa_scene_graphs(path: Path, target_bytes: int, seed: int = 0, pool_size: int = 64) -> int:
    """A GQA-format scene-graph file of about `target_bytes`; returns the number of graphs.

    Graphs come from a pool of `pool_size` random ones (with their own object ids), which
    keeps writing a gigabyte fast; parsing cost and memory are the same as for distinct ones.
    """
    rng = random.Random(seed)
    pool = [json.dumps(random_graph(rng, 1000000 + 100 * k), separators=(",", ":")) for k in range(pool_size)]
    written, count = 1, 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("{")
        while written < target_bytes:
            body = pool[count % pool_size]
            entry = f'{"," if count else ""}"{2300000 + count}":{body}'
            f.write(entry)
            written += len(entry)
            count += 1
        f.write("}")
    return count


# The two readers; each runs in a fresh interpreter and prints a JSON line. Both do the same
# work per graph (count its objects), so the difference is how the file is parsed. json.load
# runs with the cyclic GC off, its best case: with it on, collections triggered while the
# whole document is being built make it several times slower still.
STREAM_CHILD = """
import json, sys, time
from orchestrator.data.json_stream import iter_members
t = time.perf_counter(); n = objects = 0
for m in iter_members(sys.argv[1]):
    n += 1; objects += len(m.value["objects"])
print(json.dumps({"records": n, "objects": objects, "seconds": time.perf_counter() - t}))
"""
LOAD_CHILD = """
import gc, json, sys, time
gc.disable()
t = time.perf_counter(); n = objects = 0
with open(sys.argv[1], encoding="utf-8") as f:
    graphs = json.load(f)
for key, value in graphs.items():
    n += 1; objects += len(value["objects"])
print(json.dumps({"records": n, "objects": objects, "seconds": time.perf_counter() - t}))
"""


def run_child(code: str, path: Path) -> dict:
    """Run a reader in a child process; its result plus its own peak RSS in MiB."""
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"reader failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def main() -> None:
    size_mb = int(os.environ.get("ORCH_BENCH_GQA_MB", "1024"))
    with tempfile.TemporaryDirectory(prefix="bench_gqa_") as tmp:
        path = Path(tmp) / "train_sceneGraphs.json"
        t = time.perf_counter()
        graphs = write_gqa_scene_graphs(path, size_mb * MB)
        size = path.stat().st_size
        print(f"file: {size / MB:,.0f} MiB, {graphs:,} scene graphs, GQA layout (written in "
              f"{time.perf_counter() - t:.1f}s)")
        stream = run_child(STREAM_CHILD, path)
        load = run_child(LOAD_CHILD, path)
    for name, r in (("json_stream", stream), ("json.load  ", load)):
        print(f"{name}  {r['records'] / r['seconds']:>10,.0f} records/s  {size / MB / r['seconds']:7.1f} MiB/s  "
              f"{r['seconds']:6.1f}s  peak RSS {r['peak_rss_mib']:8,.0f} MiB")
    if (stream["records"], stream["objects"]) != (load["records"], load["objects"]):
        raise SystemExit(f"readers disagree: {stream} vs {load}")
    print(f"peak RSS: streaming uses {stream['peak_rss_mib'] / load['peak_rss_mib']:.1%} of json.load's "
          f"({stream['peak_rss_mib'] / (size / MB):.1%} of the file size); "
          f"speed: streaming at {load['seconds'] / stream['seconds']:.2f}x json.load's")


if __name__ == "__main__":
    main()
