"""Accepting a manifest over HTTP: validate, confine, store, journal, schedule — once per experiment.

    POST body -> state dir (temporary file) -> load confined to the allowed roots, without file
    checks -> full load and plan (orch validate's checks) -> written out with every location as
    confinement resolved it, stored content-addressed by the body (`<state>/<sha256>.yaml`) ->
    registered in the journal -> a detached coordinator (app.submit_plan), which gets the plan by value

A submitted manifest behaves as if it sat in the state dir: its relative paths resolve there, so
the default storage (`./runs/blobs`, `sqlite:///./runs/journal.db`) lands in the state dir.

Idempotent and safe under concurrency, across processes too: the experiment id is a hash of the
manifest's content, `register_experiment` (one write transaction) says which request created it
(201) and which found it (200), and the experiment's owner lease (journal/ownership.py) lets at
most one coordinator run it. A registered experiment that was never scheduled (the head failed
between the two steps) is scheduled by the next submission of the same manifest.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.app.submission import submit_plan
from orchestrator.experiment.plan import SweepPlan, plan_sweep, resolve_journal_url
from orchestrator.journal import ExperimentStatus, Journal, LeaseHeld
from orchestrator.manifest import ManifestError, ManifestIssue, expand, load_manifest

from .confine import confined_yaml, option_issues

log = logging.getLogger(__name__)
SHOWN_FILE = "manifest"  # how a submitted manifest is named in its issues (the client knows its own name)


@dataclass(frozen=True)
class Accepted:
    experiment_id: str
    name: str
    trials: int
    created: bool     # this request registered it
    scheduled: bool   # this request started its coordinator


class Submissions:
    def __init__(self, state_dir: Path, roots: list[Path], journal: Journal, journal_url: str, ray_address: str):
        self.state_dir, self.roots = state_dir, [state_dir, *roots]
        self.journal, self.journal_url, self.ray_address = journal, journal_url, ray_address
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def submit(self, body: bytes) -> Accepted:
        """ManifestError (422) for a bad manifest; the runtime's errors pass through."""
        plan, stored = self._plan(body)
        with self._lock(plan.experiment_id):  # same-process requests queue instead of racing
            created = self.journal.register_experiment(plan.experiment_id, plan.name, plan.record())
            if created:
                self.journal.register_trials(plan.experiment_id, {t.id: t.config for t in plan.trials})
            scheduled = self._schedule(plan) if created or self._orphaned(plan.experiment_id) else False
        log.info("experiment %s (%s) from %s: %s", plan.experiment_id, plan.name, stored.name,
                 "created" if created else "exists" + (", rescheduled" if scheduled else ""))
        return Accepted(plan.experiment_id, plan.name, len(plan.trials), created, scheduled)

    # ------------------------------------------------------------------ steps
    def _plan(self, body: bytes) -> tuple[SweepPlan, Path]:
        digest = hashlib.sha256(body).hexdigest()
        stored = self.state_dir / f"{digest}.yaml"
        if stored.is_file():  # accepted before: the same bytes, confined the same way
            return self._checked_plan(stored), stored
        tmp = self.state_dir / f".incoming-{uuid.uuid4().hex}.yaml"
        tmp.write_bytes(body)
        try:
            plan = self._checked_plan(tmp)
            # What the plan holds (and the workers receive): every location as confinement resolved it
            # (api/confine.py). The file is kept for people; nothing reads it again.
            tmp.write_text(confined_yaml(plan.loaded, plan.trials))
            plan = self._checked_plan(tmp)
            os.replace(tmp, stored)  # atomic; a concurrent twin wrote the same bytes
        finally:
            tmp.unlink(missing_ok=True)
        return replace(plan, source=stored), stored

    def _checked_plan(self, path: Path) -> SweepPlan:
        try:
            # Schema and confinement only, no file checks: no path is probed before it is known
            # to be inside the roots.
            unchecked = load_manifest(path, check_files=False, roots=self.roots)
            issues = option_issues(unchecked, expand(unchecked, check_files=False), self.roots, SHOWN_FILE)
            issues += self._journal_issues(unchecked)
            if issues:
                raise ManifestError(issues)
            return plan_sweep(path, roots=self.roots)
        except ManifestError as exc:
            raise ManifestError([replace(i, file=SHOWN_FILE) for i in exc.issues]) from None

    def _journal_issues(self, loaded) -> list[ManifestIssue]:
        """The head journals every experiment into its own journal; a manifest naming another one
        would be misread as writing there."""
        storage = loaded.source.data.get("storage") if isinstance(loaded.source.data, dict) else None
        if not isinstance(storage, dict) or "journal" not in storage:
            return []
        if resolve_journal_url(loaded.manifest.storage.journal, loaded.base_dir) == self.journal_url:
            return []
        return [ManifestIssue(SHOWN_FILE, "storage.journal", loaded.source.line_of(("storage", "journal")),
                              "this head journals into its own journal; leave storage.journal out")]

    def _orphaned(self, experiment_id: str) -> bool:
        """Registered, never submitted, and nobody holds it: a previous attempt failed to schedule."""
        if self.journal.experiment_state(experiment_id).status is not ExperimentStatus.PENDING:
            return False
        lease = self.journal.lease(experiment_id)
        return lease is None or lease.free()

    def _schedule(self, plan: SweepPlan) -> bool:
        try:
            submit_plan(plan, self.ray_address, journal_url=self.journal_url)
            return True
        except LeaseHeld as exc:  # another run (another head, an `orch run`) has it: not ours to start
            log.info("%s", exc)
            return False

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())


def head_journal_url(state_dir: Path, journal: str | None) -> str:
    """The head's journal: --journal, else where a submitted manifest's default journal resolves."""
    from orchestrator.manifest.schema import StorageSpec

    return resolve_journal_url(journal or StorageSpec().journal, state_dir)
