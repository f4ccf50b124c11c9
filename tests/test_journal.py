"""Journal tests, run against SQLite and PostgreSQL alike (the `backend` parameter)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from orchestrator.journal import (
    AmbiguousTrial,
    Event,
    EventKind,
    ExperimentStatus,
    IllegalTransition,
    InvalidEvent,
    Journal,
    JournalConflict,
    JournalError,
    TrialStatus,
    UnknownExperiment,
    UnknownTrial,
    current_revision,
    fold_experiment,
    fold_trial,
    head_revision,
    open_journal,
)
from orchestrator.journal.engine import normalize_url
from orchestrator.journal.migrate import alembic_config, script_directory
from orchestrator.journal.schema import Base

WRITERS = 4
EVENTS_PER_WRITER = 200
RACE_EVERY = 40  # appends between two races to start a trial
RACES = EVENTS_PER_WRITER // RACE_EVERY
RACE_SPACING_S = 0.15
SHA_A, SHA_B = "a" * 64, "b" * 64

# ------------------------------------------------------------------ fixtures


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def journal_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """SQLite: a new file per test. PostgreSQL: the module's database (tests use unique ids)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/runs/journal.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database nobody has opened yet."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/fresh/journal.db"
    return request.getfixturevalue("postgres_database_factory")()


@pytest.fixture
def journal(journal_url: str) -> Iterator[Journal]:
    with open_journal(journal_url) as j:
        yield j


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    """Warm spawn-context worker processes, shared by the multi-process tests of this module."""
    with ProcessPoolExecutor(WRITERS, mp_context=multiprocessing.get_context("spawn")) as executor:
        list(executor.map(time.sleep, [0.2] * WRITERS))  # start all workers now, not mid-test
        yield executor


def uid() -> str:
    return uuid.uuid4().hex[:10]


def make_experiment(journal: Journal, trials: list[str]) -> str:
    exp = f"exp-{uid()}"
    journal.register_experiment(exp, "sd-spatial", "name: sd-spatial\n")
    for trial in trials:
        journal.register_trial(exp, trial, {"train.lr": 1e-4, "trial": trial})
    return exp


def tev(exp: str, trial: str, kind: str, key: str, **payload: Any) -> Event:
    return Event.for_trial(exp, trial, kind, key, **payload)


# ------------------------------------------------------------- URLs, schema


def test_url_normalisation() -> None:
    assert normalize_url("postgresql://u@h:5432/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("runs/journal.db").database == "runs/journal.db"
    for bad in ("mysql://u@h/db", "postgresql+asyncpg://u@h/db", "sqlite+aiosqlite:///x.db"):
        with pytest.raises(JournalError, match="journal URL"):
            normalize_url(bad)


def test_sqlite_creates_parent_dirs_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "journal.db"
    open_journal(f"sqlite:///{path}").close()
    assert path.exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with open_journal(str(path)) as journal, journal.engine.connect() as conn:  # a bare path is SQLite too
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_schema_is_at_head_and_matches_models(fresh_url: str) -> None:
    with open_journal(fresh_url) as journal, journal.engine.connect() as conn:
        head = script_directory().get_current_head()
        assert head is not None and current_revision(conn) == head == head_revision()
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
    # Downgrade to nothing and back: the migration is reversible; re-opening upgrades again.
    with open_journal(fresh_url) as journal:
        with journal.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        with journal.engine.connect() as conn:
            assert current_revision(conn) is None
    with open_journal(fresh_url) as journal, journal.engine.connect() as conn:
        assert current_revision(conn) == head


def _open_and_append(url: str, start_at: float, writer: int) -> str | None:
    """Worker: open a (possibly fresh) journal at a shared instant, then write through it."""
    time.sleep(max(0.0, start_at - time.time()))
    with open_journal(url) as journal, journal.engine.connect() as conn:
        journal.register_experiment("exp-open", "open", "m")
        journal.register_trial("exp-open", f"t{writer}", {"w": writer})
        return current_revision(conn)


def test_concurrent_first_open_migrates_once(fresh_url: str, pool: ProcessPoolExecutor) -> None:
    start_at = time.time() + 0.3
    futures = [pool.submit(_open_and_append, fresh_url, start_at, w) for w in range(WRITERS)]
    assert [f.result(timeout=60) for f in futures] == [head_revision()] * WRITERS
    with open_journal(fresh_url) as journal:
        assert sorted(journal.experiment_state("exp-open").trials) == [f"t{w}" for w in range(WRITERS)]


def test_first_open_waits_for_a_writer_of_a_fresh_sqlite_file(tmp_path: Path) -> None:
    """SQLite refuses the switch to WAL at once, busy timeout or not, while another connection
    writes a rollback-journal file: opening must wait for it, not fail with "database is locked"."""
    path = tmp_path / "journal.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE other_tool (x)")
    other.execute("BEGIN IMMEDIATE")  # holds the write lock of a database still in rollback mode
    other.execute("INSERT INTO other_tool VALUES (1)")
    outcome: list[Any] = []

    def opener() -> None:
        try:
            with open_journal(f"sqlite:///{path}") as journal:
                outcome.append(journal.list_experiments())
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)

    thread = threading.Thread(target=opener)
    thread.start()
    time.sleep(0.5)
    assert not outcome  # still waiting on the writer
    other.execute("COMMIT")
    thread.join(timeout=30)
    other.close()
    assert outcome == [[]]


