"""The journal's one retry policy: transient database faults are retried with backoff until they
pass or a bound runs out, then JournalUnavailable (one line, naming the journal).

Transient: a connection the server terminated or that broke (SQLAlchemy marks it
`connection_invalidated`), a server that refuses or drops connections for a while (a restart, a
failover, too many clients), a serialisation failure or deadlock, SQLite's `database is locked` /
`busy`. Not transient: a wrong URL, a missing database or role, a read-only file, an integrity
error: those are raised at once, as they are.

Every journal operation is safe to run again whole: appends are deduplicated by idempotency key,
registrations and checkpoint rows are insert-if-absent, lease writes are set-to-value and a grade
names the revision it replaces. So a write whose COMMIT was cut off (it may or may not have
landed) is simply run again.
"""
from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from .errors import JournalError

log = logging.getLogger(__name__)
T = TypeVar("T")
BOUND_ENV = "ORCH_JOURNAL_OUTAGE_S"
DEFAULT_BOUND_S = 60.0
QUIET_S = 5.0  # a fault retried for less than this is not logged above debug

# What a server says while it (or the path to it) is down for a while; matched in the error text
# because psycopg and sqlite3 raise one OperationalError class for transient and permanent faults.
_TRANSIENT_TEXT = ("database is locked", "database is busy", "database table is locked",
                   "terminating connection", "server closed the connection", "connection refused",
                   "connection reset", "connection timed out", "could not connect", "no connection to the server",
                   "the database system is starting up", "the database system is shutting down",
                   "the database system is in recovery mode", "too many clients", "not currently accepting",
                   "consuming input failed", "ssl syscall", "broken pipe", "connection is closed",
                   "could not serialize access", "deadlock detected", "canceling statement due to conflict")
# What is never waited out: the location itself is wrong, or the database refuses writes.
_PERMANENT_TEXT = ("does not exist", "password authentication failed", "no password supplied",
                   "readonly database", "read-only", "permission denied", "unable to open database file",
                   "file is not a database", "disk image is malformed")
# An open connection cut by the server or the network, or SQLite's lock (see `is_cut`).
_CUT_TEXT = ("terminating connection", "server closed the connection", "connection reset", "consuming input failed",
             "ssl syscall", "broken pipe", "connection is closed", "database is locked", "database is busy")
_TRANSIENT_SQLSTATES = ("08", "57P", "40001", "40P01", "53300")  # connection, shutdown, serialisation, too many


class JournalUnavailable(JournalError):
    """The journal could not be reached (or used) for longer than the outage bound, or its file
    went away or turned read-only under a run: nothing more is written, the run stops."""


def outage_bound_s() -> float:
    """How long a journal outage is waited out ($ORCH_JOURNAL_OUTAGE_S, default 60 s)."""
    raw = os.environ.get(BOUND_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_BOUND_S
    except ValueError:
        raise JournalError(f"${BOUND_ENV} must be a number of seconds, not {raw!r}") from None
    if not value > 0:
        raise JournalError(f"${BOUND_ENV} must be a positive number of seconds, not {value}")
    return value


def detail(exc: BaseException) -> str:
    """The database's own message, on one line (not SQLAlchemy's SQL and parameters)."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip()]
    return lines[0] if lines else type(inner).__name__


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is a fault that retrying the whole operation may get past."""
    if not isinstance(exc, DBAPIError):
        return False
    text = " ".join(str(exc.orig or exc).split()).lower()
    if any(s in text for s in _PERMANENT_TEXT):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATES):
        return True
    return isinstance(exc, OperationalError) and any(s in text for s in _TRANSIENT_TEXT)


def is_cut(exc: BaseException) -> bool:
    """The narrower test used while opening a journal: a connection that was open and was cut, or
    SQLite's lock. A server that refuses to connect at all is then told at once (preflight's one
    line), not waited out; a run already under way waits it out (`is_transient`)."""
    if not isinstance(exc, DBAPIError) or not is_transient(exc):
        return False
    text = " ".join(str(exc.orig or exc).split()).lower()
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return (exc.connection_invalidated or (isinstance(sqlstate, str) and sqlstate.startswith("57P"))
            or any(s in text for s in _CUT_TEXT))


@dataclass(frozen=True)
class JournalRetry:
    """Exponential backoff with jitter from `first_s` to `max_s`, for at most `bound_s` seconds."""

    bound_s: float = DEFAULT_BOUND_S
    first_s: float = 0.05
    max_s: float = 2.0

    @classmethod
    def from_env(cls) -> JournalRetry:
        return cls(bound_s=outage_bound_s())

    def run(self, operation: Callable[[], T], where: str, what: str,
            transient: Callable[[BaseException], bool] = is_transient) -> T:
        """`operation()`, run again after each `transient` fault; JournalUnavailable naming `where`
        (the journal, password masked) once the faults have lasted `bound_s`."""
        started = time.monotonic()
        delay, tries, told = self.first_s, 0, False
        while True:
            try:
                return operation()
            except DBAPIError as exc:
                if not transient(exc):
                    raise
                tries += 1
                waited = time.monotonic() - started
                if waited >= self.bound_s:
                    raise JournalUnavailable(
                        f"the journal at {where} has been unreachable for {waited:.0f} s ({tries} tries to "
                        f"{what}; bound ${BOUND_ENV}={self.bound_s:g} s): {detail(exc)}") from exc
                # Quiet while it is a blip (a cut connection, retried at once); said once it lasts.
                if waited >= QUIET_S and not told:
                    told = True
                    log.warning("journal at %s: %s has failed for %.0f s (%s); retrying for up to %g s",
                                where, what, waited, detail(exc), self.bound_s)
                else:
                    log.debug("journal at %s: %s failed (%s); retrying", where, what, detail(exc))
                time.sleep(min(delay * (0.5 + random.random() / 2), self.bound_s - waited))  # a last try at the bound
                delay = min(delay * 2, self.max_s)
