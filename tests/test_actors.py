"""The Ray actor runtime end to end, on one real local Ray (free ports), real SQLite and blobs."""
from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from orchestrator import app as api  # noqa: E402
from orchestrator.actors.cluster import shutdown, start_local  # noqa: E402
from orchestrator.actors.coordinator import Coordinator, ExperimentCoordinator  # noqa: E402
from orchestrator.experiment.plan import plan_sweep  # noqa: E402
from orchestrator.journal import Event, EventKind, open_journal  # noqa: E402
from orchestrator.models.sd import load_components  # noqa: E402
from orchestrator.results import build_table, render_csv, render_json  # noqa: E402
from orchestrator.storage import open_store  # noqa: E402
from orchestrator.training import LoopConfig, train_trial  # noqa: E402

MANIFEST = """\
name: {name}
model: {{variant: sd, base: tiny-random, resolution: 32}}
data: {{train: {{kind: shapes, captions: spatial, n: 12}}, eval: {{kind: shapes-winoground, n: 8, seed: 7}}}}
train: {{steps: {steps}, batch_size: 4, lr: 1.0e-3, checkpoint_every: {every}, seed: 1}}
sweep: {sweep}
resources: {{cpus_per_trial: 1{extra_res}}}
eval: {eval}
storage: {{blobs: ./blobs, journal: sqlite:///./journal.db}}
"""


def write(tmp: Path, name: str = "t", steps: int = 8, every: int = 2, sweep: str = "{}", eval: str = "{}",
          extra_res: str = "") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{name}.yaml"
    path.write_text(MANIFEST.format(name=name, steps=steps, every=every, sweep=sweep, eval=eval, extra_res=extra_res))
    return path


