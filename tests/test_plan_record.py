"""Plans travel by value (manifest/record.py, actors/plan.py): a checked plan written as data and
read back is the same plan, and `recorded_plan` reads it from the journal, never from the file,
except for a journal written before plans were recorded, which falls back to the file and says so."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.experiment.plan import SweepPlan, plan_sweep, recorded_plan
from orchestrator.journal import Event, EventKind, open_journal
from orchestrator.manifest import ManifestError, expand, load_manifest
from orchestrator.manifest.record import ResolvedTrial, SweepRecord

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SWEPT = """\
name: recorded
model: {variant: sd, base: tiny-random, resolution: 32}
data: {train: {kind: shapes, captions: spatial, n: 12}}
train: {steps: 2, batch_size: 4, lr: 1.0e-3, checkpoint_every: 2, seed: 1}
sweep: {grid: {train.lr: [1.0e-3, 5.0e-4]}, trials: [{data.train.n: 16}, {train.batch_size: 2}], seeds: [1, 2]}
storage: {blobs: ./blobs, journal: sqlite:///./journal.db}
"""


def _dumps(trials) -> list:
    return [(t.id, t.index, t.overrides, t.label, t.manifest.model_dump(mode="json")) for t in trials]


@pytest.mark.parametrize("name", sorted(p.parent.name for p in EXAMPLES.glob("*/manifest.yaml")
                                         if p.parent.name != "bad-manifest"))
def test_every_example_sweep_reads_back_as_the_same_trials(name):
    loaded = load_manifest(EXAMPLES / name / "manifest.yaml", check_files=False)
    trials = expand(loaded, check_files=False)
    back = SweepRecord.from_json(SweepRecord(loaded.manifest, trials, loaded.base_dir).to_json())
    assert _dumps(back.trials) == _dumps(trials)
    assert back.manifest.model_dump(mode="json") == loaded.manifest.model_dump(mode="json")
    for t in trials:
        one = ResolvedTrial.from_json(back.trial(t.id).to_json())
        assert one.manifest.model_dump(mode="json") == t.manifest.model_dump(mode="json")
        assert one.base_dir == loaded.base_dir


def test_a_plan_round_trips_and_an_unknown_format_is_refused(tmp_path):
    (tmp_path / "m.yaml").write_text(SWEPT)
    plan = plan_sweep(tmp_path / "m.yaml")
    assert len(plan.trials) == 8
    back = SweepPlan.from_json(plan.to_json())
    assert (back.experiment_id, back.journal_url, back.blobs_uri, back.base_dir, back.source, back.record()) == \
        (plan.experiment_id, plan.journal_url, plan.blobs_uri, plan.base_dir, plan.source, plan.record())
    assert _dumps(back.trials) == _dumps(plan.trials)
    with pytest.raises(ValueError, match="record format 99"):
        SweepPlan.from_json({**plan.to_json(), "format": 99})
    with pytest.raises(ValueError, match="record format None"):
        ResolvedTrial.from_json({k: v for k, v in plan.trial(plan.trials[0].id).to_json().items() if k != "format"})


def _register(sweep: SweepPlan, **payload) -> None:
    with open_journal(sweep.journal_url) as journal:
        journal.register_experiment(sweep.experiment_id, sweep.name, sweep.record())
        journal.register_trials(sweep.experiment_id, {t.id: t.config for t in sweep.trials})
        journal.append(Event.for_experiment(sweep.experiment_id, EventKind.SUBMITTED, "s", **payload))


def test_the_recorded_plan_is_read_back_whatever_became_of_the_file(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(SWEPT)
    plan = plan_sweep(path)
    doc = plan.to_json()
    _register(plan, source=str(path), plan={k: v for k, v in doc.items() if k not in ("experiment_id", "source")})
    path.write_text(SWEPT.replace("[1, 2]", "[3]"))  # now another experiment
    with open_journal(plan.journal_url) as journal:
        back = recorded_plan(journal, plan.experiment_id)
        path.unlink()
        again = recorded_plan(journal, plan.experiment_id)
    assert _dumps(back.trials) == _dumps(again.trials) == _dumps(plan.trials)
    assert (back.blobs_uri, back.base_dir) == (plan.blobs_uri, plan.base_dir)


def test_a_journal_from_before_recorded_plans_falls_back_to_the_file_and_says_so(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(SWEPT)
    plan = plan_sweep(path)
    _register(plan, source=str(path))  # what a journal of an earlier version holds
    said: list[str] = []
    with open_journal(plan.journal_url) as journal:
        back = recorded_plan(journal, plan.experiment_id, on_fallback=said.append)
        assert _dumps(back.trials) == _dumps(plan.trials)
        assert said and "before plans were recorded" in said[0] and str(path) in said[0]
        path.write_text(SWEPT.replace("[1, 2]", "[3]"))
        with pytest.raises(ValueError, match="now describes experiment"):
            recorded_plan(journal, plan.experiment_id)
        path.unlink()
        with pytest.raises(ManifestError, match="file not found"):
            recorded_plan(journal, plan.experiment_id)
