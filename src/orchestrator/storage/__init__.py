"""Blob storage for checkpoints, datasets and caches: one contract, local and Azure backends.

    store = open_store("file://./runs")          # or "/abs/dir", "az://container/prefix"
    store.put("ckpt/step-200.safetensors", f)    # atomic, sha256 recorded
    data = store.get("ckpt/step-200.safetensors")  # verified, IntegrityError if not
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from orchestrator.storage.base import (
    DEFAULT_BLOCK_SIZE,
    BlobChangedError,
    BlobExistsError,
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    IntegrityError,
    StorageConfigError,
    StorageError,
    TransientStorageError,
)
from orchestrator.storage.keys import InvalidKeyError, validate_key, validate_prefix
from orchestrator.storage.local import LocalBlobStore
from orchestrator.storage.retry import RetryPolicy, call_with_retry

__all__ = [
    "DEFAULT_BLOCK_SIZE", "BlobChangedError", "BlobExistsError", "BlobInfo", "BlobNotFoundError",
    "AzureBlobStore", "BlobStore", "IntegrityError", "InvalidKeyError", "LocalBlobStore", "RetryPolicy",
    "StorageConfigError", "StorageError", "TransientStorageError", "call_with_retry", "open_store",
    "validate_key", "validate_prefix",
]


def __getattr__(name: str) -> Any:
    # AzureBlobStore is importable from here without making every user load the Azure SDK.
    if name == "AzureBlobStore":
        from orchestrator.storage.azure import AzureBlobStore

        return AzureBlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(uri: str, *, env: Mapping[str, str] | None = None, **options: Any) -> BlobStore:
    """Open the store a URI names.

    - `file:///abs/dir`, `file://./rel/dir` (relative to the current directory, resolved
      now), or a bare path: LocalBlobStore.
    - `az://container/prefix`: AzureBlobStore, credentials from `env` (default os.environ):
      AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY
      (+ optional AZURE_STORAGE_BLOB_ENDPOINT).

    `options` go to the backend's constructor (block_size, retry, ...).
    """
    if not isinstance(uri, (str, os.PathLike)) or not str(uri):
        raise StorageConfigError(f"blob store URI must be a non-empty string, not {uri!r}")
    uri = str(uri)
    if uri.startswith("file://"):
        path = unquote(uri[len("file://"):])  # Path.as_uri() percent-encodes
        if path.startswith("localhost/"):
            path = path[len("localhost"):]
        if not path:
            raise StorageConfigError(f"blob store URI {uri!r} names no directory")
        return LocalBlobStore(Path(path), **options)
    if uri.startswith("az://"):
        container, _, prefix = uri[len("az://"):].partition("/")
        from orchestrator.storage.azure import AzureBlobStore  # the SDK loads only when used

        try:
            return AzureBlobStore.from_env(container, prefix, env=env, **options)
        except StorageConfigError as exc:
            raise StorageConfigError(f"{uri}: {exc}") from None
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise StorageConfigError(
            f"unknown blob store scheme {scheme!r} in {uri!r}: use file:///abs/dir, file://./rel/dir, "
            f"a plain path, or az://container/prefix")
    return LocalBlobStore(Path(uri), **options)