@pytest.fixture(scope="session", autouse=True)
def cluster():
    """One local Ray for every module that imports this fixture (starting one costs seconds). It
    declares two GPUs it does not have, for test_gpu_scheduling: Ray schedules and assigns them as
    real ones; trials without GPUs never ask for them."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    info = start_local(num_cpus=2, num_gpus=2)
    assert not info.address.endswith(":6379")
    yield info
    shutdown(info)


def trial_events(journal, eid: str, tid: str) -> Counter:
    return Counter(e.kind.value for e in journal.events(eid, tid))


def wait_for(predicate, timeout: float = 120.0, every: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = predicate()
        except LookupError:  # not registered yet
            value = None
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("condition not reached")


@pytest.fixture(scope="module")
def eval_assets(tmp_path_factory):
    """A tiny CLIP in transformers' format and an Inception file in the standard FID key layout
    (random weights: these check that every suite runs in the actor and lands in the journal, not
    what a real FID would be)."""
    from orchestrator.eval.inception import FIDInceptionV3
    from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, preprocessor_config, save_clip

    root = tmp_path_factory.mktemp("eval-assets")
    model, tok = build_tiny_clip(seed=0)
    save_clip(ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), "tiny"), root / "clip")
    torch.save(FIDInceptionV3(seed=0).state_dict(), root / "inception.pth")
    return root


def test_sweep_runs_every_suite_and_resubmission_is_idempotent(tmp_path, eval_assets):
    path = write(tmp_path, "sweep", steps=6, every=2, sweep="{grid: {train.lr: [1.0e-3, 3.0e-4]}}",
                 eval=f"{{suites: [spatial, clip_r_precision, clip_score, winoground, fid], every: 4, samples: 10, "
                      f"clip: {eval_assets / 'clip'}, fid_weights: {eval_assets / 'inception.pth'}}}")
    eid = api.run_experiment(path, progress=False)
    plan = plan_sweep(path)
    with open_journal(plan.journal_url) as journal:
        state = journal.experiment_state(eid)
        assert state.status.value == "done" and state.counts()["done"] == 2
        for tid, t in state.trials.items():
            kinds = trial_events(journal, eid, tid)
            assert kinds["running"] == 1 and kinds["done"] == 1 and kinds["checkpointed"] == 3
            assert set(t.metrics) == {0, 4, 6}  # base, interim at every=4, final
            final = t.metrics[6]
            assert 0.0 <= final["spatial.accuracy"] <= 1.0 and final["spatial.accuracy.n"] == 10
            assert final["spatial.accuracy.ci_low"] <= final["spatial.accuracy"] <= final["spatial.accuracy.ci_high"]
            assert 0.0 <= final["clip_r_precision.r_at_1"] <= 1.0 and "clip_r_precision.r_at_1.std" in final
            assert {"winoground.text", "winoground.image", "winoground.group"} <= set(final)
            assert final["fid"] >= 0.0 and final["fid.n"] == 10
            [event] = [e for e in journal.events(eid, tid, kinds=["evaluated"]) if e.payload["step"] == 6]
            assert event.payload["info"]["fid"]["weights_sha256"]  # which weights the FID came from
            assert event.payload["weights"] == f"trials/{tid}/model"  # what was evaluated
            [interim] = [e for e in journal.events(eid, tid, kinds=["evaluated"]) if e.payload["step"] == 4]
            assert interim.payload["weights"] == f"trials/{tid}/checkpoints/step-00000004.pt"
        table = build_table(journal, eid)
        assert table.swept == ["train.lr"] and "spatial.accuracy (final)" in table.metrics
        assert "fid (base)" in table.metrics and "winoground.group (final)" in table.metrics
        assert not any(c.endswith((".n (final)", ".ci_low (final)")) for c in table.metrics)
        assert "winoground.group/Relation (final)" in table.metrics  # per collapsed tag
        text = api.results(plan.journal_url, eid, "table")
        assert "winoground.group (final)" in text and "/Relation" not in text  # per-tag columns: json, csv
        only = api.results(plan.journal_url, eid, "table", ["spatial.accuracy"])
        assert "spatial.accuracy (base) n=10" in only and "fid" not in only
        cell = re.search(r"(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\]", only)  # one seed: its own 95% interval
        assert cell and float(cell[2]) <= float(cell[1]) <= float(cell[3])
        with pytest.raises(ValueError, match="no metric matches nope"):
            api.results(plan.journal_url, eid, "table", ["nope"])
        csv_text = render_csv(table)
        assert csv_text.startswith("train.lr,") and "spatial.accuracy (final) ci_low" in csv_text
        assert '"per_trial"' in render_json(table)
        seq = state.last_seq
    store = open_store(plan.blobs_uri)
    assert store.list(f"experiments/{eid}/grids/")  # sample grids saved...
    from PIL import Image

    pngs = api.export_grids(plan.blobs_uri, eid, tmp_path / "grids")  # ...and copied out as plain PNGs
    assert {p.name for p in pngs} >= {"base.png"} and all(Image.open(p).format == "PNG" for p in pngs)
    paired = api.results(plan.journal_url, eid, "table", paired="train.lr")  # the two lrs, prompt by prompt
    assert "McNemar" in paired and "/10" in paired
    # FID from the features each final evaluation kept beside its grid, winoground and R-precision too
    assert "paired bootstrap" in paired and "winoground.group" in paired and "clip_r_precision.r_at_1" in paired
    assert "clip_score" in paired and "sign-flip permutation" in paired  # CLIPScore: per-image, continuous
    assert any(k.endswith("-fid-features.npz") for k in store.list(f"experiments/{eid}/grids/"))
    assert api.run_experiment(path, progress=False) == eid  # resubmission: nothing runs again
    with open_journal(plan.journal_url) as journal:
        assert all(e.kind is EventKind.RESUMED or e.trial_id is None for e in journal.events(eid, after_seq=seq)) or \
            not journal.events(eid, after_seq=seq)
    assert api.status(plan.journal_url, eid)[0]["counts"] == {"done": 2}


def test_failing_trial_is_journaled_and_sweep_continues(tmp_path):
    # batch 64 > 12 examples: that trial raises in the trainer; the other finishes.
    path = write(tmp_path, "fails", steps=2, every=2, sweep="{grid: {train.batch_size: [4, 64]}}")
    eid = api.run_experiment(path, progress=False)
    plan = plan_sweep(path)
    with open_journal(plan.journal_url) as journal:
        trials = journal.experiment_state(eid).trials
    by_batch = {plan_trial.manifest.train.batch_size: trials[plan_trial.id] for plan_trial in plan.trials}
    assert by_batch[4].status.value == "done"
    bad = by_batch[64]
    assert bad.status.value == "failed" and "fewer than one batch" in bad.last_error
    assert "Traceback" in bad.last_traceback


def test_trainer_sigkill_resumes_to_identical_weights(tmp_path):
    path = write(tmp_path / "killed", "killed", steps=16, every=4)
    plan = plan_sweep(path)
    tid = plan.trials[0].id
    coord = ExperimentCoordinator.remote(plan.to_json())
    done = coord.run.remote()
    progress = lambda: ray.get(coord.progress.remote()).get(tid, {})  # noqa: E731
    wait_for(lambda: progress().get("step", 0) >= 5)  # a checkpoint at 4 exists; steps after are lost
    pid = ray.get(coord.trainer_pid.remote(tid))
    os.kill(pid, signal.SIGKILL)
    assert ray.get(done, timeout=300) == {"done": 1}
    assert progress()["pid"] != pid  # the restarted actor finished the trial
    with open_journal(plan.journal_url) as journal:
        kinds = trial_events(journal, plan.experiment_id, tid)
        steps = [e.payload["step"] for e in journal.events(plan.experiment_id, tid, kinds=["checkpointed"])]
    assert kinds["running"] == 1 and kinds["done"] == 1 and steps == [4, 8, 12, 16]  # no duplicates
    ray.kill(coord)

    straight = write(tmp_path / "straight", "killed", steps=16, every=4)
    ref = train_trial(straight, tid, config=LoopConfig(num_threads=1))
    a = load_components(f"trials/{tid}/model", store=open_store(plan.blobs_uri)).unet.state_dict()
    b = load_components(ref.model_prefix, store=open_store(tmp_path / "straight" / "blobs")).unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_coordinator_killed_then_resumed(tmp_path):
    path = write(tmp_path, "resumable", steps=8, every=2, sweep="{grid: {train.lr: [1.0e-3, 5.0e-4, 2.0e-4]}}",
                 extra_res=", max_concurrent_trials: 1")
    plan = plan_sweep(path)
    first, second, _ = (t.id for t in plan.trials)
    coord = ExperimentCoordinator.options(name=f"coordinator-{plan.experiment_id}", namespace=api.NAMESPACE).remote(
        plan.to_json())
    coord.run.remote()
    journal = open_journal(plan.journal_url)
    wait_for(lambda: journal.trial_state(first).status.value == "done"
             and journal.trial_state(second).last_checkpoint_step is not None, timeout=180)
    ray.kill(coord)
    wait_for(lambda: _no_actor(f"coordinator-{plan.experiment_id}"))
    assert journal.trial_state(second).status.value == "running"  # lost with the coordinator
    before = {c.step for c in journal.checkpoints(second)}

    assert api.resume(plan.journal_url, plan.experiment_id, progress=False) == plan.experiment_id
    state = journal.experiment_state(plan.experiment_id)
    assert state.status.value == "done" and state.counts()["done"] == 3
    assert trial_events(journal, plan.experiment_id, first)["running"] == 1  # not re-run
    assert trial_events(journal, plan.experiment_id, second)["running"] == 2
    store = open_store(plan.blobs_uri)
    after = {c.step for c in journal.checkpoints(second)}
    assert before <= after and store.exists(journal.latest_checkpoint(second).uri)
    journal.close()


def test_an_edited_manifest_does_not_change_what_resume_finishes(tmp_path):
    """The coordinator is killed mid-trial and the manifest is then edited (another learning rate,
    more steps): `resume` finishes the experiment from the plan the journal recorded, and the
    trial's weights are bit for bit those of an uninterrupted run of the original manifest."""
    path = write(tmp_path / "edited", "edited", steps=12, every=2)
    original = path.read_text()
    plan = plan_sweep(path)
    [tid] = [t.id for t in plan.trials]
    coord = ExperimentCoordinator.options(name=f"coordinator-{plan.experiment_id}", namespace=api.NAMESPACE).remote(
        plan.to_json())
    coord.run.remote()
    journal = open_journal(plan.journal_url)
    wait_for(lambda: journal.trial_state(tid).last_checkpoint_step, timeout=180)
    ray.kill(coord)
    wait_for(lambda: _no_actor(f"coordinator-{plan.experiment_id}"))
    path.write_text(original.replace("steps: 12", "steps: 20").replace("lr: 1.0e-3", "lr: 3.0e-3"))
    assert plan_sweep(path).experiment_id != plan.experiment_id  # the file now describes another experiment

    assert api.resume(plan.journal_url, plan.experiment_id, progress=False) == plan.experiment_id
    state = journal.experiment_state(plan.experiment_id)
    assert state.status.value == "done" and journal.latest_checkpoint(tid).step == 12
    journal.close()
    straight = tmp_path / "straight"
    straight.mkdir()
    (straight / "edited.yaml").write_text(original)
    ref = train_trial(straight / "edited.yaml", tid, config=LoopConfig(num_threads=1))
    a = load_components(f"trials/{tid}/model", store=open_store(plan.blobs_uri)).unet.state_dict()
    b = load_components(ref.model_prefix, store=open_store(straight / "blobs")).unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _no_actor(name: str) -> bool:
    try:
        ray.get_actor(name, namespace=api.NAMESPACE)
        return False
    except ValueError:
        return True


