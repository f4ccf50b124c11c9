"""Event kinds and the Event value stored in the journal.

An event belongs to an experiment; it is a trial event when `trial_id` is set and an experiment
event otherwise. Its idempotency key makes re-appending after a crash or a retried RPC harmless:
the journal stores the first event under a key and treats an identical re-append as a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .errors import InvalidEvent
from .redact import bound_payload


class EventKind(StrEnum):
    # experiment events
    SUBMITTED = "submitted"
    RESUMED = "resumed"
    # trial events
    QUEUED = "queued"
    RUNNING = "running"
    CHECKPOINTED = "checkpointed"
    EVALUATING = "evaluating"
    EVALUATED = "evaluated"
    FAILED = "failed"
    WARNED = "warned"  # a fallback the runtime took (a damaged checkpoint skipped, a restart from 0)
    PREEMPTED = "preempted"  # stopped on request at a checkpointed step; `orch resume` continues it
    STEP_METRICS = "step_metrics"  # loss and learning rate of a run of steps (report curves)
    PLACED = "placed"  # where a trainer process runs: node, assigned GPUs, device (each start and restart)
    RUNG = "rung"  # an early-stopping decision to go on past a rung (sweep.early_stop): the values compared
    STOPPED = "stopped"  # ended by early stopping at a rung (the decision's values); keeps its checkpoints
    # both scopes
    CANCELLED = "cancelled"
    DONE = "done"


EXPERIMENT_KINDS: frozenset[EventKind] = frozenset(
    {EventKind.SUBMITTED, EventKind.RESUMED, EventKind.CANCELLED, EventKind.DONE}
)
TRIAL_KINDS: frozenset[EventKind] = frozenset(
    {
        EventKind.QUEUED,
        EventKind.RUNNING,
        EventKind.CHECKPOINTED,
        EventKind.EVALUATING,
        EventKind.EVALUATED,
        EventKind.FAILED,
        EventKind.WARNED,
        EventKind.PREEMPTED,
        EventKind.STEP_METRICS,
        EventKind.PLACED,
        EventKind.RUNG,
        EventKind.STOPPED,
        EventKind.CANCELLED,
        EventKind.DONE,
    }
)

MAX_KEY_LENGTH = 255
MAX_ID_LENGTH = 64


def canonical_json(value: Any, what: str) -> Any:
    """Round-trip `value` through strict JSON so that what we compare is what the database returns.

    NaN/inf are refused because PostgreSQL's json type rejects them; tuples become lists.
    """
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"{what} is not strict JSON (use None or a string for NaN/inf): {exc}") from exc
    return json.loads(text)


def _require_int(payload: Mapping[str, Any], name: str, kind: str) -> None:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidEvent(f"a '{kind}' event needs payload['{name}'] as a non-negative int, got {value!r}")


def _validate_payload(kind: EventKind, payload: Mapping[str, Any]) -> None:
    if kind in (EventKind.CHECKPOINTED, EventKind.EVALUATED):
        _require_int(payload, "step", kind)
    if kind is EventKind.EVALUATED:
        metrics = payload.get("metrics")
        if not isinstance(metrics, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()
        ):
            raise InvalidEvent(f"an 'evaluated' event needs payload['metrics'] as {{name: number}}, got {metrics!r}")
    if kind is EventKind.FAILED:
        if not isinstance(payload.get("error"), str):
            raise InvalidEvent("a 'failed' event needs payload['error'] as a string (and 'traceback' if any)")
        if not isinstance(payload.get("traceback"), (str, type(None))):
            raise InvalidEvent("a 'failed' event's payload['traceback'] must be a string or None")


def check_id(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(f"{what} must be a non-empty string of at most {MAX_ID_LENGTH} chars, got {value!r}")


@dataclass(frozen=True, slots=True)
class Event:
    """One journal entry. `seq` and `created_at` are set by the journal when it is stored."""

    experiment_id: str
    kind: EventKind
    idempotency_key: str
    trial_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        check_id(self.experiment_id, "experiment_id")
        if self.trial_id is not None:
            check_id(self.trial_id, "trial_id")
        try:
            kind = EventKind(self.kind)
        except ValueError:
            raise InvalidEvent(
                f"unknown event kind {self.kind!r}; known kinds: {', '.join(k.value for k in EventKind)}"
            ) from None
        scope, allowed = ("trial", TRIAL_KINDS) if self.trial_id is not None else ("experiment", EXPERIMENT_KINDS)
        if kind not in allowed:
            raise InvalidEvent(
                f"{kind.value!r} is not a kind of {scope} event; {scope} kinds: {', '.join(sorted(allowed))}"
            )
        key = self.idempotency_key
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise InvalidEvent(f"idempotency_key must be a non-empty string of at most {MAX_KEY_LENGTH} chars")
        if not isinstance(self.payload, Mapping):
            raise InvalidEvent(f"payload must be a mapping, got {type(self.payload).__name__}")
        # Every journaled error is bounded and redacted here, the one door events come through:
        # events are returned by the API and its stream and printed by the CLI (redact.py).
        payload = bound_payload(canonical_json(dict(self.payload), f"payload of event {key!r}"))
        _validate_payload(kind, payload)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "payload", payload)

    @classmethod
    def for_trial(
        cls, experiment_id: str, trial_id: str, kind: EventKind | str, key: str, **payload: Any
    ) -> Event:
        return cls(experiment_id, kind, key, trial_id, payload)  # type: ignore[arg-type]

    @classmethod
    def for_experiment(cls, experiment_id: str, kind: EventKind | str, key: str, **payload: Any) -> Event:
        return cls(experiment_id, kind, key, None, payload)  # type: ignore[arg-type]

    def content(self) -> tuple[str, str | None, str, dict[str, Any]]:
        """What must match for a re-append under the same key to count as a duplicate."""
        return (self.experiment_id, self.trial_id, self.kind.value, self.payload)

    def describe(self, with_key: bool = True) -> str:
        where = f"trial {self.trial_id} of experiment {self.experiment_id}" if self.trial_id else (
            f"experiment {self.experiment_id}"
        )
        text = f"'{self.kind.value}' event for {where}"
        return f"{text} (key {self.idempotency_key!r})" if with_key else text

