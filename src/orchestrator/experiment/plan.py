"""A manifest resolved for running: its trials, experiment id, and absolute journal/blob locations.

Storage paths in a manifest are relative to the manifest's directory (like every other path in
it), so the coordinator, the trainers and the CLI all resolve them here, the same way. A plan is
read from a file once (`plan_sweep`); after that it travels by value (`to_json`, the coordinator's
input and what the journal records with `submitted` / `resumed`), and `recorded_plan` reads it
back from the journal for `orch resume`, whatever became of the file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orchestrator.models  # noqa: F401  (installs the variant catalog manifests validate with)
from orchestrator.journal import EventKind
from orchestrator.manifest import (
    LoadedManifest,
    Manifest,
    Trial,
    canonical_json,
    expand,
    experiment_id,
    load_experiment,
)
from orchestrator.manifest.record import ResolvedTrial, SweepRecord
from orchestrator.storage.location import is_remote, local_path

from .admission import Tenant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPlan:
    manifest: Manifest = field(repr=False)
    base_dir: Path                  # where the manifest's relative paths are read from
    trials: list[Trial] = field(repr=False)
    experiment_id: str
    journal_url: str
    blobs_uri: str
    source: Path | None = None      # the file it was read from: shown in messages, never read again
    # The file as parsed (line numbers): only where the plan was read from one.
    loaded: LoadedManifest | None = field(default=None, repr=False, compare=False)
    # Who it runs for on a shared cluster (the head's token; admission.py): None outside the head.
    tenant: Tenant | None = None

    @property
    def origin(self) -> str:
        """How messages name the plan: its file, or the experiment when it was read from a journal."""
        return str(self.source) if self.source else f"experiment {self.experiment_id}"

    @property
    def name(self) -> str:
        return self.manifest.name

    def record(self) -> str:
        """What the journal stores as the experiment's manifest: its content, not where it lives,
        so the same manifest submitted from another path or with other comments is the same experiment."""
        return canonical_json(self.manifest.model_dump(mode="json", exclude={"storage", "description"}))

    @property
    def sweep(self) -> SweepRecord:
        """The sweep by value, as the journal records it."""
        return SweepRecord(self.manifest, self.trials, self.base_dir)

    def trial(self, trial_id: str) -> ResolvedTrial:
        return self.sweep.trial(trial_id)

    def to_json(self) -> dict[str, Any]:
        """The plan by value: the sweep record plus its id and where it came from."""
        return {**self.sweep.to_json(),
                "experiment_id": self.experiment_id, "source": None if self.source is None else str(self.source),
                "tenant": None if self.tenant is None else self.tenant.to_json()}

    @classmethod
    def from_json(cls, doc: dict[str, Any], journal_url: str | None = None) -> SweepPlan:
        rec = SweepRecord.from_json(doc)
        base_dir = rec.base_dir or Path.cwd()
        return cls(rec.manifest, base_dir, rec.trials, doc["experiment_id"],
                   journal_url or resolve_journal_url(rec.manifest.storage.journal, base_dir),
                   resolve_blobs_uri(rec.manifest.storage.blobs, base_dir),
                   Path(doc["source"]) if doc.get("source") else None, tenant=Tenant.from_json(doc.get("tenant")))


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
    loaded = load_experiment(manifest_path, roots=roots)
    trials = expand(loaded)
    m = loaded.manifest
    return SweepPlan(m, loaded.base_dir, trials, experiment_id(loaded, trials),
                     resolve_journal_url(m.storage.journal, loaded.base_dir),
                     resolve_blobs_uri(m.storage.blobs, loaded.base_dir), loaded.path, loaded)


def recorded_plan(journal, experiment_id: str, journal_url: str | None = None,
                  on_fallback=None) -> SweepPlan:
    """The plan the experiment was last submitted or resumed with, as the journal recorded it
    (UnknownExperiment if absent). A journal written before plans were recorded by value names
    only the manifest's path: that file is read instead, which `on_fallback(message)` is told
    (and the log), and it must still describe this experiment."""
    journal.experiment_state(experiment_id)  # UnknownExperiment if absent
    events = [e for e in journal.events(experiment_id, kinds=[EventKind.SUBMITTED, EventKind.RESUMED])
              if e.trial_id is None]
    plans = [e.payload["plan"] for e in events if e.payload.get("plan")]
    if plans:
        return SweepPlan.from_json({**plans[-1], "experiment_id": experiment_id}, journal_url)
    sources = [e.payload["source"] for e in events if e.payload.get("source")]
    if not sources:
        raise LookupError(f"experiment {experiment_id} records no plan and no manifest path to resume from")
    message = (f"experiment {experiment_id} was journaled before plans were recorded by value: "
               f"reading its manifest {sources[-1]} instead")
    log.warning("%s", message)
    if on_fallback is not None:
        on_fallback(message)
    plan = plan_sweep(sources[-1])
    if plan.experiment_id != experiment_id:
        raise ValueError(f"{sources[-1]} now describes experiment {plan.experiment_id}, not {experiment_id}: "
                         "the manifest changed since it was submitted")
    return plan
