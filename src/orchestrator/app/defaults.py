"""Where orch looks when not told: the one home of the default journal."""
from __future__ import annotations

import os

JOURNAL_ENV = "ORCH_JOURNAL"
FALLBACK_JOURNAL = "sqlite:///runs/journal.db"  # relative to the working directory


def default_journal() -> str:
    """$ORCH_JOURNAL, else runs/journal.db under the working directory (read at each call)."""
    return os.environ.get(JOURNAL_ENV, FALLBACK_JOURNAL)
