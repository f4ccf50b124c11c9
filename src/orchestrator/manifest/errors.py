"""Manifest errors that point at the file, the dotted field path and the YAML line."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ManifestIssue:
    file: str
    path: str  # dotted field path, "" for the document itself
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"

    def as_dict(self) -> dict:
        return {"file": self.file, "path": self.path, "line": self.line, "message": self.message}


class ManifestError(Exception):
    """One or more problems with a manifest; all of them, not just the first."""

    def __init__(self, issues: list[ManifestIssue]):
        self.issues = sorted(issues, key=lambda i: (i.line or 0, i.path))
        super().__init__("\n".join(str(i) for i in self.issues))
