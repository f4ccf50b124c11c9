"""Owner leases: one run of an experiment at a time, and nothing written by a run that is gone.

A run acquires its experiment's lease before it writes anything (one row in `leases`: an owner
token, the process holding it, heartbeat and expiry), renews it every heartbeat and releases it
when it ends. A second run finds the lease held and is told by whom. A holder that stops
renewing loses the lease at its expiry, or at once when it was a process on this host that no
longer runs (a SIGKILLed `orch run`), so `orch resume` takes over without waiting.

Fencing: a journal opened with `Journal.fenced(...)` checks, inside each write transaction, that
its owner still holds the lease, and, before that, that the holding process is still alive (a
trainer or coordinator whose driver was SIGKILLed must not write on for the seconds Ray takes to
reap it). A takeover and a fenced write are both write transactions, so they are ordered: after
the takeover commits, every write of the old owner fails with LeaseLost.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select, update

from .errors import JournalError
from .redact import excerpt, redact, redact_argv
from .retry import JournalUnavailable
from .schema import leases as leases_t
from .schema import utcnow

log = logging.getLogger(__name__)
COMMAND_CHARS = 200  # of a holder's command line: the program, its subcommand and manifest fit


def _env_seconds(name: str, default: float) -> float:
    value = float(os.environ.get(name, default))
    if not value > 0:
        raise ValueError(f"${name} must be a positive number of seconds, not {value}")
    return value


def heartbeat_s() -> float:
    """How often a holder renews its lease ($ORCH_LEASE_HEARTBEAT_S, default 2 s)."""
    return _env_seconds("ORCH_LEASE_HEARTBEAT_S", 2.0)


def ttl_s() -> float:
    """How long a lease outlives its last heartbeat ($ORCH_LEASE_TTL_S, default 5 heartbeats)."""
    return _env_seconds("ORCH_LEASE_TTL_S", 5 * heartbeat_s())


class LeaseHeld(JournalError):
    """Another live owner runs the experiment."""

    def __init__(self, lease: Lease):
        self.lease = lease
        super().__init__(f"experiment {lease.experiment_id} is being run by {lease.describe()}")


class LeaseLost(JournalError):
    """This owner no longer holds the lease (taken over after expiry, or its process is gone)."""


def process_start(pid: int) -> float:
    """When process `pid` started, as a value that stays the same for the process's whole life (a
    reused pid gets another). On Linux: its start in clock ticks since boot, from /proc/<pid>/stat.
    Not psutil's create_time, which adds the boot time as /proc/stat's `btime` says at the time of
    asking: `btime` follows the wall clock, which a VM's clock sync moves against the uptime (seen
    here: ~4 ms/s, so `btime` went up by a second within minutes), and a later check computed another
    create_time for the same live process and took it for dead.
    Elsewhere: psutil's create_time. Raises psutil.NoSuchProcess when there is no such process."""
    import psutil

    stat = f"/proc/{pid}/stat"
    if os.path.exists("/proc/self/stat"):
        try:
            with open(stat, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
        except (FileNotFoundError, ProcessLookupError):
            raise psutil.NoSuchProcess(pid) from None
        return float(fields[19])  # field 22 of stat(5): starttime, in clock ticks since boot
    return psutil.Process(pid).create_time()


@dataclass(frozen=True)
class Holder:
    """The process a lease belongs to. `pid` None: no process to watch (a lease handed over to a
    coordinator still starting), only the expiry counts."""

    host: str
    pid: int | None
    started: float | None  # process_start(pid): a reused pid is not the same process
    command: str

    @classmethod
    def this_process(cls, command: str | None = None) -> Holder:
        """This process, its command line as shown to whoever finds the lease held: enough to
        find the holder (host, pid, the command and its manifest), never a credential
        (`redact_argv`: `--journal postgresql://u:PASSWORD@...`, `--token X` are masked)."""

        shown = command or " ".join(redact_argv([os.path.basename(sys.argv[0]), *sys.argv[1:]]))
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()), excerpt(shown, COMMAND_CHARS))

    def handover(self) -> Holder:
        return Holder(self.host, None, None, self.command)

    def gone(self) -> bool:
        """True only when the holder is known dead: a process of this host that no longer runs."""
        if self.pid is None or self.host != socket.gethostname():
            return False
        import psutil

        try:
            return process_start(self.pid) != self.started
        except psutil.NoSuchProcess:
            return True
        except (psutil.Error, OSError, IndexError, ValueError):  # unreadable: not known dead
            return False

    def describe(self) -> str:
        where = f"pid {self.pid} on {self.host}" if self.pid is not None else f"a handover from {self.host}"
        # Redacted again: a lease row written before commands were redacted, or by another version.
        return f"{where} ({redact(self.command)})" if self.command else where


