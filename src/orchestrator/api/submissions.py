"""Accepting a manifest over HTTP: validate, confine, store, journal, schedule — once per experiment.

    POST body -> state dir (temporary file) -> load confined to the allowed roots, without file
    checks -> full load and plan (orch validate's checks) -> written out with every location as
    confinement resolved it, stored content-addressed by the body (`<state>/<sha256>.yaml`) ->
    registered in the journal -> its lease claimed -> a detached coordinator started in the background
    (app.start_claimed), which gets the plan by value

A submitted manifest behaves as if it sat in the state dir: its relative paths resolve there, so
the default storage (`./runs/blobs`, `sqlite:///./runs/journal.db`) lands in the state dir.

Idempotent and safe under concurrency, across processes too: the experiment id is a hash of the
manifest's content, `register_experiment` (one write transaction) says which request created it
(201) and which found it (200), and the experiment's owner lease (journal/ownership.py) lets at
most one coordinator run it. A registered experiment that was never scheduled (the head failed
between the two steps) is scheduled by the next submission of the same manifest.

Fast answers: a new experiment is answered (201) once it is journaled and its lease claimed; its
coordinator starts in the background (seconds: a Ray actor; minutes the first time a tiny base is
built). A start that fails is logged and told to the next submission of the manifest
(`start_error`); its lease, no longer renewed, expires, and that submission schedules it again.
A resubmission of bytes accepted before is answered from memory and at most two journal reads (its
lease, and its status when the lease is free; none once it has been seen past pending), without
parsing the manifest again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.app.preflight import check_blobs
from orchestrator.app.submission import start_claimed
from orchestrator.experiment.admission import Tenant
from orchestrator.experiment.plan import SweepPlan, plan_sweep, resolve_journal_url
from orchestrator.journal import ExperimentStatus, Journal, LeaseHeld
from orchestrator.journal.ownership import Ownership, claim
from orchestrator.journal.redact import excerpt
from orchestrator.manifest import ManifestError, ManifestIssue, expand, load_manifest

from .confine import confined_yaml, option_issues

log = logging.getLogger(__name__)
SHOWN_FILE = "manifest"  # how a submitted manifest is named in its issues (the client knows its own name)
START_WORKERS = 4  # coordinators starting at once (each a Ray actor start)
REMEMBERED = 4096  # accepted bodies answered from memory when submitted again


@dataclass(frozen=True)
class Accepted:
    experiment_id: str
    name: str
    trials: int
    created: bool     # this request registered it
    scheduled: bool   # this request claimed it and began starting its coordinator
    start_error: str | None = None  # why the last start begun by this head failed, if it did


class Submissions:
    def __init__(self, state_dir: Path, roots: list[Path], journal: Journal, journal_url: str, ray_address: str):
        self.state_dir, self.roots = state_dir, [state_dir, *roots]
        self.journal, self.journal_url, self.ray_address = journal, journal_url, ray_address
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._accepted: OrderedDict[str, Accepted] = OrderedDict()  # body digest -> its experiment
        self._start_errors: dict[str, str] = {}
        self._submitted: set[str] = set()  # experiments seen past pending
        self._starts = ThreadPoolExecutor(START_WORKERS, thread_name_prefix="orch-start")

    def submit(self, body: bytes, tenant: Tenant | None = None) -> Accepted:
        """ManifestError (422) for a bad manifest; the runtime's errors pass through. `tenant`: whom
        a new (or rescheduled) experiment runs for: its token's quota and priority apply to it."""
        digest = hashlib.sha256(body).hexdigest()
        known = self._accepted.get(digest)
        if known is not None and not self._orphaned(known.experiment_id):
            return replace(known, created=False, scheduled=False,
                           start_error=self._start_errors.get(known.experiment_id))
        plan, stored = self._plan(body, digest)
        plan = replace(plan, tenant=tenant)
        with self._lock(plan.experiment_id):  # same-process requests queue instead of racing
            created = self.journal.register_experiment(plan.experiment_id, plan.name, plan.record())
            if created:
                self.journal.register_trials(plan.experiment_id, {t.id: t.config for t in plan.trials})
            scheduled = self._schedule(plan) if created or self._orphaned(plan.experiment_id) else False
        log.info("experiment %s (%s) from %s: %s", plan.experiment_id, plan.name, stored.name,
                 "created" if created else "exists" + (", rescheduled" if scheduled else ""))
        accepted = Accepted(plan.experiment_id, plan.name, len(plan.trials), created, scheduled,
                            None if scheduled else self._start_errors.get(plan.experiment_id))
        with self._locks_guard:
            self._accepted[digest] = accepted
            while len(self._accepted) > REMEMBERED:
                self._accepted.popitem(last=False)
        return accepted

    # ------------------------------------------------------------------ steps
    def _plan(self, body: bytes, digest: str) -> tuple[SweepPlan, Path]:
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
        """Registered, never submitted, and nobody holds it: a previous attempt failed to schedule.
        The lease is read first: it is held while the experiment runs (or starts), which settles it."""
        if experiment_id in self._submitted:
            return False
        lease = self.journal.lease(experiment_id)
        if lease is not None and not lease.free():
            return False
        if self.journal.experiment_state(experiment_id).status is ExperimentStatus.PENDING:
            return True
        self._submitted.add(experiment_id)  # for good: no experiment goes back to pending
        return False

    def _schedule(self, plan: SweepPlan) -> bool:
        """Claim the experiment for this head now, start its coordinator in the background."""
        check_blobs(plan)
        try:
            own = claim(self.journal_url, plan.experiment_id, journal=self.journal)
        except LeaseHeld as exc:  # another run (another head, an `orch run`) has it: not ours to start
            log.info("%s", exc)
            return False
        self._start_errors.pop(plan.experiment_id, None)
        self._starts.submit(self._start, plan, own)
        return True

    def _start(self, plan: SweepPlan, own: Ownership) -> None:
        try:
            start_claimed(plan, self.ray_address, self.journal_url, own)
            log.info("experiment %s: coordinator started", plan.experiment_id)
        except BaseException as exc:  # noqa: BLE001 - a background start has nobody else to tell
            said = excerpt(exc)
            self._start_errors[plan.experiment_id] = said
            log.error("experiment %s: its coordinator did not start (%s); its lease expires and the next "
                      "submission of the manifest schedules it again", plan.experiment_id, said)

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())


def head_journal_url(state_dir: Path, journal: str | None) -> str:
    """The head's journal: --journal, else where a submitted manifest's default journal resolves."""
    from orchestrator.manifest.schema import StorageSpec

    return resolve_journal_url(journal or StorageSpec().journal, state_dir)
