"""`orch run` SIGKILLed as a whole process, then `orch resume ID` from the CLI finishes the sweep:
finished trials are not run again, no checkpoint is lost, and no Ray process is left behind."""
from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")  # comes with ray[default]

from orchestrator.experiment.plan import plan_sweep  # noqa: E402
from orchestrator.journal import open_journal  # noqa: E402
from orchestrator.storage import open_store  # noqa: E402

ORCH = [str(Path(sys.executable).with_name("orch"))]  # the console script, as a user runs it
MANIFEST = """\
name: killed-run
model: {variant: sd, base: tiny-random, resolution: 32}
data: {train: {kind: shapes, captions: spatial, n: 12}}
train: {steps: 40, batch_size: 4, lr: 1.0e-3, checkpoint_every: 4, seed: 1}
sweep: {grid: {train.lr: [1.0e-3, 5.0e-4, 2.0e-4]}}
resources: {cpus_per_trial: 1, max_concurrent_trials: 1}
storage: {blobs: ./blobs, journal: sqlite:///./journal.db}
"""


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def session_pids(sid: int) -> list[int]:
    """Live processes of session `sid` (zombies are already dead)."""
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return out


def reap_session(sid: int, grace: float = 0.0, timeout: float = 20.0) -> list[str]:
    """SIGKILL whatever is left of a process session we started, after `grace` seconds for it to
    exit by itself (Ray's agents outlive a SIGKILLed driver by about a minute, waiting on its dead
    GCS); returns the command lines of what had to be killed."""
    end = time.monotonic() + grace
    while session_pids(sid) and time.monotonic() < end:
        time.sleep(0.1)
    leftover = []
    for pid in session_pids(sid):
        try:
            leftover.append(" ".join(psutil.Process(pid).cmdline())[:120])
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    end = time.monotonic() + timeout
    while session_pids(sid):
        assert time.monotonic() < end, f"processes of session {sid} survive SIGKILL: {session_pids(sid)}"
        time.sleep(0.1)
    return leftover


def ray_ports(driver_pid: int) -> list[int]:
    """The ports the Ray head started by `driver_pid` recorded in its session directory."""
    ports = []
    for f in glob.glob(f"/tmp/ray/session_*_{driver_pid}/*_port_*"):
        try:
            port = int(Path(f).read_text().strip())
        except ValueError:
            continue
        if 0 < port < 65536:  # a component that did not start records no real port
            ports.append(port)
    return ports


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def wait_ports_free(ports: list[int], timeout: float) -> dict[int, str]:
    """Wait for the ports to be free; returns those still taken, each with who holds it. Ray's
    daemons outside the driver's session notice a dead GCS by themselves, within seconds."""
    end = time.monotonic() + timeout
    while True:
        taken = [p for p in ports if not port_free(p)]
        if not taken or time.monotonic() > end:
            break
        time.sleep(0.5)
    holders = {}
    for c in psutil.net_connections("tcp"):
        if c.laddr and c.laddr.port in taken:
            try:
                holders[c.laddr.port] = f"{c.status} pid={c.pid} " + " ".join(psutil.Process(c.pid).cmdline())[:100]
            except (psutil.NoSuchProcess, TypeError, ValueError):
                holders[c.laddr.port] = f"{c.status} pid={c.pid}"
    return {p: holders.get(p, "?") for p in taken}


