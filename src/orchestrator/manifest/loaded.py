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

    @property
    def base_dir(self) -> Path:
        return self.path.parent
