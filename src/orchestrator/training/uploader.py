"""Checkpoint uploads behind the training steps.

The state is encoded in the training thread at the step boundary (a snapshot: later steps may
change the weights), then one background thread stores it while the next steps train. At most
one upload is in flight: the next checkpoint waits for the previous one, which bounds memory to
one encoded checkpoint and keeps markers in step order. A checkpoint is reported only once it
has landed, so the journal never records one the store does not have. An upload that failed
(after the store's own retries) is retried once from the training thread; a second failure
fails the run loudly. Nothing is dropped.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .checkpoint import CheckpointRef

log = logging.getLogger(__name__)


class CheckpointUploader:
    def __init__(self, write: Callable[[int, bytes], CheckpointRef], background: bool = True):
        self._write, self.background = write, background
        self._thread: threading.Thread | None = None
        self._pending: tuple[int, bytes] | None = None
        self._error: BaseException | None = None
        self._landed: list[CheckpointRef] = []
        self._lock = threading.Lock()

    def submit(self, step: int, data: bytes) -> None:
        """Store checkpoint `step` (encoded), in the background unless `background` is off."""
        self.wait()
        if not self.background:
            self._landed.append(self._write(step, data))
            return
        self._pending = (step, data)
        self._thread = threading.Thread(target=self._upload, args=(step, data), name=f"ckpt-upload-{step}",
                                        daemon=True)
        self._thread.start()

    def _upload(self, step: int, data: bytes) -> None:
        try:
            ref = self._write(step, data)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread by wait()
            self._error = exc
            return
        with self._lock:
            self._landed.append(ref)

    def wait(self) -> None:
        """Block until no upload is in flight; retry a failed one here (raising if it fails again)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            step, data = self._pending
            log.warning("checkpoint upload of step %d failed (%s); retrying", step, self._error)
            self._error = None
            self._landed.append(self._write(step, data))
        self._pending = None

    def adopt(self, ref: CheckpointRef) -> None:
        """Report `ref` again with the next landed(): the checkpoint a run resumed from may have
        landed in a process killed before the journal heard of it (journaling it is idempotent)."""
        with self._lock:
            self._landed.insert(0, ref)

    def landed(self) -> list[CheckpointRef]:
        """Checkpoints stored since the last call, oldest first."""
        with self._lock:
            out, self._landed = self._landed, []
        return out

    def flush(self) -> list[CheckpointRef]:
        """Wait for the upload in flight; every checkpoint landed since the last call."""
        self.wait()
        return self.landed()
