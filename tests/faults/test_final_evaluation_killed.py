"""A run SIGKILLed during its final evaluation and resumed gives the results of the run that was
never interrupted: the final loss (journaled when training ended, not held until `done`) and the
whole loss curve."""
from __future__ import annotations

import pytest

from orchestrator.experiment.plan import plan_sweep

from .runs import events, kill_session, loss_curve, orch, results_json, start, wait_for, write_manifest


@pytest.mark.timeout(300)
def test_kill_during_final_evaluation_then_resume_gives_the_same_results(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    write_manifest(straight, name="final-eval", evaluate=True)
    manifest = write_manifest(killed, name="final-eval", evaluate=True)
    plan = plan_sweep(manifest)
    eid, tid, url = plan.experiment_id, plan.trials[0].id, plan.journal_url

    log = tmp_path / "killed.log"
    run = start("run", "m.yaml", "--no-progress", "--no-metrics", "--cpus", "2", cwd=killed, log=log)
    try:
        wait_for(lambda: events(url, eid, ["evaluating"]), run, log)
    finally:
        kill_session(run)
    assert not events(url, eid, ["done"]), "the evaluation finished before the kill: make it longer"
    (evaluating,) = events(url, eid, ["evaluating"])
    assert evaluating.payload["final_loss"] is not None and evaluating.payload["step"] == 6

    resumed = orch("resume", eid, "--journal", "sqlite:///./journal.db", "--no-progress", "--no-metrics",
                   "--cpus", "2", cwd=killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    first = orch("run", "m.yaml", "--no-progress", "--no-metrics", "--cpus", "2", "--format", "json", cwd=straight)
    assert first.returncode == 0, first.stderr[-3000:]

    straight_url = plan_sweep(straight / "m.yaml").journal_url
    done = [e for e in events(url, eid, ["done"]) if e.trial_id == tid][-1].payload
    assert done["steps_run"] == 0 and done["final_loss"] == evaluating.payload["final_loss"]  # from the journal
    a, b = results_json(straight_url, eid, straight), results_json(url, eid, killed)
    assert a["rows"][0]["final_loss"] is not None
    assert a == b
    curve = loss_curve(url, eid)
    assert sorted(curve) == [1, 2, 3, 4, 5, 6] and curve == loss_curve(straight_url, eid)
