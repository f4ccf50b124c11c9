"""Every fallback is visible: a damaged checkpoint passed over, an older one used and a GPU
trainer on the CPU are said (notices, journaled as `warned`, printed on the console of `orch
resume`); a trial whose journaled checkpoints are all gone from the store stops with a clear
error, and `orch resume --restart-missing` trains it again from step 0, saying so. Steps trained
again write the checkpoint bytes the journal recorded."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orchestrator.data.image_text import shapes_data
from orchestrator.experiment.journaling import RunJournal
from orchestrator.experiment.plan import plan_sweep
from orchestrator.journal import Event, EventKind, open_journal
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny
from orchestrator.storage import open_store
from orchestrator.training.checkpoint import CheckpointStore
from orchestrator.training.control import LoopConfig, RunControl
from orchestrator.training.loop import CheckpointsMissing, Trainer
from orchestrator.training.trial import train_trial

ORCH = str(Path(sys.executable).with_name("orch"))
SPEC = TrainSpec(steps=4, batch_size=4, lr=1e-3, checkpoint_every=2, seed=0)


def trainer(store, heard, **control):
    return Trainer(get_variant("sd"), build_tiny(seed=0), shapes_data(n=8, seed=0), SPEC, store, "run",
                   config=LoopConfig(export_model=False),
                   control=RunControl(on_notice=lambda kind, d: heard.append((kind, d)), **control))


def test_resume_says_what_it_passed_over_and_stops_when_nothing_is_left(tmp_path):
    torch.set_num_threads(1)
    store = open_store(tmp_path / "blobs")
    heard: list = []
    trainer(store, heard).run()  # checkpoints at 2 and 4
    newest = next(p for p in (tmp_path / "blobs").rglob("step-00000004.pt*") if p.is_file())
    newest.write_bytes(b"damaged")
    t = trainer(store, heard, expect_checkpoint=4)
    assert t.resume() == 2
    kinds = [k for k, _ in heard]
    assert kinds == ["checkpoint_skipped", "resumed_from_older"]
    assert heard[0][1]["key"] == "run/checkpoints/step-00000004.pt" and "sha256" in heard[0][1]["reason"]
    assert heard[1][1] == {"expected_step": 4, "step": 2, "key": "run/checkpoints/step-00000002.pt"}

    for key in store.list("run/checkpoints/"):
        store.delete(key)
    with pytest.raises(CheckpointsMissing, match="step 4.*--restart-missing"):
        trainer(store, heard, expect_checkpoint=4).resume()
    heard.clear()
    assert trainer(store, heard, expect_checkpoint=4, restart_missing=True).resume() is None
    assert [k for k, _ in heard] == ["restarted_from_scratch"]
    heard.clear()
    assert trainer(store, heard).resume() is None and heard == []  # a new run: nothing to say


MANIFEST = """\
name: lost-checkpoints
model: {variant: sd, base: tiny-random, resolution: 32}
data: {train: {kind: shapes, n: 8}}
train: {steps: 2, batch_size: 4, lr: 1.0e-3, checkpoint_every: 2}
resources: {cpus_per_trial: 1, gpus_per_trial: 1}
storage: {blobs: ./blobs, journal: sqlite:///./journal.db}
"""

# Three trials of six steps, checkpointed every two: each is damaged in its own way below.
DAMAGED = """\
name: damaged-checkpoints
model: {variant: sd, base: tiny-random, resolution: 32}
data: {train: {kind: shapes, n: 8}}
train: {steps: 6, batch_size: 4, lr: 1.0e-3, checkpoint_every: 2, ema_decay: 0.9}
sweep: {grid: {train.seed: [0, 1, 2]}}
resources: {cpus_per_trial: 1}
storage: {blobs: ./blobs, journal: sqlite:///./journal.db}
"""


def orch(*args, cwd, **env):
    return subprocess.run([ORCH, *args], cwd=cwd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", **env})


def interrupted(path: Path, at: int | None = None):
    """What a killed `orch run` leaves: every trial journaled running, with the checkpoints its
    trainer wrote up to step `at` (trained in-process here, one thread as the trainer actor's)
    recorded as the coordinator records them; `at=None`: a checkpoint at step 2 is journaled and
    none is in the store."""
    plan = plan_sweep(path)
    eid, threads = plan.experiment_id, torch.get_num_threads()
    with open_journal(plan.journal_url) as j:
        j.register_experiment(eid, plan.name, plan.record())
        j.register_trials(eid, {t.id: t.config for t in plan.trials})
        j.append(Event.for_experiment(eid, EventKind.SUBMITTED, f"{eid}/submitted", source=str(path)))
        for t in plan.trials:
            for kind in ("queued", "running"):
                j.append(Event.for_trial(eid, t.id, kind, f"{t.id}/{kind}"))
            if at is None:
                j.append(Event.for_trial(eid, t.id, "checkpointed", f"{t.id}/ckpt2", step=2,
                                         uri=f"trials/{t.id}/checkpoints/step-00000002.pt"))
                continue
            try:
                train_trial(path, t.id, max_steps=at, config=LoopConfig(num_threads=1))
            finally:
                torch.set_num_threads(threads)
            for ref in sorted(checkpoints(path.parent, t.id).refs(), key=lambda r: r.step):
                RunJournal(j, eid).checkpointed(t.id, ref.step, ref.key, ref.sha256, ref.size)
    return plan


def checkpoints(root: Path, tid: str) -> CheckpointStore:
    return CheckpointStore(open_store(root / "blobs"), f"trials/{tid}/checkpoints")


def warned(plan) -> dict[str, list[dict]]:
    """trial -> the `warned` events' payloads, in order."""
    with open_journal(plan.journal_url) as j:
        return {t.id: [e.payload for e in j.events(plan.experiment_id, t.id, kinds=["warned"])]
                for t in plan.trials}


def on_console(stderr: str, tid: str, kind: str) -> bool:
    return any(f"{tid}: {kind.replace('_', ' ')} (" in line for line in stderr.splitlines())


@pytest.mark.faults
def test_damaged_checkpoints_are_said_and_rewritten_with_the_journaled_bytes(tmp_path):
    """`orch resume` of a sweep whose newest checkpoints were damaged: a flipped byte (skipped,
    the older one used), a deleted checkpoint file (skipped as missing, the older one used), a
    deleted checkpoint and marker (the older one used). Each fallback is journaled (`warned`) and
    printed; the steps trained again write the very bytes the journal recorded before the damage,
    so every checkpoint the journal lists verifies against its blob."""
    path = tmp_path / "m.yaml"
    path.write_text(DAMAGED)
    plan = interrupted(path, at=4)
    flipped, deleted, unmarked = (t.id for t in plan.trials)
    blob = tmp_path / "blobs" / "trials" / flipped / "checkpoints" / "step-00000004.pt"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    store = open_store(tmp_path / "blobs")
    store.delete(f"trials/{deleted}/checkpoints/step-00000004.pt")
    for ext in ("pt", "json"):
        store.delete(f"trials/{unmarked}/checkpoints/step-00000004.{ext}")

    run = orch("resume", plan.experiment_id, "--journal", "sqlite:///./journal.db", "--cpus", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    notices = warned(plan)
    assert {t: [w["notice"] for w in ws] for t, ws in notices.items()} == {
        flipped: ["checkpoint_skipped", "resumed_from_older"],
        deleted: ["checkpoint_skipped", "resumed_from_older"],
        unmarked: ["resumed_from_older"]}
    assert "sha256" in notices[flipped][0]["reason"]  # the store's own integrity check or the marker's
    assert notices[deleted][0]["key"] == f"trials/{deleted}/checkpoints/step-00000004.pt"
    assert all(ws[-1]["expected_step"] == 4 and ws[-1]["step"] == 2 for ws in notices.values())
    for tid, ws in notices.items():  # on the console of `orch resume`, printed above its progress bars
        assert all(on_console(run.stdout + run.stderr, tid, w["notice"]) for w in ws), run.stdout[-3000:]

    with open_journal(plan.journal_url) as j:
        assert j.experiment_state(plan.experiment_id).status.value == "done"
        listed = {t.id: [(c.step, c.sha256) for c in j.checkpoints(t.id)] for t in plan.trials}
    for tid, recorded in listed.items():
        assert [step for step, _ in recorded] == [2, 4, 6]
        assert all(hashlib.sha256(store.get(f"trials/{tid}/checkpoints/step-{step:08d}.pt")).hexdigest() == sha
                   for step, sha in recorded), tid


@pytest.mark.faults
def test_journaled_checkpoints_gone_from_the_store(tmp_path):
    """A trial the journal says was running with a checkpoint at step 2, whose checkpoint files
    are not in the store (deleted, another bucket): resume refuses, --restart-missing retrains.
    Its trainer is given a GPU this CPU machine lacks (Ray told of one): it trains on the CPU and
    says so, also a notice on the console and in the journal."""
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    plan = interrupted(path)
    eid, tid = plan.experiment_id, plan.trials[0].id
    one_gpu = {"RAY_OVERRIDE_RESOURCES": '{"GPU": 1}'}
    refused = orch("resume", eid, "--journal", "sqlite:///./journal.db", "--no-progress", "--cpus", "1", cwd=tmp_path,
                   **one_gpu)
    assert refused.returncode == 1 and "CheckpointsMissing" in refused.stderr and "--restart-missing" in refused.stderr

    again = orch("resume", eid, "--journal", "sqlite:///./journal.db", "--no-progress", "--cpus", "1",
                 "--restart-missing", cwd=tmp_path, **one_gpu)
    assert again.returncode == 0, again.stderr[-2000:]
    assert on_console(again.stderr, tid, "restarted_from_scratch") and on_console(again.stderr, tid, "gpu_unavailable")
    with open_journal(plan.journal_url) as j:
        state = j.experiment_state(eid).trials[tid]
    notices = warned(plan)[tid]
    assert state.status.value == "done"
    assert [w["notice"] for w in notices] == ["gpu_unavailable", "gpu_unavailable", "restarted_from_scratch"]
    assert notices[-1]["expected_step"] == 2 and notices[0]["gpu_ids"] == ["0"]
