"""Graceful preemption: SIGTERM to `orch run` makes the trainer checkpoint at its next step
boundary, journals `preempted`, shuts Ray down cleanly and exits 143; `orch resume` continues
from that exact step to bitwise the weights and checkpoint bytes of an uninterrupted run."""
from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

psutil = pytest.importorskip("psutil")

from orchestrator.experiment.plan import plan_sweep  # noqa: E402
from orchestrator.journal import open_journal  # noqa: E402
from orchestrator.models.loading import load_model  # noqa: E402
from orchestrator.storage import open_store  # noqa: E402
from tests.test_actors_cli import ORCH, _env, reap_session  # noqa: E402

MANIFEST = """\
name: preempted-run
model: {variant: sd, base: tiny-random, resolution: 32}
data: {train: {kind: shapes, captions: spatial, n: 12}}
train: {steps: 400, batch_size: 4, lr: 1.0e-3, checkpoint_every: 100, ema_decay: 0.99, seed: 1}
resources: {cpus_per_trial: 1}
storage: {blobs: ./blobs, journal: sqlite:///./journal.db}
"""


def stored_checkpoints(root: Path, tid: str) -> dict[int, str]:
    """step -> sha256 of each checkpoint blob in the store under `root`."""
    store = open_store(root / "blobs")
    return {int(k[-11:-3]): hashlib.sha256(store.get(k)).hexdigest()
            for k in store.list(f"trials/{tid}/checkpoints/") if k.endswith(".pt")}


def checkpointed_steps(journal_url: str, eid: str) -> list[int]:
    try:
        with open_journal(journal_url, create=False) as j:
            return [e.payload["step"] for e in j.events(eid, kinds=["checkpointed"])]
    except Exception:  # noqa: BLE001 - not created yet
        return []


@pytest.mark.faults
@pytest.mark.timeout(300)
def test_sigterm_checkpoints_exits_143_and_resume_is_exact(tmp_path):
    # The straight run trains from the same directory later (a checkpoint records it: `origin`).
    run_dir, preempted_dir = tmp_path / "run", tmp_path / "preempted"
    run_dir.mkdir()
    (run_dir / "m.yaml").write_text(MANIFEST)
    plan = plan_sweep(run_dir / "m.yaml")
    eid, tid = plan.experiment_id, plan.trials[0].id
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen([*ORCH, "run", str(run_dir / "m.yaml"), "--no-progress", "--cpus", "1"], cwd=run_dir,
                           env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not checkpointed_steps(plan.journal_url, eid):
            assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint journaled in time"
            time.sleep(0.2)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 143, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        leftover = reap_session(run.pid, grace=30)
    text = (tmp_path / "run.log").read_text()
    assert "preempted by SIGTERM" in text and f"orch resume {eid}" in text and "Traceback" not in text
    assert not [c for c in leftover if "raylet" in c or "gcs_server" in c], leftover  # Ray shut down cleanly
    with open_journal(plan.journal_url) as j:
        (pre,) = [e.payload for e in j.events(eid, tid, kinds=["preempted"])]
        state = j.experiment_state(eid).trials[tid]
    assert 100 <= pre["step"] < 400 and pre["checkpoint"].endswith(f"step-{pre['step']:08d}.pt")
    assert state.status.value == "running" and state.last_checkpoint_step == pre["step"]

    resumed = subprocess.run([*ORCH, "resume", eid, "--journal", "sqlite:///./journal.db", "--no-progress",
                              "--cpus", "1"], cwd=run_dir, env=_env(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with open_journal(plan.journal_url) as j:
        done = j.events(eid, tid, kinds=["done"])[-1].payload
        listed = {c.step: c.sha256 for c in j.checkpoints(tid)}
    assert done["resumed_from"] == pre["step"] and done["steps_run"] == 400 - pre["step"]
    stored = stored_checkpoints(run_dir, tid)
    assert {300, 400} <= set(stored) <= set(listed)  # the journal lists every stored checkpoint
    assert all(listed[step] == sha for step, sha in stored.items())  # and its hash verifies (older: pruned)

    run_dir.rename(preempted_dir)  # its stored checkpoints are in `stored`
    run_dir.mkdir()
    (run_dir / "m.yaml").write_text(MANIFEST)
    straight = subprocess.run([*ORCH, "run", "m.yaml", "--no-progress", "--cpus", "1"], cwd=run_dir, env=_env(),
                              capture_output=True, text=True, timeout=240)
    assert straight.returncode == 0, straight.stderr[-2000:]
    a = load_model(f"trials/{tid}/model", store=open_store(preempted_dir / "blobs")).model.unet.state_dict()
    b = load_model(f"trials/{tid}/model", store=open_store(run_dir / "blobs")).model.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # exported EMA weights, bit for bit
    uninterrupted = stored_checkpoints(run_dir, tid)  # 200, 300, 400: the same bytes where both have one
    assert sorted(uninterrupted) == [200, 300, 400] and {300, 400} <= set(stored) & set(uninterrupted)
    assert all(stored[s] == uninterrupted[s] for s in set(stored) & set(uninterrupted))


def test_orch_train_in_process_checkpoints_on_sigterm(tmp_path):
    (tmp_path / "m.yaml").write_text(MANIFEST.replace("steps: 400", "steps: 5000"))
    proc = subprocess.Popen([*ORCH, "train", "m.yaml", "--trial", "0", "--no-progress", "--threads", "1"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = open_store(tmp_path / "blobs")
    deadline = time.monotonic() + 120
    while not store.list("trials/"):  # the first checkpoint (step 100) is there: training is under way
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "preempted by SIGTERM" in err, err[-2000:]
    step = int(err.split(" at step ")[1].split(",")[0])
    assert 100 <= step < 5000 and any(k.endswith(f"step-{step:08d}.pt") for k in store.list("trials/"))
