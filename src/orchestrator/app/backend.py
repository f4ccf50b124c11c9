"""Where `orch submit/status/results/cancel` send their request: one interface, two places.

`Backend` is what the commands call. `LocalBackend` reads and writes a journal on this machine
(and submits to a Ray cluster by address); the HTTP implementation is the head's client,
`orchestrator.api.client.Head`. The CLI picks one, once, from `--api` / `--journal` / `--address`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .defaults import default_journal


@dataclass(frozen=True)
class SubmitOutcome:
    experiment_id: str
    follow: str                  # the command that follows the experiment from here
    created: bool | None = None  # this submission registered it (None: not told)
    trials: int | None = None    # how many trials it has (None: not told)


class Backend(Protocol):
    def submit(self, manifest: Path) -> SubmitOutcome:
        """Hand the manifest over; a bad one raises ManifestError listing its issues."""

    def status(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        """Every experiment, or one with its trials (app.queries.status' records)."""

    def results(self, experiment_id: str, fmt: str, metrics: str | None = None, paired: str | None = None) -> str:
        """The results table rendered; `metrics`: comma-separated globs of metric columns."""

    def cancel(self, experiment_id: str) -> dict[str, int]:
        """Cancel the experiment; its trial counts by status afterwards."""

    def quotas(self) -> list[dict[str, Any]]:
        """Per tenant on the cluster: quota, priority, what its running trials hold, what waits."""


class LocalBackend:
    """A journal on this machine (`--journal`, else the default journal); `submit` starts a detached
    coordinator on the Ray cluster at `address`, journaling into the manifest's journal (or `journal`).

    The journal and Ray are imported when a method first needs them: choosing a backend (and
    `orch --help`) stays quick."""

    def __init__(self, journal: str | None = None, address: str | None = None):
        self.journal, self.address = journal, address

    @property
    def journal_url(self) -> str:
        return self.journal or default_journal()

    def submit(self, manifest: Path) -> SubmitOutcome:
        from .submission import submit

        if self.address is None:
            raise ValueError("submitting needs a Ray cluster's address")
        eid = submit(manifest, self.address, journal_url=self.journal)
        return SubmitOutcome(eid, follow=f"orch status {eid}")

    def status(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        from .queries import status

        return status(self.journal_url, experiment_id)

    def results(self, experiment_id: str, fmt: str, metrics: str | None = None, paired: str | None = None) -> str:
        from .queries import results

        patterns = [p.strip() for p in metrics.split(",") if p.strip()] if metrics else None
        return results(self.journal_url, experiment_id, fmt, patterns, paired=paired)

    def cancel(self, experiment_id: str) -> dict[str, int]:
        from .queries import cancel

        return cancel(self.journal_url, experiment_id)

    def quotas(self) -> list[dict[str, Any]]:
        from .quotas import quota_table

        if self.address is None:
            raise ValueError("the quota table is kept on the Ray cluster: give its --address, or the head's --api")
        return quota_table(self.address)
