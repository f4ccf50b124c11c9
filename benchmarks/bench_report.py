"""`orch report` generation time for a 16-trial sweep with its grids.

    python benchmarks/bench_report.py [--trials 16] [--steps 2000] [--repeats 3]

The sweep is synthesised, not trained: journal events as the runtime writes them (registration,
queued/running, step_metrics batches of 100 steps, evaluated at the base, every 500 steps and the
end, done) and, in a local blob store, a 64 px sample grid of 32 images per evaluation and two
DrawBench sheets at the base and each final evaluation. What is timed is `build_report`: reading
the journal, copying the pictures, the matplotlib plots and the page (median of the repeats).
"""
from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from orchestrator.eval.drawbench import contact_sheet
from orchestrator.experiment.journaling import RunJournal
from orchestrator.journal import EventKind, open_journal
from orchestrator.models.common.images import image_grid
from orchestrator.report import build_report
from orchestrator.storage import LocalBlobStore

EID = "ebench0000001"
SUITES = ("spatial", "clip_r_precision", "drawbench")


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _metrics(rng: np.random.Generator, n: int = 64) -> dict[str, float]:
    out = {}
    for name in ("spatial.accuracy", "spatial.object_accuracy", "clip_r_precision.r_at_1", "drawbench.r_at_1",
                 "drawbench.r_at_1/Counting", "drawbench.r_at_1/Positional"):
        v = float(rng.uniform(0.1, 0.9))
        half = 1.96 * math.sqrt(v * (1 - v) / n)
        out.update({name: v, f"{name}.n": n, f"{name}.ci_low": v - half, f"{name}.ci_high": v + half})
    return out


def synthesise(root: Path, trials: int, steps: int) -> tuple[str, str]:
    """A finished sweep in root/journal.db and root/blobs: (journal URL, blobs URI)."""
    rng = np.random.default_rng(0)
    store = LocalBlobStore(root / "blobs", fsync=False)
    grids = f"experiments/{EID}/grids"
    grid = _png(image_grid(torch.rand(32, 3, 64, 64), cols=8))
    sheet = _png(contact_sheet(torch.rand(10, 4, 3, 64, 64), [f"prompt {i}" for i in range(10)]))
    url = f"sqlite:///{root / 'journal.db'}"
    lrs = [1e-4, 3e-4, 1e-3, 3e-3]
    configs = {f"t{i:012x}": {"model": {"variant": "sd"}, "train": {"lr": lrs[i % 4], "seed": i // 4, "steps": steps}}
               for i in range(trials)}
    with open_journal(url) as journal:
        journal.register_experiment(EID, "bench-report", '{"name": "bench-report"}')
        journal.register_trials(EID, configs)
        rj = RunJournal(journal, EID)
        rj.experiment(EventKind.SUBMITTED)

        def evaluated(tid: str, step: int, label: str, sheets: bool, **extra) -> None:
            store.put(f"{grids}/{label}.png", grid)
            info = {}
            if sheets:
                names = {"Counting": "drawbench-counting.png", "Positional": "drawbench-positional.png"}
                keys = {n: f"{grids}/{label}-{n}" for n in names.values()}
                for key in keys.values():
                    store.put(key, sheet)
                info = {"drawbench": {"sheets": names, "artifacts": keys}}
            rj.evaluated(tid, step, {"metrics": _metrics(rng), "suites": list(SUITES), "options": {"label": label},
                                     "weights": label, "info": info, "grid": f"{grids}/{label}.png"}, **extra)

        for tid, cfg in configs.items():
            rj.transition(tid, EventKind.QUEUED)
            rj.transition(tid, EventKind.RUNNING)
            for start in range(1, steps + 1, 100):
                rows = [[s, 1.0 / math.sqrt(s) + float(rng.normal(0, 0.02)), cfg["train"]["lr"] * min(1.0, s / 100)]
                        for s in range(start, min(start + 100, steps + 1))]
                rj.step_metrics(tid, rows)
            evaluated(tid, 0, "base", True, base=True)
            for step in range(500, steps, 500):
                evaluated(tid, step, f"{tid}-step{step}", False)
            evaluated(tid, steps, f"{tid}-final", True)
            rj.transition(tid, EventKind.DONE, final_loss=0.1)
    return url, str(root / "blobs")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        url, blobs = synthesise(root, args.trials, args.steps)
        made = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            index = build_report(url, EID, root / "report", blobs_uri=blobs)
            times.append(time.perf_counter() - t0)
        files = list(index.parent.iterdir())
        size = sum(p.stat().st_size for p in files) / 2 ** 20
    print(f"synthesised (not trained) {args.trials} trials x {args.steps} steps of journal events and grids "
          f"in {made:.1f} s")
    print(f"report: {statistics.median(times):.2f} s median of {args.repeats} "
          f"({', '.join(f'{t:.2f}' for t in times)}); {len(files)} files, {size:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
