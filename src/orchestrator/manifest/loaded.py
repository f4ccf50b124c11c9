"""A manifest as loaded: the validated model, its YAML source (for line numbers) and its path."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .schema import Manifest
from .yaml_source import YamlSource


@dataclass(frozen=True)
class LoadedManifest:
    manifest: Manifest
    source: YamlSource
    path: Path
    # The roots every location was confined to (a manifest from an API client), None: unconfined.
    # Its trials expand under the same roots, so a swept path is confined like any other.
    roots: tuple[Path, ...] | None = None

    def context(self, check_files: bool) -> dict:
        """The schema's validation context for this manifest (storage.location reads paths with it)."""
        return {"base_dir": self.base_dir, "check_files": check_files, "roots": self.roots}

    @property
    def base_dir(self) -> Path:
        return self.path.parent
