"""Tensors and state dicts to bytes and back, for the blob store (checkpoints, caches); the hash
of a module's weights that keys caches of what frozen weights compute.

`weights_only=True` on load: a checkpoint or cache entry from a store can hold tensors and plain
containers, never pickled code.
"""
from __future__ import annotations

import hashlib
import io

import torch


def to_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def from_bytes(data: bytes, map_location: str | torch.device = "cpu") -> dict:
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)


def module_hash(module: torch.nn.Module) -> str:
    """sha256 over parameter names, dtypes, shapes and bytes: the identity of frozen weights,
    used to key caches of what they compute."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too
    return h.hexdigest()
