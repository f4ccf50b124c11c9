"""Checkpoints in the blob store: serialise, write atomically, record the hash, find the newest good one.

Layout under a run's prefix:
    step-00000200.pt    torch.save of the state dict (model, EMA, optimiser, schedule, scaler, RNG, cursor)
    step-00000200.json  {"step", "key", "sha256", "size"}: written after the .pt, so it marks a
                        complete checkpoint and records the hash it must read back with.
The store's put is atomic and its get verifies sha256; the marker's hash is checked as well, so
a checkpoint replaced or truncated behind the store's back is skipped with a warning and the
next older one is used.

A checkpoint's bytes are a function of its state (`encode`): the same step trained twice, or
rewritten after a resume, has the hash the journal recorded the first time.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass

import torch

from orchestrator.models.common.serialize import from_bytes, to_bytes

log = logging.getLogger(__name__)

_MARKER = re.compile(r"step-(\d{8})\.json$")


def canonical(value):
    """`value` with every container rebuilt and every string interned, so pickling it depends on
    values only: pickle shares an object seen twice by identity, and identity differs between a
    fresh run (a literal such as "step" is one object everywhere) and a resumed one (each string
    read back from a checkpoint is its own). Tensors are kept as they are (torch.save numbers
    their storages in the order it meets them, the same in both)."""
    if isinstance(value, str):
        return sys.intern(str(value))
    if isinstance(value, OrderedDict):  # a module's state_dict: keep its `_metadata` (versions)
        out = OrderedDict((canonical(k), canonical(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            out._metadata = canonical(value._metadata)
        return out
    if isinstance(value, dict):
        return {canonical(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, tuple):
        return tuple(canonical(v) for v in value)
    return value


def encode(state: dict) -> bytes:
    """The bytes of a checkpoint: a function of `state`'s values alone (see `canonical`)."""
    return to_bytes(canonical(state))


@dataclass(frozen=True)
class CheckpointRef:
    step: int
    key: str
    sha256: str
    size: int


class CheckpointStore:
    def __init__(self, store, prefix: str, keep_last: int | None = 3):
        self.store = store
        self.prefix = prefix.rstrip("/")
        self.keep_last = keep_last
        self.skipped: list[tuple[CheckpointRef, str]] = []  # what load_latest passed over, and why

    def save(self, step: int, state: dict) -> CheckpointRef:
        return self.write(step, encode(state))

    def key(self, step: int) -> str:
        return f"{self.prefix}/step-{step:08d}.pt"

    def write(self, step: int, data: bytes) -> CheckpointRef:
        """Store an encoded checkpoint (`encode` of its state), then its marker, then prune."""
        key = self.key(step)
        info = self.store.put(key, data)
        ref = CheckpointRef(step, key, info.sha256, info.size)
        self.store.put(f"{self.prefix}/step-{step:08d}.json",
                       json.dumps(ref.__dict__, sort_keys=True).encode())
        self._prune()
        return ref

    def refs(self) -> list[CheckpointRef]:
        """Recorded checkpoints, newest first (markers that cannot be read are skipped)."""
        out = []
        for key in self.store.list(self.prefix + "/"):
            if not _MARKER.search(key):
                continue
            try:
                out.append(CheckpointRef(**json.loads(self.store.get(key))))
            except Exception as exc:  # noqa: BLE001 - a bad marker must not stop a restart
                log.warning("skipping unreadable checkpoint marker %s: %s", key, exc)
        return sorted(out, key=lambda r: r.step, reverse=True)

    def load_latest(self, map_location: str | torch.device = "cpu") -> tuple[CheckpointRef, dict] | None:
        """The newest checkpoint whose bytes verify and deserialise, or None; the ones passed
        over on the way are in `skipped` with the reason."""
        self.skipped = []
        for ref in self.refs():
            try:
                data = self.store.get(ref.key)
                if hashlib.sha256(data).hexdigest() != ref.sha256:
                    raise ValueError(f"sha256 differs from the recorded {ref.sha256[:12]}")
                return ref, from_bytes(data, map_location)
            except Exception as exc:  # noqa: BLE001 - corrupt or missing: fall back to an older one
                log.warning("skipping checkpoint %s (step %d): %s", ref.key, ref.step, exc)
                self.skipped.append((ref, f"{type(exc).__name__}: {exc}"))
        return None

    def _prune(self) -> None:
        if not self.keep_last:
            return
        for ref in self.refs()[self.keep_last:]:
            # Marker first: a marker never points at a deleted checkpoint.
            self.store.delete(f"{self.prefix}/step-{ref.step:08d}.json", missing_ok=True)
            self.store.delete(ref.key, missing_ok=True)