@dataclass(frozen=True)
class Lease:
    experiment_id: str
    owner: str
    holder: Holder
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime

    def expired(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) >= self.expires_at

    def free(self) -> bool:
        """Whether another run may take it over now."""
        return self.expired() or self.holder.gone()

    def describe(self) -> str:
        age = (utcnow() - self.heartbeat_at).total_seconds()
        return f"{self.holder.describe()}, last heartbeat {age:.1f} s ago"


def new_owner() -> str:
    return uuid.uuid4().hex


def read(conn: Connection, experiment_id: str) -> Lease | None:
    row = conn.execute(select(leases_t).where(leases_t.c.experiment_id == experiment_id)).one_or_none()
    if row is None:
        return None
    return Lease(row.experiment_id, row.owner, Holder(**row.holder), row.acquired_at, row.heartbeat_at,
                 row.expires_at)


def acquire(conn: Connection, experiment_id: str, owner: str, holder: Holder, ttl: float) -> Lease:
    """Take the lease (in the caller's write transaction): free, expired, held by a dead process
    of this host, or already ours (a handover). LeaseHeld otherwise."""
    current = read(conn, experiment_id)
    if current is not None and current.owner != owner and not current.free():
        raise LeaseHeld(current)
    now = utcnow()
    # A handover (same owner) keeps when the run first took the lease; a takeover starts anew.
    acquired = current.acquired_at if current is not None and current.owner == owner else now
    lease = Lease(experiment_id, owner, holder, acquired, now, now + timedelta(seconds=ttl))
    values = {"owner": owner, "holder": asdict(holder), "acquired_at": acquired, "heartbeat_at": now,
              "expires_at": lease.expires_at}
    if current is None:
        conn.execute(leases_t.insert().values(experiment_id=experiment_id, **values))
    else:
        if current.owner != owner:
            log.warning("taking over experiment %s from %s", experiment_id, current.describe())
        conn.execute(update(leases_t).where(leases_t.c.experiment_id == experiment_id).values(**values))
    return lease


def renew(conn: Connection, experiment_id: str, owner: str, ttl: float) -> None:
    now = utcnow()
    done = conn.execute(update(leases_t).where(leases_t.c.experiment_id == experiment_id, leases_t.c.owner == owner)
                        .values(heartbeat_at=now, expires_at=now + timedelta(seconds=ttl)))
    if done.rowcount != 1:
        held = read(conn, experiment_id)
        raise LeaseLost(f"lost the lease of experiment {experiment_id}"
                        + (f" to {held.describe()}" if held else " (it was released)"))


def release(conn: Connection, experiment_id: str, owner: str) -> bool:
    done = conn.execute(delete(leases_t).where(leases_t.c.experiment_id == experiment_id, leases_t.c.owner == owner))
    return done.rowcount == 1


@dataclass(frozen=True)
class Fence:
    """What a fenced journal checks before each write: `owner` holds `experiment_id`'s lease and
    `holder` (the process whose death ends the run) has not died."""

    experiment_id: str
    owner: str
    holder: Holder

    def check(self, conn: Connection) -> None:
        if self.holder.gone():
            raise LeaseLost(f"experiment {self.experiment_id}: its owner {self.holder.describe()} is gone; "
                            f"not writing")
        current = read(conn, self.experiment_id)
        if current is None or current.owner != self.owner:
            raise LeaseLost(f"experiment {self.experiment_id} is no longer owned by this run"
                            + (f" but by {current.describe()}" if current else " (its lease was released)"))


class LeaseKeeper:
    """A daemon thread renewing a held lease every heartbeat. A failed renewal of a lost lease
    stops it and sets `lost` (with the reason). A journal that cannot be used any more (its file
    deleted, replaced or read-only, or unreachable past the outage bound: JournalUnavailable,
    which `renew_once` raises) stops it and sets `failed`; any other fault is retried at the next
    beat."""

    def __init__(self, renew_once: Callable[[], None], interval: float, describe: str = ""):
        self._renew, self.interval, self.describe = renew_once, interval, describe
        self.lost: str | None = None
        self.failed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{describe}", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._renew()
            except LeaseLost as exc:
                self.lost = str(exc)
                log.error("%s", exc)
                return
            except JournalUnavailable as exc:  # said once, by whoever stops the run
                self.failed = str(exc)
                return
            except Exception as exc:  # noqa: BLE001 - an outage: the lease has its TTL to ride it out
                log.warning("renewing the lease of %s failed (retrying): %s", self.describe, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)


def wait_free(read_lease: Callable[[], Lease | None], poll_s: float,
              on_wait: Callable[[Lease], None] | None = None) -> None:
    """Block until no live owner holds the lease (`orch run --wait`); `on_wait` hears the owner once."""
    told = False
    while True:
        lease = read_lease()
        if lease is None or lease.free():
            return
        if on_wait is not None and not told:
            on_wait(lease)
            told = True
        time.sleep(poll_s)
