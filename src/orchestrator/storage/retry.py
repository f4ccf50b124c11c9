"""Retry with capped exponential backoff and jitter, for transient faults only.

Backends translate their SDK's exceptions into TransientStorageError (or leave builtin
ConnectionError/TimeoutError) before they reach here, so the decision "is this worth
another try" is made once, in one place, and tests can drive it with a fake clock.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from orchestrator.storage.base import TransientStorageError
from orchestrator.telemetry import current as telemetry

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8  # including the first
    base_delay: float = 0.25  # seconds before the 2nd attempt, doubled each time
    max_delay: float = 8.0  # cap on one sleep
    max_total: float = 60.0  # no new attempt starts after this many seconds
    jitter: float = 0.5  # each sleep is drawn from [delay*(1-jitter), delay]

    def delay(self, retry_number: int, rng: Callable[[], float] = random.random) -> float:
        """Sleep before retry `retry_number` (1 = the first retry)."""
        d = min(self.max_delay, self.base_delay * (2 ** (retry_number - 1)))
        return d * (1.0 - self.jitter * rng())


NO_RETRY = RetryPolicy(max_attempts=1)
# How long a remote store may be gone before a call gives up: a trial waits out an outage shorter
# than this (uploads and reads back off and carry on) and fails, naming the store, after it.
OUTAGE_ENV = "ORCH_BLOB_OUTAGE_S"
DEFAULT_OUTAGE_S = 300.0
# What proves a location before a run: a few quick tries, so a wrong URI fails in seconds.
PREFLIGHT = RetryPolicy(max_attempts=3, base_delay=0.25, max_delay=1.0, max_total=10.0)


def outage_policy() -> RetryPolicy:
    """The default for remote stores: back off (capped at 8 s) for up to $ORCH_BLOB_OUTAGE_S."""
    import os

    raw = os.environ.get(OUTAGE_ENV)
    try:
        budget = float(raw) if raw else DEFAULT_OUTAGE_S
    except ValueError:
        raise ValueError(f"{OUTAGE_ENV}={raw!r} is not a number of seconds") from None
    return RetryPolicy(max_attempts=1_000_000, max_total=budget)


def is_transient(exc: BaseException) -> bool:
    # ConnectionError covers refused/reset/aborted; TimeoutError covers socket timeouts.
    return isinstance(exc, (TransientStorageError, ConnectionError, TimeoutError))


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str = "storage call",
    transient: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> T:
    """Call `fn` until it succeeds, raises a non-transient error, or the policy runs out.

    The last transient error is re-raised unchanged when attempts or time are exhausted.
    """
    start = clock()
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            if not transient(exc) or attempt >= policy.max_attempts:
                raise
            pause = policy.delay(attempt, rng)
            if clock() - start + pause > policy.max_total:
                raise
            log.warning("%s failed (attempt %d/%d), retrying in %.2fs: %s",
                        what, attempt, policy.max_attempts, pause, exc)
            telemetry().blob_retry()
            sleep(pause)
            attempt += 1
