"""The journal's one retry policy, on real databases: a transient fault (SQLite's lock, a
PostgreSQL connection cut) is retried until the write lands; a journal that stays unreachable
past the bound is JournalUnavailable, one line naming it with the password masked."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa

from orchestrator.journal import Event, open_journal
from orchestrator.journal.retry import JournalRetry, JournalUnavailable, is_transient

from .test_postgres_connections_terminated import terminating


def test_a_locked_sqlite_database_is_waited_out(tmp_path):
    path = tmp_path / "db.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")  # another process's write lock
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})  # no busy wait: fail at once
    tries = []

    def write() -> None:
        tries.append(time.monotonic())
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))

    threading.Timer(0.5, holder.execute, ["COMMIT"]).start()
    JournalRetry(bound_s=10).run(write, str(path), "insert a row")
    assert len(tries) > 1 and tries[-1] - tries[0] >= 0.4  # it met the lock, and waited it out
    assert holder.execute("SELECT count(*) FROM t").fetchone() == (1,)
    engine.dispose()


def test_a_lock_held_past_the_bound_names_the_journal(tmp_path):
    path = tmp_path / "db.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))

    started = time.monotonic()
    with pytest.raises(JournalUnavailable) as err:
        JournalRetry(bound_s=0.5).run(write, str(path), "insert a row")
    assert 0.3 < time.monotonic() - started < 3
    assert str(path) in str(err.value) and "database is locked" in str(err.value)
    holder.execute("ROLLBACK")
    engine.dispose()


def test_a_permanent_fault_is_not_retried(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    tries = []

    def bad() -> None:
        tries.append(1)
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table"))

    with pytest.raises(sa.exc.OperationalError) as err:
        JournalRetry(bound_s=10).run(bad, "db", "read")
    assert tries == [1] and not is_transient(err.value)
    engine.dispose()


@pytest.mark.postgres
def test_terminated_connections_lose_no_write(postgres_database_factory):
    url = postgres_database_factory()
    thread, stop, counts = terminating(url, every_s=0.02)
    with open_journal(url) as j:
        j.register_experiment("e1", "cut", "{}")
        j.register_trials("e1", {"t1": {}})
        j.append(Event.for_trial("e1", "t1", "queued", "q"))
        j.append(Event.for_trial("e1", "t1", "running", "r"))
        thread.start()
        try:
            for step in range(1, 31):
                j.append(Event.for_trial("e1", "t1", "step_metrics", f"m{step}", steps=[step], loss=[1.0], lr=[0.1]))
                j.record_checkpoint("t1", step, f"ckpt/{step}", "0" * 64, step)
                j.trial_state("t1", "e1")
        finally:
            stop.set()
            thread.join(timeout=10)
        assert sum(counts) > 0, counts
        assert len(j.events("e1", "t1", kinds=["step_metrics"])) == 30
        assert [c.step for c in j.checkpoints("t1")] == list(range(1, 31))


@pytest.mark.postgres
def test_a_journal_unreachable_past_the_bound_is_one_line_with_the_password_masked(
        postgres_database_factory, postgres_admin_url, monkeypatch):
    monkeypatch.setenv("ORCH_JOURNAL_OUTAGE_S", "1.5")
    url = postgres_database_factory()
    name = sa.engine.make_url(url).database
    secret_url = url.replace("postgres@", "postgres:s3cr3t-pw@", 1)  # trust auth: the password is not checked
    admin = sa.create_engine(sa.engine.make_url(postgres_admin_url).set(drivername="postgresql+psycopg"),
                             isolation_level="AUTOCOMMIT")
    with open_journal(secret_url) as j:
        j.register_experiment("e1", "down", "{}")
        with admin.connect() as conn:  # the server stops taking connections to it, and cuts the open ones
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db"),
                         {"db": name})
        try:
            started = time.monotonic()
            with pytest.raises(JournalUnavailable) as err:
                j.register_trials("e1", {"t1": {}})
            took = time.monotonic() - started
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            admin.dispose()
    message = str(err.value)
    assert 1.0 < took < 5, took
    assert "s3cr3t-pw" not in message and "***" in message and name in message and "unreachable" in message
    assert len(message.splitlines()) == 1
