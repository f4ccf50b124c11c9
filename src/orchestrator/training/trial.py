"""`orch train FILE --trial TRIAL`: one trial of a manifest, trained in-process (no Ray)."""
from __future__ import annotations

from pathlib import Path

from orchestrator.data.choices import ChoiceData, open_choices
from orchestrator.data.image_text import ImageTextData, open_image_text
from orchestrator.manifest import expand
from orchestrator.manifest.record import ResolvedTrial
from orchestrator.manifest.sweep import pick_trial
from orchestrator.manifest.schema import DataSource
from orchestrator.models.loading import load_model
from orchestrator.models.registry import get_variant, load_checked_manifest
from orchestrator.storage.location import open_blob_store

from .distributed import DistContext, destroy_process_group, init_process_group
from .loop import TrainResult, Trainer, set_deterministic
from .metrics import MetricsCallback


def load_train_data(src: DataSource | None, resolution: int, base_dir: Path | None, store,
                    form: str = "image_text") -> ImageTextData | ChoiceData:
    """The training data in the form the variant's objective takes (`VariantInfo.train_data`)."""
    if src is None:
        raise ValueError("the manifest has no data.train source to train on")
    return _TRAIN_DATA[form](src, resolution, base_dir=base_dir, store=store)


_TRAIN_DATA = {"image_text": open_image_text, "choices": open_choices}


def train_trial(manifest_path: str | Path, trial_id: str, max_steps: int | None = None, progress: bool = True,
                on_metrics: MetricsCallback | None = None, **options) -> TrainResult:
    """`orch train FILE --trial T`: check the manifest, pick the trial (id, unique id prefix, or
    index in plan order) and train it in this process (`train_resolved`, which takes `options`)."""
    loaded = load_checked_manifest(manifest_path)
    trial = pick_trial(expand(loaded), trial_id, manifest_path)
    return train_resolved(ResolvedTrial(trial.id, trial.manifest, loaded.base_dir), max_steps, progress,
                          on_metrics, **options)


def train_resolved(
    trial: ResolvedTrial,
    max_steps: int | None = None,
    progress: bool = True,
    on_metrics: MetricsCallback | None = None,
    *,
    use_cache: bool = True,
    num_threads: int | None = None,
    distributed: DistContext | None = None,
    on_notice=None,
    expect_checkpoint: int | None = None,
    restart_missing: bool = False,
    stop=None,
    guard=None,
    device: str | None = None,
) -> TrainResult:
    """Train one trial, given by value, to its end or `max_steps`.

    The base comes through `load_model` (the one loader), the data through `open_image_text`,
    the objective from the manifest's variant. Checkpoints go to `trials/<id>/checkpoints/` in the
    manifest's blob store and a rerun resumes from the newest verified one; the finished model is
    exported to `trials/<id>/model/`. `on_notice(kind, details)` hears every fallback resume
    takes; `expect_checkpoint` (the journal's newest checkpoint step) turns "no checkpoint left"
    into an error unless `restart_missing` (see Trainer.resume). `stop()`, asked at every step
    boundary, preempts: checkpoint there and return (`preempted`). `guard()`, asked at every
    step boundary of every rank, raises to stop at once without writing anything more. `device`
    (the trainer actor's `choose_device`) defaults to CUDA when the process sees one.
    """
    m, base_dir = trial.manifest, trial.base_dir
    store = open_blob_store(m.storage.blobs, base_dir)
    set_deterministic(num_threads)
    base = load_model(None, spec=m.model, store=store, base_dir=base_dir)
    data = load_train_data(m.data.train, base.resolution, base_dir, store, base.variant.INFO.train_data)
    origin = {"model": m.model.model_dump(mode="json"), "base_dir": str(base_dir)}

    def trainer(dist: DistContext | None) -> Trainer:
        return Trainer(get_variant(m.model.variant), base.model, data, m.train, store, f"trials/{trial.id}",
                       options=m.model.options, origin=origin, use_cache=use_cache, on_metrics=on_metrics,
                       progress=progress and (dist is None or dist.is_main), distributed=dist,
                       on_notice=on_notice, expect_checkpoint=expect_checkpoint, restart_missing=restart_missing,
                       stop=stop, guard=guard, device=device)

    if distributed is None:
        return trainer(None).run(max_steps)
    init_process_group(distributed, device)  # one rank of a data-parallel group: see distributed.py
    try:
        return trainer(distributed).run(max_steps)
    finally:
        destroy_process_group()
