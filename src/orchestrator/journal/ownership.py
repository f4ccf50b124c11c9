"""Who runs an experiment: the driver of `orch run` / `orch resume` claims the experiment's lease
before anything is written (journal/lease.py), keeps it alive while the sweep runs and releases
it at the end. The coordinator writes through a journal fenced by that lease, and each trainer
watches the lease's holder, so a run whose driver was SIGKILLed stops writing at once instead of
for the seconds Ray takes to reap its workers.

A detached coordinator (`orch submit`, `resume --address`) adopts the lease: the driver hands it
over (no process to watch until the coordinator renews it as its own holder) and exits.
"""
from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

from orchestrator.journal import Journal, open_journal
from orchestrator.journal.lease import (
    Fence,
    Holder,
    Lease,
    LeaseHeld,
    LeaseKeeper,
    LeaseLost,
    heartbeat_s,
    new_owner,
    wait_free,
)
from orchestrator.journal.retry import JournalUnavailable

log = logging.getLogger(__name__)
HANDOVER_TTL_S = 180.0  # a detached coordinator has this long to start and adopt the lease


@dataclass(frozen=True)
class Ownership:
    """A claimed lease: what the coordinator fences its journal with and trainers watch."""

    journal_url: str
    experiment_id: str
    owner: str
    holder: Holder

    @property
    def fence(self) -> Fence:
        return Fence(self.experiment_id, self.owner, self.holder)


def claim(journal_url: str, experiment_id: str, *, wait: bool = False,
          on_wait: Callable[[Lease], None] | None = None, holder: Holder | None = None,
          journal: Journal | None = None) -> Ownership:
    """The experiment's lease for this process; LeaseHeld when another live run has it (with
    `wait`: block until it is free, then take it). `journal`: that journal (at `journal_url`),
    already open (the head's), instead of opening one."""
    owner, holder = new_owner(), holder or Holder.this_process()
    with nullcontext(journal) if journal is not None else open_journal(journal_url) as opened:
        while True:
            if wait:
                wait_free(lambda: opened.lease(experiment_id), heartbeat_s() / 2, on_wait)
            try:
                opened.acquire_lease(experiment_id, owner, holder)
                return Ownership(journal_url, experiment_id, owner, holder)
            except LeaseHeld:
                if not wait:
                    raise  # another waiter won the race: wait for that one in turn


def hand_over(own: Ownership) -> Ownership:
    """The lease as a detached coordinator adopts it: held by no process until it renews."""
    handed = replace(own, holder=own.holder.handover())
    with open_journal(own.journal_url) as journal:
        journal.acquire_lease(own.experiment_id, own.owner, handed.holder, ttl=HANDOVER_TTL_S)
    return handed


def adopt(own: Ownership) -> Ownership:
    """In the detached coordinator: the handed-over lease, now held by this process."""
    mine = replace(own, holder=Holder.this_process(f"coordinator of {own.experiment_id}"))
    with open_journal(own.journal_url) as journal:
        journal.acquire_lease(own.experiment_id, own.owner, mine.holder)
    return mine


@contextmanager
def kept(own: Ownership, release: bool = True) -> Iterator[LeaseKeeper]:
    """Renew the lease every heartbeat while the block runs; release it after. Each heartbeat
    also checks that a SQLite journal's file is still the one opened, and writable: one that
    went away is `keeper.failed`, and the block ending raises it (JournalUnavailable), so a run
    never ends as if its journal had recorded it."""
    journal = open_journal(own.journal_url)

    def beat() -> None:
        journal.check_file()
        journal.renew_lease(own.experiment_id, own.owner)

    keeper = LeaseKeeper(beat, heartbeat_s(), own.experiment_id).start()
    failed = None
    try:
        yield keeper
    finally:
        keeper.stop()
        try:
            journal.check_file()
        except JournalUnavailable as exc:
            keeper.failed = keeper.failed or str(exc)
        failed = keeper.failed
        if release and not failed:
            try:
                journal.release_lease(own.experiment_id, own.owner)
            except Exception as exc:  # noqa: BLE001 - it expires by itself
                log.warning("could not release the lease of %s: %s", own.experiment_id, exc)
        journal.close()
    if failed:  # reached only when the block itself raised nothing
        raise JournalUnavailable(failed)


class OwnerWatch:
    """In a worker: watches the run that owns it. `gone` is set (with the reason) once the holder
    process of this host is dead, or, for a holder on another host, once the journal shows the
    lease released or taken over. Checked every `poll` seconds (the journal every heartbeat)."""

    def __init__(self, own: Ownership, poll: float = 0.1):
        self.own, self.poll = own, poll
        self.gone: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="owner-watch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        local = self.own.holder.host == socket.gethostname() and self.own.holder.pid is not None
        journal = None if local else open_journal(self.own.journal_url)
        interval = self.poll if local else heartbeat_s()
        try:
            while not self._stop.wait(interval):
                reason = self._check(journal)
                if reason:
                    self.gone = reason
                    log.error("%s", reason)
                    return
        finally:
            if journal is not None:
                journal.close()

    def _check(self, journal) -> str | None:
        if self.own.holder.gone():
            return f"the run owning experiment {self.own.experiment_id} ({self.own.holder.describe()}) is gone"
        if journal is None:
            return None
        try:
            lease = journal.lease(self.own.experiment_id)
        except Exception as exc:  # noqa: BLE001 - a journal outage is not a lost owner
            log.warning("cannot read the lease of %s: %s", self.own.experiment_id, exc)
            return None
        if lease is None or lease.owner != self.own.owner:
            return f"experiment {self.own.experiment_id} is no longer owned by the run that started this worker"
        return None

    def check(self) -> None:
        """Raise LeaseLost once the owner is gone (asked before every write)."""
        if self.gone:
            raise LeaseLost(self.gone)

    def stop(self) -> None:
        self._stop.set()