@pytest.mark.timeout(300)
def test_sigkilled_orch_run_is_finished_by_orch_resume(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    plan = plan_sweep(path)
    eid, (first, second, third) = plan.experiment_id, (t.id for t in plan.trials)
    journal_url = plan.journal_url
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen([*ORCH, "run", str(path), "--no-progress", "--cpus", "1"], cwd=tmp_path, env=_env(),
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        journal = None
        while True:
            assert run.poll() is None, f"orch run exited early:\n{(tmp_path / 'run.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.1)
            if journal is None:
                if not (tmp_path / "journal.db").exists():
                    continue
                try:
                    journal = open_journal(journal_url)
                except Exception:  # noqa: BLE001 - the run may be creating the schema right now
                    continue
            try:
                trials = journal.experiment_state(eid).trials
            except LookupError:
                continue
            if first not in trials or second not in trials:
                continue  # the experiment is journaled before its trials are
            if trials[first].status.value == "done" and trials[second].last_checkpoint_step is not None:
                break
        os.kill(run.pid, signal.SIGKILL)  # the whole driver: embedded Ray head, coordinator, trainer
        run.wait(timeout=10)
    finally:
        if run.poll() is None:
            run.kill()
        log.close()
        reap_session(run.pid)
    taken = wait_ports_free(ray_ports(run.pid), timeout=60.0)
    assert not taken, f"the killed run's Ray ports are still taken: {taken}"

    state = journal.experiment_state(eid)
    assert state.trials[first].status.value == "done"
    assert state.trials[second].status.value == "running"  # lost with the run, mid-way
    before = {c.step: c.uri for c in journal.checkpoints(second)}
    assert before and max(before) < 40

    path.unlink()  # resume reads the plan the journal recorded, not the file
    resume = subprocess.Popen([*ORCH, "resume", eid, "--journal", journal_url, "--no-progress", "--cpus", "1"],
                              cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        out, err = resume.communicate(timeout=150)
    finally:
        resume.kill()
        left = reap_session(resume.pid, grace=10.0)
    assert resume.returncode == 0, out[-2000:] + err[-3000:]
    assert eid in out and "done" in out  # the results table
    assert not left, f"a finished `orch resume` left Ray processes behind: {left}"

    state = journal.experiment_state(eid)
    assert state.status.value == "done" and state.counts()["done"] == 3
    runs = {tid: Counter(e.kind.value for e in journal.events(eid, tid))["running"] for tid in (first, second, third)}
    assert runs == {first: 1, second: 2, third: 1}  # the finished trial was not run again
    after = {c.step: c.uri for c in journal.checkpoints(second)}
    assert before.items() <= after.items()  # every checkpoint journaled before the kill is still there
    [done] = journal.events(eid, second, kinds=["done"])
    assert done.payload["resumed_from"] >= max(before)  # continued from its checkpoint, not from scratch
    assert done.payload["steps_run"] == 40 - done.payload["resumed_from"]
    store = open_store(plan.blobs_uri)
    for tid in (first, second, third):
        latest = journal.latest_checkpoint(tid)
        assert latest.step == 40 and store.get(latest.uri)  # present and sha256-verified
    journal.close()


def test_a_sweep_with_a_failed_trial_exits_1_and_says_why(tmp_path):
    """batch 64 > 12 examples: that trial fails in its trainer, the other finishes; `orch run`
    prints the table with the failed trial's reason and exits 1, and so does `orch resume`."""
    path = tmp_path / "f.yaml"
    path.write_text(MANIFEST.replace("name: killed-run", "name: half-failed")
                    .replace("steps: 40", "steps: 2").replace("checkpoint_every: 4", "checkpoint_every: 2")
                    .replace("train.lr: [1.0e-3, 5.0e-4, 2.0e-4]", "train.batch_size: [4, 64]"))
    run = subprocess.run([*ORCH, "run", str(path), "--no-progress", "--cpus", "1"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "fewer than one batch" in run.stdout  # the table's error column
    assert "1 trial(s)" in run.stderr and "failed" in run.stderr and "fewer than one batch" in run.stderr
    assert "done" in run.stdout  # the other trial's row is there too
    eid = plan_sweep(path).experiment_id
    again = subprocess.run([*ORCH, "resume", eid, "--journal", "sqlite:///./journal.db", "--no-progress",
                            "--cpus", "1"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert again.returncode == 1 and "fewer than one batch" in again.stderr
