"""Load a manifest file: YAML with line numbers -> validated `Manifest`, all errors at once."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import ManifestError, ManifestIssue
from .schema import Manifest, _model_of
from .yaml_source import YamlSource, load_yaml


@dataclass(frozen=True)
class LoadedManifest:
    manifest: Manifest
    source: YamlSource
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def load_manifest(path: str | Path, *, check_files: bool = True) -> LoadedManifest:
    """Parse and validate; raises ManifestError listing every problem found."""
    path = Path(path).resolve()
    source = load_yaml(path)
    source.file = str(Path(path).relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    context = {"base_dir": path.parent, "check_files": check_files}
    try:
        manifest = Manifest.model_validate(source.data, context=context)
    except ValidationError as exc:
        raise ManifestError(issues_from_validation(exc, source) + _raw_sweep_issues(source)) from None
    loaded = LoadedManifest(manifest, source, path)
    # Expanding the sweep validates every trial's values against the schema too.
    from .sweep import expand

    expand(loaded)
    return loaded


def _raw_sweep_issues(source: YamlSource) -> list[ManifestIssue]:
    """Swept field names can be checked even when the rest of the manifest is invalid."""
    from .sweep import sweep_key_issues

    sweep = source.data.get("sweep")
    if not isinstance(sweep, dict):
        return []
    grid = sweep.get("grid") if isinstance(sweep.get("grid"), dict) else {}
    trials = sweep.get("trials") if isinstance(sweep.get("trials"), list) else []
    return sweep_key_issues(grid, trials, bool(sweep.get("seeds")), source.file, source.line_of)


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
        field = model.model_fields.get(str(part))
        nxt = _model_of(field.annotation) if field else None
        if nxt is None:
            return []
        model = nxt
    return list(model.model_fields)