# ------------------------------------------------------------------- events


def test_duplicate_append_is_stored_once(journal: Journal) -> None:
    exp = make_experiment(journal, ["t1"])
    queued = tev(exp, "t1", "queued", f"{exp}/t1/queued/1", reason="submitted")
    assert journal.append(queued) is True
    assert journal.append(tev(exp, "t1", "queued", f"{exp}/t1/queued/1", reason="submitted")) is False
    running = tev(exp, "t1", "running", f"{exp}/t1/running/1", worker="w0")
    assert journal.append_many([running, running]) == [True, False]
    stored = journal.events(experiment_id=exp)
    assert [e.idempotency_key for e in stored] == [f"{exp}/t1/queued/1", f"{exp}/t1/running/1"]
    assert stored[0].payload == {"reason": "submitted"} and stored[0].seq is not None
    assert journal.trial_state("t1", exp).attempts == 1


def test_key_reused_with_different_content_conflicts(journal: Journal) -> None:
    exp = make_experiment(journal, ["t1", "t2"])
    key = f"{exp}/t1/queued"
    journal.append(tev(exp, "t1", "queued", key, priority=1))
    for other in (
        tev(exp, "t1", "queued", key, priority=2),  # payload differs
        tev(exp, "t2", "queued", key, priority=1),  # trial differs
        tev(exp, "t1", "cancelled", key, priority=1),  # kind differs
    ):
        with pytest.raises(JournalConflict, match="already stored"):
            journal.append(other)
    # A conflict inside a batch rolls back the whole batch.
    fresh = tev(exp, "t2", "queued", f"{exp}/t2/queued")
    with pytest.raises(JournalConflict):
        journal.append_many([fresh, tev(exp, "t1", "queued", key, priority=3)])
    with pytest.raises(JournalConflict, match="earlier in this batch"):
        journal.append_many([fresh, tev(exp, "t2", "queued", f"{exp}/t2/queued", priority=9)])
    assert [(e.trial_id, e.payload) for e in journal.events(experiment_id=exp)] == [("t1", {"priority": 1})]


