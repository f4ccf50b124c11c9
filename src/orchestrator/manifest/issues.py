"""Pydantic's validation errors as manifest issues: dotted field paths and the YAML line of each."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .errors import ManifestIssue
from .schema import Manifest, _model_of, fields_of
from .yaml_source import YamlSource


def issues_from_validation(
    exc: ValidationError, source: YamlSource, *, data: Any = None, remap=None
) -> list[ManifestIssue]:
    """Turn pydantic errors into issues with dotted paths and YAML lines.

    `remap(path) -> (yaml_path, prefix)` lets sweep expansion point a trial's error at the
    sweep entry that produced the bad value instead of at the (unchanged) base field.
    """
    data = source.data if data is None else data
    issues = []
    for err in exc.errors():
        path = _data_path(err["loc"], data)
        message = _message(err, path)
        yaml_path: tuple = tuple(path)
        if remap is not None:
            yaml_path, prefix = remap(path)
            message = prefix + message
        dotted = ".".join(str(p) for p in path)
        issues.append(ManifestIssue(source.file, dotted, source.line_of(yaml_path), message))
    return issues


def _data_path(loc: tuple, data: Any) -> list:
    """Drop pydantic's union/type tags from a loc, keeping only real keys and indexes."""
    path, node = [], data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(part)
        elif i == len(loc) - 1 and isinstance(node, dict) and isinstance(part, str):
            path.append(part)  # a missing or unknown key: name it
        else:
            break
    return path


def _message(err: dict, path: list) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(path[:-1])
        return f"unknown key '{path[-1]}'" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if kind == "missing":
        return "required field is missing"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    got = err.get("input")
    if kind not in ("value_error", "assertion_error") and not isinstance(got, (dict, list)) and got is not None:
        msg = f"{msg} (got {got!r})"
    return msg


def _allowed_keys(path: list) -> list[str]:
    model = Manifest
    for part in path:
        if isinstance(part, int):
            continue
        fields = fields_of(model)
        nxt = _model_of(fields[str(part)]) if str(part) in fields else None
        if nxt is None:
            return []
        model = nxt
    return list(fields_of(model))
