"""A finished tiny experiment without running it: the journal records a submitted sweep of one
trial, done, whose exported model (tiny SD of another seed than its tiny-random base) is in the
blob store where training would have put it. What `orch grade build` reads, in a second."""
from __future__ import annotations

from pathlib import Path

from orchestrator.experiment.plan import plan_sweep
from orchestrator.journal import Event, EventKind, open_journal

MANIFEST = """\
name: {name}
model: {{variant: sd, base: tiny-random, resolution: 32}}
data: {{train: {{kind: shapes, captions: spatial, n: 8}}}}
train: {{steps: 3, batch_size: 4, checkpoint_every: 3, lr: {lr}}}
storage: {{blobs: ./blobs, journal: sqlite:///./journal.db}}
"""


def finished_experiment(root: Path, name: str = "grading-fixture", lr: float = 1e-4,
                        seed: int = 7) -> tuple[str, str, str, str]:
    """(journal URL, blob store path, experiment id, trial id) of a finished one-trial experiment;
    several (other names and lr) under one root share its journal and blob store."""
    from orchestrator.models.sd import build_tiny, save_components
    from orchestrator.storage import open_store

    root.mkdir(parents=True, exist_ok=True)
    manifest = root / f"{name}.yaml"
    manifest.write_text(MANIFEST.format(name=name, lr=lr))
    plan = plan_sweep(manifest)
    eid, trial = plan.experiment_id, plan.trials[0]
    prefix = f"trials/{trial.id}/model"
    save_components(build_tiny(seed=seed), prefix, store=open_store(plan.blobs_uri))
    with open_journal(plan.journal_url) as j:
        j.register_experiment(eid, plan.name, plan.record())
        j.register_trial(eid, trial.id, trial.config)
        j.append_many([
            Event.for_experiment(eid, EventKind.SUBMITTED, f"{eid}/submitted", source=str(manifest)),
            Event.for_trial(eid, trial.id, EventKind.QUEUED, f"{trial.id}/queued"),
            Event.for_trial(eid, trial.id, EventKind.RUNNING, f"{trial.id}/running"),
            Event.for_trial(eid, trial.id, EventKind.DONE, f"{trial.id}/done", model=prefix, step=3),
        ])
    return plan.journal_url, plan.blobs_uri, eid, trial.id
