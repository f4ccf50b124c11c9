"""Step time with checkpoints uploaded in the background vs synchronously, on Azurite.

    python benchmarks/bench_checkpoint_upload.py [--steps 40] [--repeats 3] [--checkpoint-every 10]

The tiny SD trains on the shapes world with a checkpoint every 10 steps into a real Azurite
(started here, data in a temporary directory); the two modes run alternately, each a fresh run
of `--steps` steps (model built and latents cached before the clock starts). Target: background
≥ 1.2× faster per step. Uploads are what Azurite costs over loopback, so the gain here is a floor:
a remote store's latency is larger.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from orchestrator.data.image_text import shapes_data
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny
from orchestrator.storage.azure import AzureBlobStore
from orchestrator.storage.azurite import Azurite, find_azurite
from orchestrator.training.control import LoopConfig
from orchestrator.training.loop import Trainer

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--checkpoint-every", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = TrainSpec(steps=args.steps, batch_size=args.batch_size, lr=1e-4, checkpoint_every=args.checkpoint_every,
                     seed=0)
    data = shapes_data(n=64, seed=0, size=32)
    with tempfile.TemporaryDirectory(prefix="orch-bench-ckpt-") as tmp:
        azurite = Azurite(Path(tmp) / "azurite", binary=find_azurite(PROJECT_ROOT))
        azurite.start()
        store = AzureBlobStore.from_env("bench-ckpt", env=azurite.env)
        try:
            def run(background: bool, prefix: str) -> tuple[float, int]:
                t = Trainer(get_variant("sd"), build_tiny(seed=0), data, spec, store, prefix,
                            config=LoopConfig(export_model=False, background_upload=background))
                t0 = time.perf_counter()
                t.run()
                size = store.info(t.ckpts.key(args.steps)).size
                return (time.perf_counter() - t0) / args.steps, size

            run(True, "warmup")  # latents cached, Azurite's container made, code paths warm
            sync, background = [], []
            for r in range(args.repeats):
                s, size = run(False, f"sync-{r}")
                sync.append(s)
                background.append(run(True, f"background-{r}")[0])
        finally:
            store.close()
            azurite.stop()
    s, b = statistics.median(sync), statistics.median(background)
    print(f"tiny SD, batch {args.batch_size}, {args.threads} thread(s), checkpoint every {args.checkpoint_every} "
          f"steps ({size / 2**20:.1f} MiB each) into Azurite; median of {args.repeats} runs of {args.steps} steps")
    print(f"synchronous upload   {s * 1000:8.1f} ms/step")
    print(f"background upload    {b * 1000:8.1f} ms/step")
    print(f"speed-up             {s / b:8.2f}x   (target >= 1.2x)")


if __name__ == "__main__":
    main()