def test_large_batches_are_stored_whole_and_deduplicated(journal: Journal) -> None:
    exp = make_experiment(journal, ["t1", "t2"])
    setup = [tev(exp, t, kind, f"{exp}/{t}/{kind}") for t in ("t1", "t2") for kind in ("queued", "running")]
    batch = setup + [
        tev(exp, f"t{1 + i % 2}", "evaluated", f"{exp}/e{i}", step=i, metrics={"loss": i / 7}) for i in range(1100)
    ]
    assert journal.append_many(batch) == [True] * len(batch)  # more rows than one INSERT chunk
    assert journal.append_many(batch) == [False] * len(batch)
    stored = journal.events(experiment_id=exp)
    assert [e.idempotency_key for e in stored] == [e.idempotency_key for e in batch]
    assert stored[-1].payload == {"step": 1099, "metrics": {"loss": 1099 / 7}}
    assert len(journal.trial_state("t2", exp).metrics) == 550


def test_events_are_ordered_and_filtered(journal: Journal) -> None:
    exp_a = make_experiment(journal, ["t1", "t2"])
    exp_b = make_experiment(journal, ["t1"])
    order = [
        Event.for_experiment(exp_a, "submitted", f"{exp_a}/submitted"),
        tev(exp_a, "t1", "queued", f"{exp_a}/t1/q"),
        tev(exp_b, "t1", "queued", f"{exp_b}/t1/q"),
        tev(exp_a, "t2", "queued", f"{exp_a}/t2/q"),
        tev(exp_a, "t1", "running", f"{exp_a}/t1/r"),
        tev(exp_a, "t1", "checkpointed", f"{exp_a}/t1/c100", step=100),
    ]
    for event in order[:3]:
        journal.append(event)
    journal.append_many(order[3:])
    mine = [e for e in journal.events() if e.experiment_id in (exp_a, exp_b)]
    assert [e.idempotency_key for e in mine] == [e.idempotency_key for e in order]
    seqs = [e.seq for e in mine]
    assert all(isinstance(s, int) for s in seqs) and seqs == sorted(set(seqs))  # type: ignore[type-var]
    assert [e.idempotency_key for e in journal.events(experiment_id=exp_a, trial_id="t1")] == [
        f"{exp_a}/t1/q", f"{exp_a}/t1/r", f"{exp_a}/t1/c100"
    ]
    assert {e.experiment_id for e in journal.events(trial_id="t1", kinds=["queued"])} >= {exp_a, exp_b}
    after = journal.events(experiment_id=exp_a, after_seq=mine[3].seq)
    assert [e.idempotency_key for e in after] == [f"{exp_a}/t1/r", f"{exp_a}/t1/c100"]
    assert [e.kind for e in journal.events(experiment_id=exp_a, kinds=[EventKind.RUNNING, "checkpointed"])] == [
        EventKind.RUNNING, EventKind.CHECKPOINTED
    ]
    assert len(journal.events(experiment_id=exp_a, limit=2)) == 2


# -------------------------------------------------------------- state fold


