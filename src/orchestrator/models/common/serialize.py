"""Tensors and state dicts to bytes and back, for the blob store (checkpoints, caches).

`weights_only=True` on load: a checkpoint or cache entry from a store can hold tensors and plain
containers, never pickled code.
"""
from __future__ import annotations

import io

import torch


def to_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def from_bytes(data: bytes, map_location: str | torch.device = "cpu") -> dict:
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
