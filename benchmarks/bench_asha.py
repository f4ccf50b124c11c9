"""Early stopping's payoff: the same sweep run as a full grid and with `sweep.early_stop` (ASHA), side by
side in one run: the best final metric each finds (with its 95% Wilson interval) and the trainer-seconds
each spends (from the journal: every attempt's `running` to the event that ends it, rung waits included).

Targets (issue 32): the ASHA sweep's best final metric lies within the full grid's best trial's 95%
interval, using at most 40% of the full grid's trainer-seconds.

Default: the probe variant (orchestrator.testing.probe_variant; seconds, for `make bench`), 8 learning
rates log-spaced over 1e-5..1e-2 x 2 caption sets, `--step-s` seconds per step to stand in for training.
`--variant sd3`: the issue's measurement, the demo's tiny SD3 finetuned from assets/tiny-sd3-base on
generic vs spatial captions (pairs world), judged by the spatial suite (`--samples` held-out prompts);
about 45 minutes on two cores.

    python benchmarks/bench_asha.py [--variant probe|sd3] [--steps N] [--samples N] [--cpus N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LRS = [float(f"{x:.3g}") for x in np.logspace(-5, -2, 8)]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=("probe", "sd3"), default="probe")
    p.add_argument("--steps", type=int, default=None, help="train.steps (probe 270, sd3 900)")
    p.add_argument("--samples", type=int, default=None, help="held-out prompts per evaluation (probe 100, sd3 200)")
    p.add_argument("--step-s", type=float, default=0.02, help="probe: seconds per training step")
    p.add_argument("--cpus", type=int, default=2, help="trials at once (one CPU each)")
    p.add_argument("--reduction-factor", type=int, default=3)
    p.add_argument("--out", default=None, help="write the measured rows as JSON here")
    return p.parse_args()


def manifest(a: argparse.Namespace, work: Path, early: bool) -> str:
    steps = a.steps or (270 if a.variant == "probe" else 900)
    grace = steps // a.reduction_factor ** 2  # rungs at steps/9 and steps/3
    samples = a.samples or (100 if a.variant == "probe" else 200)
    if a.variant == "probe":
        model = "model: {variant: probe, base: tiny-random, resolution: 32}"
        train = f"train: {{steps: {steps}, batch_size: 2, lr: 1.0e-3, warmup_steps: 0, checkpoint_every: {grace}}}"
        data = "data: {train: {kind: shapes, captions: spatial, n: 8, world: pairs}}"
    else:
        base = ROOT / "assets" / "tiny-sd3-base"
        model = (f"model: {{variant: sd3, base: {base}, resolution: 32, "
                 f"sd3: {{train_text_encoders: true, caption_dropout: 0.1}}}}")
        train = (f"train: {{steps: {steps}, batch_size: 32, lr: 1.0e-3, warmup_steps: 20, checkpoint_every: {grace}, "
                 f"ema_decay: 0.99}}")
        data = "data: {train: {kind: shapes, captions: spatial, n: 2000, size: 32, seed: 0, world: pairs}}"
    stop = (f"  early_stop: {{metric: spatial.accuracy, mode: max, grace_steps: {grace}, "
            f"reduction_factor: {a.reduction_factor}}}\n") if early else ""
    return f"""\
