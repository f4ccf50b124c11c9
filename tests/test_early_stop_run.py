"""Early stopping end to end through `orch run` (real Ray, trainers, Evaluator and journal) on the
probe variant (orchestrator.testing), whose spatial accuracy grows with lr x step: the same trials
stop at the same rungs whether the driver runs through or is SIGKILLed mid-sweep and resumed, every
decision is journaled with its values and equals what the journal implies, and stopped trials keep
their checkpoints and show as stopped in `orch status` and `orch results`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from orchestrator.experiment.early_stop import Decision, decisions_from_journal
from orchestrator.experiment.plan import plan_sweep
from orchestrator.journal import open_journal
from orchestrator.storage import open_store
from tests.test_actors_cli import ORCH, reap_session

MANIFEST = """\
name: asha-probe
model: {variant: probe, base: tiny-random, resolution: 32}
data: {train: {kind: shapes, captions: spatial, n: 8}}
train: {steps: 30, batch_size: 2, lr: 1.0e-3, warmup_steps: 0, checkpoint_every: 5, seed: 0}
sweep:
  grid: {train.lr: [3.0e-2, 1.0e-3, 2.0e-2, 3.0e-4, 1.0e-2]}
  early_stop: {metric: spatial.accuracy, mode: max, grace_steps: 5, reduction_factor: 2, order: plan}
eval: {suites: [spatial], every: 5, samples: 20, evaluate_base: false, world: pairs}
resources: {cpus_per_trial: 1, max_concurrent_trials: 1}
storage: {blobs: ./blobs, journal: sqlite:///./journal.db}
"""


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
            "ORCH_VARIANT_PLUGINS": "orchestrator.testing.probe_variant"}


def _orch(args, cwd, timeout=240):
    proc = subprocess.Popen([*ORCH, *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
        reap_session(proc.pid, grace=10.0)
    return proc.returncode, out, err


def _stops(journal, eid):
    """(trial, rung step) of every stop, and every decision as journaled, in journal order."""
    events = journal.events(eid, kinds=["rung", "stopped"])
    decisions = [Decision.from_json(e.payload, e.trial_id) for e in sorted(events, key=lambda e: e.seq)]
    return {(d.trial_id, d.step) for d in decisions if d.stop}, decisions


@pytest.fixture
def probe(monkeypatch):
    """The probe variant in this process too (the runs' processes load it from the environment)."""
    from orchestrator.models.registry import PLUGINS_ENV, load_plugins, unregister

    monkeypatch.setenv(PLUGINS_ENV, _env()[PLUGINS_ENV])
    load_plugins()
    yield
    unregister("probe")


def test_stops_survive_a_sigkilled_driver_and_match_the_journal(tmp_path, probe):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for d in (straight, killed):
        d.mkdir()
        (d / "m.yaml").write_text(MANIFEST)
    plan = plan_sweep(straight / "m.yaml")
    eid, trials = plan.experiment_id, [t.id for t in plan.trials]

    rc, out, err = _orch(["run", "m.yaml", "--no-progress", "--cpus", "1"], straight)
    assert rc == 0, out[-2000:] + err[-3000:]
    journal = open_journal(f"sqlite:///{straight}/journal.db")
    expected, decisions = _stops(journal, eid)
    # lr 1e-3 and 3e-4 fall behind at the first rung; the fastest (3e-2), first at every rung, runs to the end
    stopped = {t for t, _ in expected}
    assert {(trials[1], 5), (trials[3], 5)} <= expected and trials[0] not in stopped
    assert decisions == decisions_from_journal(plan.manifest.sweep.early_stop,
                                               [(t.id, t.manifest.train.steps) for t in plan.trials],
                                               journal.events(eid))
    stop = next(d for d in decisions if d.trial_id == trials[3])
    assert stop.cutoff is not None and stop.value < stop.cutoff and len(stop.compared) == 3 and "stop" in stop.reason
    state = journal.experiment_state(eid)
    counts = {"done": len(trials) - len(stopped), "stopped": len(stopped)}
    assert state.status.value == "done" and {k.value: v for k, v in state.counts().items() if v} == counts
    store = open_store(plan.blobs_uri)
    for tid, step in expected:  # the checkpoint judged at the rung is kept and intact
        ckpts = {c.step: c.uri for c in journal.checkpoints(tid)}
        assert step in ckpts and store.get(ckpts[step]) and max(ckpts) <= step + 1
    journal.close()

    # The same sweep, its driver SIGKILLed once the first trial is stopped, then resumed.
    run = subprocess.Popen([*ORCH, "run", "m.yaml", "--no-progress", "--cpus", "1"], cwd=killed, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"sqlite:///{killed}/journal.db"
    try:
        deadline, journal = time.monotonic() + 200, None
        while True:
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before the first stop"
            time.sleep(0.2)
            try:
                journal = journal or open_journal(url)
                if journal.events(eid, kinds=["stopped"]):
                    break
            except Exception:  # noqa: BLE001 - the run may still be creating the journal
                continue
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=10)
    finally:
        run.kill()
        reap_session(run.pid)
    assert journal.experiment_state(eid).status.value == "active"  # killed mid-sweep
    rc, out, err = _orch(["resume", eid, "--journal", url, "--no-progress", "--cpus", "1"], killed)
    assert rc == 0, out[-2000:] + err[-3000:]
    assert "stopped@5" in out  # the results table
    got, resumed = _stops(journal, eid)
    assert got == expected
    assert [(d.trial_id, d.step, d.stop, d.cutoff) for d in resumed] == \
        [(d.trial_id, d.step, d.stop, d.cutoff) for d in decisions]
    rc, out, _ = _orch(["status", eid, "--journal", url, "--format", "json"], killed, timeout=60)
    assert rc == 0 and json.loads(out)[0]["counts"] == counts
    journal.close()