def test_coordinator_state_is_rebuilt_from_the_journal(tmp_path):
    path = write(tmp_path, "rebuild", steps=2, every=2, sweep="{grid: {train.lr: [1.0e-3, 5.0e-4, 2.0e-4]}}")
    plan = plan_sweep(path)
    a, b, c = (t.id for t in plan.trials)
    eid = plan.experiment_id
    with open_journal(plan.journal_url) as journal:
        journal.register_experiment(eid, plan.name, plan.record())
        journal.register_trials(eid, {t.id: t.config for t in plan.trials})
        journal.append(Event.for_experiment(eid, "submitted", "s", source=str(path)))
        for tid, kinds in ((a, ["queued", "running", "done"]), (b, ["queued", "running"]), (c, [])):
            for i, kind in enumerate(kinds):
                journal.append(Event.for_trial(eid, tid, kind, f"{tid}-{i}"))
        todo = Coordinator(plan.to_json())._register()  # no Ray needed to rebuild
        assert todo == [b, c]
        assert journal.trial_state(b).status.value == "queued"  # the lost attempt is requeued
        assert Coordinator(plan.to_json())._register() == [b, c]  # rebuilding twice changes nothing
        assert len(journal.events(eid, b)) == 3


def test_two_rank_gloo_group_matches_single_process(tmp_path):
    from orchestrator.actors.trainer import TrainerGroup

    path = write(tmp_path / "ddp", "ddp", steps=4, every=2)
    plan = plan_sweep(path)
    tid = plan.trials[0].id
    group = TrainerGroup(plan.trial(tid).to_json(), plan.blobs_uri, None, world_size=2, use_gpus=False, backend="gloo")
    try:
        results = ray.get(group.train(), timeout=300)
    finally:
        group.shutdown()
    assert [r.get("error") for r in results] == [None, None]
    assert results[0]["model_prefix"] and results[1]["checkpoint"] is None  # only rank 0 writes
    single = train_trial(write(tmp_path / "single", "ddp", steps=4, every=2), tid, config=LoopConfig(num_threads=1))
    a = load_components(results[0]["model_prefix"], store=open_store(plan.blobs_uri)).unet.state_dict()
    b = load_components(single.model_prefix, store=open_store(tmp_path / "single" / "blobs")).unet.state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst


