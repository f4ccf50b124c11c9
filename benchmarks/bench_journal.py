"""Journal append throughput: SQLite and PostgreSQL, 1 to 16 writer processes.

    python benchmarks/bench_journal.py [--seconds 3] [--postgres-url URL] [--skip-postgres] [--quick]

Each measurement uses a fresh temporary database (the PostgreSQL one is dropped afterwards).
Every writer process appends `evaluated` events until the time is up, from one or more threads
(each thread a trial of its own: a coordinator's trainers report from threads of one process),
one event per `append` (the coordinator's pattern), or batches of 100 through `append_many`.

What the rows show:
- one thread per process: every append is a transaction of its own. On PostgreSQL, writers of
  different experiments commit concurrently (a lock per experiment), writers of one experiment
  take turns; on SQLite every writer takes turns.
- 4 to 16 threads per process (a coordinator's concurrent reports): the appends made at the same
  time in one process share a transaction (journal/group_commit.py): one flush acknowledges them.
The target of issue 32 is the 16-process, 16-thread PostgreSQL row: >= 2,000 events/s. Every rate
counts only events acknowledged to their caller; p50/p99 are the callers' waits for that. On a
2-core machine the rows with many processes are bound by CPU (16 Python clients and 16 server
backends share it), not by the journal's locks: see docs/operations.md for the measured curve.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from orchestrator.journal import Event, open_journal
from orchestrator.journal.admin import create_database, drop_database
from orchestrator.journal.errors import JournalError

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
EXPERIMENT = "bench"
TARGET_EVENTS_S = 2000


@dataclass(frozen=True)
class Case:
    writers: int  # processes
    threads: int = 1  # appending threads per process
    batch: int = 1  # events per append call
    shared: bool = False  # every writer on one experiment, not one experiment each

    def label(self, backend: str) -> str:
        who = "1 writer" if self.writers == 1 else f"{self.writers} writers"
        if self.writers > 1:
            who += ", one experiment" if self.shared else ", an experiment each"
        if self.threads > 1:
            who += f", {self.threads} threads each"
        how = "" if self.batch == 1 else f", batches of {self.batch}"
        return f"journal {backend} {who}{how}"


# A coordinator serves up to 16 calls at once (actors/coordinator.py, max_concurrency=16): its
# trainers' reports are that many concurrent appends. The target row is 16 such processes.
COORDINATOR_THREADS = 16
TARGET = Case(16, threads=COORDINATOR_THREADS)
CASES = [Case(1), Case(2), Case(4), Case(8), Case(16), Case(16, shared=True),
         Case(16, threads=4), Case(16, threads=8), TARGET, Case(16, threads=16, shared=True),
         Case(1, batch=100), Case(16, batch=100)]
QUICK = [Case(1), Case(16), Case(16, threads=8), TARGET]


def _warm() -> None:
    """Runs in each worker before timing starts, so imports are not measured."""
    import orchestrator.journal  # noqa: F401


def _experiment(case: Case, writer: int) -> str:
    return EXPERIMENT if case.shared else f"{EXPERIMENT}-{writer}"


def _trial(writer: int, thread: int) -> str:
    return f"w{writer}t{thread}"


def _prepare(url: str, case: Case) -> None:
    with open_journal(url) as journal:
        for w in range(case.writers):
            experiment, trials = _experiment(case, w), [_trial(w, t) for t in range(case.threads)]
            journal.register_experiment(experiment, "bench", "name: bench\n")
            journal.register_trials(experiment, {trial: {"trial": trial} for trial in trials})
            journal.append_many([Event.for_trial(experiment, trial, kind, f"{trial}/{kind}")
                                 for trial in trials for kind in ("queued", "running")])


def _writer(url: str, case: Case, writer: int, start_at: float, seconds: float) -> tuple[int, float, list[float]]:
    """Append until the deadline; return (events stored, finish time, seconds each append waited)."""
    experiment, run = _experiment(case, writer), uuid.uuid4().hex[:8]
    counts, waits = [0] * case.threads, [[] for _ in range(case.threads)]

    def thread(t: int) -> None:
        trial = _trial(writer, t)
        while time.time() < start_at + seconds:
            n = counts[t]
            events = [Event.for_trial(experiment, trial, "evaluated", f"{trial}/{run}/{n + i}",
                                      step=n + i, metrics={"loss": 0.5, "fid": 30.0})
                      for i in range(case.batch)]
            began = time.perf_counter()
            stored = journal.append_many(events)
            waits[t].append(time.perf_counter() - began)
            counts[t] += sum(stored)

    with open_journal(url) as journal:
        time.sleep(max(0.0, start_at - time.time()))
        threads = [threading.Thread(target=thread, args=(t,)) for t in range(case.threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return sum(counts), time.time(), [w for ws in waits for w in ws]


@dataclass(frozen=True)
class Measured:
    events_s: float
    p50_ms: float
    p99_ms: float

    def __str__(self) -> str:
        return f"{self.events_s:,.0f} events/s (ack wait p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms)"


def measure(url: str, case: Case, seconds: float) -> Measured:
    """Acknowledged events per second for one case against the (empty) database at `url`."""
    _prepare(url, case)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(case.writers, mp_context=context) as pool:
        list(pool.map(time.sleep, [0.3] * case.writers))  # every worker started before timing
        for future in [pool.submit(_warm) for _ in range(case.writers)]:
            future.result()
        start_at = time.time() + 1.0  # time for every writer to open its journal
        futures = [pool.submit(_writer, url, case, w, start_at, seconds) for w in range(case.writers)]
        results = [f.result(timeout=seconds + 120) for f in futures]
    total = sum(count for count, _, _ in results)
    waits = sorted(w for _, _, ws in results for w in ws)
    p99 = waits[min(len(waits) - 1, int(0.99 * len(waits)))]
    return Measured(total / (max(end for _, end, _ in results) - start_at), statistics.median(waits) * 1e3, p99 * 1e3)


def bench_sqlite(cases: list[Case], seconds: float) -> None:
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
            measured = measure(f"sqlite:///{tmp}/journal.db", case, seconds)
        print(f"{case.label('sqlite')}: {measured}", flush=True)


def bench_postgres(admin_url: str, cases: list[Case], seconds: float) -> None:
    for case in cases:
        name = f"orch_bench_{uuid.uuid4().hex[:12]}"
        url = create_database(admin_url, name)
        try:
            measured = measure(url, case, seconds)
        finally:
            drop_database(admin_url, name)
        target = ""
        if case == TARGET:
            verdict = "met" if measured.events_s >= TARGET_EVENTS_S else "NOT met"
            target = f"  [target >= {TARGET_EVENTS_S:,} events/s: {verdict}]"
        print(f"{case.label('postgresql')}: {measured}{target}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("ORCH_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="admin URL of the PostgreSQL server (a temporary database is created on it)",
    )
    parser.add_argument("--skip-postgres", action="store_true", help="measure SQLite only")
    parser.add_argument("--quick", action="store_true", help="three rows: 1 writer, 16 writers, 16 writers x 8 threads")
    args = parser.parse_args(argv)
    cases = QUICK if args.quick else CASES

    print(f"# journal append throughput, {args.seconds:g} s per row, {os.cpu_count()} CPUs", flush=True)
    bench_sqlite([c for c in cases if not c.shared], args.seconds)
    if args.skip_postgres:
        print("journal postgresql: skipped (--skip-postgres)")
        return 0
    try:
        bench_postgres(args.postgres_url, cases, args.seconds)
    except JournalError as exc:
        print(f"journal postgresql: not measured: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