def test_fold_is_a_pure_function_of_events() -> None:
    exp, t = "exp", "t1"
    history = [
        tev(exp, t, "queued", "k1"),
        tev(exp, t, "running", "k2"),
        tev(exp, t, "checkpointed", "k3", step=200, uri="file://runs/t1/200"),
        tev(exp, t, "failed", "k4", error="CUDA OOM", traceback="Traceback ...\nRuntimeError"),
        tev(exp, t, "queued", "k5", reason="retry"),
        tev(exp, t, "running", "k6"),
        tev(exp, t, "checkpointed", "k7", step=400, uri="file://runs/t1/400"),
        tev(exp, t, "evaluated", "k8", step=400, metrics={"fid": 31.5}),
        tev(exp, t, "evaluating", "k9"),
        tev(exp, t, "evaluated", "k10", step=400, metrics={"spatial": 0.62}),
        tev(exp, t, "evaluated", "k11", step=200, metrics={"fid": 40.0}),
        tev(exp, t, "done", "k12"),
    ]
    state = fold_trial(exp, t, history, {"lr": 1e-4})
    assert state.status is TrialStatus.DONE and state.finished
    assert state.attempts == 2
    assert (state.last_checkpoint_step, state.last_checkpoint_uri) == (400, "file://runs/t1/400")
    assert state.last_error == "CUDA OOM" and state.last_traceback.endswith("RuntimeError")  # type: ignore[union-attr]
    assert state.metrics == {400: {"fid": 31.5, "spatial": 0.62}, 200: {"fid": 40.0}}
    assert state.latest_metrics() == {"fid": 31.5, "spatial": 0.62}
    assert fold_trial(exp, t, history[:4]).status is TrialStatus.FAILED
    assert fold_trial(exp, t, history, {"lr": 1e-4}) == state  # same input, same output

    experiment = fold_experiment(
        exp,
        "sd",
        "m",
        [Event.for_experiment(exp, "submitted", "s"), *history, Event.for_experiment(exp, "done", "d")],
        {"t1": {"lr": 1e-4}, "t2": {"lr": 3e-4}},
    )
    assert experiment.status is ExperimentStatus.DONE
    assert experiment.trials["t1"] == state and experiment.trials["t2"].status is TrialStatus.PENDING
    assert experiment.counts()[TrialStatus.DONE] == 1 and experiment.counts()[TrialStatus.PENDING] == 1
    with pytest.raises(ValueError, match="does not belong"):
        fold_trial(exp, "t2", history)


def test_state_is_rebuilt_after_reopen(journal_url: str) -> None:
    with open_journal(journal_url) as journal:
        exp = make_experiment(journal, ["t1", "t2"])
        journal.append_many(
            [
                Event.for_experiment(exp, "submitted", f"{exp}/s"),
                tev(exp, "t1", "queued", f"{exp}/t1/q"),
                tev(exp, "t1", "running", f"{exp}/t1/r"),
                tev(exp, "t1", "checkpointed", f"{exp}/t1/c", step=50),
            ]
        )
        before = journal.experiment_state(exp)
    with open_journal(journal_url) as journal:  # a restarted coordinator
        after = journal.experiment_state(exp)
        assert after == before
        assert after.status is ExperimentStatus.ACTIVE and after.manifest == "name: sd-spatial\n"
        assert after.trials["t1"].status is TrialStatus.RUNNING and after.trials["t1"].last_checkpoint_step == 50
        assert after.trials["t2"].status is TrialStatus.PENDING
        assert after.trials["t2"].config == {"train.lr": 1e-4, "trial": "t2"}
        assert journal.trial_state("t1", exp) == after.trials["t1"]
        listed = {s.experiment_id: s for s in journal.list_experiments()}
        assert listed[exp] == after


# ------------------------------------------------------------- transitions


