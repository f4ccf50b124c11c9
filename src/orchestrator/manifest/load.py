"""Load a manifest file: YAML with line numbers -> validated `Manifest`, all errors at once."""
from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from .errors import ManifestError, ManifestIssue
from .issues import issues_from_validation
from .loaded import LoadedManifest
from .schema import Manifest
from .sweep import expand, sweep_key_issues
from .yaml_source import YamlSource, load_yaml


def load_manifest(path: str | Path, *, check_files: bool = True, roots=None) -> LoadedManifest:
    """Parse and validate; raises ManifestError listing every problem found. `roots`: confine
    every location to these directories (storage.location.confine), as the head does for a
    client's manifest; each location then holds the resolved path the workers are to open."""
    path = Path(path).resolve()
    source = load_yaml(path)
    source.file = str(Path(path).relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    unvalidated = LoadedManifest(None, source, path, tuple(roots) if roots is not None else None)
    try:
        manifest = Manifest.model_validate(source.data, context=unvalidated.context(check_files))
    except ValidationError as exc:
        raise ManifestError(issues_from_validation(exc, source) + _raw_sweep_issues(source)) from None
    loaded = LoadedManifest(manifest, source, path, unvalidated.roots)
    # Expanding the sweep validates every trial's values against the schema too.
    expand(loaded, check_files=check_files)
    return loaded


def _raw_sweep_issues(source: YamlSource) -> list[ManifestIssue]:
    """Swept field names can be checked even when the rest of the manifest is invalid."""
    sweep = source.data.get("sweep")
    if not isinstance(sweep, dict):
        return []
    grid = sweep.get("grid") if isinstance(sweep.get("grid"), dict) else {}
    trials = sweep.get("trials") if isinstance(sweep.get("trials"), list) else []
    sample = sweep.get("sample") if isinstance(sweep.get("sample"), dict) else {}
    space = sample.get("space") if isinstance(sample.get("space"), dict) else {}
    return sweep_key_issues(grid, trials, bool(sweep.get("seeds")), source.file, source.line_of, space)
