"""Errors for malformed benchmark files, and the report of what `on_error: skip` left out.

A loader either raises `DataFormatError` (file + line + what is wrong) or, when the user asked
for ``on_error: skip``, records the same error in a `SkipReport`: counted by reason, with the
first few messages kept as examples, and logged when the loader finishes. Nothing is dropped
without a trace.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal

# `quote` for input data a message shows (a short, escaped, redacted repr); `excerpt` bounds the whole message.
from orchestrator.journal.redact import excerpt, quote

__all__ = ["DataFormatError", "ErrorPolicy", "OnError", "SkipReport", "quote"]

OnError = Literal["raise", "skip"]
log = logging.getLogger("orchestrator.data")


class DataFormatError(ValueError):
    """A benchmark file does not have the expected layout.

    `line` is a 1-based line number (None where the format has no lines, e.g. a pickle);
    `unit` names what the number counts when it is not a text line ("row" for parquet,
    "item" for a pickled list).
    """

    def __init__(self, file: str | os.PathLike[str], line: int | None, message: str, *,
                 unit: str = "line", entry: str | None = None) -> None:
        self.file = str(file)
        self.line = line
        # A backstop for messages that carry a library's text about the data (a YAML error quotes
        # the line it failed on): bounded, escaped and redacted like every error shown.
        self.message = message = excerpt(message)
        self.unit = unit
        self.entry = entry  # which entry of a JSON file, e.g. "entry 12, byte 3456" (one-line files)
        if line is None:
            where = self.file
        elif unit == "line":
            where = f"{self.file}:{line}"
        else:
            where = f"{self.file}, {unit} {line}"
        if entry:
            where = f"{where} ({entry})"
        super().__init__(f"{where}: {message}")

    def in_entry(self, entry: str) -> "DataFormatError":
        """The same error, placed in an entry of a JSON file: a line alone says nothing in a file
        written on one line (GQA, VQAv2, COCO and VL-CheckList ship such files)."""
        return self if self.entry else DataFormatError(self.file, self.line, self.message, unit=self.unit,
                                                       entry=entry)


@dataclass
class SkipReport:
    """Skipped records counted by reason, with up to `keep` example messages per reason."""

    keep: int = 3
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, error: DataFormatError | str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < self.keep:
            kept.append(str(error))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def merge(self, other: "SkipReport") -> None:
        for reason, n in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
            kept = self.examples.setdefault(reason, [])
            kept.extend(other.examples.get(reason, [])[: max(0, self.keep - len(kept))])

    def summary(self) -> str:
        if not self.counts:
            return "nothing skipped"
        parts = [f"{n} {reason}" for reason, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        first = next(iter(self.examples[r][0] for r in sorted(self.examples) if self.examples[r]), "")
        return f"skipped {self.total} record(s): {', '.join(parts)}" + (f" (first: {first})" if first else "")

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "counts": dict(sorted(self.counts.items())),
                "examples": {k: list(v) for k, v in sorted(self.examples.items())}}

    @classmethod
    def from_dict(cls, d: dict[str, Any], keep: int = 3) -> "SkipReport":
        r = cls(keep=keep)
        r.counts = {str(k): int(v) for k, v in (d.get("counts") or {}).items()}
        r.examples = {str(k): [str(x) for x in v] for k, v in (d.get("examples") or {}).items()}
        return r


class ErrorPolicy:
    """Raise, or count and keep going: the one place a loader's `on_error` is applied."""

    def __init__(self, on_error: OnError = "raise", report: SkipReport | None = None) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        self.on_error = on_error
        self.report = report if report is not None else SkipReport()

    def __call__(self, reason: str, error: DataFormatError) -> None:
        """Handle one bad record: raises in 'raise' mode, records the skip otherwise."""
        if self.on_error == "raise":
            raise error
        self.report.add(reason, error)

    def finish(self, what: str) -> None:
        if self.report:
            log.warning("%s: %s", what, self.report.summary())
