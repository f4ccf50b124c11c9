"""Manifest paths confined to the head's allowed roots.

A manifest submitted over HTTP names local paths the head's workers will read and write (data
roots, model directories, eval inputs, the blob store). Each must resolve, with `..` collapsed
and symlinks followed, inside one of the allowed roots (the `--data-root`s and the state dir);
anything else (`../..`, `/etc`, a symlink out of a root) is refused, naming the field and the
line. Remote locations (az://) are the storage account's business, not the file system's.

Checked on a manifest loaded without its file-existence checks, so a refused path is never
probed: the answer for `/etc/shadow` and `/no/such` is the same. Every trial of the sweep is
checked, since a sweep may override a path; a swept path's line is its sweep entry.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.manifest import LoadedManifest, ManifestIssue, Trial
from orchestrator.storage.location import is_remote, local_path

# Every manifest field holding a local path (schema.py checks these exist with `_check_exists`,
# plus the blob store); tests/test_api_confine.py keeps this list in step with the schema.
PATH_FIELDS = (
    "model.base", "model.glide_mini.bpe", "model.vcdm.clip",
    "data.train.root", "data.eval.root",
    "eval.clip", "eval.fid_weights", "eval.fid_reference", "eval.winoground", "eval.drawbench.file",
    "storage.blobs",
)
NOT_PATHS = {"model.base": ("tiny-random",)}
OPTIONS_FIELDS = ("data.train.options", "data.eval.options")  # loader options naming files under the root


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _inside(path: Path, roots: list[Path]) -> bool:
    resolved = path.resolve()  # follows symlinks of every existing prefix
    return any(resolved == r or resolved.is_relative_to(r) for r in roots)


def _line(loaded: LoadedManifest, trial: Trial | None, dotted: str) -> int | None:
    src = loaded.source
    if trial is not None:
        for key in trial.overrides:  # the sweep entry that set this path (or a section above it)
            if dotted == key or dotted.startswith(key + "."):
                grid = ("sweep", "grid", key)
                if grid in src.lines:
                    return src.line_of(grid)
                for i, entry in enumerate(_get(src.data, "sweep.trials") or []):
                    if isinstance(entry, dict) and key in entry:
                        return src.line_of(("sweep", "trials", i, key))
    return src.line_of(tuple(dotted.split(".")))


def confinement_issues(loaded: LoadedManifest, trials: list[Trial], roots: list[Path],
                       file: str) -> list[ManifestIssue]:
    """One issue per path field (per distinct value) that leaves the allowed roots."""
    roots = [r.resolve() for r in roots]
    shown = ", ".join(str(r) for r in roots)
    issues: dict[tuple[str, str], ManifestIssue] = {}
    docs = [(None, loaded.manifest.model_dump(mode="json"))]
    docs += [(t, t.manifest.model_dump(mode="json")) for t in trials if t.overrides]
    for trial, doc in docs:
        for dotted in PATH_FIELDS:
            value = _get(doc, dotted)
            if not isinstance(value, str) or is_remote(value) or value in NOT_PATHS.get(dotted, ()):
                continue
            if not _inside(local_path(value, loaded.base_dir), roots):
                issues.setdefault((dotted, value), ManifestIssue(
                    file, dotted, _line(loaded, trial, dotted),
                    f"{value!r} is outside the head's allowed roots ({shown})"))
        for dotted in OPTIONS_FIELDS:
            for key, value in (_get(doc, dotted) or {}).items():
                if isinstance(value, str) and _escapes(value):
                    field = f"{dotted}.{key}"
                    issues.setdefault((field, value), ManifestIssue(
                        file, field, _line(loaded, trial, field),
                        f"{value!r} leaves the data root (no absolute paths or '..' in loader options)"))
    return list(issues.values())


def _escapes(value: str) -> bool:
    p = PurePosixPath(value.removeprefix("file://"))
    return p.is_absolute() or ".." in p.parts or value.startswith("~")
