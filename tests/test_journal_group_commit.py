"""Group commit and per-experiment write locks (journal/group_commit.py, journal/engine.py), on
SQLite and PostgreSQL: concurrent appends share a transaction and each caller hears only its own
outcome; writers of different experiments do not wait on each other (PostgreSQL); and writer
processes SIGKILLed while appending lose no acknowledged event and store none twice."""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from orchestrator.journal import Event, IllegalTransition, Journal, JournalConflict, open_journal
from orchestrator.journal.engine import experiment_lock_key


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/journal.db"
    return request.getfixturevalue("postgres_database_factory")()


@pytest.fixture
def journal(journal_url: str) -> Iterator[Journal]:
    with open_journal(journal_url) as j:
        yield j


def _running(journal: Journal, experiment: str, trials: list[str]) -> None:
    journal.register_experiment(experiment, experiment, f"name: {experiment}\n")
    journal.register_trials(experiment, {t: {"t": t} for t in trials})
    journal.append_many([Event.for_trial(experiment, t, kind, f"{experiment}/{t}/{kind}")
                         for t in trials for kind in ("queued", "running")])


@contextmanager
def _held_write_lock(journal: Journal, experiment: str) -> Iterator[None]:
    """Hold the experiment's write lock (SQLite: the database's) from another connection."""
    if journal.dialect == "postgresql":
        key = {"k": experiment_lock_key(experiment)}
        with journal.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), key)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), key)
    else:
        conn = sqlite3.connect(journal.engine.url.database, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()


def _queued_behind_a_lock(journal: Journal, exp: str, first: Event,
                          later: list[tuple[str, Event]]) -> dict[str, object]:
    """`first` appended while another connection holds the write lock, so that its caller leads
    a transaction that waits; `later` appended meanwhile, from threads of their own: they queue
    and go in the next group. Each caller's outcome (result or exception), by name."""
    outcomes: dict[str, object] = {}

    def append(name: str, event: Event) -> None:
        try:
            outcomes[name] = journal.append(event)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[name] = exc

    threads = [threading.Thread(target=append, args=("first", first))]
    with _held_write_lock(journal, exp):
        threads[0].start()
        time.sleep(0.3)
        threads += [threading.Thread(target=append, args=item) for item in later]
        for thread in threads[1:]:
            thread.start()
        time.sleep(0.5)
        assert outcomes == {}  # nobody is answered before a transaction holding its event commits
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def test_concurrent_appends_share_one_transaction_and_each_caller_hears_its_own_outcome(journal: Journal) -> None:
    exp = f"g{uuid.uuid4().hex[:8]}"
    _running(journal, exp, ["a", "b", "c", "d"])
    journal.append(Event.for_trial(exp, "c", "done", f"{exp}/c/done", final_loss=0.1))
    journal.append(Event.for_trial(exp, "d", "evaluated", f"{exp}/d/e0", step=0, metrics={"x": 1.0}))

    def evaluated(trial: str, step: int) -> Event:
        return Event.for_trial(exp, trial, "evaluated", f"{exp}/{trial}/{step}", step=step, metrics={"x": 0.5})

    # All legal: the queued appends are stored by one transaction.
    outcomes = _queued_behind_a_lock(journal, exp, evaluated("a", 0), [("b0", evaluated("b", 0)),
                                                                       ("a1", evaluated("a", 1)),
                                                                       ("d1", evaluated("d", 1))])
    assert outcomes == {"first": True, "b0": True, "a1": True, "d1": True}
    ends = ("/b/0", "/a/1", "/d/1")
    group = [e for e in journal.events(exp, kinds=["evaluated"]) if e.idempotency_key.endswith(ends)]
    assert len(group) == 3 and len({e.created_at for e in group}) == 1  # one append, one clock reading
    if journal.dialect == "postgresql":
        with journal.engine.connect() as conn:
            xids = conn.execute(text("SELECT DISTINCT xmin::text FROM events WHERE seq = ANY(:s)"),
                                {"s": [e.seq for e in group]}).scalars().all()
        assert len(xids) == 1, xids
    # Some refused: only their own callers hear it; the rest of the group is stored.
    outcomes = _queued_behind_a_lock(journal, exp, evaluated("a", 2), [
        ("b1", evaluated("b", 1)),
        ("c-running", Event.for_trial(exp, "c", "running", f"{exp}/c/again")),  # done -> running
        ("d-conflict", Event.for_trial(exp, "d", "evaluated", f"{exp}/d/e0", step=0, metrics={"x": 2.0})),
        ("d-duplicate", Event.for_trial(exp, "d", "evaluated", f"{exp}/d/e0", step=0, metrics={"x": 1.0})),
        ("a3", evaluated("a", 3)),
    ])
    assert {k: outcomes[k] for k in ("first", "b1", "a3", "d-duplicate")} == {
        "first": True, "b1": True, "a3": True, "d-duplicate": False}
    assert isinstance(outcomes["c-running"], IllegalTransition), outcomes["c-running"]
    assert isinstance(outcomes["d-conflict"], JournalConflict), outcomes["d-conflict"]
    stored = [e.idempotency_key for e in journal.events(exp, kinds=["evaluated", "running"])]
    assert {f"{exp}/a/2", f"{exp}/b/1", f"{exp}/a/3"} <= set(stored) and f"{exp}/c/again" not in stored
    assert len(stored) == len(set(stored))


@pytest.mark.postgres
def test_writers_of_different_experiments_do_not_wait_on_each_other(postgres_database_factory) -> None:  # noqa: ANN001
    with open_journal(postgres_database_factory()) as journal:
        _running(journal, "busy", ["t"])
        _running(journal, "free", ["t"])
        blocked: list[bool] = []
        with _held_write_lock(journal, "busy"):
            waiter = threading.Thread(target=lambda: blocked.append(
                journal.append(Event.for_trial("busy", "t", "evaluated", "busy/1", step=1, metrics={}))))
            waiter.start()
            time.sleep(0.2)
            with open_journal(journal.engine.url.render_as_string(hide_password=False)) as other:
                began = time.monotonic()
                assert other.append(Event.for_trial("free", "t", "evaluated", "free/1", step=1, metrics={})) is True
                assert time.monotonic() - began < 5
            assert blocked == []  # "busy" still waits for its lock
        waiter.join(timeout=30)
        assert blocked == [True]


# ------------------------------------------------------------- killed writers

THREADS, EVENTS = 4, 200


def _writer(url: str, exp: str, writer: int, log_dir: str) -> None:
    """THREADS threads, each appending EVENTS events of its own trial in order, one per call,
    resuming after its last acknowledged one; each acknowledgement is logged (one line, O_APPEND)
    after `append` returns."""
    journal = open_journal(url)

    def thread(t: int) -> None:
        trial = f"w{writer}t{t}"
        path = Path(log_dir) / f"{trial}.acked"
        acked = path.read_text().split() if path.exists() else []
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        for i in range(len(acked), EVENTS):
            key = f"{exp}/{trial}/{i}"
            stored = journal.append(Event.for_trial(exp, trial, "evaluated", key, step=i, metrics={"i": float(i)}))
            os.write(fd, f"{key}:{int(stored)}\n".encode())
        os.close(fd)

    threads = [threading.Thread(target=thread, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def test_writers_killed_mid_batch_lose_no_acknowledged_event_and_store_none_twice(
    journal: Journal, journal_url: str, tmp_path: Path
) -> None:
    writers, kills = 3, 3
    exp = f"k{uuid.uuid4().hex[:8]}"
    _running(journal, exp, [f"w{w}t{t}" for w in range(writers) for t in range(THREADS)])
    context = multiprocessing.get_context("spawn")
    rng = random.Random(7)
    unacked_at_a_kill: set[str] = set()
    for _ in range(kills):
        procs = [context.Process(target=_writer, args=(journal_url, exp, w, str(tmp_path))) for w in range(writers)]
        for p in procs:
            p.start()
        # Kill once every writer is appending (its first acknowledgements logged), at a random moment.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                (tmp_path / f"w{w}t0.acked").exists() and (tmp_path / f"w{w}t0.acked").stat().st_size
                for w in range(writers)):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 0.3))
        for p in procs:
            p.kill()
        for p in procs:
            p.join(timeout=30)
        # A fast writer (SQLite) may have finished its last events before the kill; most may not.
        assert all(p.exitcode in (0, -9) for p in procs) and any(p.exitcode == -9 for p in procs)
        acked = {line.split(":")[0] for f in tmp_path.glob("*.acked") for line in f.read_text().split()}
        stored = {e.idempotency_key for e in journal.events(exp, kinds=["evaluated"])}
        assert acked <= stored, f"acknowledged but not stored: {sorted(acked - stored)[:5]}"
        unacked_at_a_kill |= stored - acked  # committed, its caller killed before it heard
    # Last round: every writer resumes after its last acknowledged event and finishes; what a
    # killed writer never heard about is sent again and deduplicated.
    procs = [context.Process(target=_writer, args=(journal_url, exp, w, str(tmp_path))) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    events = journal.events(exp, kinds=["evaluated"])
    keys = [e.idempotency_key for e in events]
    assert len(keys) == len(set(keys)) == writers * THREADS * EVENTS
    for w in range(writers):
        for t in range(THREADS):
            steps = [e.payload["step"] for e in events if e.trial_id == f"w{w}t{t}"]
            assert steps == list(range(EVENTS))  # each once, in the order appended
            log = (tmp_path / f"w{w}t{t}.acked").read_text().split()
            assert [line.split(":")[0] for line in log] == [f"{exp}/w{w}t{t}/{i}" for i in range(EVENTS)]
    resent = sum(line.endswith(":0") for f in tmp_path.glob("*.acked") for line in f.read_text().split())
    assert resent == len(unacked_at_a_kill)  # each sent once more, and heard as a duplicate
