"""Engines for the journal: URL normalisation, SQLite pragmas and write-transaction locking.

Write transactions of one experiment are serialised on both backends, which is what makes the
append-time transition check race-free and keeps an experiment's `seq` order equal to its commit
order (a reader tailing one experiment with `after_seq` never skips an event that commits late
with a smaller seq):

- SQLite: WAL (readers never block the writer), a busy timeout, and `BEGIN IMMEDIATE` for writes,
  so a writer takes the database's write lock up front instead of failing with "database is
  locked" when it upgrades a read transaction. One writer at a time, whatever the experiment.
- PostgreSQL: transaction-scoped advisory locks, one per experiment the transaction writes (or
  the journal-wide key for a write that names none), taken first, in key order so that two
  transactions never wait on each other. Experiments are independent (a lifecycle check reads
  only its own experiment's events), so writers of different experiments commit concurrently
  and the server flushes their commits together: the journal's throughput grows with the
  experiments writing, not only with batch size (benchmarks/bench_journal.py).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError
from sqlalchemy.pool import StaticPool

from .errors import JournalError, JournalLocationError
from .retry import JournalRetry, JournalUnavailable, detail, is_cut, is_transient

SQLITE_BUSY_TIMEOUT_S = 60.0
_WRITE_OPTION = "journal_write"

# Advisory lock keys (any fixed 64-bit ints; scoped to one PostgreSQL database).
APPEND_LOCK_KEY = 0x6A6F75726E616C01  # "journal" + 1: writes that name no experiment
MIGRATE_LOCK_KEY = 0x6A6F75726E616C02


def experiment_lock_key(experiment_id: str) -> int:
    """The advisory lock key of one experiment's writes: 64 bits of a hash of its id (two ids
    that collide only share a lock)."""
    digest = hashlib.blake2b(experiment_id.encode(), digest_size=8, person=b"orch-journal").digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_keys(experiment_ids: Iterable[str]) -> tuple[int, ...]:
    """The keys a write transaction takes: one per experiment it writes, or the journal-wide key."""
    keys = sorted({experiment_lock_key(e) for e in experiment_ids})
    return tuple(keys) or (APPEND_LOCK_KEY,)


def normalize_url(url: str | URL) -> URL:
    """Parse a journal URL; a bare path means SQLite, `postgresql://` means psycopg 3."""
    if isinstance(url, URL):
        parsed = url  # not str(url): that would mask the password
    else:
        raw = url if "://" in url else f"sqlite:///{url}"
        try:
            parsed = make_url(raw)
        except ArgumentError as exc:
            raise JournalError(f"cannot parse journal URL {raw!r}: {exc}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise JournalError(f"journal URL {parsed!r}: only the psycopg driver is supported, not {driver!r}")
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise JournalError(f"journal URL {parsed!r}: only the standard sqlite3 driver is supported")
        return parsed
    raise JournalError(f"journal URL {parsed!r}: unsupported database {backend!r} (use sqlite or postgresql)")


def is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url)


def create_journal_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An Engine configured for the journal's locking rules (see module docstring)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "postgresql":
        # No pre-ping: a connection found dead fails its statement, and the journal's retry policy
        # runs the whole operation again on a new one (retry.py); a ping would cost every
        # transaction a round trip. No server-side prepared statements: a plan prepared while a
        # journal's tables were young (a scan of a small table) would outlive their growth.
        return create_engine(parsed, connect_args={"prepare_threshold": None}, **kwargs)
    return _create_sqlite_engine(parsed, **kwargs)


def _create_sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    if is_memory(url):
        # One shared connection, or each checkout would see its own empty database. Single-threaded use only.
        kwargs.setdefault("poolclass", StaticPool)
    elif not url.query.get("uri"):
        folder = Path(url.database).expanduser().parent  # type: ignore[arg-type]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the journal's folder {folder}: {exc}") from exc
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module so that we choose DEFERRED or IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            _enter_wal(cursor)
            # FULL: a committed event survives power loss too; the journal is the source of truth.
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _enter_wal(cursor: Any) -> None:
    """Switch the database to WAL, waiting out other writers. SQLite answers this pragma with
    "database is locked" at once, without its busy handler, while another connection of a
    rollback-journal database holds the write lock: what processes opening a fresh journal
    together meet. The mode is stored in the file, so once one of them has switched it, the
    others' pragma is a no-op."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


