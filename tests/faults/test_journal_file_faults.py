"""A SQLite journal file deleted, replaced or turned read-only under a run is noticed within a
heartbeat, with one line naming the file, and the run stops (exit 1): no trainer goes on
training and pruning checkpoints the journal cannot record. A file that is not a database is
one line naming it, exit 2, for every command that opens a journal."""
from __future__ import annotations

import os
import subprocess
import time

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.experiment.plan import plan_sweep
from orchestrator.journal import Event, open_journal
from orchestrator.journal.lease import Holder
from orchestrator.journal.ownership import claim, kept
from orchestrator.journal.retry import JournalUnavailable
from orchestrator.storage import open_store

from .runs import events, kill_session, start, wait_for, write_manifest


def _immutable(path, on: bool) -> bool:
    """chattr +i: read-only even for root (for whom a mode bit changes nothing)."""
    return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


@pytest.mark.timeout(180)
def test_a_journal_deleted_mid_run_stops_it_with_one_line_naming_the_file(tmp_path):
    manifest = write_manifest(tmp_path, name="deleted", steps=3000, every=20)
    plan = plan_sweep(manifest)
    journal = tmp_path / "journal.db"
    log = tmp_path / "run.log"
    run = start("run", "m.yaml", "--no-progress", "--no-metrics", "--cpus", "2", cwd=tmp_path, log=log)
    try:
        wait_for(lambda: events(plan.journal_url, plan.experiment_id, ["checkpointed"]), run, log)
        journal.unlink()
        deleted = time.monotonic()
        code = run.wait(timeout=90)
        took = time.monotonic() - deleted
    finally:
        kill_session(run)
    text = log.read_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 1, text[-3000:]
    assert "Traceback" not in text and str(journal) in lines[-1] and "deleted" in lines[-1], text[-3000:]
    assert "no journal at" not in text  # not the misleading "nothing has been run with it"
    assert took < 30, took  # a heartbeat to notice, a step boundary to stop, Ray to shut down
    store = open_store(tmp_path / "blobs")
    assert not store.list(f"trials/{plan.trials[0].id}/model/")  # it stopped: never reached the end


def test_a_journal_turned_read_only_is_noticed_within_a_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCH_LEASE_HEARTBEAT_S", "0.2")
    journal = tmp_path / "journal.db"
    url = f"sqlite:///{journal}"
    open_journal(url).close()
    own = claim(url, "e1")
    if not _immutable(journal, True):
        pytest.skip("chattr +i is not available here")
    _immutable(journal, False)
    with pytest.raises(JournalUnavailable) as err:
        with kept(own) as keeper:
            _immutable(journal, True)
            try:
                started = time.monotonic()
                while not keeper.failed and time.monotonic() - started < 5:
                    time.sleep(0.02)
                assert keeper.failed and time.monotonic() - started < 1.0
            finally:
                _immutable(journal, False)
    assert str(journal) in str(err.value) and "read-only" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_a_runs_writes_refuse_a_deleted_or_replaced_journal_file(tmp_path):
    journal = tmp_path / "journal.db"
    with open_journal(f"sqlite:///{journal}") as j:
        j.register_experiment("e1", "x", "{}")
        j.register_trials("e1", {"t1": {}})
        holder = Holder.this_process()
        j.acquire_lease("e1", "me", holder)
        run = j.fenced("e1", "me", holder)
        run.append(Event.for_trial("e1", "t1", "queued", "k1"))
        journal.unlink()  # SQLite would write on into the unlinked file, lost to every reader
        with pytest.raises(JournalUnavailable, match=f"{journal} was deleted"):
            run.append(Event.for_trial("e1", "t1", "running", "k2"))
        journal.write_bytes(b"another file")
        with pytest.raises(JournalUnavailable, match=f"{journal} was replaced"):
            run.append(Event.for_trial("e1", "t1", "running", "k2"))
        assert journal.read_bytes() == b"another file"


@pytest.mark.parametrize("content", [b"not a journal\n" * 100, os.urandom(8192),
                                     b"SQLite format 3\x00" + os.urandom(4080)], ids=["text", "random", "damaged"])
def test_a_file_that_is_not_a_database_is_one_line_naming_it_exit_2(tmp_path, content):
    bad = tmp_path / "journal.db"
    bad.write_bytes(content)
    write_manifest(tmp_path, journal=f"sqlite:///{bad}")
    url = f"sqlite:///{bad}"
    runner = CliRunner()
    for args in (["status", "--journal", url], ["results", "e1", "--journal", url],
                 ["resume", "e1", "--journal", url], ["run", str(tmp_path / "m.yaml"), "--no-progress"]):
        r = runner.invoke(app, args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 2, (args, r.output)
        assert len(lines) == 1 and str(bad) in lines[0] and "not a journal" in lines[0], (args, r.stderr)
    assert bad.read_bytes() == content  # nothing was written to it
