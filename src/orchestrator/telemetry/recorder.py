"""The hooks the ML core, the journal and the blob store report through, and the no-op default.

The core never knows where metrics go (and never imports Ray or prometheus-client): it calls
`current().train_step(...)`. Processes that export metrics (the actors) install a sink first;
everywhere else, `orch train` included, the default `Recorder` drops everything.
"""
from __future__ import annotations

from collections.abc import Mapping


class Recorder:
    """Does nothing; a sink overrides the hooks it exports. `enabled` lets a caller skip work
    (timing, a device query) whose only use is a metric."""

    enabled = False

    # trainer (labels bound with `bind`)
    def bind(self, **labels: str) -> None: ...
    def train_step(self, *, seconds: float, data_wait_s: float, samples: int) -> None: ...
    def train_state(self, *, loss: float, lr: float, grad_norm: float | None, samples_per_s: float,
                    cuda: tuple[int, int, float | None] | None = None) -> None: ...
    def train_active(self, active: bool) -> None: ...
    def checkpoint_saved(self, *, seconds: float, nbytes: int) -> None: ...
    def checkpoint_failed(self) -> None: ...
    def trainer_restarted(self) -> None: ...

    # evaluator
    def evaluated(self, *, experiment: str, trial: str, weights: str, suite: str, seconds: float | None,
                  metrics: Mapping[str, float]) -> None: ...  # seconds None: values only (no run timed)
    def eval_failed(self, *, experiment: str) -> None: ...

    # coordinator
    def sweep(self, *, experiment: str, total: int, by_state: Mapping[str, int], queued: int) -> None: ...
    def trial_event(self, *, experiment: str, event: str) -> None: ...  # start | finish | failure | retry | stop

    # journal and blob store
    def journal_appended(self, *, backend: str, events: int, seconds: float) -> None: ...
    def blob_transfer(self, *, backend: str, op: str, nbytes: int) -> None: ...  # op: put | read
    def blob_retry(self) -> None: ...
    def blob_integrity_error(self) -> None: ...


_current: Recorder = Recorder()


def current() -> Recorder:
    return _current


def install(recorder: Recorder) -> Recorder:
    """Make `recorder` the process's sink; returns the one it replaces."""
    global _current
    previous, _current = _current, recorder
    return previous
