"""An experiment's journal events as server-sent events (`orch status --follow`).

Each event is one SSE message: `id` its journal seq (a client reconnects with `after=` or the
`Last-Event-ID` header and loses nothing: the journal serialises writes, so no smaller seq can
commit after a larger one), `event` its kind, `data` the event as JSON. The stream ends once the
experiment is settled (done or cancelled, no trial running or evaluating) and every event is
sent (its last message is `event: end`), or after `max_s` seconds without `end` (the client
resumes from the last id); a comment line every
`keepalive_s` keeps proxies from closing a quiet stream.
"""
from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

import anyio

from orchestrator.journal import Event, ExperimentStatus, Journal, TrialStatus
from orchestrator.journal.redact import bound_payload

SETTLED = (ExperimentStatus.DONE, ExperimentStatus.CANCELLED)
BUSY = (TrialStatus.RUNNING, TrialStatus.EVALUATING)
END = "event: end\ndata: {\"settled\": true}\n\n"  # the last message of a settled experiment's stream


def event_json(e: Event) -> dict:
    return {"seq": e.seq, "experiment_id": e.experiment_id, "trial_id": e.trial_id, "kind": str(e.kind),
            "at": e.created_at.isoformat() if e.created_at else None,
            "payload": bound_payload(e.payload)}  # again: rows journaled before errors were bounded


def sse_message(e: Event) -> str:
    return f"id: {e.seq}\nevent: {e.kind}\ndata: {json.dumps(event_json(e), default=str)}\n\n"


def settled(journal: Journal, experiment_id: str) -> bool:
    state = journal.experiment_state(experiment_id)
    counts = state.counts()
    return state.status in SETTLED and not any(counts[s] for s in BUSY)


async def stream(journal: Journal, experiment_id: str, after: int | None, *, poll_s: float = 0.5,
                 max_s: float = 300.0, keepalive_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> AsyncIterator[str]:
    start = last_sent = clock()
    while True:
        # Read "settled" before the events: an event committed after this check is still sent below.
        done = await anyio.to_thread.run_sync(settled, journal, experiment_id)
        events = await anyio.to_thread.run_sync(  # awaited here: the lambda reads this iteration's `after`
            lambda: journal.events(experiment_id, after_seq=after, limit=500))  # noqa: B023
        for e in events:
            after = e.seq
            yield sse_message(e)
        if events:
            last_sent = clock()
            if len(events) == 500:
                continue  # more waiting: no sleep
        if done and not events:
            yield END
            return
        if clock() - start > max_s:
            return
        if clock() - last_sent > keepalive_s:
            last_sent = clock()
            yield ": keep-alive\n\n"
        await anyio.sleep(poll_s)
