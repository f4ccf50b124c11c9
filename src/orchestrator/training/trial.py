"""`orch train FILE --trial TRIAL`: one trial of a manifest, trained in-process (no Ray)."""
from __future__ import annotations

from pathlib import Path

from orchestrator.data.choices import ChoiceData, open_choices
from orchestrator.data.image_text import ImageTextData, open_image_text
from orchestrator.manifest import expand, load_experiment
from orchestrator.manifest.record import ResolvedTrial
from orchestrator.manifest.schema import DataSource
from orchestrator.manifest.sweep import pick_trial
from orchestrator.models.loading import load_model
from orchestrator.models.registry import get_variant
from orchestrator.storage.location import open_blob_store

from .control import LoopConfig, RunControl
from .distributed import DistContext, destroy_process_group, init_process_group
from .loop import Trainer, TrainResult, set_deterministic


def load_train_data(src: DataSource | None, resolution: int, base_dir: Path | None, store,
                    form: str = "image_text") -> ImageTextData | ChoiceData:
    """The training data in the form the variant's objective takes (`VariantSpec.train_data`)."""
    if src is None:
        raise ValueError("the manifest has no data.train source to train on")
    return _TRAIN_DATA[form](src, resolution, base_dir=base_dir, store=store)


_TRAIN_DATA = {"image_text": open_image_text, "choices": open_choices}


def train_trial(manifest_path: str | Path, trial_id: str, max_steps: int | None = None, *,
                control: RunControl | None = None, config: LoopConfig | None = None) -> TrainResult:
    """`orch train FILE --trial T`: check the manifest, pick the trial (id, unique id prefix, or
    index in plan order) and train it in this process (`train_resolved`)."""
    loaded = load_experiment(manifest_path)
    trial = pick_trial(expand(loaded), trial_id, manifest_path)
    return train_resolved(ResolvedTrial(trial.id, trial.manifest, loaded.base_dir), control, config,
                          max_steps=max_steps)


def train_resolved(
    trial: ResolvedTrial,
    control: RunControl | None = None,
    config: LoopConfig | None = None,
    *,
    max_steps: int | None = None,
    distributed: DistContext | None = None,
) -> TrainResult:
    """Train one trial, given by value, to its end or `max_steps`.

    The base comes through `load_model` (the one loader), the data through `open_image_text`,
    the objective from the manifest's variant. Checkpoints go to `trials/<id>/checkpoints/` in the
    manifest's blob store and a rerun resumes from the newest verified one; the finished model is
    exported to `trials/<id>/model/`. `control` (stop, guard, metrics, notices, the checkpoint the
    journal expects) and `config` (device, threads, cache, uploads) go to the Trainer unchanged:
    see control.py. `distributed` makes this process one rank of a data-parallel group.
    """
    control = RunControl() if control is None else control
    config = LoopConfig() if config is None else config
    m, base_dir = trial.manifest, trial.base_dir
    store = open_blob_store(m.storage.blobs, base_dir)
    set_deterministic(config.num_threads)
    base = load_model(None, spec=m.model, store=store, base_dir=base_dir)
    data = load_train_data(m.data.train, base.resolution, base_dir, store, base.variant.train_data)
    origin = {"model": m.model.model_dump(mode="json"), "base_dir": str(base_dir)}

    def trainer(dist: DistContext | None) -> Trainer:
        return Trainer(get_variant(m.model.variant), base.model, data, m.train, store, f"trials/{trial.id}",
                       options=m.model.options, origin=origin, config=config, control=control, distributed=dist)

    if distributed is None:
        return trainer(None).run(max_steps)
    init_process_group(distributed, config.device)  # one rank of a data-parallel group: see distributed.py
    try:
        return trainer(distributed).run(max_steps)
    finally:
        destroy_process_group()
