"""A checked, expanded manifest as data: what the journal records and what every process receives.

Once a manifest is checked and its sweep expanded, nothing reads the file again. The sweep
travels as its base manifest plus each trial's id and swept values (`SweepRecord`, small
whatever the trial count); one trial travels as its own manifest (`ResolvedTrial`). Both carry
the folder relative paths were written against, so a worker on another node opens what the
submitter's node would have, and an edited or deleted file cannot change a running experiment.
Trial ids are read back as recorded, never recomputed: a journal written before a change to
the id rule still resumes.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schema import Manifest
from .sweep import Trial, set_dotted

FORMAT = 1  # bumped if the shape below changes; a reader refuses a format it does not know


def _context(base_dir: Path | None) -> dict:
    # Validated before it was recorded: files are not probed again (they may live on another node).
    return {"base_dir": base_dir, "check_files": False}


def _base_dir(doc: Mapping, what: str) -> Path | None:
    if doc.get("format") != FORMAT:
        raise ValueError(f"{what}: record format {doc.get('format')!r}, this version reads format {FORMAT}")
    return Path(doc["base_dir"]) if doc.get("base_dir") else None


@dataclass(frozen=True)
class ResolvedTrial:
    """One trial by value: its id, its own manifest (its sweep point applied), and the folder the
    relative paths in it are read from."""
    id: str
    manifest: Manifest = field(repr=False)
    base_dir: Path | None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "id": self.id, "base_dir": None if self.base_dir is None else str(self.base_dir),
                "manifest": self.manifest.model_dump(mode="json")}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ResolvedTrial:
        base_dir = _base_dir(doc, f"trial {doc.get('id')!r}")
        return cls(doc["id"], Manifest.model_validate(doc["manifest"], context=_context(base_dir)), base_dir)


@dataclass(frozen=True)
class SweepRecord:
    """A sweep by value: the checked manifest and, in plan order, each trial's id and swept values."""
    manifest: Manifest = field(repr=False)
    trials: list[Trial] = field(repr=False)
    base_dir: Path | None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "base_dir": None if self.base_dir is None else str(self.base_dir),
                "manifest": self.manifest.model_dump(mode="json"),
                "trials": [[t.id, t.overrides] for t in self.trials]}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SweepRecord:
        base_dir = _base_dir(doc, "sweep")
        context = _context(base_dir)
        manifest = Manifest.model_validate(doc["manifest"], context=context)
        base = manifest.model_dump(mode="json", exclude={"sweep"})
        trials = []
        for index, (tid, overrides) in enumerate(doc["trials"]):
            data = copy.deepcopy(base)
            for dotted, value in overrides.items():
                set_dotted(data, dotted, value)
            trials.append(Trial(tid, index, dict(overrides), Manifest.model_validate(data, context=context)))
        return cls(manifest, trials, base_dir)

    def trial(self, trial_id: str) -> ResolvedTrial:
        [t] = [t for t in self.trials if t.id == trial_id]
        return ResolvedTrial(t.id, t.manifest, self.base_dir)
