"""A client's manifest confined to the head's allowed roots, and stored as the workers will read it.

A manifest submitted over HTTP names locations the head's workers will read and write (data
roots, model directories, eval inputs, the blob store, every variant's path options: the options
its spec's section marks PathOption, listed by `VariantSpec.path_options`, a plugged-in variant's
too). Each is decided by one function, `storage.location.confine`, which the schema calls for
every location field when the manifest is loaded with roots (every trial of the sweep too, so a
swept path is confined and its issue points at its sweep entry): parsed the one way (az:// with a valid
container, file:// and plain paths; any other scheme refused), made absolute, `..` and symlinks
resolved, refused unless inside a root (the `--data-root`s and the state dir). A refused path
is never probed: the answer for `/etc/shadow` and `/no/such` is the same.

Loader options (`data.*.options`) name files under their source's root: no absolute paths, no
`..`, and, resolved under a local root, still inside the roots.

What the workers open is what confinement returned: the head stores the manifest written out
(`manifest.sweep.written_out`) with every location replaced by its resolved form, and every
process loads that file.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from orchestrator.manifest import LoadedManifest, ManifestIssue, Trial
from orchestrator.manifest.sweep import written_out
from orchestrator.storage.location import LocationError, confine, local_path, parse_location

OPTIONS_FIELDS = ("data.train.options", "data.eval.options")  # loader options naming files under the root


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _line(loaded: LoadedManifest, trial: Trial | None, dotted: str) -> int | None:
    src = loaded.source
    if trial is not None:
        for key in trial.overrides:  # the sweep entry that set this field (or a section above it)
            if dotted == key or dotted.startswith(key + "."):
                grid = ("sweep", "grid", key)
                if grid in src.lines:
                    return src.line_of(grid)
                for i, entry in enumerate(_get(src.data, "sweep.trials") or []):
                    if isinstance(entry, dict) and key in entry:
                        return src.line_of(("sweep", "trials", i, key))
    return src.line_of(tuple(dotted.split(".")))


def option_issues(loaded: LoadedManifest, trials: list[Trial], roots: list[Path], file: str) -> list[ManifestIssue]:
    """One issue per loader option (per distinct value) that could leave the roots."""
    issues: dict[tuple[str, str], ManifestIssue] = {}
    docs = [(None, loaded.manifest.model_dump(mode="json"))]
    docs += [(t, t.manifest.model_dump(mode="json")) for t in trials if t.overrides]
    for trial, doc in docs:
        for dotted in OPTIONS_FIELDS:
            root = _get(doc, dotted.rsplit(".", 1)[0] + ".root")
            for key, value in (_get(doc, dotted) or {}).items():
                problem = _option_problem(value, root, loaded.base_dir, roots) if isinstance(value, str) else None
                if problem:
                    field = f"{dotted}.{key}"
                    issues.setdefault((field, value), ManifestIssue(file, field, _line(loaded, trial, field), problem))
    return list(issues.values())


def _option_problem(value: str, root: str | None, base_dir: Path, roots: list[Path]) -> str | None:
    try:
        parsed = parse_location(value)
    except LocationError as exc:
        return str(exc)
    if parsed.scheme or parsed.path.is_absolute() or ".." in PurePosixPath(value).parts or value.startswith("~"):
        return f"{value[:80]!r} leaves the data root (no URI, absolute path or '..' in loader options)"
    if root is None or parse_location(root).remote:
        return None
    try:
        confine(str(local_path(root, base_dir) / parsed.path), base_dir=None, roots=roots)
    except LocationError as exc:
        return str(exc)
    return None


def confined_yaml(loaded: LoadedManifest, trials: list[Trial]) -> str:
    """The manifest the workers load: written out, every location the resolved path confinement
    returned (the load that made `loaded` was confined, so its trials already hold them)."""
    assert loaded.roots is not None, "only a confined manifest is stored for the workers"
    header = "# stored by the head: every location confined and resolved; the sweep written out trial by trial\n"
    return header + yaml.safe_dump(written_out(loaded, trials), sort_keys=False, allow_unicode=False)
