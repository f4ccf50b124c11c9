"""`orch train FILE --trial TRIAL`: one trial of a manifest, trained in-process (no Ray)."""
from __future__ import annotations

from pathlib import Path

from orchestrator.manifest import expand, load_manifest
from orchestrator.manifest.schema import TINY_RANDOM_BASE, DataSource, ModelSpec, local_path
from orchestrator.models.sd.pipeline import TINY_BASE_PREFIX, SDComponents, build_tiny, load_components

from orchestrator.data.image_text import ImageTextData, shapes_data
from .distributed import DistContext, destroy_process_group, init_process_group
from .loop import TrainResult, Trainer, set_deterministic
from .metrics import MetricsCallback



def open_blob_store(uri: str, base_dir: Path | None):
    """The manifest's blob store; relative local paths resolve against the manifest's directory."""
    from orchestrator.storage import open_store

    if uri.startswith("az://"):
        return open_store(uri)
    return open_store(str(local_path(uri, base_dir)))


def load_base(model: ModelSpec, store, base_dir: Path | None) -> SDComponents:
    """The manifest's base model: a diffusers directory, a blob URI, or the tiny shapes base."""
    if model.variant != "sd":
        raise NotImplementedError(f"model variant {model.variant!r} has no trainer yet (only 'sd')")
    if model.base == TINY_RANDOM_BASE:
        return build_tiny(seed=0, resolution=model.resolution)
    if model.base is None:
        # No silent fallback to random weights: a missing base is the user's to build.
        if not store.exists(f"{TINY_BASE_PREFIX}/model_index.json"):
            raise FileNotFoundError(
                f"model.base is null but the blob store has no tiny base at {TINY_BASE_PREFIX}/; "
                f"build it with `orch pretrain --blobs <storage.blobs>`, or set model.base: {TINY_RANDOM_BASE}")
        return load_components(TINY_BASE_PREFIX, store=store)
    if model.base.startswith("az://"):
        from orchestrator.storage import open_store
        return load_components("", store=open_store(model.base))
    return load_components(local_path(model.base, base_dir))


def load_train_data(src: DataSource | None, resolution: int) -> ImageTextData:
    if src is None:
        raise ValueError("the manifest has no data.train source to train on")
    if src.kind != "shapes":
        raise NotImplementedError(f"training on data kind {src.kind!r} is not supported yet (only 'shapes')")
    return shapes_data(src.n, src.seed, src.size or resolution, src.captions or "generic")


def train_trial(
    manifest_path: str | Path,
    trial_id: str,
    max_steps: int | None = None,
    progress: bool = True,
    on_metrics: MetricsCallback | None = None,
    *,
    use_cache: bool = True,
    num_threads: int | None = None,
    distributed: DistContext | None = None,
) -> TrainResult:
    """Train one trial (id, unique id prefix, or index in plan order) to its end or `max_steps`.

    Checkpoints go to `trials/<id>/checkpoints/` in the manifest's blob store and a rerun resumes
    from the newest verified one; the finished model is exported to `trials/<id>/model/`.
    """
    loaded = load_manifest(manifest_path)
    trial = _pick(expand(loaded), trial_id, manifest_path)
    m = trial.manifest
    store = open_blob_store(m.storage.blobs, loaded.base_dir)
    set_deterministic(num_threads)
    components = load_base(m.model, store, loaded.base_dir)
    data = load_train_data(m.data.train, m.model.resolution)
    if distributed is None:
        trainer = Trainer(components, data, m.train, store, f"trials/{trial.id}", use_cache=use_cache,
                          on_metrics=on_metrics, progress=progress)
        return trainer.run(max_steps)
    init_process_group(distributed)  # one rank of a data-parallel group: see distributed.py
    try:
        trainer = Trainer(components, data, m.train, store, f"trials/{trial.id}", use_cache=use_cache,
                          on_metrics=on_metrics, progress=progress and distributed.is_main,
                          distributed=distributed)
        return trainer.run(max_steps)
    finally:
        destroy_process_group()


def _pick(trials, trial_id: str, path) -> object:
    exact = [t for t in trials if t.id == trial_id]
    if exact:
        return exact[0]
    if trial_id.isdigit() and int(trial_id) < len(trials):
        return trials[int(trial_id)]
    prefixed = [t for t in trials if t.id.startswith(trial_id)]
    if len(prefixed) == 1:
        return prefixed[0]
    known = ", ".join(t.id for t in trials)
    raise KeyError(f"{path}: no single trial matches {trial_id!r} (trials: {known})")