def test_ensure_base_pretrains_from_the_manifest_once_and_refuses_other_settings(tmp_path):
    base = ("name: pre\nmodel: {{variant: sd, base: null, resolution: 32, pretrain: {pretrain}}}\n"
            "data: {{train: {{kind: shapes, captions: generic, n: 8}}}}\n"
            "train: {{steps: 1, batch_size: 4}}\nstorage: {{blobs: ./blobs, journal: sqlite:///./journal.db}}\n")
    small = "{steps: 2, vae_steps: 1, n: 8, batch_size: 4, lr: 1.0e-3}"
    path = tmp_path / "pre.yaml"
    path.write_text(base.format(pretrain=small))
    plan = plan_sweep(path)
    assert api.ensure_base(plan, num_threads=1) is True
    store = open_store(plan.blobs_uri)
    record = store.get("models/tiny-sd-base.pretrain.json").decode()
    assert '"steps": 2' in record and '"vae_steps": 1' in record and '"n": 8' in record
    assert api.ensure_base(plan) is False  # cached: not pretrained again
    path.write_text(base.format(pretrain=small.replace("steps: 2", "steps: 3")))
    with pytest.raises(ValueError, match="pretrained with"):
        api.ensure_base(plan_sweep(path))
    store.delete("models/tiny-sd-base.pretrain.json")  # a base from `orch pretrain` records no settings
    assert api.ensure_base(plan_sweep(path)) is False


