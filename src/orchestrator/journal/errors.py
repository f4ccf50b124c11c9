"""Errors raised by the journal. All derive from JournalError so callers can catch one type."""

from __future__ import annotations


class JournalError(Exception):
    """Base class of every error the journal raises on purpose."""


class JournalLocationError(JournalError, ValueError):
    """The journal's URL names nothing usable: no such SQLite file (where one must exist), a
    missing folder, database or role, a read-only file. Bad input (exit 2), unlike an
    unreachable server (a plain JournalError: exit 1)."""


class InvalidEvent(JournalError, ValueError):
    """An event or record is malformed: unknown kind, wrong scope, missing payload field, non-JSON data."""


class JournalConflict(JournalError):
    """An idempotency key (or a registration, or a checkpoint step) was reused with different content."""


class IllegalTransition(JournalError):
    """The event's kind is not allowed from the entity's current status (e.g. done -> running)."""


class UnknownExperiment(JournalError, LookupError):
    """No experiment with that id is registered."""


class UnknownTrial(JournalError, LookupError):
    """No trial with that id is registered (in that experiment)."""


class AmbiguousTrial(JournalError, LookupError):
    """A trial id is registered in several experiments and no experiment id was given."""


class SchemaError(JournalError):
    """The database schema cannot be brought to this code's migration head."""
