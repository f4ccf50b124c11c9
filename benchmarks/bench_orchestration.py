"""Orchestration overhead and scheduling cost of the Ray runtime.

1. The same trial (same manifest, same id) under `orch run` (embedded Ray, coordinator, trainer
   actor, journal) and under `orch train` (in-process): wall times side by side and their ratio
   train/run, which must be >= 0.90 for a ~2-minute trial. ORCH_BENCH_TRIAL_STEPS sets the trial
   length (default 600 steps, about 2 minutes on one idle core of this machine); ORCH_BENCH_REPEATS
   runs each that many times, alternating which goes first, and compares the medians.
2. Expanding and scheduling a 1,000-trial sweep of trivial trials: manifest expansion, journal
   registration and the coordinator's queueing, per trial (ORCH_BENCH_SWEEP_TRIALS, default 1000).

    python benchmarks/bench_orchestration.py
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

TRIAL = """\
name: bench-{name}
model: {{variant: sd, base: tiny-random, resolution: 32}}
data: {{train: {{kind: shapes, captions: spatial, n: 256}}}}
train: {{steps: {steps}, batch_size: 32, lr: 1.0e-4, checkpoint_every: {every}, seed: 0}}
resources: {{cpus_per_trial: 1}}
storage: {{blobs: ./blobs, journal: sqlite:///./journal.db}}
"""

SWEEP = """\
name: bench-sweep
model: {{variant: sd, base: tiny-random, resolution: 32}}
data: {{train: {{kind: shapes, captions: spatial, n: 8}}}}
train: {{steps: 1, batch_size: 4, checkpoint_every: 1}}
sweep: {{grid: {{train.lr: [{lrs}]}}}}
storage: {{blobs: ./blobs, journal: sqlite:///./journal.db}}
"""


def _timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return time.perf_counter() - t0


def overhead(steps: int, repeats: int = 1) -> dict:
    """Both as a user runs them: the `orch` console script in a fresh process, one CPU thread for
    the trial's math either way (`orch train --threads 1`; `orch run --cpus 1` gives the trial
    one CPU slot, hence one thread). The imports are warmed first so neither pays a cold disk."""
    orch = str(Path(sys.executable).with_name("orch"))
    subprocess.run([sys.executable, "-c", "import orchestrator.training, orchestrator.actors.coordinator, ray"],
                   check=True)
    every = max(1, steps // 4)
    walls: dict[str, list[float]] = {"train": [], "run": []}
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
        for i in range(repeats):  # alternate the order, so load that comes and goes hits both
            for name in (("train", "run") if i % 2 == 0 else ("run", "train")):
                d = Path(tmp) / f"{name}{i}"
                d.mkdir()
                (d / "m.yaml").write_text(TRIAL.format(name="same", steps=steps, every=every))
                if name == "train":
                    cmd = [orch, "train", "m.yaml", "--trial", "0", "--threads", "1", "--no-progress"]
                else:
                    cmd = [orch, "run", "m.yaml", "--cpus", "1", "--no-progress"]
                walls[name].append(_timed(cmd, d))
    train, run = statistics.median(walls["train"]), statistics.median(walls["run"])
    return {"orch_train_s": train, "orch_run_s": run, "ratio": train / run,
            "all_train_s": walls["train"], "all_run_s": walls["run"]}


def scheduling(n: int) -> dict[str, float]:
    from orchestrator.actors.coordinator import Coordinator
    from orchestrator.experiment.plan import plan_sweep

    with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
        path = Path(tmp) / "sweep.yaml"
        path.write_text(SWEEP.format(lrs=", ".join(f"{1e-4 * (1 + i / n):.10g}" for i in range(n))))
        t0 = time.perf_counter()
        coord = Coordinator(plan_sweep(path).to_json())  # loads and expands the manifest, then by value
        t1 = time.perf_counter()
        queued = coord._register()      # registers every trial and journals `queued`
        t2 = time.perf_counter()
        assert len(queued) == n
    return {"trials": n, "expand_ms_per_trial": (t1 - t0) * 1e3 / n,
            "register_and_queue_ms_per_trial": (t2 - t1) * 1e3 / n, "total_ms_per_trial": (t2 - t0) * 1e3 / n}


def main() -> None:
    n = int(os.environ.get("ORCH_BENCH_SWEEP_TRIALS", 1000))
    s = scheduling(n)
    print(f"scheduling {s['trials']} trials: expand {s['expand_ms_per_trial']:.2f} ms/trial, "
          f"register+queue {s['register_and_queue_ms_per_trial']:.2f} ms/trial, "
          f"total {s['total_ms_per_trial']:.2f} ms/trial")
    steps = int(os.environ.get("ORCH_BENCH_TRIAL_STEPS", 600))
    repeats = int(os.environ.get("ORCH_BENCH_REPEATS", 1))
    o = overhead(steps, repeats)
    each = "" if repeats == 1 else (f" (medians of {repeats}: train " + ", ".join(f"{w:.1f}" for w in o["all_train_s"])
                                    + "; run " + ", ".join(f"{w:.1f}" for w in o["all_run_s"]) + ")")
    print(f"overhead ({steps} steps): orch train {o['orch_train_s']:.1f} s, orch run {o['orch_run_s']:.1f} s, "
          f"ratio {o['ratio']:.3f} (target >= 0.90){each}")


if __name__ == "__main__":
    main()
