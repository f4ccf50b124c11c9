"""A manifest resolved for running: its trials, experiment id, and absolute journal/blob locations.

Storage paths in a manifest are relative to the manifest's directory (like every other path in
it), so the coordinator, the trainers and the CLI all resolve them here, the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.manifest import LoadedManifest, Trial, canonical_json, expand, experiment_id
from orchestrator.models.registry import load_checked_manifest
from orchestrator.storage.location import is_remote, local_path


@dataclass(frozen=True)
class SweepPlan:
    loaded: LoadedManifest
    trials: list[Trial]
    experiment_id: str
    journal_url: str
    blobs_uri: str

    @property
    def manifest_path(self) -> Path:
        return self.loaded.path

    @property
    def name(self) -> str:
        return self.loaded.manifest.name

    def record(self) -> str:
        """What the journal stores as the experiment's manifest: its content, not where it lives,
        so the same manifest submitted from another path or with other comments is the same experiment."""
        return canonical_json(self.loaded.manifest.model_dump(mode="json", exclude={"storage", "description"}))


def resolve_journal_url(url: str, base_dir: Path | None) -> str:
    """sqlite:///relative.db against `base_dir`; other URLs unchanged."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and base_dir is not None:
        return prefix + str((base_dir / url[len(prefix):]).resolve())
    return url


def resolve_blobs_uri(uri: str, base_dir: Path | None) -> str:
    return uri if is_remote(uri) else str(local_path(uri, base_dir).resolve())


def plan_sweep(manifest_path: str | Path, *, roots=None) -> SweepPlan:
    """`roots`: confine every location to them (a client's manifest; see manifest.load_manifest)."""
    loaded = load_checked_manifest(manifest_path, roots=roots)
    trials = expand(loaded)
    m = loaded.manifest
    return SweepPlan(loaded, trials, experiment_id(loaded, trials),
                     resolve_journal_url(m.storage.journal, loaded.base_dir),
                     resolve_blobs_uri(m.storage.blobs, loaded.base_dir))
