"""Key rules shared by every backend.

Keys are '/'-separated relative paths. The rules keep a key meaning the same object on a
filesystem and in Azure: no escaping the root (`..`, leading `/`), no aliasing (`.`, empty
segments, trailing dots, backslashes that Windows tools treat as separators), no names the local backend
reserves for its temp files, and lengths both backends accept.
"""

from __future__ import annotations

MAX_KEY_CHARS = 1024  # Azure blob name limit
MAX_SEGMENT_BYTES = 255  # common filesystem name limit
RESERVED_SEGMENT_PREFIX = ".~"  # local backend temp files: never a user key


class InvalidKeyError(ValueError):
    """The key breaks the key rules."""


def validate_key(key: str) -> str:
    """Return `key` unchanged if valid, else raise InvalidKeyError saying why."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"blob key must be a str, not {type(key).__name__}")
    _check_chars(key, "key")
    if not key:
        raise InvalidKeyError("blob key must not be empty")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidKeyError(f"blob key longer than {MAX_KEY_CHARS} characters: {key[:60]!r}...")
    if key.startswith("/"):
        raise InvalidKeyError(f"blob key must be relative (no leading '/'): {key!r}")
    for segment in key.split("/"):
        _check_segment(key, segment)
    return key


def validate_prefix(prefix: str) -> str:
    """A list prefix: empty, or a key's beginning (a trailing '/' is allowed)."""
    if not isinstance(prefix, str):
        raise InvalidKeyError(f"prefix must be a str, not {type(prefix).__name__}")
    if prefix:
        _check_chars(prefix, "prefix")
        if prefix.startswith("/"):
            raise InvalidKeyError(f"prefix must be relative (no leading '/'): {prefix!r}")
        segments = prefix.split("/")
        for segment in segments[:-1]:  # the last one may be partial or empty
            _check_segment(prefix, segment)
        if segments[-1] in (".", ".."):
            raise InvalidKeyError(f"prefix has a '{segments[-1]}' segment: {prefix!r}")
    return prefix


def _check_chars(key: str, what: str) -> None:
    if "\\" in key:
        raise InvalidKeyError(f"blob {what} must not contain backslashes: {key!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidKeyError(f"blob {what} must not contain control characters: {key!r}")


def _check_segment(key: str, segment: str) -> None:
    if not segment:
        raise InvalidKeyError(f"blob key has an empty segment ('//' or trailing '/'): {key!r}")
    if segment in (".", ".."):
        raise InvalidKeyError(f"blob key has a '{segment}' segment: {key!r}")
    if segment.endswith("."):  # Azure (and Windows) tools drop trailing dots: two keys, one name
        raise InvalidKeyError(f"blob key segments must not end with '.': {key!r}")
    if segment.startswith(RESERVED_SEGMENT_PREFIX):
        raise InvalidKeyError(f"blob key segments must not start with {RESERVED_SEGMENT_PREFIX!r}: {key!r}")
    if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
        raise InvalidKeyError(f"blob key segment longer than {MAX_SEGMENT_BYTES} bytes: {key!r}")
