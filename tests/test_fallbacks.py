"""Every fallback is visible: a damaged checkpoint passed over and an older one used are said
(notices, journaled as `warned`, printed on the console); a trial whose journaled checkpoints
are all gone from the store stops with a clear error, and `orch resume --restart-missing`
trains it again from step 0, saying so."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orchestrator.actors.plan import plan_sweep
from orchestrator.data.image_text import shapes_data
from orchestrator.journal import Event, EventKind, open_journal
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny
from orchestrator.storage import open_store
from orchestrator.training.loop import CheckpointsMissing, Trainer

ORCH = str(Path(sys.executable).with_name("orch"))
SPEC = TrainSpec(steps=4, batch_size=4, lr=1e-3, checkpoint_every=2, seed=0)


def trainer(store, heard, **kw):
    return Trainer(get_variant("sd"), build_tiny(seed=0), shapes_data(n=8, seed=0), SPEC, store, "run",
                   export_model=False, on_notice=lambda kind, d: heard.append((kind, d)), **kw)


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
resources: {cpus_per_trial: 1}
storage: {blobs: ./blobs, journal: sqlite:///./journal.db}
"""


def orch(*args, cwd):
    return subprocess.run([ORCH, *args], cwd=cwd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"})


def test_journaled_checkpoints_gone_from_the_store(tmp_path):
    """A trial the journal says was running with a checkpoint at step 2, whose checkpoint files
    are not in the store (deleted, another bucket): resume refuses, --restart-missing retrains."""
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    plan = plan_sweep(path)
    eid, tid = plan.experiment_id, plan.trials[0].id
    with open_journal(plan.journal_url) as j:
        j.register_experiment(eid, plan.name, plan.record())
        j.register_trials(eid, {t.id: t.config for t in plan.trials})
        j.append(Event.for_experiment(eid, EventKind.SUBMITTED, f"{eid}/submitted", source=str(path)))
        for kind in ("queued", "running"):
            j.append(Event.for_trial(eid, tid, kind, f"{tid}/{kind}"))
        j.append(Event.for_trial(eid, tid, "checkpointed", f"{tid}/ckpt2", step=2,
                                 uri=f"trials/{tid}/checkpoints/step-00000002.pt"))
    refused = orch("resume", eid, "--journal", "sqlite:///./journal.db", "--no-progress", "--cpus", "1", cwd=tmp_path)
    assert refused.returncode == 1 and "CheckpointsMissing" in refused.stderr and "--restart-missing" in refused.stderr

    again = orch("resume", eid, "--journal", "sqlite:///./journal.db", "--no-progress", "--cpus", "1",
                 "--restart-missing", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "restarted from scratch" in again.stderr  # on the console
    with open_journal(plan.journal_url) as j:
        state = j.experiment_state(eid).trials[tid]
        warned = [e.payload for e in j.events(eid, tid, kinds=["warned"])]
    assert state.status.value == "done"
    assert [w["notice"] for w in warned] == ["restarted_from_scratch"] and warned[0]["expected_step"] == 2
