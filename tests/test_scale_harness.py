"""The scale harness (benchmarks/bench_scale.py) at its smallest: one fake node with two fake GPUs
under `orch serve --address`, three probe trials. What it reports must agree with what happened: every
trial done, never more running than GPUs, positive latencies, an overhead share inside (0, 1)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"


def test_the_scale_harness_measures_a_tiny_cluster():
    env = {**os.environ, "ORCH_BENCH_SCALE_NODES": "1", "ORCH_BENCH_SCALE_GPUS": "2", "ORCH_BENCH_SCALE_TRIALS": "3",
           "ORCH_BENCH_SCALE_STEPS": "20", "ORCH_BENCH_SCALE_STEP_S": "0.05", "ORCH_BENCH_SCALE_CLIENTS": "4",
           "ORCH_BENCH_SCALE_LOAD_S": "2", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH), "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["trials_done"] == 3 and 1 <= out["max_concurrent"] <= 2
    assert out["api"]["requests"] > 0 and 0 < out["api"]["p50_ms"] <= out["api"]["p99_ms"]
    assert 0 < out["start_s_p50"] <= out["overhead_s_p99"] and out["sched_latency_s_p50"] >= 0
    assert 0 < out["slot_time_not_in_steps"] < 1 and 0 < out["overhead_on_60s_trials"] < 1
    assert out["events_per_s"] > 0 and out["accept_sweep_s"] > 0 and out["accept_new_during_run_s"] > 0
    assert math.isfinite(out["coordinator_cores"]) and out["coordinator_cores"] >= 0
