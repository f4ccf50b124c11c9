"""Journal append throughput: SQLite and PostgreSQL, 1 and 4 writer processes.

    python benchmarks/bench_journal.py [--seconds 3] [--postgres-url URL] [--skip-postgres]

Each measurement uses a fresh temporary database (the PostgreSQL one is dropped afterwards).
Every writer process appends `evaluated` events for its own running trial until the time is up:
one event per `append` (one transaction each, the coordinator's pattern), then batches of 100
through `append_many`. Writes are serialised by design (see orchestrator/journal/engine.py), so
more writers add contention, not throughput; the 4-writer rows show what that costs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from orchestrator.journal import Event, open_journal
from orchestrator.journal.admin import create_database, drop_database
from orchestrator.journal.errors import JournalError

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
EXPERIMENT = "bench"


@dataclass(frozen=True)
class Case:
    writers: int
    batch: int  # events per transaction

    def label(self, backend: str) -> str:
        who = "1 writer" if self.writers == 1 else f"{self.writers} writers"
        how = "" if self.batch == 1 else f", batches of {self.batch}"
        return f"journal {backend} {who}{how}"


CASES = [Case(1, 1), Case(4, 1), Case(1, 100), Case(4, 100)]


def _warm() -> None:
    """Runs in each worker before timing starts, so imports are not measured."""
    import orchestrator.journal  # noqa: F401


def _prepare(url: str, writers: int) -> None:
    with open_journal(url) as journal:
        journal.register_experiment(EXPERIMENT, "bench", "name: bench\n")
        journal.register_trials(EXPERIMENT, {f"w{w}": {"writer": w} for w in range(writers)})
        for w in range(writers):
            trial = f"w{w}"
            journal.append_many(
                [
                    Event.for_trial(EXPERIMENT, trial, "queued", f"{trial}/queued"),
                    Event.for_trial(EXPERIMENT, trial, "running", f"{trial}/running"),
                ]
            )


def _writer(url: str, writer: int, batch: int, start_at: float, seconds: float) -> tuple[int, float]:
    """Append until the deadline; return (events stored, finish time)."""
    trial, run = f"w{writer}", uuid.uuid4().hex[:8]
    with open_journal(url) as journal:
        time.sleep(max(0.0, start_at - time.time()))
        deadline, count = start_at + seconds, 0
        while time.time() < deadline:
            events = [
                Event.for_trial(
                    EXPERIMENT, trial, "evaluated", f"{trial}/{run}/{count + i}",
                    step=count + i, metrics={"loss": 0.5, "fid": 30.0},
                )
                for i in range(batch)
            ]
            stored = journal.append_many(events) if batch > 1 else [journal.append(events[0])]
            count += sum(stored)
        return count, time.time()


def measure(url: str, case: Case, seconds: float) -> float:
    """Events per second for one case against the (empty) database at `url`."""
    _prepare(url, case.writers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(case.writers, mp_context=context) as pool:
        list(pool.map(time.sleep, [0.3] * case.writers))  # every worker started before timing
        for future in [pool.submit(_warm) for _ in range(case.writers)]:
            future.result()
        start_at = time.time() + 1.0  # time for every writer to open its journal
        futures = [pool.submit(_writer, url, w, case.batch, start_at, seconds) for w in range(case.writers)]
        results = [f.result(timeout=seconds + 120) for f in futures]
    total = sum(count for count, _ in results)
    return total / (max(end for _, end in results) - start_at)


def bench_sqlite(seconds: float) -> None:
    for case in CASES:
        with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
            rate = measure(f"sqlite:///{tmp}/journal.db", case, seconds)
        print(f"{case.label('sqlite')}: {rate:,.0f} events/s", flush=True)


def bench_postgres(admin_url: str, seconds: float) -> None:
    for case in CASES:
        name = f"orch_bench_{uuid.uuid4().hex[:12]}"
        url = create_database(admin_url, name)
        try:
            rate = measure(url, case, seconds)
        finally:
            drop_database(admin_url, name)
        print(f"{case.label('postgresql')}: {rate:,.0f} events/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("ORCH_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="admin URL of the PostgreSQL server (a temporary database is created on it)",
    )
    parser.add_argument("--skip-postgres", action="store_true", help="measure SQLite only")
    args = parser.parse_args(argv)

    print(f"# journal append throughput, {args.seconds:g} s per row, {os.cpu_count()} CPUs", flush=True)
    bench_sqlite(args.seconds)
    if args.skip_postgres:
        print("journal postgresql: skipped (--skip-postgres)")
        return 0
    try:
        bench_postgres(args.postgres_url, args.seconds)
    except JournalError as exc:
        print(f"journal postgresql: not measured: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
