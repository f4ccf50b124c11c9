"""Training step time with telemetry on vs off, on the same trial in one process.

"On" is what a trainer actor does: the prometheus-client sink in multiprocess mode (values in
memory-mapped files, as on a node whose exporter serves them), bound to the trial's labels.
"Off" is the no-op default (`orch train`). The same Trainer alternates between the two, a chunk
of steps each (every chunk ends with one checkpoint on both sides); medians reported.
Ratio = off / on step time; the target is >= 0.99.
    python benchmarks/bench_telemetry.py [--steps 20] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
METRICS_DIR = tempfile.mkdtemp(prefix="bench-telemetry-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = METRICS_DIR  # before prometheus-client is imported

from _timing import step_arguments  # benchmarks/ is on sys.path when a script runs
from orchestrator import telemetry
from orchestrator.data.image_text import shapes_data
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny
from orchestrator.storage.local import LocalBlobStore
from orchestrator.telemetry.sink import PrometheusRecorder
from orchestrator.training.control import LoopConfig
from orchestrator.training.loop import Trainer


def main(argv: list[str] | None = None) -> None:
    args = step_arguments(__doc__.splitlines()[0], batch_size=16, n=256, argv=argv)
    data = shapes_data(args.n, seed=0, size=32, caption="spatial")
    spec = TrainSpec(steps=10**6, batch_size=args.batch_size, lr=1e-4, checkpoint_every=10**6, seed=0)
    store = LocalBlobStore(tempfile.mkdtemp(prefix="bench-telemetry-store-"), fsync=False)
    trainer = Trainer(get_variant("sd"), build_tiny(seed=0), data, spec, store, "bench/telemetry",
                      config=LoopConfig(export_model=False, keep_last=1))
    on, off = PrometheusRecorder(), telemetry.Recorder()
    on.bind(experiment="bench", trial="t0", variant="sd")

    def chunk(recorder) -> float:
        telemetry.install(recorder)
        t0 = time.perf_counter()
        trainer.run(max_steps=trainer.step + args.steps, resume=False)
        return (time.perf_counter() - t0) / args.steps

    chunk(off), chunk(on)  # warm-up
    t_on, t_off = [], []
    for _ in range(args.repeats):
        t_off.append(chunk(off))
        t_on.append(chunk(on))
    telemetry.install(off)
    m_on, m_off = statistics.median(t_on), statistics.median(t_off)
    print(f"step time, telemetry off: {m_off * 1e3:.2f} ms  (median of {args.repeats} x {args.steps} steps)")
    print(f"step time, telemetry on:  {m_on * 1e3:.2f} ms")
    print(f"ratio off/on: {m_off / m_on:.3f}  (target >= 0.99)")
    shutil.rmtree(METRICS_DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