@contextmanager
def write_transaction(engine: Engine, keys: Iterable[int] = (APPEND_LOCK_KEY,)) -> Iterator[Connection]:
    """A transaction that holds the write locks `keys` (see `lock_keys`) from its first statement
    to commit; on SQLite, the database's one write lock."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                for key in sorted(set(keys)):  # one order for every transaction: no deadlock
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that sees one consistent snapshot across several queries."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def insert_for(conn: Connection) -> Callable[..., Any]:
    """The dialect's INSERT construct, which offers ON CONFLICT DO NOTHING on both backends."""
    return sqlite_insert if conn.dialect.name == "sqlite" else pg_insert


def location(url: str | URL) -> str:
    """Where a journal is, for a message: a SQLite file's absolute path, else the URL masked."""
    try:
        parsed = normalize_url(url)
    except JournalError:
        return "<unparseable URL>"
    if parsed.get_backend_name() == "sqlite" and not is_memory(parsed) and not parsed.query.get("uri"):
        return str(Path(parsed.database).expanduser().absolute())  # type: ignore[arg-type]
    return masked(parsed)


def masked(url: str | URL) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return normalize_url(url).render_as_string(hide_password=True)
    except JournalError:
        return "<unparseable URL>"


# What a PostgreSQL server or SQLite answers when the location itself is wrong (bad input, exit 2),
# as opposed to a server that cannot be reached (refused, timed out, DNS: exit 1).
_BAD_LOCATION = ("does not exist", "password authentication failed", "no password supplied",
                 "unable to open database file", "readonly database", "read-only")
# What SQLite says of a file that is not a database, or one damaged beyond reading.
_NOT_A_DATABASE = ("file is not a database", "disk image is malformed", "not a database")


def open_checked(url: str | URL, connect: Callable[[Engine], Any]) -> Engine:
    """The one place a journal engine is opened: `connect(engine)` (the schema upgrade) runs on a
    new engine, and whatever the database answers is turned into one line naming the journal
    (password masked): a file that is not a database, a wrong location (JournalLocationError,
    exit 2), an unreachable server (JournalError, exit 1). A connection cut while opening is
    retried within the outage bound."""
    engine = create_journal_engine(url)
    where = location(url)
    try:
        JournalRetry.from_env().run(lambda: connect(engine), where, "open the journal", transient=is_cut)
    except DatabaseError as exc:  # OperationalError included
        engine.dispose()
        raise _classified(where, exc) from None
    except BaseException:
        engine.dispose()
        raise
    return engine


def _classified(where: str, exc: DatabaseError) -> JournalError:
    said = " ".join(detail(exc).split())
    if any(s in said.lower() for s in _NOT_A_DATABASE):
        return JournalLocationError(f"{where} is not a journal: not a SQLite database, or a damaged one ({said})")
    if any(s in said for s in _BAD_LOCATION):
        return JournalLocationError(f"cannot open the journal at {where}: {said}")
    if isinstance(exc, OperationalError) or is_transient(exc):
        return JournalError(f"cannot reach the journal at {where}: {said}")
    return JournalError(f"cannot open the journal at {where}: {said}")


@dataclass(frozen=True)
class JournalFile:
    """A SQLite journal's file as it was opened: the same file (device and inode) must still be at
    its path, writable, for a run to go on writing. A file deleted or replaced under a run would
    take every later write with it (SQLite writes on into the unlinked inode), and a file turned
    read-only fails writes (or, for its shared-memory file, kills the process with SIGBUS)."""

    path: Path
    device: int
    inode: int

    @classmethod
    def of(cls, url: str | URL) -> JournalFile | None:
        """The file of a SQLite journal URL (None for PostgreSQL, in-memory and URI databases)."""
        parsed = normalize_url(url)
        if parsed.get_backend_name() != "sqlite" or is_memory(parsed) or parsed.query.get("uri"):
            return None
        path = Path(parsed.database).expanduser().absolute()  # type: ignore[arg-type]
        st = path.stat()
        return cls(path, st.st_dev, st.st_ino)

    def check(self) -> None:
        """JournalUnavailable (one line naming the file) unless the file is still the one opened
        and it, its WAL and shared-memory files are writable."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise JournalUnavailable(f"the journal {self.path} was deleted while in use; nothing more is "
                                     f"written to it") from None
        except OSError as exc:
            raise JournalUnavailable(f"the journal {self.path} cannot be reached: {exc.strerror or exc}") from None
        if (st.st_dev, st.st_ino) != (self.device, self.inode):
            raise JournalUnavailable(f"the journal {self.path} was replaced by another file while in use; "
                                     f"nothing more is written to it")
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            if path.exists() and not os.access(path, os.W_OK):
                raise JournalUnavailable(f"the journal {self.path} turned read-only while in use ({path.name} "
                                         f"is not writable); nothing more is written to it")