name: asha-{'on' if early else 'off'}
{model}
{data}
{train}
sweep:
  grid: {{train.lr: {json.dumps(LRS)}, data.train.captions: [generic, spatial]}}
{stop}eval: {{suites: [spatial], every: {grace}, samples: {samples}, evaluate_base: false, world: pairs}}
resources: {{cpus_per_trial: 1}}
storage: {{blobs: {work}/blobs, journal: sqlite:///{work}/journal.db}}
"""


def trainer_seconds(journal, eid: str, trial_id: str) -> float:
    """Wall time from each `running` to the event that ends that attempt."""
    ends = {"evaluating", "done", "stopped", "failed", "queued", "cancelled", "preempted"}
    total, start = 0.0, None
    for e in sorted(journal.events(eid, trial_id), key=lambda e: e.seq):
        if e.kind.value == "running":
            start = e.created_at
        elif start is not None and e.kind.value in ends:
            total += (e.created_at - start).total_seconds()
            start = None
    return total


def measure(a: argparse.Namespace, work: Path, early: bool) -> dict:
    from orchestrator.app.run import run_experiment
    from orchestrator.eval.stats import wilson_interval
    from orchestrator.journal import TrialStatus, open_journal

    work.mkdir(parents=True)
    path = work / "m.yaml"
    path.write_text(manifest(a, work, early))
    t0 = time.monotonic()
    eid = run_experiment(path, progress=False, num_cpus=a.cpus)
    wall = time.monotonic() - t0
    journal = open_journal(f"sqlite:///{work}/journal.db")
    state = journal.experiment_state(eid)
    best = None
    for t in state.trials.values():
        if t.status is TrialStatus.DONE and t.metrics:
            m = t.metrics[max(t.metrics)]
            k, n = round(m["spatial.accuracy"] * m["spatial.accuracy.n"]), int(m["spatial.accuracy.n"])
            if best is None or m["spatial.accuracy"] > best["accuracy"]:
                best = {"trial": t.trial_id, "lr": t.config["train"]["lr"],
                        "captions": t.config["data"]["train"]["captions"], "accuracy": m["spatial.accuracy"],
                        "ci": wilson_interval(k, n), "n": n}
    seconds = sum(trainer_seconds(journal, eid, tid) for tid in state.trials)
    counts = {k.value: v for k, v in state.counts().items() if v}
    journal.close()
    return {"early_stop": early, "wall_s": round(wall, 1), "trainer_s": round(seconds, 1), "counts": counts,
            "best": best}


def main() -> int:
    a = _args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if a.variant == "probe":
        from orchestrator.models.registry import PLUGINS_ENV, load_plugins

        os.environ[PLUGINS_ENV] = "orchestrator.testing.probe_variant"  # Ray's processes inherit it
        os.environ["ORCH_PROBE_STEP_S"] = str(a.step_s)
        load_plugins()  # and this one

    with tempfile.TemporaryDirectory(prefix="bench-asha-") as tmp:
        rows = [measure(a, Path(tmp) / name, early) for name, early in (("grid", False), ("asha", True))]
    grid, asha = rows
    ratio = asha["trainer_s"] / grid["trainer_s"] if grid["trainer_s"] else float("nan")
    lo, hi = grid["best"]["ci"]
    within = lo <= asha["best"]["accuracy"] <= hi
    print(f"variant {a.variant}, {len(LRS) * 2} trials (lr {LRS[0]:g}..{LRS[-1]:g} x generic, spatial), "
          f"{a.cpus} at once, reduction factor {a.reduction_factor}")
    print(f"{'sweep':<6} {'trainer-s':>10} {'wall-s':>8} {'trials':<22} "
          "best final spatial.accuracy [95% CI] (lr, captions)")
    for r in rows:
        b = r["best"]
        print(f"{'asha' if r['early_stop'] else 'grid':<6} {r['trainer_s']:>10.1f} {r['wall_s']:>8.1f} "
              f"{json.dumps(r['counts']):<22} {b['accuracy']:.3f} [{b['ci'][0]:.3f}, {b['ci'][1]:.3f}] "
              f"(lr {b['lr']:g}, {b['captions']}, n={b['n']})")
    verdict = "met" if ratio <= 0.40 and within else "NOT met"
    print(f"trainer-seconds asha / grid: {ratio:.3f} (target <= 0.400); asha's best within the grid best's "
          f"interval: {within}; {verdict}")
    if a.out:
        Path(a.out).write_text(json.dumps({"rows": rows, "ratio": ratio, "within": within}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