def test_illegal_transitions_are_rejected(journal: Journal) -> None:
    exp = make_experiment(journal, ["t1", "t2"])
    k = f"{exp}/t1"
    with pytest.raises(IllegalTransition, match="'pending'.*refusing 'running'"):
        journal.append(tev(exp, "t1", "running", f"{k}/r0"))
    journal.append_many(
        [tev(exp, "t1", "queued", f"{k}/q1"), tev(exp, "t1", "running", f"{k}/r1"), tev(exp, "t1", "done", f"{k}/d")]
    )
    with pytest.raises(IllegalTransition, match="trial is 'done'.*refusing 'running'"):
        journal.append(tev(exp, "t1", "running", f"{k}/r2"))
    with pytest.raises(IllegalTransition):
        journal.append(tev(exp, "t1", "queued", f"{k}/q2"))
    assert journal.append(tev(exp, "t1", "done", f"{k}/d")) is False  # a retried append is not a transition
    assert journal.append(tev(exp, "t1", "evaluated", f"{k}/e", step=9, metrics={"fid": 1.0})) is True
    # A batch is checked event by event against the batch's own effect, and is all or nothing.
    with pytest.raises(IllegalTransition, match="queued.*refusing 'done'"):
        journal.append_many([tev(exp, "t2", "queued", f"{exp}/t2/q"), tev(exp, "t2", "done", f"{exp}/t2/d")])
    assert journal.trial_state("t2", exp).status is TrialStatus.PENDING
    # Retry after failure counts attempts.
    journal.append_many(
        [
            tev(exp, "t2", "queued", f"{exp}/t2/q1"),
            tev(exp, "t2", "running", f"{exp}/t2/r1"),
            tev(exp, "t2", "failed", f"{exp}/t2/f1", error="boom", traceback="tb"),
            tev(exp, "t2", "queued", f"{exp}/t2/q2"),
            tev(exp, "t2", "running", f"{exp}/t2/r2"),
        ]
    )
    state = journal.trial_state("t2", exp)
    assert (state.status, state.attempts, state.last_error) == (TrialStatus.RUNNING, 2, "boom")
    # Experiment lifecycle.
    journal.append(Event.for_experiment(exp, "submitted", f"{exp}/s"))
    with pytest.raises(IllegalTransition, match="experiment is 'active'.*refusing 'submitted'"):
        journal.append(Event.for_experiment(exp, "submitted", f"{exp}/s2"))
    journal.append(Event.for_experiment(exp, "cancelled", f"{exp}/c"))
    journal.append(Event.for_experiment(exp, "resumed", f"{exp}/r"))
    journal.append(Event.for_experiment(exp, "done", f"{exp}/d"))
    with pytest.raises(IllegalTransition, match="experiment is 'done'"):
        journal.append(Event.for_experiment(exp, "resumed", f"{exp}/r2"))
    assert journal.experiment_state(exp).status is ExperimentStatus.DONE


def test_events_for_unknown_entities_and_bad_events_are_rejected(journal: Journal) -> None:
    exp = make_experiment(journal, ["t1"])
    with pytest.raises(UnknownTrial, match="no trial 'nope'"):
        journal.append(tev(exp, "nope", "queued", f"{exp}/nope"))
    with pytest.raises(UnknownExperiment, match="register_experiment"):
        journal.append(Event.for_experiment("missing-exp", "submitted", "missing/s"))
    with pytest.raises(InvalidEvent, match="unknown event kind 'exploded'"):
        tev(exp, "t1", "exploded", "k")
    with pytest.raises(InvalidEvent, match="not a kind of trial event"):
        tev(exp, "t1", "submitted", "k")
    with pytest.raises(InvalidEvent, match="not a kind of experiment event"):
        Event.for_experiment(exp, "running", "k")
    with pytest.raises(InvalidEvent, match="payload\\['error'\\]"):
        tev(exp, "t1", "failed", "k", traceback="tb")
    with pytest.raises(InvalidEvent, match="step"):
        tev(exp, "t1", "checkpointed", "k", step=-1)
    with pytest.raises(InvalidEvent, match="strict JSON"):
        tev(exp, "t1", "evaluated", "k", step=1, metrics={"fid": float("nan")})
    with pytest.raises(InvalidEvent, match="strict JSON"):
        tev(exp, "t1", "queued", "k", when=object())
    assert journal.events(experiment_id=exp) == []


def test_registration_is_idempotent_and_detects_conflicts(journal: Journal) -> None:
    exp = f"exp-{uid()}"
    assert journal.register_experiment(exp, "n", "manifest: 1") is True
    assert journal.register_experiment(exp, "n", "manifest: 1") is False
    with pytest.raises(JournalConflict, match="different manifest"):
        journal.register_experiment(exp, "n", "manifest: 2")
    assert journal.register_trial(exp, "t1", {"lr": 1e-4, "grid": (1, 2)}) is True
    assert journal.register_trial(exp, "t1", {"grid": [1, 2], "lr": 1e-4}) is False  # same JSON
    with pytest.raises(JournalConflict, match="different config"):
        journal.register_trial(exp, "t1", {"lr": 3e-4})
    with pytest.raises(UnknownExperiment):
        journal.register_trial("no-such-exp", "t1", {})
    assert journal.register_trials(exp, {"t1": {"lr": 1e-4, "grid": [1, 2]}, "t2": {}}) == {"t1": False, "t2": True}
    # The same trial (same config hash) in another experiment is a separate trial record.
    other = make_experiment(journal, ["t1"])
    with pytest.raises(AmbiguousTrial, match="pass experiment_id"):
        journal.trial_state("t1")
    assert journal.trial_state("t1", other).config == {"train.lr": 1e-4, "trial": "t1"}
    with pytest.raises(UnknownTrial):
        journal.trial_state("t1", "no-such-exp")


