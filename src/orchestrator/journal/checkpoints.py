"""The checkpoint index record: where a trial's checkpoint for a step is stored, and its digest."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from .errors import InvalidEvent

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    trial_id: str
    step: int
    uri: str
    sha256: str
    size: int
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.trial_id, str) or not self.trial_id:
            raise InvalidEvent(f"checkpoint trial_id must be a non-empty string, got {self.trial_id!r}")
        for name in ("step", "size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidEvent(f"checkpoint {name} must be a non-negative int, got {value!r}")
        if not isinstance(self.uri, str) or not self.uri:
            raise InvalidEvent(f"checkpoint uri must be a non-empty string, got {self.uri!r}")
        sha = self.sha256.lower() if isinstance(self.sha256, str) else self.sha256
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise InvalidEvent(f"checkpoint sha256 must be 64 hex digits, got {self.sha256!r}")
        object.__setattr__(self, "sha256", sha)

    def content(self) -> tuple[str, str, int]:
        """What a re-record of the same (trial_id, step) must repeat to count as a duplicate."""
        return (self.uri, self.sha256, self.size)
