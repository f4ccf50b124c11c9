"""SIGTERM / SIGINT during `orch run` / `orch resume`: trainers checkpoint, Ray shuts down, and
the caller learns why it stopped (Preempted, which the CLI turns into exit 128 + signal).
"""
from __future__ import annotations

import signal
import time
from typing import Any, Protocol


class Preempted(Exception):
    """`orch run` / `resume` stopped by SIGTERM or SIGINT: trainers checkpointed, Ray shut down."""

    def __init__(self, signum: int, experiment_id: str, clean: bool):
        self.signum, self.experiment_id, self.clean = signum, experiment_id, clean
        super().__init__(f"preempted by {signal.Signals(signum).name}: "
                         + ("every running trial checkpointed" if clean else "the grace period ran out")
                         + f"; `orch resume {experiment_id}` continues")


class Preemptible(Protocol):
    def preempt(self) -> None: ...


class Preemption:
    """SIGTERM / SIGINT while a sweep runs: remembered by the handler, acted on by the waiting
    loop (no Ray call inside a signal handler), with a grace period for trainers to checkpoint."""

    def __init__(self, grace_s: float):
        self.grace_s, self.signum, self.at, self.sent = grace_s, None, None, False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Preemption:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()

    def tick(self, sweep: Preemptible) -> bool:
        """Forward a pending signal to the sweep; True once the grace period is over."""
        if self.signum is None:
            return False
        if not self.sent:
            sweep.preempt()
            self.sent = True
        return time.monotonic() - self.at > self.grace_s