# ------------------------------------------------------------- checkpoints


def test_checkpoint_index(journal: Journal) -> None:
    trial = f"trial-{uid()}"
    assert journal.latest_checkpoint(trial) is None and journal.checkpoints(trial) == []
    for step in (200, 100, 300):
        assert journal.record_checkpoint(trial, step, f"file://runs/{trial}/{step}", SHA_A, 1000 + step) is True
    assert journal.record_checkpoint(trial, 200, f"file://runs/{trial}/200", SHA_A.upper(), 1200) is False
    with pytest.raises(JournalConflict, match="step 200 is already recorded"):
        journal.record_checkpoint(trial, 200, f"file://runs/{trial}/200", SHA_B, 1200)
    with pytest.raises(InvalidEvent, match="sha256"):
        journal.record_checkpoint(trial, 400, "file://x", "not-a-digest", 1)
    journal.record_checkpoint(f"other-{trial}", 999, "file://other", SHA_B, 1)
    assert [c.step for c in journal.checkpoints(trial)] == [100, 200, 300]
    latest = journal.latest_checkpoint(trial)
    assert latest is not None and (latest.step, latest.sha256, latest.size) == (300, SHA_A, 1300)
    assert latest.created_at is not None and latest.created_at.tzinfo is not None


# ------------------------------------------------------------- concurrency


def _write_workload(journal: Journal, exp: str, writer: int, start_at: float) -> dict[str, Any]:
    """One writer's 200 appends: half on keys every writer shares, half on its own keys.

    Shared keys carry identical content, so each must be stored exactly once across writers.
    Every RACE_EVERY appends, all writers race (at the same instant) to start the same queued
    trial with their own keys: exactly one may win each round.
    """
    results: dict[str, bool] = {}
    pending: list[Event] = []
    races_won: list[int] = []

    def flush() -> None:
        results.update(zip([e.idempotency_key for e in pending], journal.append_many(pending), strict=True))
        pending.clear()

    for i in range(EVENTS_PER_WRITER):
        if i % RACE_EVERY == 0:
            flush()
            race = i // RACE_EVERY
            time.sleep(max(0.0, start_at + race * RACE_SPACING_S - time.time()))
            try:
                if journal.append(tev(exp, f"race{race}", "running", f"{exp}/race{race}/running/w{writer}")):
                    races_won.append(race)
            except IllegalTransition:
                pass
        if i % 2 == 0:
            event = tev(exp, "shared", "checkpointed", f"{exp}/shared/{i}", step=i)
        else:
            event = tev(exp, f"w{writer}", "evaluated", f"{exp}/w{writer}/{i}", step=i, metrics={"w": writer})
        pending.append(event)
        if writer % 2 == 0 or len(pending) == 10:  # even writers append one by one, odd ones in batches
            flush()
    flush()
    return {"results": results, "races_won": races_won}


def _process_writer(url: str, exp: str, writer: int, start_at: float) -> dict[str, Any]:
    with open_journal(url) as journal:
        return _write_workload(journal, exp, writer, start_at)


