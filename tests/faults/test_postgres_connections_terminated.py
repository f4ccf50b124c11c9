"""A PostgreSQL journal whose connections are terminated every 0.2 s during a run: every write
is retried until it lands (transitions, checkpoint rows, step metrics, the lease and its fence),
so the run finishes and the journal holds all of it."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from orchestrator.experiment.plan import plan_sweep
from orchestrator.journal import open_journal

from .runs import loss_curve, orch, write_manifest

TERMINATE = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
             "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def terminating(url: str, every_s: float = 0.2):
    """A thread cutting every other connection to the database every `every_s`; (start, stop, counts)."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    stop, counts = threading.Event(), []

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                with engine.connect() as conn:
                    counts.append(conn.execute(sa.text(TERMINATE)).scalar())
            except sa.exc.DBAPIError:  # its own connection cut by a pool reset: go on
                continue
        engine.dispose()

    return threading.Thread(target=loop, daemon=True), stop, counts


@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_a_run_whose_connections_are_terminated_every_200ms_loses_nothing(tmp_path, postgres_database_factory):
    url = postgres_database_factory()
    manifest = write_manifest(tmp_path, name="pg-terminated", steps=8, every=2, journal=url)
    plan = plan_sweep(manifest)
    eid, tid = plan.experiment_id, plan.trials[0].id
    thread, stop, counts = terminating(url)
    thread.start()
    try:
        r = orch("run", "m.yaml", "--no-progress", "--no-metrics", "--cpus", "2", cwd=tmp_path)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert sum(counts) >= 5, counts  # connections really were cut while it ran
    with open_journal(url, create=False) as j:
        assert [c.step for c in j.checkpoints(tid)] == [2, 4, 6, 8]
        assert sorted(e.payload["step"] for e in j.events(eid, tid, kinds=["checkpointed"])) == [2, 4, 6, 8]
        (done,) = j.events(eid, tid, kinds=["done"])
        assert j.experiment_state(eid).trials[tid].status.value == "done"
    curve = loss_curve(url, eid)
    assert sorted(curve) == list(range(1, 9))  # every step's loss, none dropped
    assert done.payload["final_loss"] is not None and done.payload["final_loss"] == curve[8][0]