def test_glide_mini_beside_sd_as_a_sweep_axis_with_every_generating_suite(tmp_path, eval_assets):
    """The variant swept: GLIDE-mini and SD trials in one experiment, each trained, checkpointed and
    evaluated by the actors on every suite a generator serves; GLIDE-mini's base is pretrained
    into its own blob prefix beside SD's (ensure_base, one per variant)."""
    path = tmp_path / "both.yaml"
    path.write_text(
        "name: both\nmodel: {variant: sd, base: tiny-random, resolution: 32}\n"
        "data: {train: {kind: shapes, captions: spatial, n: 12}, eval: {kind: shapes-winoground, n: 8, seed: 7}}\n"
        "train: {steps: 4, batch_size: 4, lr: 1.0e-3, checkpoint_every: 2, seed: 1}\n"
        "sweep: {trials: [{model.variant: sd}, {model.variant: glide_mini, model.base: null,\n"
        "        model.pretrain: {steps: 2, n: 8, batch_size: 4}, model.glide_mini: {train: both}}]}\n"
        "resources: {cpus_per_trial: 1}\n"
        f"eval: {{suites: [spatial, clip_r_precision, winoground, fid, fid_clip], samples: 10, every: 2, "
        f"clip: {eval_assets / 'clip'}, fid_weights: {eval_assets / 'inception.pth'}}}\n"
        "storage: {blobs: ./blobs, journal: sqlite:///./journal.db}\n")
    eid = api.run_experiment(path, progress=False)
    plan = plan_sweep(path)
    store = open_store(plan.blobs_uri)
    assert store.exists("models/tiny-glide-mini-base/model_index.json")
    assert '"steps": 2' in store.get("models/tiny-glide-mini-base.pretrain.json").decode()
    with open_journal(plan.journal_url) as journal:
        state = journal.experiment_state(eid)
        assert state.status.value == "done" and state.counts()["done"] == 2
        variants = {}
        for tid, t in state.trials.items():
            trial = next(p for p in plan.trials if p.id == tid)
            variants[trial.manifest.model.variant] = tid
            kinds = trial_events(journal, eid, tid)
            assert kinds["running"] == 1 and kinds["checkpointed"] == 2
            assert set(t.metrics) == {0, 2, 4}  # its own base, the checkpoint at step 2, the export
            final = t.metrics[4]
            assert final["spatial.accuracy.n"] == 10 and final["fid.n"] == 10 and final["fid"] >= 0
            assert {"clip_r_precision.r_at_1", "winoground.group", "fid_clip"} <= set(final)
        assert set(variants) == {"sd", "glide_mini"}
        index = store.get(f"trials/{variants['glide_mini']}/model/model_index.json").decode()
        assert '"_orch_variant": "glide_mini"' in index
        # Each trial's base is its own model's: two base evaluations with their own images.
        bases = [e for e in journal.events(eid, kinds=["evaluated"]) if e.payload["step"] == 0]
        assert len({e.payload["grid"] for e in bases}) == 2
        assert bases[0].payload["metrics"] != bases[1].payload["metrics"]


def test_vcdm_arms_as_a_sweep_axis_with_the_oracle_and_no_base_evaluation(tmp_path, eval_assets):
    """Visual-CoT's arms in one experiment (examples/vcdm-shapes/manifest.yaml in miniature): the VCDM trial
    reports fid_clip, its oracle arm and consistency; the unconditional trial fid_clip alone, its
    oracle arm journaled as not applicable; evaluate_base: false evaluates no base (tiny-random)."""
    from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, preprocessor_config, save_clip

    model, tok = build_tiny_clip(seed=1)
    save_clip(ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), "judge"), tmp_path / "judge")
    path = tmp_path / "vcdm.yaml"
    path.write_text(
        f"name: vcdm\nmodel: {{variant: vcdm, base: tiny-random, resolution: 32, "
        f"vcdm: {{clip: {eval_assets / 'clip'}}}}}\n"
        "data: {train: {kind: shapes, n: 12}}\n"
        "train: {steps: 2, batch_size: 4, lr: 1.0e-3, checkpoint_every: 2, seed: 1}\n"
        "sweep: {grid: {model.vcdm.conditioning: [embedding, none]}}\n"
        "resources: {cpus_per_trial: 1}\n"
        f"eval: {{suites: [fid_clip, consistency], samples: 6, clip: {tmp_path / 'judge'}, oracle: true, "
        "reference_scenes: all, evaluate_base: false, consistency_embeddings: 2, consistency_images: 2, "
        "kid_subsets: 3}\n"
        "storage: {blobs: ./blobs, journal: sqlite:///./journal.db}\n")
    eid = api.run_experiment(path, progress=False)
    plan = plan_sweep(path)
    with open_journal(plan.journal_url) as journal:
        state = journal.experiment_state(eid)
        assert state.status.value == "done" and state.counts()["done"] == 2
        arms = {}
        for tid, t in state.trials.items():
            trial = next(p for p in plan.trials if p.id == tid)
            arms[trial.manifest.model.options.conditioning] = (tid, t)
            assert set(t.metrics) == {2}  # the final model only: no base evaluation
        _, conditioned = arms["embedding"]
        final = conditioned.metrics[2]
        assert final["fid_clip.n"] == 6 and final["fid_clip.oracle.n"] == 6 and "fid_clip.oracle_kid" in final
        assert final["consistency.n"] == 2 and "consistency.chance_consistency" in final
        tid, unconditional = arms["none"]
        assert not [k for k in unconditional.metrics[2] if "oracle" in k]
        assert "consistency.chance_consistency" in unconditional.metrics[2]
        [event] = journal.events(eid, tid, kinds=["evaluated"])
        assert event.payload["info"]["fid_clip"]["oracle"].startswith("not applicable")