def _prepare_concurrency(journal: Journal) -> str:
    races = [f"race{r}" for r in range(RACES)]
    exp = make_experiment(journal, ["shared", *races, *[f"w{w}" for w in range(WRITERS)]])
    setup = [tev(exp, race, "queued", f"{exp}/{race}/q") for race in races]
    for trial in ["shared", *[f"w{w}" for w in range(WRITERS)]]:
        setup += [tev(exp, trial, "queued", f"{exp}/{trial}/q"), tev(exp, trial, "running", f"{exp}/{trial}/r")]
    journal.append_many(setup)
    return exp


def _check_concurrency(journal: Journal, exp: str, outcomes: list[dict[str, Any]]) -> None:
    shared_keys = {f"{exp}/shared/{i}" for i in range(0, EVENTS_PER_WRITER, 2)}
    own_keys = {f"{exp}/w{w}/{i}": w for w in range(WRITERS) for i in range(1, EVENTS_PER_WRITER, 2)}
    # Every writer saw every one of its keys accepted; each shared key was new for exactly one.
    for outcome in outcomes:
        assert len(outcome["results"]) == EVENTS_PER_WRITER
    for key in shared_keys:
        assert sum(o["results"][key] for o in outcomes) == 1, key
    for key, w in own_keys.items():
        assert outcomes[w]["results"][key] is True
    assert sorted(r for o in outcomes for r in o["races_won"]) == list(range(RACES))  # one winner per race
    # The journal holds exactly the expected events, once each, in a strictly increasing order.
    stored = journal.events(experiment_id=exp, kinds=["checkpointed", "evaluated"])
    assert len(stored) == len(shared_keys) + len(own_keys) == WRITERS * EVENTS_PER_WRITER // 2 + EVENTS_PER_WRITER // 2
    assert {e.idempotency_key for e in stored} == shared_keys | set(own_keys)
    seqs = [e.seq for e in journal.events(experiment_id=exp)]
    assert seqs == sorted(set(seqs))  # type: ignore[type-var]
    for event in stored:
        i = int(event.idempotency_key.rsplit("/", 1)[1])
        assert event.payload["step"] == i
        if event.trial_id != "shared":
            assert event.trial_id == f"w{own_keys[event.idempotency_key]}"
            assert event.payload["metrics"] == {"w": own_keys[event.idempotency_key]}
    # Each writer's own events are stored in the order it appended them.
    for w in range(WRITERS):
        steps = [e.payload["step"] for e in stored if e.trial_id == f"w{w}"]
        assert steps == list(range(1, EVENTS_PER_WRITER, 2))
    state = journal.experiment_state(exp)
    assert state.trials["shared"].last_checkpoint_step == EVENTS_PER_WRITER - 2
    assert all(len(state.trials[f"w{w}"].metrics) == EVENTS_PER_WRITER // 2 for w in range(WRITERS))
    for r in range(RACES):
        race = state.trials[f"race{r}"]
        assert (race.status, race.attempts) == (TrialStatus.RUNNING, 1)


def test_concurrent_threads_lose_nothing(journal: Journal) -> None:
    exp = _prepare_concurrency(journal)
    outcomes: list[dict[str, Any]] = [{} for _ in range(WRITERS)]
    errors: list[BaseException] = []
    start_at = time.time() + 0.2

    def run(writer: int) -> None:
        try:
            outcomes[writer] = _write_workload(journal, exp, writer, start_at)
        except BaseException as exc:  # surfaced below; a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    _check_concurrency(journal, exp, outcomes)


def test_concurrent_processes_lose_nothing(
    journal: Journal, journal_url: str, pool: ProcessPoolExecutor
) -> None:
    exp = _prepare_concurrency(journal)
    start_at = time.time() + 0.5  # let every process open its journal before the first race
    submit: Callable[..., Any] = pool.submit
    futures = [submit(_process_writer, journal_url, exp, w, start_at) for w in range(WRITERS)]
    _check_concurrency(journal, exp, [f.result(timeout=60) for f in futures])
