"""Group commit: the appends that threads of one process make at the same time share one
transaction, so one commit (one flush to disk) acknowledges them all.

A coordinator appends from many threads at once (its trainers' reports, its evaluator, its
early-stopping decisions), and each append alone costs a transaction, most of it client CPU and a
flush. Here the first caller to find no commit under way leads: it takes every batch queued so
far, hands them to `commit` (one transaction), gives each caller its own outcome, then passes the
lead to the oldest caller still waiting. Callers that arrive while a commit runs wait and go in
the next one, so groups grow with the load and nobody waits on a timer.

Every caller is answered only after the transaction that holds its events has committed (or with
the exception that ended it): an acknowledged event is durable. What `commit` returns per batch
is either that batch's results or the exception that refused that batch alone; an exception
raised by `commit` itself refused the whole group and reaches every caller in it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .events import Event

# The most events one transaction takes: enough to amortise a flush, few enough that a group's
# transaction stays short (callers past it go in the next group).
MAX_GROUP_EVENTS = 2000

Outcome = list[bool] | BaseException
Commit = Callable[[Sequence[Sequence[Event]]], list[Outcome]]


@dataclass(eq=False)
class _Request:
    batch: Sequence[Event]
    ready: threading.Event = field(default_factory=threading.Event)  # an outcome, or the lead
    outcome: Outcome | None = None


class GroupCommit:
    """Thread-safe. One per Journal: a group holds batches of one fence only."""

    def __init__(self, commit: Commit, max_events: int = MAX_GROUP_EVENTS) -> None:
        self._commit, self._max_events = commit, max_events
        self._mutex = threading.Lock()
        self._queue: deque[_Request] = deque()
        self._leading = False

    def append(self, batch: Sequence[Event]) -> list[bool]:
        """Per event of `batch`, whether it was stored (False: a duplicate); raises what refused it."""
        request = _Request(batch)
        with self._mutex:
            self._queue.append(request)
            lead = not self._leading
            self._leading = True
        if not lead:
            request.ready.wait()
            if request.outcome is not None:
                return _answer(request.outcome)
            # Woken by `_pass_lead` without an outcome: this caller leads the next group.
        try:
            while request.outcome is None:  # our own batch may not fit the first group
                self._run_one_group()
        finally:
            self._pass_lead()
        return _answer(request.outcome)

    def _run_one_group(self) -> None:
        with self._mutex:
            group, size = [], 0
            while self._queue and (not group or size + len(self._queue[0].batch) <= self._max_events):
                size += len(self._queue[0].batch)
                group.append(self._queue.popleft())
        try:
            outcomes = self._commit([r.batch for r in group])
        except BaseException as exc:  # the whole group was refused: everyone in it hears why
            outcomes = [exc] * len(group)
        for request, outcome in zip(group, outcomes, strict=True):
            request.outcome = outcome
            request.ready.set()

    def _pass_lead(self) -> None:
        with self._mutex:
            if self._queue:
                self._queue[0].ready.set()
            else:
                self._leading = False


def _answer(outcome: Outcome) -> list[bool]:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
