"""One owner per experiment: the journal's lease (acquire, renew, takeover after expiry or at once
when the holder process of this host is dead, fencing of the old owner's writes) on SQLite and a
real PostgreSQL, then through `orch run`: two runs of one manifest at once train every trial
exactly once, and the workers of a SIGKILLed driver stop writing within a heartbeat."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.experiment.plan import plan_sweep
from orchestrator.journal import Event, EventKind, Holder, LeaseHeld, LeaseLost, open_journal
from orchestrator.journal.lease import new_owner
from tests.test_actors_cli import reap_session

ORCH = [str(Path(sys.executable).with_name("orch"))]
HEARTBEAT_S = 1.0


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
            "ORCH_LEASE_HEARTBEAT_S": str(HEARTBEAT_S)}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def journal(request, tmp_path):
    url = (f"sqlite:///{tmp_path}/journal.db" if request.param == "sqlite"
           else request.getfixturevalue("postgres_database_factory")())
    with open_journal(url) as j:
        j.register_experiment("e1", "lease", "name: lease\n")
        j.register_trials("e1", {"t1": {"lr": 1}})
        yield j


def _queued(key: str) -> Event:
    return Event.for_trial("e1", "t1", EventKind.QUEUED, key)


def test_a_held_lease_says_who_holds_it_and_is_taken_over_only_after_expiry(journal):
    me, other = new_owner(), new_owner()
    holder = Holder.this_process("orch run m.yaml")
    journal.acquire_lease("e1", me, holder, ttl=0.6)
    with pytest.raises(LeaseHeld, match=rf"pid {os.getpid()} on .*orch run m.yaml.*last heartbeat") as held:
        journal.acquire_lease("e1", other, Holder.this_process("second"), ttl=5)
    assert held.value.lease.owner == me
    journal.renew_lease("e1", me, ttl=0.6)
    time.sleep(0.8)  # no heartbeat for longer than the lease lives: expired
    journal.acquire_lease("e1", other, Holder.this_process("second"), ttl=5)
    with pytest.raises(LeaseLost, match="lost the lease of experiment e1 to .*second"):
        journal.renew_lease("e1", me)
    assert journal.lease("e1").owner == other
    assert not journal.release_lease("e1", me)  # only the owner releases
    assert journal.release_lease("e1", other) and journal.lease("e1") is None


def test_fenced_writes_stop_after_a_takeover_and_when_the_holder_process_is_gone(journal):
    me = new_owner()
    journal.acquire_lease("e1", me, Holder.this_process(), ttl=0.3)
    mine = journal.fenced("e1", me, Holder.this_process())
    assert mine.append(_queued("q1"))  # the owner writes
    time.sleep(0.4)
    assert mine.append(_queued("q1")) is False  # expired but not taken over: still the owner (a slow beat)
    journal.acquire_lease("e1", new_owner(), Holder.this_process("usurper"), ttl=30)
    for write in (lambda: mine.append(_queued("q2")), lambda: mine.record_checkpoint("t1", 1, "k", "0" * 64, 1),
                  lambda: mine.register_trials("e1", {"t2": {}})):
        with pytest.raises(LeaseLost, match="no longer owned by this run but by .*usurper"):
            write()
    assert [e.idempotency_key for e in journal.events("e1")] == ["q1"]  # nothing of the old owner after it

    # A holder process of this host that died: its lease is free at once, its fenced writes refused.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from orchestrator.journal.lease import process_start

        dead = Holder(Holder.this_process().host, child.pid, process_start(child.pid), "child")
        owner = new_owner()
        journal.release_lease("e1", journal.lease("e1").owner)
        journal.acquire_lease("e1", owner, dead, ttl=300)
        fenced = journal.fenced("e1", owner, dead)
        fenced.append(Event.for_trial("e1", "t1", EventKind.RUNNING, "r1"))
    finally:
        child.kill()
        child.wait()
    with pytest.raises(LeaseLost, match=r"its owner pid \d+ .*\(child\) is gone"):
        fenced.append(Event.for_trial("e1", "t1", EventKind.DONE, "d1"))
    assert [e.idempotency_key for e in journal.events("e1")] == ["q1", "r1"]
    journal.acquire_lease("e1", new_owner(), Holder.this_process("resume"), ttl=5)  # no wait for the 300 s


def test_a_lease_shows_how_to_find_its_holder_and_never_a_credential(journal, monkeypatch):
    password, token = f"pw-{new_owner()}", f"tok-{new_owner()}"
    monkeypatch.setattr(sys, "argv", [
        "/opt/venv/bin/orch", "serve", "--journal", f"postgresql://postgres:{password}@db.example:5432/orch",
        "--token", token, f"--journal-password={password}", f"--blobs=https://user:{password}@blob.example/c",
        "--data-root", "/srv/data", "m.yaml"])
    holder = Holder.this_process()
    for shown in (holder.command, holder.describe()):
        assert password not in shown and token not in shown, shown
        # What a person needs to find the holder stays: program, subcommand, host of the journal, manifest.
        assert "orch serve --journal postgresql" in shown and "--token ***" in shown
        assert "db.example:5432/orch" in shown and "/srv/data m.yaml" in shown and "blob.example/c" in shown
    journal.acquire_lease("e1", new_owner(), holder.handover(), ttl=30)  # as during a handover
    with pytest.raises(LeaseHeld) as held:
        journal.acquire_lease("e1", new_owner(), Holder.this_process("second"), ttl=5)
    assert "a handover from" in str(held.value) and "orch serve" in str(held.value)
    assert password not in str(held.value) and token not in str(held.value)
    assert password not in repr(journal.lease("e1").holder) and token not in repr(journal.lease("e1").holder)

    # A lease row written unredacted (by an older version) is redacted where it is shown.
    old = Holder("h", None, None, f"orch serve --journal postgresql://postgres:{password}@db/orch")
    journal.release_lease("e1", journal.lease("e1").owner)
    journal.acquire_lease("e1", new_owner(), old, ttl=30)
    assert password not in journal.lease("e1").describe() and "postgres:***@db/orch" in journal.lease("e1").describe()


MANIFEST = """\
name: owned-run
model: {variant: sd, base: tiny-random, resolution: 32}
data: {train: {kind: shapes, captions: spatial, n: 12}}
train: {steps: %(steps)d, batch_size: 4, lr: 1.0e-3, checkpoint_every: %(every)d, seed: 1}
sweep: {grid: {train.lr: [1.0e-3, 5.0e-4]}}
resources: {cpus_per_trial: 1, max_concurrent_trials: 1}
storage: {blobs: ./blobs, journal: sqlite:///./journal.db}
"""


def _start(tmp_path: Path, *args: str, log: str) -> subprocess.Popen:
    return subprocess.Popen([*ORCH, *args, "--no-progress", "--cpus", "1", "--no-metrics"], cwd=tmp_path, env=_env(),
                            stdout=(tmp_path / log).open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(predicate, timeout: float, what: str, log: Path):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"{what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def _read(journal_url: str, read, default=None):
    """`read(journal)` on the run's journal, or `default` while the run is still creating it."""
    try:
        with open_journal(journal_url, create=False) as j:
            return read(j)
    except Exception:  # noqa: BLE001 - not created yet, or its schema is being created right now
        return default


@pytest.mark.timeout(300)
def test_two_runs_of_one_manifest_train_each_trial_once(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST % {"steps": 20, "every": 5})
    plan = plan_sweep(path)
    first = _start(tmp_path, "run", str(path), log="first.log")
    waiting = None
    try:
        _wait_for(lambda: _read(plan.journal_url, lambda j: j.lease(plan.experiment_id)) is not None, 120,
                  "the first run never took the lease", tmp_path / "first.log")
        second = subprocess.run([*ORCH, "run", str(path), "--no-progress", "--cpus", "1", "--no-metrics"],
                                cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 3, second.stderr
        assert f"experiment {plan.experiment_id} is being run by pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        waiting = _start(tmp_path, "run", str(path), "--wait", log="waiting.log")  # runs once the first is over
        assert first.wait(timeout=200) == 0, (tmp_path / "first.log").read_text()[-3000:]
        assert waiting.wait(timeout=200) == 0, (tmp_path / "waiting.log").read_text()[-3000:]
    finally:
        for p in (first, waiting):
            if p is not None:
                if p.poll() is None:
                    p.kill()
                reap_session(p.pid, grace=10.0)
    assert "waiting for it to end" in (tmp_path / "waiting.log").read_text()
    with open_journal(plan.journal_url, create=False) as j:
        assert j.experiment_state(plan.experiment_id).status.value == "done"
        for t in plan.trials:
            kinds = Counter(e.kind.value for e in j.events(plan.experiment_id, t.id))
            assert kinds["running"] == 1 and kinds["done"] == 1, kinds  # trained exactly once
        assert j.lease(plan.experiment_id) is None  # released by the run that ended last


@pytest.mark.timeout(300)
def test_workers_of_a_sigkilled_driver_stop_writing_within_a_heartbeat(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST % {"steps": 400, "every": 2})
    plan = plan_sweep(path)
    run = _start(tmp_path, "run", str(path), log="run.log")
    try:
        def checkpointed() -> bool:
            return _read(plan.journal_url, lambda j: any(j.checkpoints(t.id) for t in plan.trials), False)

        _wait_for(checkpointed, 150, "no checkpoint was journaled", tmp_path / "run.log")
        time.sleep(1.0)  # training is in full swing: a checkpoint every few tenths of a second
        killed_at = datetime.now(UTC)
        os.kill(run.pid, signal.SIGKILL)  # the driver only: Ray's workers outlive it for seconds
        run.wait(timeout=10)
        time.sleep(6 * HEARTBEAT_S)  # time for any straggler to write (Ray reaps after ~2.5 s)
    finally:
        if run.poll() is None:
            run.kill()
        reap_session(run.pid)
    limit = killed_at.timestamp() + HEARTBEAT_S
    with open_journal(plan.journal_url, create=False) as j:
        events = j.events(plan.experiment_id)
        late = [(e.kind.value, e.created_at.timestamp() - killed_at.timestamp()) for e in events
                if e.created_at.timestamp() > limit]
        assert not late, f"events journaled after the driver died (kind, seconds after the kill): {late}"
        ckpts = [c for t in plan.trials for c in j.checkpoints(t.id)]
        assert ckpts and all(c.created_at.timestamp() <= limit for c in ckpts)
    blobs = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file() and "checkpoints" in p.parts]
    late_blobs = [str(p) for p in blobs if p.stat().st_mtime > limit]
    assert not late_blobs, f"checkpoints written after the driver died: {late_blobs}"


def test_a_live_holder_stays_alive_when_the_boot_time_psutil_reads_moves(monkeypatch):
    """psutil's create_time adds /proc/stat's btime as it reads now; a VM's clock sync moves btime
    against the uptime (seen here: up a second within minutes), so a later check computed another
    create_time for the same live process and took a live run's owner for dead (make demo, 2026-12-07).
    The holder's start is its start in ticks since boot, which no clock moves."""
    import psutil

    from orchestrator.journal.lease import process_start

    if not hasattr(psutil, "_pslinux"):
        pytest.skip("psutil reads the boot time from /proc/stat on Linux only")
    holder = Holder.this_process("orch run m.yaml")
    before, btime = psutil.Process().create_time(), psutil._pslinux.boot_time()
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: btime + 1.0)  # btime a second on, as seen here
    assert psutil.Process().create_time() == pytest.approx(before + 1.0)  # what fooled the old check
    assert not holder.gone()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(psutil.NoSuchProcess):
        process_start(child.pid)
