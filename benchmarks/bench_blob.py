"""Blob store throughput: put and get of one large file, local and Azurite, against a plain copy.

    python benchmarks/bench_blob.py [--size-mib 256] [--dir DIR] [--repeat 3]

Everything lives in a temporary directory (on the disk of --dir, default the system temp
dir) that is removed at the end, Azurite's data included. The reference is
`shutil.copyfile` of the same file on the same disk; `copyfile + fsync` is shown too,
because every put (and get_file) here fsyncs before it publishes, which a plain copy does not.
Puts hash as they stream (sha256); gets verify the hash before the file is renamed into place.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.storage import BlobStore, LocalBlobStore
from orchestrator.storage.azure import AzureBlobStore
from orchestrator.storage.azurite import Azurite, find_azurite

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


def make_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(8 * MiB, left)
            f.write(os.urandom(n))
            left -= n


def best_seconds(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def copy_and_fsync(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb") as f:
        os.fsync(f.fileno())


def bench_store(name: str, store: BlobStore, src: Path, work: Path, size: int, repeat: int,
                report: Callable[[str, float], None]) -> None:
    put = best_seconds(lambda: store.put_file("bench/blob.bin", src), repeat)
    report(f"{name} put_file", size / MiB / put)
    dest = work / f"{name}-get.bin"
    get = best_seconds(lambda: store.get_file("bench/blob.bin", dest), repeat)
    report(f"{name} get_file", size / MiB / get)
    if dest.stat().st_size != size:
        raise SystemExit(f"{name}: got {dest.stat().st_size} bytes back, expected {size}")
    dest.unlink()
    store.delete("bench/blob.bin")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--dir", default=None, help="where the temporary data goes (default: system temp)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs per measurement")
    args = ap.parse_args(argv)
    size = args.size_mib * MiB

    with tempfile.TemporaryDirectory(prefix="bench_blob_", dir=args.dir) as tmp:
        work = Path(tmp)
        src = work / "source.bin"
        make_random_file(src, size)
        print(f"file: {args.size_mib} MiB of random bytes in {work}")

        ref = size / MiB / best_seconds(lambda: shutil.copyfile(src, work / "copy.bin"), args.repeat)
        ref_fsync = size / MiB / best_seconds(lambda: copy_and_fsync(src, work / "copy.bin"), args.repeat)
        (work / "copy.bin").unlink()

        def report(label: str, mib_s: float) -> None:
            print(f"{label:<28} {mib_s:8.1f} MiB/s   {mib_s / ref:5.2f}x plain copy"
                  f"   {mib_s / ref_fsync:5.2f}x copy+fsync")

        print(f"best of {args.repeat}; puts and get_file fsync, so compare them with copy+fsync too")
        report("shutil.copyfile (reference)", ref)
        report("shutil.copyfile + fsync", ref_fsync)

        bench_store("local", LocalBlobStore(work / "local-store"), src, work, size, args.repeat, report)

        azurite = Azurite(work / "azurite", binary=find_azurite(PROJECT_ROOT))
        azurite.start()
        try:
            store = AzureBlobStore.from_env("bench", env=azurite.env)
            try:
                bench_store("azurite", store, src, work, size, args.repeat, report)
            finally:
                store.close()
        finally:
            azurite.stop()


if __name__ == "__main__":
    main()
